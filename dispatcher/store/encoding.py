"""The primitives of tokens: the encodings every token is made of, and its error.

A token (:mod:`~dispatcher.store.tokens`) is a concatenation of type-tagged parts;
this module writes the parts that need no further reading: strings, byte buffers
(by content, or by their xxHash3 digest from :data:`BIG_BUFFER` bytes), the name
of a module-level object, and tells which values are plain constants.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BIG_BUFFER",
    "MAX_DEPTH",
    "PLAIN",
    "NotHashable",
    "bytes_token",
    "is_plain",
    "name_token",
    "str_token",
]

MAX_DEPTH = 60
BIG_BUFFER = 1 << 16  # bytes from which a buffer is folded in by its xxHash3 digest


class NotHashable(Exception):
    """A value cannot be hashed deterministically; the message says which."""


def _xxh3(buffer) -> bytes:
    import xxhash

    return xxhash.xxh3_128_digest(buffer)


def bytes_token(data: bytes | bytearray | memoryview, tag: bytes) -> bytes:
    n = len(data) if type(data) is not memoryview else data.nbytes
    if n >= BIG_BUFFER:
        return b"%s%d#%s" % (tag, n, _xxh3(data))
    return b"%s%d:%s" % (tag, n, bytes(data))


def str_token(s: str) -> bytes:
    data = s.encode("utf-8", "surrogatepass")
    return b"s%d:%s" % (len(data), data)


def name_token(obj: Any) -> bytes:
    """A module-level object by its module and qualified name."""
    module = getattr(obj, "__module__", None) or ""
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__
    return str_token(f"{module}:{qualname}")


PLAIN = frozenset((type(None), bool, int, float, complex, str, bytes))
_PLAIN_ITEMS = 10_000  # a longer tuple or frozenset is not a plain constant


def is_plain(value: Any) -> bool:
    """A constant read by value wherever code names it: a number, a string, bytes,
    None, or a tuple or frozenset of such."""
    kind = type(value)
    if kind in PLAIN:
        return True
    if kind is tuple or kind is frozenset:
        return len(value) <= _PLAIN_ITEMS and all(is_plain(v) for v in value)
    return False
