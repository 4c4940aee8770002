"""Tokens: a deterministic byte encoding of a Python value, for the keys of a store.

Policy
------
A token is a type-tagged encoding of a value's contents, the same in every process
and on every run for equal values (no ``id()``, no ``hash()`` of strings):
numbers, strings, bytes, containers, numpy arrays and scalars (dtype with its
fields, shape, the bytes, and the array's own type and mask), enums, paths, dates
(with their time zone), modules by name, objects with ``__dask_tokenize__``, and
any other object through what pickling it would save (its class by name and its
state, looked into as deeply as the rest), so that dataclasses, attrs classes and
most user types work. Buffers of 64 KiB or more are folded in by their xxHash3
digest (128 bits), at memory speed.

**Code** is read by content: functions, and the classes and functions they reach,
as :mod:`~dispatcher.store.code` states; other classes, as values, are read by
name. A run reads each function once (:class:`Tokens` keeps them).

What cannot be read deterministically (a lock, an open file, a generator, an
object whose pickling fails, a reference cycle among values, nesting deeper than
:data:`MAX_DEPTH`) raises :class:`NotHashable` saying what it is. Values that are
equal but built differently (two dicts with their keys inserted in another order)
may give different tokens: a miss, never a wrong hit.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import functools
import pathlib
import struct
import sys
import types
import uuid
from collections.abc import Callable
from typing import Any

from ..nodes import CONTAINERS
from .code import CodeTokens, is_local, unordered_items
from .encoding import BIG_BUFFER, MAX_DEPTH, NotHashable, bytes_token, name_token, str_token

__all__ = ["BIG_BUFFER", "BY_TYPE", "MAX_DEPTH", "SCALARS", "NotHashable", "Tokens", "str_token", "token"]


class Tokens(CodeTokens):
    """The tokens of one run: functions and classes are read once per run (their
    closures and module constants may change between runs; see
    :mod:`~dispatcher.store.code`)."""

    __slots__ = ("in_progress",)

    def __init__(self):
        super().__init__()
        self.in_progress: set = set()  # id() of the values being read (cycles among values)

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
            return tag + b"%d{" % len(obj) + unordered_items([of(v, depth + 1) for v in obj]) + b"}"
        finally:
            self.in_progress.discard(ident)

    def _other(self, obj: Any, depth: int) -> bytes:
        if isinstance(obj, type):
            return self.type_token(obj) if self._by_content(obj) else b"T" + name_token(obj)
        if isinstance(obj, enum.Enum):
            return b"E" + name_token(type(obj)) + self.of(obj._value_, depth + 1)
        if isinstance(obj, pathlib.PurePath):
            return b"P" + name_token(type(obj)) + str_token(str(obj))
        if isinstance(obj, types.ModuleType):
            return b"M" + str_token(obj.__name__)
        if callable(obj) and isinstance(obj, _FUNCTION_LIKE):
            return self.function(obj, depth)
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            if isinstance(obj, numpy.ndarray):
                return self.array(obj, depth, numpy)
            if isinstance(obj, numpy.generic):
                if obj.dtype.hasobject:
                    return b"g" + _dtype_token(obj.dtype) + self.of(obj.item(), depth + 1)
                return b"g" + _dtype_token(obj.dtype) + bytes_token(obj.tobytes(), b"b")
            if isinstance(obj, numpy.dtype):
                return b"y" + _dtype_token(obj)
        hook = getattr(type(obj), "__dask_tokenize__", None)
        if hook is not None:
            return b"K" + name_token(type(obj)) + self.of(hook(obj), depth + 1)
        if isinstance(obj, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
            raise NotHashable(f"it is a {type(obj).__name__}, whose state cannot be read")
        if isinstance(obj, (set, frozenset)):  # a subclass: its items in a set order
            state = getattr(obj, "__dict__", None)
            return (
                b"Q"
                + self.type_token(type(obj))
                + self.unordered(obj, depth, b"S")
                + (self.of(state, depth + 1) if state else b"")
            )
        return self.reduced(obj, depth)

    def type_token(self, cls: type) -> bytes:
        """The class of an object among values: its content for a class defined in a
        function (its name is not unique) or in the module of the code being read,
        else its name."""
        return self.function(cls) if self._by_content(cls) else name_token(cls)

    def _by_content(self, cls: type) -> bool:
        return is_local(cls) or (self._module is not None and cls.__module__ == self._module)

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
                return b"G" + name_token(obj) + str_token(reduced)
            parts = list(reduced[:5]) + [None] * (5 - len(reduced[:5]))
            rebuild, args, state, items, pairs = parts
            of = self.of
            out = [b"R", self.type_token(type(obj)), self.rebuild_token(rebuild), of(args, depth + 1)]
            if state is not None:
                out.append(of(state, depth + 1))
            if items is not None:
                out.append(self.sequence(list(items), depth + 1, b"L"))
            if pairs is not None:
                out.append(self.mapping(dict(pairs), depth + 1))
            return b"".join(out)
        finally:
            self.in_progress.discard(ident)

    def rebuild_token(self, func: Any) -> bytes:
        """How pickling rebuilds an object: ``copyreg.__newobj__``, a class, a function."""
        if isinstance(func, type):
            return b"C" + self.type_token(func)
        if isinstance(func, types.BuiltinFunctionType):
            return b"C" + name_token(func)
        return self.of(func)

    def array(self, a, depth: int, numpy) -> bytes:
        kind = type(a)
        if kind is not numpy.ndarray:
            return self._array_subclass(a, depth, numpy)
        if a.dtype.hasobject:
            return (
                b"A"
                + _dtype_token(a.dtype)
                + self.sequence(a.ravel().tolist(), depth + 1, b"L")
                + b"%r" % (a.shape,)
            )
        head = b"A" + _dtype_token(a.dtype) + b"%r" % (a.shape,)
        data = numpy.ascontiguousarray(a)
        return head + bytes_token(memoryview(data).cast("B") if data.size else b"", b"b")

    def _array_subclass(self, a, depth: int, numpy) -> bytes:
        """A masked array by its data, mask and fill value; a memory-mapped array as
        the array it maps; any other subclass (a matrix) by its type, its data and
        its attributes."""
        base = a.view(numpy.ndarray)
        if isinstance(a, numpy.ma.MaskedArray):
            return (
                b"AM"
                + self.type_token(type(a))
                + self.array(base, depth, numpy)
                + self.array(numpy.ma.getmaskarray(a), depth, numpy)
                + self.of(a.fill_value, depth + 1)
            )
        if isinstance(a, numpy.memmap):
            return b"Am" + self.array(base, depth, numpy)
        state = getattr(a, "__dict__", None)
        return (
            b"AS"
            + self.type_token(type(a))
            + self.array(base, depth, numpy)
            + (self.of(state, depth + 1) if state else b"")
        )

    # -- code: functions and classes -----------------------------------------------


def _dtype_token(dtype) -> bytes:
    """A numpy dtype: its code, and for structured and sub-array dtypes their fields."""
    token = str_token(dtype.str)
    if dtype.kind == "V" or dtype.metadata:
        token += str_token(repr(dtype))
    return token


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
    bytes: lambda t, v, d: bytes_token(v, b"b"),
    bytearray: lambda t, v, d: bytes_token(v, b"a"),
    memoryview: lambda t, v, d: (
        b"v"
        + str_token(v.format)
        + b"%r" % (v.shape,)
        + bytes_token(v.cast("B") if v.c_contiguous else v.tobytes(), b"b")
    ),
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
    datetime.datetime: lambda t, v, d: b"W%d" % v.fold + str_token(v.isoformat()) + t.of(v.tzinfo, d + 1),
    datetime.date: lambda t, v, d: b"Y" + str_token(v.isoformat()),
    datetime.time: lambda t, v, d: b"H%d" % v.fold + str_token(v.isoformat()) + t.of(v.tzinfo, d + 1),
    datetime.timedelta: lambda t, v, d: b"V%d,%d,%d;" % (v.days, v.seconds, v.microseconds),
    uuid.UUID: lambda t, v, d: b"U" + v.bytes,
}
SCALARS = {kind: handler for kind, handler in BY_TYPE.items() if kind not in CONTAINERS}


def token(obj: Any) -> bytes:
    """The token of one value (raises :class:`NotHashable`)."""
    return Tokens().of(obj)
