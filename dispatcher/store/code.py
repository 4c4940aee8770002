"""Tokens of code: functions and classes read by content, for the keys of a store.

Policy
------
A **function** is read as its module and qualified name, its code (bytecode,
constants, names, nested functions' code, but not its file or line numbers, so
moving a function in its file keeps its token), its default arguments, the values
it closes over, the class it is a method of, and what its code names in its own
module: functions, classes, bound methods, ``functools.partial`` objects and
callable objects of the module (``functools.lru_cache`` and ``@dp.op`` wrappers
among them) by content, plain constants (numbers, strings, bytes, and tuples and
frozensets of them) by value, and every other callable or module it names by its
name (``from math import sqrt as op``: the binding counts). A **class** read by
content (a node's function, a class of the same module met in code or among the
values it holds, the class of a method or of a callable object, a class defined
inside a function) is read as its name, its bases of the same module, and its
methods (static and class methods told apart), properties, enum members, plain
constants and other callables, and its metaclass. Mutable state (a module-level
dict or object, a class's list) and docstrings are not read.

Code refers to other code, in cycles too (mutual recursion, a method and its
class). Each function or class is first read on its own, with its references to
other code left as markers (its *local part*, read once per run); then the
graph of references is split into strongly connected components (Tarjan's
algorithm), and each component is hashed as a whole, after the components it
refers to: its members in an order given by their own contents, each reference
inside the component written as the position of its target, each reference out of
it as the target's token. A member's token is the component's hash and its
position. So a change anywhere in a cycle changes every member's token, and a
token is the same whatever was read first in the run, and is 17 bytes however
much code it covers. A run keeps every token (:class:`CodeTokens`), by identity.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import os
import types
from typing import Any

from .encoding import NotHashable, bytes_token, is_plain, name_token, str_token

__all__ = ["CodeTokens", "is_code", "is_local", "unordered_items"]

_MISSING = object()
_CLASS_NOISE = frozenset(
    (
        "__dict__",
        "__weakref__",
        "__module__",
        "__doc__",
        "__qualname__",
        "__firstlineno__",  # where the class is in its file, as of Python 3.13
        "__static_attributes__",
    )
)
_REF = b"\x00@" + os.urandom(16)  # marks a reference in a local part (never hashed as such)
_GROUP, _ITEM, _END = (b"\x00" + kind + os.urandom(16) for kind in (b"{", b",", b"}"))  # a set to sort
_REFINE_ROUNDS = 64  # rounds of colour refinement of a component before it falls back to an order


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class CodeTokens:
    """The half of :class:`~dispatcher.store.tokens.Tokens` that reads code; the
    other half reads values (``of``, ``reduced``, ``sequence``, ``mapping``)."""

    __slots__ = ("_callables", "_locals", "_module", "_refs", "functions")

    def __init__(self):
        self.functions: dict = {}  # id() of a function or class -> (it, its token), once closed
        self._callables: dict = {}  # id() of another callable read outside code -> (it, its token)
        self._locals: dict = {}  # id() of a function or class -> (it, its local part, its references)
        self._refs: list | None = None  # while a local part is read: the code it refers to
        self._module: str | None = None  # while a local part is read: its module

    # -- entry points --------------------------------------------------------------
    def function(self, func: Any, depth: int = 0) -> bytes:
        """The token of a callable or a class, by content. Inside a local part, a
        function or class is a reference, written as a marker."""
        known = self.functions.get(id(func))
        if known is not None:
            return known[1]
        if is_code(func):
            refs = self._refs
            if refs is not None:
                refs.append(func)
                return _REF + b"%d;" % (len(refs) - 1)
            return self._code_token(func)
        if self._refs is not None:  # read in code: its module's classes count by content
            return self._function(func, depth)
        known = self._callables.get(id(func))
        if known is None:
            known = self._callables[id(func)] = (func, self._function(func, depth))
        return known[1]

    def _function(self, func: Any, depth: int) -> bytes:
        """A callable that is not itself code: made of the tokens of what it holds."""
        if isinstance(func, type):  # a class of the standard library
            return b"T" + name_token(func)
        if isinstance(func, types.MethodType):  # its object's class decides what it calls
            owner = func.__self__
            cls = owner if isinstance(owner, type) else type(owner)
            return (
                b"m"
                + self.function(func.__func__, depth + 1)
                + self.function(cls, depth + 1)
                + self.of(owner, depth + 1)
            )
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

    # -- the graph of code, and its components ---------------------------------------
    def _code_token(self, root: Any) -> bytes:
        """Read the code ``root`` reaches, close its components (Tarjan's algorithm,
        without recursion), and return ``root``'s token."""
        index: dict = {id(root): 0}
        low: dict = {id(root): 0}
        stack, on_stack = [root], {id(root)}
        frames = [[root, 0]]  # each: the code being walked, and its next reference
        while frames:
            frame = frames[-1]
            node = frame[0]
            refs = self._local(node)[1]
            if frame[1] < len(refs):
                ref = refs[frame[1]]
                frame[1] += 1
                key = id(ref)
                if key in self.functions:
                    continue  # closed earlier: its token is known
                if key not in index:
                    index[key] = low[key] = len(index)
                    stack.append(ref)
                    on_stack.add(key)
                    frames.append([ref, 0])
                elif key in on_stack:
                    low[id(node)] = min(low[id(node)], index[key])
                continue
            frames.pop()
            if frames:
                parent = id(frames[-1][0])
                low[parent] = min(low[parent], low[id(node)])
            if low[id(node)] == index[id(node)]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(id(member))
                    members.append(member)
                    if member is node:
                        break
                self._close(members)
        return self.functions[id(root)][1]

    def _close(self, members: list) -> None:
        """Hash a component whose references out of it all have tokens."""
        tokens = self.functions
        if len(members) == 1 and not any(r is members[0] for r in self._local(members[0])[1]):
            code = members[0]
            local, refs = self._local(code)
            text = _fill(local, [tokens[id(r)][1] for r in refs])
            tokens[id(code)] = (code, b"F" + _hash(text))
            return
        inside = {id(m) for m in members}
        parts = {id(m): self._local(m) for m in members}

        def colours_from(colour) -> dict:
            return {
                key: _hash(_fill(local, [colour(r) if id(r) in inside else tokens[id(r)][1] for r in refs]))
                for key, (local, refs) in parts.items()
            }

        # colour refinement: members that read alike, down to the members they refer
        # to, get one colour (they compute alike); a colour tells apart no more than
        # what the code says, whatever order the members were met in
        colours = colours_from(lambda r: b"*")
        for _ in range(_REFINE_ROUNDS):
            refined = colours_from(lambda r, colours=colours: b"#" + colours[id(r)])
            refined = {k: _hash(colours[k] + v) for k, v in refined.items()}
            stable = len(set(refined.values())) == len(set(colours.values()))
            colours = refined  # each colour now also names the colours its references have
            if stable:  # the classes split no more: each colour says all its code says
                break
        else:  # not stable yet: tell the members apart by their positions in an order of colours
            order = sorted(members, key=lambda m: colours[id(m)])
            position = {id(m): b"%d" % i for i, m in enumerate(order)}
            colours = colours_from(lambda r, position=position: b"@" + position[id(r)])
            colours = {k: _hash(position[k] + v) for k, v in colours.items()}
        component = _hash(b"S%d;" % len(members) + b"".join(sorted(colours.values())))
        for member in members:
            tokens[id(member)] = (member, b"F" + _hash(component + colours[id(member)]))

    def _local(self, code: Any) -> tuple[bytes, list]:
        """The local part of a function or class and the code it refers to, in the
        order of its markers (read once per run)."""
        known = self._locals.get(id(code))
        if known is not None:
            return known[1], known[2]
        # a local part depends on the code alone, not on the values being read around it
        saved = self._refs, self._module, self.in_progress
        self._refs, self._module, self.in_progress = [], getattr(code, "__module__", None), set()
        try:
            if isinstance(code, types.FunctionType):
                local = self._function_local(code)
            else:
                local = self._class_local(code)
            refs = self._refs
        finally:
            self._refs, self._module, self.in_progress = saved
        self._locals[id(code)] = (code, local, refs)
        return local, refs

    def _function_local(self, func: types.FunctionType) -> bytes:
        of = self.of
        out = [b"f", name_token(func), self.code(func.__code__)]
        out.append(b"d" + of(func.__defaults__, 1) if func.__defaults__ else b"d-")
        out.append(b"k" + of(func.__kwdefaults__, 1) if func.__kwdefaults__ else b"k-")
        cells = []
        for name, cell in zip(func.__code__.co_freevars, func.__closure__ or ()):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                cells.append(str_token(name) + b"-")
                continue
            try:
                cells.append(str_token(name) + of(value, 1))
            except NotHashable as exc:
                raise NotHashable(f"the value it closes over as {name!r}: {exc}") from None
        out.append(b"c%d;" % len(cells) + b"".join(cells))
        owner = _owner_class(func)
        out.append(b"o" + self.function(owner) if owner is not None else b"o-")
        out.append(self._module_names(func.__code__, func.__module__, func.__globals__))
        return b"".join(out)

    def _class_local(self, cls: type) -> bytes:
        module = cls.__module__
        bases = [self.function(b) if b.__module__ == module else b"T" + name_token(b) for b in cls.__bases__]
        meta = type(cls)
        out = [b"K", name_token(cls), b"b%d;" % len(bases), *bases]
        if meta is not type:  # a metaclass: its code makes the class's instances too
            out.append(b"m" + (self.function(meta) if meta.__module__ == module else name_token(meta)))
        attributes = []
        for name, attr in sorted(vars(cls).items()):
            if name in _CLASS_NOISE:
                continue
            part = self._class_attribute(attr, module)
            if part is not None:
                attributes.append(str_token(name) + part)
        out.append(b"a%d;" % len(attributes))
        out.extend(attributes)
        return b"".join(out)

    def _class_attribute(self, attr: Any, module: str) -> bytes | None:
        if isinstance(attr, staticmethod):
            return b"s" + self.function(attr.__func__)
        if isinstance(attr, classmethod):
            return b"k" + self.function(attr.__func__)
        if isinstance(attr, property):
            return b"y" + b"".join(
                [self.function(f) if f is not None else b"-" for f in (attr.fget, attr.fset, attr.fdel)]
            )
        if isinstance(attr, enum.Enum):
            return b"E" + self.of(attr._value_, 1)
        if isinstance(attr, type):
            return self.function(attr) if attr.__module__ == module else b"T" + name_token(attr)
        if is_plain(attr):
            return self.of(attr, 1)
        if isinstance(attr, functools.partialmethod):
            return b"P" + self.function(attr.func) + self.of(attr.args, 1) + self.of(attr.keywords, 1)
        inner = getattr(attr, "func", None)  # functools.cached_property
        if isinstance(inner, types.FunctionType) and not callable(attr):
            return b"c" + self.function(inner)
        if callable(attr):
            return self.function(attr)
        return None  # other state: not read

    def _module_names(self, code: types.CodeType, module: str, glob: dict) -> bytes:
        """What a function's code names in its own module (see the module's docstring)."""
        out = []
        for name in dict.fromkeys(_names(code)):
            value = glob.get(name, _MISSING)
            if value is _MISSING:
                continue
            if is_plain(value):
                out.append(str_token(name) + self.of(value, 1))
            elif isinstance(value, types.ModuleType):
                out.append(str_token(name) + b"M" + str_token(value.__name__))
            elif callable(value):
                if isinstance(value, functools.partial) or _module_of(value) == module:
                    out.append(str_token(name) + self.function(value))
                else:
                    out.append(str_token(name) + b"N" + name_token(value))
        return b"g%d;" % len(out) + b"".join(out)

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
        body = b"\0".join(
            [code.co_code, getattr(code, "co_exceptiontable", b""), *consts, repr(fields).encode()]
        )
        return b"c" + bytes_token(_hash(body), b"b")


def is_code(obj: Any) -> bool:
    """A function, or a class not of the interpreter itself: read by content."""
    return type(obj) is types.FunctionType or (isinstance(obj, type) and obj.__module__ != "builtins")


def _module_of(value: Any) -> str | None:
    try:
        module = getattr(value, "__module__", None)
    except Exception:  # an object whose attributes raise
        return None
    return module if isinstance(module, str) else None


def unordered_items(items: list) -> bytes:
    """The items of a set, in code: sorted once the references they hold are
    filled in (:func:`_fill`), so that their order does not depend on the order the
    references were met in."""
    if not any(_REF in item for item in items):
        return b"".join(sorted(items))
    return _GROUP + b"".join(_ITEM + item for item in items) + _END


def _fill(local: bytes, tokens: list) -> bytes:
    """A local part with its markers replaced by ``tokens``, in order, and its sets
    sorted."""
    if tokens:
        parts = local.split(_REF)
        out = [parts[0]]
        for part in parts[1:]:
            number, rest = part.split(b";", 1)
            out.append(tokens[int(number)])
            out.append(rest)
        local = b"".join(out)
    while _GROUP in local:  # the innermost set first: the first end closes the last group before it
        end = local.index(_END)
        start = local.rindex(_GROUP, 0, end)
        items = sorted(local[start + len(_GROUP) : end].split(_ITEM)[1:])
        local = local[:start] + b"".join(b"%d:" % len(i) + i for i in items) + local[end + len(_END) :]
    return local


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
    for cls in owner.__mro__:  # a class decorator may have made a new class on the old one
        attr = vars(cls).get(name)
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if isinstance(attr, property):
            if func in (attr.fget, attr.fset, attr.fdel):
                return cls
        elif (
            attr is func or getattr(attr, "func", None) is func or getattr(attr, "__wrapped__", None) is func
        ):
            return cls
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
