"""The bytes of one stored value: what a store entry holds, and how it is checked.

Format (one file, or one object of another store)::

    b"DPSTORE2"                       magic
    !d   when it was written (seconds since the epoch)
    !Q   checksum: xxHash3-64 of the payload and the buffers, in order
    !Q   length of the payload
    !H   number of out-of-band buffers, then !Q the length of each
    !H   length of the name of the function that made it, then that name (UTF-8)
    padding to a multiple of 64 bytes
    payload: the value as cloudpickle protocol 5, large buffers out of band
    each out-of-band buffer, each starting at a multiple of 64 bytes

The value is pickled as the worker wire pickles it (:func:`~dispatcher.executors.
_wire.dumps`): buffers of 64 KiB or more (numpy arrays, bytes, anything with
pickle protocol 5 buffers) stay out of the pickle stream, so that they are written
straight from the value's memory and, on load, mapped from the file rather than
copied (copy-on-write: the arrays are writable, the file never changes). Entries of
:data:`MAP_MIN` bytes or more are mapped; smaller ones are read at once.

Every load checks the length and the checksum, so a truncated or corrupt entry
raises :class:`CorruptEntry` and is never mistaken for a value; a sound entry whose
value cannot be unpickled in this process raises :class:`UnreadableValue`.
"""

from __future__ import annotations

import functools
import mmap
import os
import pickle
import struct
import time
from typing import Any

import xxhash
from xxhash import xxh3_64_intdigest

__all__ = [
    "MAGIC",
    "MAP_MIN",
    "CorruptEntry",
    "EntryHeader",
    "UnreadableValue",
    "decode",
    "encode",
    "read_file",
    "read_header",
]

MAGIC = b"DPSTORE2"
MAP_MIN = 1 << 20
_ALIGN = 64
_FIXED = struct.Struct("!dQQH")
_COUNT = struct.Struct("!H")
_SIMPLE = frozenset((type(None), bool, int, float, complex, str, bytes))  # pickled as they are


class CorruptEntry(Exception):
    """An entry that cannot be read back as it was written (truncated, altered, or
    holding a value this process cannot unpickle); the message says which."""


class UnreadableValue(CorruptEntry):
    """An entry read back whole (its length and checksum match) whose value this
    process cannot unpickle: a module or class missing here, too little memory.
    The entry is sound for processes that can read it, so it is not removed; a run
    that meets it computes the value again and writes it over."""


class EntryHeader(dict):
    """The header of an entry: ``function``, ``created``, ``payload`` (its length),
    ``buffers`` (their lengths), ``checksum``."""

    @property
    def nbytes(self) -> int:
        return self["payload"] + sum(self["buffers"])


def _pad(n: int) -> int:
    return -n % _ALIGN


@functools.lru_cache(maxsize=1024)
def _name_field(function: str) -> bytes:
    """The function's name as an entry's header ends it (its length, then UTF-8)."""
    name = function.encode("utf-8", "replace")[:65535]
    return _COUNT.pack(len(name)) + name


def encode(value: Any, function: str) -> list:
    """The chunks (bytes and buffers) of an entry holding ``value``; raises what
    pickling raises."""
    if type(value) in _SIMPLE:  # no buffer to keep out of band: one chunk
        payload = pickle.dumps(value, protocol=5)
        head = (
            MAGIC
            + _FIXED.pack(time.time(), xxh3_64_intdigest(payload), len(payload), 0)
            + _name_field(function)
        )
        return [head + b"\0" * _pad(len(head)) + payload]
    payload, buffers = _wire_dumps()(value)
    digest = xxhash.xxh3_64(payload)
    for buf in buffers:
        digest.update(buf)
    head = b"".join(
        [
            MAGIC,
            _FIXED.pack(time.time(), digest.intdigest(), len(payload), len(buffers)),
            *[struct.pack("!Q", buf.nbytes) for buf in buffers],
            _name_field(function),
        ]
    )
    chunks: list = [head + b"\0" * _pad(len(head)) + payload]
    offset = len(chunks[0])
    for buf in buffers:
        chunks.append(b"\0" * _pad(offset))
        offset += _pad(offset)
        chunks.append(buf)
        offset += buf.nbytes
    return chunks


@functools.cache
def _wire_dumps():
    """The wire's pickler (:func:`~dispatcher.executors._wire.dumps`), imported
    on first use: the executors package imports the engine, which imports the store."""
    from ..executors._wire import dumps

    return dumps


def read_header(data) -> tuple[EntryHeader, int]:
    """The header of an entry (its first bytes will do) and where its payload starts."""
    data = memoryview(data)
    if bytes(data[: len(MAGIC)]) != MAGIC:
        raise CorruptEntry("it does not start as an entry does")
    try:
        at = len(MAGIC)
        created, checksum, payload, count = _FIXED.unpack_from(data, at)
        at += _FIXED.size
        buffers = list(struct.unpack_from(f"!{count}Q", data, at))
        at += 8 * count
        (length,) = _COUNT.unpack_from(data, at)
        at += _COUNT.size
        if at + length > len(data):
            raise CorruptEntry("it is truncated")
        function = bytes(data[at : at + length]).decode("utf-8", "replace")
    except struct.error:
        raise CorruptEntry("it is truncated") from None
    at += length
    header = EntryHeader(
        function=function, created=created, payload=payload, buffers=buffers, checksum=checksum
    )
    return header, at + _pad(at)


def decode(data) -> Any:
    """The value of the entry whose bytes are ``data`` (bytes, or a writable buffer
    for writable arrays: a mapped file, a bytearray); raises :class:`CorruptEntry`."""
    data = memoryview(data)
    size = data.nbytes
    header, offset = read_header(data)
    payload = data[offset : offset + header["payload"]]
    offset += header["payload"]
    buffers = []
    for length in header["buffers"]:
        offset += _pad(offset)
        buffers.append(data[offset : offset + length])
        offset += length
    if offset != size or len(payload) != header["payload"]:
        raise CorruptEntry(f"it holds {size} bytes where its header says {offset}")
    digest = xxhash.xxh3_64(payload)
    for buf in buffers:
        digest.update(buf)
    if digest.intdigest() != header["checksum"]:
        raise CorruptEntry("its checksum does not match its contents")
    try:
        return pickle.loads(payload, buffers=buffers)
    except Exception as exc:
        raise UnreadableValue(f"its value cannot be unpickled here: {type(exc).__name__}: {exc}") from exc


def read_file(fd: int, size: int):
    """The bytes of the entry open as ``fd``: mapped copy-on-write from
    :data:`MAP_MIN` bytes, read at once below."""
    if size >= MAP_MIN:
        return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    data = bytearray(size)
    view, got = memoryview(data), 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise CorruptEntry("it is truncated")
        got += n
    return data
