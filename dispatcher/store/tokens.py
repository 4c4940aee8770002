"""Tokens: a deterministic byte encoding of a Python value, for the keys of a store.

Policy
------
A token is a type-tagged encoding of a value's contents, the same in every process
and on every run for equal values (no ``id()``, no ``hash()`` of strings):
numbers, strings, bytes, containers, numpy arrays and scalars (dtype, shape and
the bytes), enums, paths, dates, classes and modules by name, objects with
``__dask_tokenize__``, and any other object through what pickling it would save
(its class by name and its state, looked into as deeply as the rest), so that
dataclasses, attrs classes and most user types work. Buffers of 64 KiB or more are
folded in by their xxHash3 digest (128 bits), at memory speed.

A **function**'s token holds its module and qualified name and its code (bytecode,
constants, names, nested functions' code, but not its file or line numbers, so
moving a function in its file keeps its token), its default arguments, the values
it closes over, and the functions of its own module and the plain constants
(numbers, strings, bytes) of its module that its code names; a bound method adds
its object, a ``functools.partial`` its arguments. A run reads each function once
(:class:`Tokens` keeps them).

What cannot be read deterministically (a lock, an open file, a generator, an
object whose pickling fails, a reference cycle, nesting deeper than
:data:`MAX_DEPTH`) raises :class:`NotHashable` saying what it is. Values that are
equal but built differently (two dicts with their keys inserted in another order)
may give different tokens: a miss, never a wrong hit.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import enum
import fractions
import functools
import hashlib
import inspect
import pathlib
import struct
import sys
import types
import uuid
from collections.abc import Callable
from typing import Any

from ..nodes import CONTAINERS

__all__ = ["BIG_BUFFER", "BY_TYPE", "MAX_DEPTH", "SCALARS", "NotHashable", "Tokens", "str_token", "token"]

MAX_DEPTH = 60
BIG_BUFFER = 1 << 16  # bytes from which a buffer is folded in by its xxHash3 digest


class NotHashable(Exception):
    """A value cannot be hashed deterministically; the message says which."""


def _xxh3(buffer) -> bytes:
    import xxhash

    return xxhash.xxh3_128_digest(buffer)


def _bytes_token(data: bytes | bytearray | memoryview, tag: bytes) -> bytes:
    n = len(data) if type(data) is not memoryview else data.nbytes
    if n >= BIG_BUFFER:
        return b"%s%d#%s" % (tag, n, _xxh3(data))
    return b"%s%d:%s" % (tag, n, bytes(data))


def str_token(s: str) -> bytes:
    data = s.encode("utf-8", "surrogatepass")
    return b"s%d:%s" % (len(data), data)


def _name(obj: Any) -> bytes:
    """A module-level object by its module and qualified name."""
    module = getattr(obj, "__module__", None) or ""
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__
    return str_token(f"{module}:{qualname}")


class Tokens:
    """The tokens of one run: functions are read once per run (their closures and
    module constants may change between runs)."""

    __slots__ = ("functions", "in_progress")

    def __init__(self):
        self.functions: dict = {}
        self.in_progress: set = set()

    def of(self, obj: Any, depth: int = 0) -> bytes:
        """The token of ``obj``; raises :class:`NotHashable`."""
        handler = BY_TYPE.get(type(obj))
        if handler is not None:
            return handler(self, obj, depth)
        return self._other(obj, depth)

    # -- containers and objects --------------------------------------------------
    def _enter(self, obj: Any, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise NotHashable(f"it nests deeper than {MAX_DEPTH} levels")
        ident = id(obj)
        if ident in self.in_progress:
            raise NotHashable(f"it contains itself (a {type(obj).__name__})")
        self.in_progress.add(ident)
        return ident

    def sequence(self, obj, depth: int, tag: bytes) -> bytes:
        ident = self._enter(obj, depth)
        try:
            of = self.of
            return tag + b"%d[" % len(obj) + b"".join([of(v, depth + 1) for v in obj]) + b"]"
        finally:
            self.in_progress.discard(ident)

    def mapping(self, obj, depth: int, tag: bytes = b"D") -> bytes:
        ident = self._enter(obj, depth)
        try:
            of = self.of
            inner = b"".join([of(k, depth + 1) + of(v, depth + 1) for k, v in obj.items()])
            return tag + b"%d{" % len(obj) + inner + b"}"
        finally:
            self.in_progress.discard(ident)

    def unordered(self, obj, depth: int, tag: bytes) -> bytes:
        ident = self._enter(obj, depth)
        try:
            of = self.of
            return tag + b"%d{" % len(obj) + b"".join(sorted(of(v, depth + 1) for v in obj)) + b"}"
        finally:
            self.in_progress.discard(ident)

    def _other(self, obj: Any, depth: int) -> bytes:
        if isinstance(obj, type):
            return b"T" + _name(obj)
        if isinstance(obj, enum.Enum):
            return b"E" + _name(type(obj)) + str_token(obj.name)
        if isinstance(obj, pathlib.PurePath):
            return b"P" + _name(type(obj)) + str_token(str(obj))
        if isinstance(obj, types.ModuleType):
            return b"M" + str_token(obj.__name__)
        if callable(obj) and isinstance(obj, _FUNCTION_LIKE):
            return self.function(obj, depth)
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            if isinstance(obj, numpy.ndarray):
                return self.array(obj, depth, numpy)
            if isinstance(obj, numpy.generic):
                return b"g" + str_token(obj.dtype.str) + _bytes_token(obj.tobytes(), b"b")
            if isinstance(obj, numpy.dtype):
                return b"y" + str_token(obj.str) + str_token(str(obj))
        hook = getattr(type(obj), "__dask_tokenize__", None)
        if hook is not None:
            return b"K" + _name(type(obj)) + self.of(hook(obj), depth + 1)
        if isinstance(obj, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
            raise NotHashable(f"it is a {type(obj).__name__}, whose state cannot be read")
        return self.reduced(obj, depth)

    def reduced(self, obj: Any, depth: int) -> bytes:
        """Any other object, through what pickling would save of it."""
        ident = self._enter(obj, depth)
        try:
            try:
                reduced = obj.__reduce_ex__(4)
            except Exception as exc:
                raise NotHashable(
                    f"a {type(obj).__name__} cannot be read ({type(exc).__name__}: {exc})"
                ) from None
            if isinstance(reduced, str):  # a module-level singleton
                return b"G" + _name(obj) + str_token(reduced)
            parts = list(reduced[:5]) + [None] * (5 - len(reduced[:5]))
            rebuild, args, state, items, pairs = parts
            of = self.of
            out = [b"R", _name(type(obj)), self.callable_name(rebuild), of(args, depth + 1)]
            if state is not None:
                out.append(of(state, depth + 1))
            if items is not None:
                out.append(self.sequence(list(items), depth + 1, b"L"))
            if pairs is not None:
                out.append(self.mapping(dict(pairs), depth + 1))
            return b"".join(out)
        finally:
            self.in_progress.discard(ident)

    def callable_name(self, func: Any) -> bytes:
        """How pickling rebuilds an object: ``copyreg.__newobj__``, a class, a function."""
        if isinstance(func, (type, types.BuiltinFunctionType)):
            return b"C" + _name(func)
        return self.of(func)

    def array(self, a, depth: int, numpy) -> bytes:
        if a.dtype.hasobject:
            return (
                b"A"
                + str_token(a.dtype.str)
                + self.sequence(a.ravel().tolist(), depth + 1, b"L")
                + b"%r" % (a.shape,)
            )
        head = b"A" + str_token(a.dtype.str) + b"%r" % (a.shape,)
        data = numpy.ascontiguousarray(a)
        return head + _bytes_token(memoryview(data).cast("B") if data.size else b"", b"b")

    # -- functions ---------------------------------------------------------------
    def function(self, func: Any, depth: int = 0) -> bytes:
        """A callable: cached for the run, by identity."""
        try:
            known = self.functions.get(func)
        except TypeError:  # an unhashable callable object
            known = None
        if known is not None:
            return known
        made = self._function(func, depth)
        with contextlib.suppress(TypeError):  # an unhashable callable object
            self.functions[func] = made
        return made

    def _function(self, func: Any, depth: int) -> bytes:
        if isinstance(func, types.FunctionType):
            return self.python_function(func, depth)
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
                return b"B" + _name(func)
            return b"u" + str_token(func.__name__) + self.of(owner, depth + 1)
        wrapped = getattr(func, "__wrapped__", None)  # functools.wraps, @dp.op's wrapper
        if wrapped is not None and wrapped is not func:
            return b"w" + _name(type(func)) + self.function(wrapped, depth + 1)
        # a callable object: its class's __call__ and its state
        call = inspect.getattr_static(type(func), "__call__", None)
        code = self.function(call, depth + 1) if isinstance(call, types.FunctionType) else b""
        return b"o" + code + self.reduced(func, depth)

    def python_function(self, func: types.FunctionType, depth: int) -> bytes:
        ident = self._enter(func, depth)
        try:
            out = [b"F", _name(func), self.code(func.__code__)]
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
            out.append(self.module_globals(func, depth))
            return b"".join(out)
        finally:
            self.in_progress.discard(ident)

    def module_globals(self, func: types.FunctionType, depth: int) -> bytes:
        """The functions of its own module and the plain constants its code names."""
        module = func.__module__
        glob = func.__globals__
        out = []
        for name in _names(func.__code__):
            value = glob.get(name, _MISSING)
            if value is _MISSING:
                continue
            kind = type(value)
            if kind in _PLAIN:
                out.append(str_token(name) + BY_TYPE[kind](self, value, depth))
            elif (
                kind is types.FunctionType
                and value.__module__ == module
                and id(value) not in self.in_progress
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
        return b"c" + _bytes_token(hashlib.blake2b(body, digest_size=16).digest(), b"b")


def _const(c: Any) -> bytes:
    """A constant of code: nested code by its token, a frozenset (``x in {...}``) in
    an order that does not depend on string hashing."""
    if isinstance(c, types.CodeType):
        return Tokens.code(c)
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


_MISSING = object()
_FUNCTION_LIKE = (
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    types.BuiltinMethodType,
    functools.partial,
)

BY_TYPE: dict[type, Callable] = {
    type(None): lambda t, v, d: b"n",
    bool: lambda t, v, d: b"?1" if v else b"?0",
    int: lambda t, v, d: b"i%d;" % v,
    float: lambda t, v, d: b"f" + struct.pack("!d", v),
    complex: lambda t, v, d: b"j" + struct.pack("!dd", v.real, v.imag),
    str: lambda t, v, d: str_token(v),
    bytes: lambda t, v, d: _bytes_token(v, b"b"),
    bytearray: lambda t, v, d: _bytes_token(v, b"a"),
    memoryview: lambda t, v, d: _bytes_token(v.cast("B") if v.contiguous else v.tobytes(), b"v"),
    tuple: lambda t, v, d: t.sequence(v, d, b"t"),
    list: lambda t, v, d: t.sequence(v, d, b"l"),
    dict: lambda t, v, d: t.mapping(v, d),
    set: lambda t, v, d: t.unordered(v, d, b"S"),
    frozenset: lambda t, v, d: t.unordered(v, d, b"Z"),
    range: lambda t, v, d: b"r%d,%d,%d;" % (v.start, v.stop, v.step),
    slice: lambda t, v, d: b"x" + t.sequence((v.start, v.stop, v.step), d, b"t"),
    types.FunctionType: lambda t, v, d: t.function(v, d),
    decimal.Decimal: lambda t, v, d: b"d" + str_token(str(v)),
    fractions.Fraction: lambda t, v, d: b"q%d/%d;" % (v.numerator, v.denominator),
    datetime.datetime: lambda t, v, d: b"W" + str_token(v.isoformat()),
    datetime.date: lambda t, v, d: b"Y" + str_token(v.isoformat()),
    datetime.time: lambda t, v, d: b"H" + str_token(v.isoformat()),
    datetime.timedelta: lambda t, v, d: b"V%d,%d,%d;" % (v.days, v.seconds, v.microseconds),
    uuid.UUID: lambda t, v, d: b"U" + v.bytes,
}
_PLAIN = frozenset((type(None), bool, int, float, complex, str, bytes))
SCALARS = {kind: handler for kind, handler in BY_TYPE.items() if kind not in CONTAINERS}


def token(obj: Any) -> bytes:
    """The token of one value (raises :class:`NotHashable`)."""
    return Tokens().of(obj)
