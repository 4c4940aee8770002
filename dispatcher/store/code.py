"""Tokens of code: functions and classes read by content, for the keys of a store.

Policy
------
A **function**'s token holds its module and qualified name and its code (bytecode,
constants, names, nested functions' code, but not its file or line numbers, so
moving a function in its file keeps its token), its default arguments, the values
it closes over, the class it is a method of, and what its code names in its own
module: functions, classes, bound methods, functions wrapped by a decorator
(``functools.lru_cache``, ``@dp.op``) and plain constants (numbers, strings,
bytes, and tuples and frozensets of them). A **class** read by content (a node's
function, a class of the same module named by a function, the class of a method
or of a callable object, a class defined inside a function) holds its name, its
methods, properties and plain constants, and its bases of the same module. A bound
method adds its object, a ``functools.partial`` its arguments, a callable object
its class and its state.

Functions and classes that refer to one another (mutual recursion, a method and
its class) are read as one graph, depth first: each has an index in the order
met; one met again while still open (a cycle) is written as its distance from the
one being read, so that a change to any of them changes the token of each. A
token is kept for the run only once it refers to nothing opened before it (it
holds its whole cycle); the others are read again when asked for on their own.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import types
from typing import Any

from .encoding import MAX_DEPTH, NotHashable, bytes_token, is_plain, name_token, str_token

__all__ = ["CodeTokens", "is_local"]

_MISSING = object()
_FAR = sys.maxsize  # no index referred to
_CLASS_NOISE = frozenset(("__dict__", "__weakref__", "__module__", "__doc__", "__qualname__", "__slots__"))


class CodeTokens:
    """The half of :class:`~dispatcher.store.tokens.Tokens` that reads code; the
    other half reads values (``of``, ``reduced``, ``sequence``, ``mapping``)."""

    __slots__ = ("_current", "_lowest", "_next", "_open", "_stack", "functions")

    def __init__(self):
        self.functions: dict = {}  # id() of a callable or class -> (it, its token), once complete
        self._open: dict = {}  # id() of a function or class being read -> its index
        self._stack: list = []  # the ids of _open, in the order of their indices
        self._next = 0  # the index of the next function or class met
        self._current = -1  # the index of the innermost function or class being read
        self._lowest = _FAR  # the lowest index referred to by what is being read

    def function(self, func: Any, depth: int = 0) -> bytes:
        """A callable or a class, by content: kept for the run, by identity, once
        complete (see the class's docstring)."""
        known = self.functions.get(id(func))
        if known is not None:
            return known[1]
        index = self._open.get(id(func))
        if index is not None:  # met again while open: a cycle
            if index < self._lowest:
                self._lowest = index
            return b"^%d;" % (self._current - index)
        if depth > MAX_DEPTH:
            raise NotHashable(f"it nests deeper than {MAX_DEPTH} levels")
        start, lowest_before = self._next, self._lowest
        self._lowest = _FAR
        try:
            made = self._function(func, depth)
        except BaseException:
            self._close(start)
            raise
        finally:
            lowest = self._lowest
            self._lowest = min(lowest_before, lowest)
        if lowest >= start:  # it refers to nothing opened before it: complete
            self._close(start)
            self.functions[id(func)] = (func, made)  # by identity: equal objects may differ
        return made

    def _opening(self, code_owner: Any) -> int:
        """Open a function or class for reading: its index, now the current one."""
        index = self._next
        self._next += 1
        self._open[id(code_owner)] = index
        self._stack.append(id(code_owner))
        previous, self._current = self._current, index
        return previous

    def _close(self, start: int) -> None:
        """Forget the open functions and classes of index ``start`` and above."""
        stack, opened = self._stack, self._open
        while stack and opened[stack[-1]] >= start:
            del opened[stack.pop()]

    def _function(self, func: Any, depth: int) -> bytes:
        if isinstance(func, types.FunctionType):
            return self.python_function(func, depth)
        if isinstance(func, type):
            return self.class_(func, depth)
        if isinstance(func, types.MethodType):
            return b"m" + self.function(func.__func__, depth + 1) + self.of(func.__self__, depth + 1)
        if isinstance(func, functools.partial):
            return (
                b"p"
                + self.function(func.func, depth + 1)
                + self.sequence(func.args, depth + 1, b"t")
                + self.mapping(func.keywords or {}, depth + 1)
            )
        if isinstance(func, (types.BuiltinFunctionType, types.BuiltinMethodType)):
            owner = getattr(func, "__self__", None)
            if owner is None or isinstance(owner, types.ModuleType):
                return b"B" + name_token(func)
            return b"u" + str_token(func.__name__) + self.of(owner, depth + 1)
        # a callable object (a decorator's wrapper, an instance with __call__): its
        # class, what it wraps, and its state
        out = [b"o", self.function(type(func), depth + 1)]
        wrapped = getattr(func, "__wrapped__", None)  # functools.wraps, lru_cache, @dp.op
        if wrapped is not None and wrapped is not func:
            out.append(b"w" + self.function(wrapped, depth + 1))
        out.append(self.reduced(func, depth))
        return b"".join(out)

    def python_function(self, func: types.FunctionType, depth: int) -> bytes:
        ident = self._enter(func, depth)
        previous = self._opening(func)
        try:
            out = [b"F", name_token(func), self.code(func.__code__)]
            of = self.of
            if func.__defaults__:
                out.append(of(func.__defaults__, depth + 1))
            if func.__kwdefaults__:
                out.append(of(func.__kwdefaults__, depth + 1))
            if func.__closure__:
                for name, cell in zip(func.__code__.co_freevars, func.__closure__):
                    try:
                        value = cell.cell_contents
                    except ValueError:  # an empty cell
                        continue
                    try:
                        out.append(str_token(name) + of(value, depth + 1))
                    except NotHashable as exc:
                        raise NotHashable(f"the value it closes over as {name!r}: {exc}") from None
            owner = _owner_class(func)
            if owner is not None:
                out.append(b"<" + self.function(owner, depth + 1))
            out.append(self.module_globals(func.__code__, func.__module__, func.__globals__, depth))
            return b"".join(out)
        finally:
            self._current = previous
            self.in_progress.discard(ident)

    def class_(self, cls: type, depth: int) -> bytes:
        """A class by content: its name, the classes of its module it derives from,
        and its methods, properties and plain constants (other attributes, such as
        mutable class-level state, are not read)."""
        if cls.__module__ == "builtins":
            return b"T" + name_token(cls)
        previous = self._opening(cls)
        try:
            module = cls.__module__
            out = [b"K", name_token(cls)]
            for base in cls.__bases__:
                out.append(
                    self.function(base, depth + 1) if base.__module__ == module else b"T" + name_token(base)
                )
            for name, attr in sorted(vars(cls).items()):
                if name in _CLASS_NOISE:
                    continue
                part = self._class_attribute(attr, module, depth)
                if part is not None:
                    out.append(str_token(name) + part)
            return b"".join(out)
        finally:
            self._current = previous

    def _class_attribute(self, attr: Any, module: str, depth: int) -> bytes | None:
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if isinstance(attr, property):
            return b"y" + b"".join(
                [
                    self.function(f, depth + 1) if f is not None else b"n"
                    for f in (attr.fget, attr.fset, attr.fdel)
                ]
            )
        if isinstance(attr, types.FunctionType):
            return self.function(attr, depth + 1)
        if isinstance(attr, type):
            return self.function(attr, depth + 1) if attr.__module__ == module else b"T" + name_token(attr)
        if is_plain(attr):
            return self.of(attr, depth + 1)
        inner = getattr(attr, "func", None)  # functools.cached_property, partialmethod
        if isinstance(inner, types.FunctionType):
            return b"f" + self.function(inner, depth + 1)
        if callable(attr) and getattr(attr, "__wrapped__", None) is not None:
            return self.function(attr, depth + 1)
        return None

    def module_globals(self, code: types.CodeType, module: str, glob: dict, depth: int) -> bytes:
        """What a function's code names in its own module: functions, classes,
        decorated functions and plain constants."""
        out = []
        for name in _names(code):
            value = glob.get(name, _MISSING)
            if value is _MISSING:
                continue
            if is_plain(value):
                out.append(str_token(name) + self.of(value, depth))
            elif getattr(value, "__module__", None) == module and (
                isinstance(value, (types.FunctionType, type, types.MethodType))
                or (callable(value) and getattr(value, "__wrapped__", None) is not None)
            ):
                out.append(str_token(name) + self.function(value, depth + 1))
        return b"".join(out)

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def code(code: types.CodeType) -> bytes:
        """A code object without its file and line numbers (cached: code is immutable)."""
        consts = [_const(c) for c in code.co_consts]
        fields = (
            code.co_argcount,
            code.co_posonlyargcount,
            code.co_kwonlyargcount,
            code.co_flags,
            code.co_names,
            code.co_varnames,
            code.co_freevars,
            code.co_cellvars,
        )
        body = code.co_code + b"\0" + b"\0".join(consts) + b"\0" + repr(fields).encode()
        return b"c" + bytes_token(hashlib.blake2b(body, digest_size=16).digest(), b"b")


def is_local(cls: type) -> bool:
    """A class defined inside a function: its qualified name is not unique."""
    return "<locals>" in getattr(cls, "__qualname__", "")


def _owner_class(func: types.FunctionType) -> type | None:
    """The class a function is a method of, found through its module by its
    qualified name (none for a class defined inside a function)."""
    qualname = func.__qualname__
    if "." not in qualname or "<locals>" in qualname:
        return None
    *path, name = qualname.split(".")
    owner: Any = func.__globals__.get(path[0], None)
    for part in path[1:]:
        owner = getattr(owner, part, None)
    if not isinstance(owner, type):
        return None
    attr = vars(owner).get(name)
    if isinstance(attr, (staticmethod, classmethod)):
        attr = attr.__func__
    if isinstance(attr, property):
        return owner if func in (attr.fget, attr.fset, attr.fdel) else None
    if attr is func or getattr(attr, "func", None) is func or getattr(attr, "__wrapped__", None) is func:
        return owner
    return None


def _const(c: Any) -> bytes:
    """A constant of code: nested code by its token, a frozenset (``x in {...}``) in
    an order that does not depend on string hashing."""
    if isinstance(c, types.CodeType):
        return CodeTokens.code(c)
    if type(c) is tuple:
        return b"(" + b",".join([_const(v) for v in c]) + b")"
    if type(c) is frozenset:
        return b"{" + b",".join(sorted(_const(v) for v in c)) + b"}"
    return repr(c).encode("utf-8", "surrogatepass")


def _names(code: types.CodeType):
    """The global names a code object and its nested code objects use."""
    yield from code.co_names
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _names(c)
