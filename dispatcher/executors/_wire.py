"""The wire format both ends of a worker connection speak: the pool
(:mod:`dispatcher.executors._pool`) and its workers
(:mod:`dispatcher.executors._procworker`, which loads this file by its path, not
through the package). It imports nothing of the ``dispatcher`` package.

Each message is one cloudpickle stream (protocol 5) plus the out-of-band buffers
of the large contiguous arrays in it, framed as::

    !Q payload length, !I number of buffers,
    !Q length of each buffer, !B how each buffer travels,
    payload bytes, then the bytes of each buffer that travels in the stream

A buffer of 1 MiB or more travels, where the system allows (Linux), as an
anonymous shared-memory file: the sender writes the array's memory into a fresh
``memfd`` once and passes the descriptor along with the header (``SCM_RIGHTS``);
the receiver maps it, and that mapping becomes the new array's memory. Smaller
buffers are written to the socket straight from the array's memory and read
straight into a fresh ``bytearray``. Either way there is at most one copy per
transfer and no pickling of the data.

A value made on one worker and read on others is copied once in all: the pool
(:func:`recv` with ``keep=True``) maps such a file shared and keeps it open, as a
:class:`SharedBuffer`; sending that buffer on (the value as another node's
argument) passes the same file again (:func:`kept_file`), which costs neither a
copy nor touching the memory, so the pool's memory does not grow with values it
only relays. A worker maps what it receives copy-on-write: what a node writes into
its argument never reaches the pool's file, nor other workers. The pool's
mapping is the file itself, so what the program writes into a value the pool holds
(a run's output, given to a later run) is what a later node receives. A message
whose buffers this process cannot take (out of memory or descriptors) is read to
its end and raises :class:`Unreceivable`, so the connection stays in step.

A worker's value of :data:`HELD_MIN` bytes or more travels as a :class:`Held`: the
value pickled where it was made, which the pool keeps unread and sends on to the
workers that need it, by key to those that have it already (the pool's side is
:mod:`dispatcher.executors._held`; the worker's cache is :data:`_cache`). Calls
on one worker share what it keeps, as calls in one process do.
"""

from __future__ import annotations

import collections
import io
import mmap
import os
import pickle
import queue
import socket
import struct
import sys
import threading
import types
import typing
import weakref

import cloudpickle

_HEADER = struct.Struct("!QI")
OUT_OF_BAND_MIN = 1 << 16  # smaller buffers stay in the pickle stream
SHARED_MIN = 1 << 20  # buffers this large travel as shared-memory files
_MAX_FDS = 200  # descriptors per message
_SHARED = hasattr(os, "memfd_create") and hasattr(socket, "send_fds")
_ANCILLARY = socket.CMSG_SPACE(_MAX_FDS * 4) if _SHARED else 0
_COPY_ON_WRITE = mmap.MAP_PRIVATE | getattr(mmap, "MAP_NORESERVE", 0)  # no memory set aside for copies
KEPT_FILES_MAX = 256  # shared-memory files the pool keeps open at once, at most an eighth of
# the descriptors it may open (a kept file holds two: its mapping's and the one sent on)


_reduce_code_by_value = cloudpickle.Pickler.dispatch_table[types.CodeType]
_FILENAME = 10  # where a code object's file name sits among the arguments that rebuild it


def _reduce_code(code: types.CodeType):
    """cloudpickle's reduction of code sent by value, keeping its file name: a
    traceback from the other side then names the real file and line, and shows
    the source line when the file is there too (cloudpickle writes
    ``<dynamic-code>`` instead, to make its bytes independent of the file)."""
    rebuild, args = _reduce_code_by_value(code)
    if len(args) > _FILENAME and args[_FILENAME] == "<dynamic-code>":
        args = (*args[:_FILENAME], code.co_filename, *args[_FILENAME + 1 :])
    return rebuild, args


class Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, with code sent by value keeping its file name."""

    dispatch_table: typing.ClassVar = collections.ChainMap(
        {types.CodeType: _reduce_code}, cloudpickle.Pickler.dispatch_table
    )


def pickle_dumps(obj, buffer_callback=None) -> bytes:
    """``obj`` as :class:`Pickler` bytes (protocol 5)."""
    out = io.BytesIO()
    Pickler(out, protocol=5, buffer_callback=buffer_callback).dump(obj)
    return out.getvalue()


def dumps(obj) -> tuple[bytes, list]:
    """``obj`` as a :class:`Pickler` payload and its large out-of-band buffers."""
    buffers: list = []

    def out_of_band(buf):  # a false answer keeps the buffer out of band
        raw = buf.raw()
        if raw.nbytes < OUT_OF_BAND_MIN:
            return True
        buffers.append(raw)
        return False

    return pickle_dumps(obj, out_of_band), buffers


def _shared_file(buf) -> int:
    fd = os.memfd_create("dispatcher-buffer", os.MFD_CLOEXEC)
    try:
        view = memoryview(buf).cast("B")
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:])
    except BaseException:
        os.close(fd)
        raise
    return fd


class SharedBuffer(mmap.mmap):
    """A buffer received as a shared-memory file, mapped shared with it; ``fd``
    keeps the file open (closed when the mapping is collected), so that sending
    the buffer on passes the file itself."""

    __slots__ = ("fd",)


_kept_lock = threading.Lock()
_kept = 0  # the files SharedBuffers keep open


def _new_lock_in_child() -> None:
    global _kept_lock, _loading
    _kept_lock = threading.Lock()  # (a fork while another thread held it)
    _loading = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def _close_kept(fd: int) -> None:
    global _kept
    os.close(fd)
    with _kept_lock:
        _kept -= 1


def _room() -> int:
    """How many files the pool may keep open (:data:`KEPT_FILES_MAX`)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return KEPT_FILES_MAX
    except (ImportError, OSError, ValueError):
        soft = 1024
    return min(KEPT_FILES_MAX, soft // 8)


def _map(fd: int, size: int, keep: bool) -> mmap.mmap:
    """The received file ``fd``: copy-on-write (without reserving memory for the
    copies, where the system allows; read-only where it refuses a private
    mapping), or (``keep``) shared and kept open while there is room (:func:`_room`)."""
    global _kept
    if not keep:
        try:
            return mmap.mmap(fd, size, flags=_COPY_ON_WRITE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:  # strict overcommit charges a private mapping in full: read it in place
            return mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    buf = SharedBuffer(fd, size)
    buf.fd = None
    with _kept_lock:
        if _kept >= _room():
            return buf
        _kept += 1
    try:
        buf.fd = os.dup(fd)
    except OSError:  # out of descriptors: this one is copied when sent on
        with _kept_lock:
            _kept -= 1
        return buf
    # closed with the mapping, never at exit, when the pool may still be sending it
    weakref.finalize(buf, _close_kept, buf.fd).atexit = False
    return buf


def kept_file(buf: memoryview) -> int | None:
    """The descriptor of the file whose whole mapping ``buf`` is (a buffer of an
    array made over a :class:`SharedBuffer`, through its chain of bases), or None."""
    obj = buf.obj
    try:
        for _ in range(8):
            if isinstance(obj, SharedBuffer):
                return obj.fd if obj.fd is not None and len(obj) == buf.nbytes else None
            obj = obj.obj if isinstance(obj, memoryview) else getattr(obj, "base", None)
            if obj is None:
                return None
    except Exception:  # an exporter whose ``base`` cannot be read
        return None
    return None


def send_payload(sock: socket.socket, payload: bytes, buffers: list, counts=None) -> None:
    """Send what :func:`dumps` made as one message; ``counts`` (a Counter), if
    given, adds the bytes copied to the other process (``bytes_copied``: the
    message, and the buffers sent in it or written to new files) and those passed on
    in files kept from an earlier message, without a copy (``bytes_shared``)."""
    head = _HEADER.pack(len(payload), len(buffers))
    if not buffers:
        sock.sendall(head + payload)
        if counts is not None:
            counts["bytes_copied"] += len(head) + len(payload)
        return
    fds: list[int] = []
    made: list[int] = []  # the files made for this message, closed once it is sent
    shared_bytes = 0
    can_share = _SHARED and sock.family == socket.AF_UNIX
    try:
        kinds = []
        for buf in buffers:
            shared = can_share and buf.nbytes >= SHARED_MIN and len(fds) < _MAX_FDS
            if shared:
                fd = kept_file(buf)
                if fd is None:
                    fd = _shared_file(buf)
                    made.append(fd)
                else:
                    shared_bytes += buf.nbytes
                fds.append(fd)
            kinds.append(shared)
        n = len(buffers)
        head += struct.pack(f"!{n}Q{n}B", *(b.nbytes for b in buffers), *kinds)
        if fds:
            sent = socket.send_fds(sock, [head], fds)
            if sent < len(head):
                sock.sendall(head[sent:])
        else:
            sock.sendall(head)
        sock.sendall(payload)
        for buf, shared in zip(buffers, kinds):
            if not shared:
                sock.sendall(buf)
    finally:
        for fd in made:  # the message holds its own references to the files
            os.close(fd)
    if counts is not None:
        counts["bytes_copied"] += len(head) + len(payload) + sum(b.nbytes for b in buffers) - shared_bytes
        counts["bytes_shared"] += shared_bytes


def send(sock: socket.socket, obj) -> None:
    send_payload(sock, *dumps(obj))


def recv_exact(sock: socket.socket, size: int) -> bytearray:
    """Exactly ``size`` bytes from ``sock`` (``EOFError`` if it closes first)."""
    buf = bytearray(size)
    _recv_into(sock, buf)
    return buf


def _recv_into(sock: socket.socket, buf: bytearray) -> None:
    view = memoryview(buf)
    size = len(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got, socket.MSG_WAITALL)
        if n == 0:
            raise EOFError("the other end closed the connection")
        got += n


def _recv_header(sock: socket.socket) -> tuple[bytes, list[int]]:
    if not _SHARED:
        return bytes(recv_exact(sock, _HEADER.size)), []
    head, ancillary, _, _ = sock.recvmsg(_HEADER.size, _ANCILLARY, socket.MSG_WAITALL)
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(data) // 4}i", data[: len(data) - len(data) % 4]))
    try:
        if not head:
            raise EOFError("the other end closed the connection")
        if len(head) < _HEADER.size:
            head += recv_exact(sock, _HEADER.size - len(head))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return head, fds


class Unreceivable(Exception):
    """A message was read to its end, but this process could not take its buffers
    (out of memory or of descriptors): the cause is ``__cause__``."""


def _discard(sock: socket.socket, size: int) -> None:
    while size:
        size -= len(recv_exact(sock, min(size, 1 << 20)))


def recv(sock: socket.socket, keep: bool = False, counts=None):
    """The next message; ``EOFError`` when the other end has gone. Buffers that
    arrive as files are mapped copy-on-write, or (``keep``: the pool) shared and
    kept to be sent on without a copy. A buffer this process cannot take raises
    :class:`Unreceivable` once the rest of the message is read, so the next
    message is read from its start. ``counts`` (a Counter), if given, adds the
    bytes the sender copied to make the message (``bytes_copied``: its buffers
    written to files too)."""
    head, fds = _recv_header(sock)
    try:
        size, nbuf = _HEADER.unpack(head)
        if nbuf:
            table = struct.unpack(f"!{nbuf}Q{nbuf}B", recv_exact(sock, 9 * nbuf))
            sizes, kinds = table[:nbuf], table[nbuf:]
        else:
            sizes = kinds = ()
        payload = recv_exact(sock, size)
        buffers = []
        shared = iter(fds)
        failed = None
        for n, kind in zip(sizes, kinds):
            if failed is not None:
                if not kind:
                    _discard(sock, n)
                continue
            try:
                buffers.append(_map(next(shared), n, keep) if kind else bytearray(n))
            except (OSError, MemoryError) as exc:
                failed = exc
                if not kind:
                    _discard(sock, n)
                continue
            if not kind:
                _recv_into(sock, buffers[-1])
    finally:
        for fd in fds:  # a mapping outlives its descriptor
            os.close(fd)
    if counts is not None:
        counts["bytes_copied"] += len(head) + 9 * nbuf + size + sum(sizes)
    if failed is not None:
        raise Unreceivable(f"{type(failed).__name__}: {failed}") from failed
    return pickle.loads(payload, buffers=buffers)


# -- values a worker made that the pool has no use for ------------------------------------

WIRE_MODULE = "_dispatcher_wire"
"""The name both ends know this module by: a worker loads it by its path under this
name, and the pool's process knows it by it too, so that what one end pickles by
reference (:class:`Held`, :func:`_loaded`, :func:`_cached`) the other finds."""

AS_IS = (type(None), bool, int, float, complex)
"""The types of the values a worker always sends as themselves, never held."""
HELD_MIN = 1 << 10
"""Bytes from which a worker's value is held: a smaller one costs less to send as
itself than to keep track of."""

IN_WORKER = False  # set by the worker script: Held pickles there as itself (to its pool)
_UNREAD = object()
_loading = threading.Lock()  # (the pool's) held values are read one at a time
_sending = threading.local()  # .to: the pool's choice for the worker a message goes to
_cache: dict = {}  # (in a worker) key -> (a held value it was sent to keep, the buffers it came in)


class Held:
    """A value a worker made, as that worker pickled it (``payload`` and its
    out-of-band ``buffers``). The pool keeps it so, never unpickled, and sends it on
    to the workers whose calls take it: pickled in a worker it travels as itself;
    pickled in the pool it arrives as the value, or (where the pool's
    :mod:`~dispatcher.executors._held` says the worker has it already) as the key
    of the worker's copy. :meth:`load` unpickles it here."""

    __slots__ = ("__weakref__", "buffers", "holders", "key", "payload", "value")

    def __init__(self, payload: bytes, *buffers):
        self.payload = payload
        self.buffers = buffers
        self.key: int | None = None  # (the pool's) its name in the workers' caches
        self.holders: list | None = None  # (the pool's) the workers that keep it
        self.value = _UNREAD  # (the pool's) the value, once read here

    @classmethod
    def of(cls, value):
        """``value`` pickled (its buffers out of band: not copied, they are the
        value's), held if it takes :data:`HELD_MIN` bytes or more, else ``value``."""
        buffers: list = []
        try:  # the C pickler, where it will do (cloudpickle's takes longer to make)
            payload = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        except Exception:
            buffers = []
            payload = pickle_dumps(value, buffers.append)
        if len(payload) + sum(b.raw().nbytes for b in buffers) < HELD_MIN:
            return value
        return cls(payload, *buffers)

    def load(self):
        """The value, unpickled here the first time (then kept: the workers still
        get the bytes); one thread unpickles it, the others wait for it."""
        if self.value is _UNREAD:
            with _loading:
                if self.value is _UNREAD:
                    self.value = pickle.loads(self.payload, buffers=self.buffers)
        return self.value

    def __reduce__(self):
        buffers = [pickle.PickleBuffer(b) for b in self.buffers]
        choose = getattr(_sending, "to", None)
        if choose is not None:  # a pool's message to one of its workers
            return choose(self, buffers)
        if IN_WORKER:  # a worker's report to its pool: as itself
            return (Held, (self.payload, *buffers))
        return whole(self, buffers)


def whole(held: Held, buffers: list) -> tuple:
    """How a held value goes where it is not to be kept: as the value."""
    return (_loaded, (None, held.payload, *buffers))


def _loaded(key: int | None, payload: bytes, *buffers):
    """(In a worker) a held value that arrives: unpickled, and kept under ``key``."""
    value = pickle.loads(payload, buffers=buffers)
    if key is not None:
        _cache[key] = (value, buffers)
    return value


def _cached(key: int):
    """(In a worker) a held value it was sent before."""
    return _cache[key][0]


def forget(keys) -> None:
    """(In a worker) drop the held values the pool no longer needs, here (their
    finalizers run in this thread), and the files their large arrays were mapped
    from in a thread of its own: the last mapping of a file to go frees its memory,
    some 0.2 ms a megabyte, and the next call need not wait for it."""
    global _dropper
    files = []
    for key in keys:
        entry = _cache.pop(key, None)
        if entry is not None:
            files.extend(b for b in entry[1] if isinstance(b, mmap.mmap))
            del entry
    if files:
        if _dropper is None:
            _dropper = queue.SimpleQueue()
            threading.Thread(target=_drop, args=(_dropper,), name="dispatcher-forget", daemon=True).start()
        _dropper.put(files)


def _drop(files: queue.SimpleQueue) -> None:
    while True:
        files.get()  # (and unmapped here: no code of the user's runs)


_dropper: queue.SimpleQueue | None = None  # (in a worker) the files its thread unmaps


def _no_dropper_in_child() -> None:
    global _dropper
    _dropper = None  # (the thread is not forked)


os.register_at_fork(after_in_child=_no_dropper_in_child)


if __name__ != WIRE_MODULE:  # the pool's process: known by the worker's name too
    sys.modules.setdefault(WIRE_MODULE, sys.modules[__name__])
    for _shared in (Held, _loaded, _cached):
        _shared.__module__ = WIRE_MODULE
