"""The worker process of :class:`~dispatcher.ProcessExecutor`, and the wire format
both ends speak.

A worker is started as ``python _procworker.py SOCKET_FD ALIVE_FD`` (a worker
process, given one end of a socket pair) or ``python _procworker.py --connect
ADDRESSES`` (an MPI rank, which connects back to the pool and proves itself with
the pool's token: see :func:`_connect`). This file runs as a script and imports
nothing of the ``dispatcher`` package, so a worker is ready
in a few tens of milliseconds and never imports the user's ``__main__`` module
(functions from ``__main__`` arrive by value, through cloudpickle). The parent
imports the same file as a module for :func:`send` and :func:`recv`.

Wire format: each message is one cloudpickle stream (protocol 5) plus the
out-of-band buffers of the large contiguous arrays in it, framed as::

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
only relays. A worker maps what it receives copy-on-write: a node that writes into
its argument changes its own pages, never the value other nodes read. The pool's
mapping is the file itself, so what the program writes into a value the pool holds
(a run's output, given to a later run) is what a later node receives.

Conversation: the parent sends ``("init", sys_path, initializer_bytes)``; the worker
answers ``("ready", pid)`` or ``("init-failed", description)``. Then each message
from the parent is a batch, ``(calls, timed)`` with ``calls`` a list of ``(func,
args, kwargs)``; for a ``timed`` batch (a node with a timeout) the worker first
answers ``("started",)``, from which the parent counts the timeout, so that
neither the unpickling nor the imports it brings count. It runs the calls in order
and answers ``("done", outcomes, spans)`` with one
``(ok, value)`` per call, where a failure's value is ``(exception, traceback)``,
or ``(type name, message, traceback)`` when the exception itself cannot be
pickled, and ``spans`` when each call began and ended (``(start, end)``, wall clock). A batch that cannot be
unpickled is answered ``("unreadable", description)``. End of file on the socket
means stop.

The pool decides when its workers end. A worker ignores SIGINT (the parent
decides what Ctrl-C stops); a worker of this machine's pool also lets SIGTERM
pass, which Slurm's ``scancel`` or time limit sends to every process of a job:
the driver gets it too and stops its run, then its workers. (SIGTERM gets a
handler that does nothing rather than ``SIG_IGN``, which the programs a node
starts would inherit.) A worker exits as soon as its parent does: a watchdog
thread waits on a pipe whose only write end the parent holds (or, for a worker
that connected, on its connection closing). A process a node forks closes its
copy of the connection, so that a worker that dies is noticed at once even while
such a process lives on.
"""

from __future__ import annotations

import os
import sys

if (
    __name__ == "__main__"
    and sys.path
    and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__))
):
    del sys.path[0]  # never let this directory's files shadow the user's modules

import collections
import io
import mmap
import pickle
import socket
import struct
import threading
import time
import traceback
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
KEPT_FILES_MAX = 256  # shared-memory files the pool keeps open at once (each one descriptor)


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


def _close_kept(fd: int) -> None:
    global _kept
    os.close(fd)
    with _kept_lock:
        _kept -= 1


def _map(fd: int, size: int, keep: bool) -> mmap.mmap:
    """The received file ``fd``: copy-on-write, or (``keep``) shared and kept open
    while there is room (:data:`KEPT_FILES_MAX`)."""
    global _kept
    if not keep:
        return mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
    buf = SharedBuffer(fd, size)
    buf.fd = None
    with _kept_lock:
        if _kept >= KEPT_FILES_MAX:
            return buf
        _kept += 1
    try:
        buf.fd = os.dup(fd)
    except OSError:  # out of descriptors: this one is copied when sent on
        with _kept_lock:
            _kept -= 1
        return buf
    weakref.finalize(buf, _close_kept, buf.fd)
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


def send_payload(sock: socket.socket, payload: bytes, buffers: list) -> None:
    """Send what :func:`dumps` made as one message."""
    head = _HEADER.pack(len(payload), len(buffers))
    if not buffers:
        sock.sendall(head + payload)
        return
    fds: list[int] = []
    made: list[int] = []  # the files made for this message, closed once it is sent
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


def send(sock: socket.socket, obj) -> None:
    send_payload(sock, *dumps(obj))


def recv_exact(sock: socket.socket, size: int) -> bytearray:
    """Exactly ``size`` bytes from ``sock`` (``EOFError`` if it closes first)."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got, socket.MSG_WAITALL)
        if n == 0:
            raise EOFError("the other end closed the connection")
        got += n
    return buf


def _recv_header(sock: socket.socket) -> tuple[bytes, list[int]]:
    if not _SHARED:
        return bytes(recv_exact(sock, _HEADER.size)), []
    head, ancillary, _, _ = sock.recvmsg(_HEADER.size, _ANCILLARY, socket.MSG_WAITALL)
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(data) // 4}i", data[: len(data) - len(data) % 4]))
    if not head:
        raise EOFError("the other end closed the connection")
    if len(head) < _HEADER.size:
        head += recv_exact(sock, _HEADER.size - len(head))
    return head, fds


def recv(sock: socket.socket, keep: bool = False):
    """The next message; ``EOFError`` when the other end has gone. Buffers that
    arrive as files are mapped copy-on-write, or (``keep``: the pool) shared and
    kept to be sent on without a copy."""
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
        for n, kind in zip(sizes, kinds):
            buffers.append(_map(next(shared), n, keep) if kind else recv_exact(sock, n))
    finally:
        for fd in fds:  # a mapping outlives its descriptor
            os.close(fd)
    return pickle.loads(payload, buffers=buffers)


# -- the worker --------------------------------------------------------------------


def describe(exc: BaseException) -> str:
    """``exc`` with its traceback, as text."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def failure(exc: BaseException) -> tuple:
    """The outcome of a call that raised ``exc``: ``(False, (exc, traceback))``, or,
    when ``exc`` cannot be pickled and rebuilt, ``(False, (type name, message,
    traceback))``, which the driver turns into a ``RemoteError``."""
    tb = describe(exc)
    try:
        pickle.loads(pickle_dumps(exc))
    except Exception:  # an exception that cannot travel goes as its name and text
        return (False, (f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc), tb))
    return (False, (exc, tb))


def checked_outcomes(outcomes: list, dumps) -> list:
    """``outcomes`` with each value that ``dumps`` cannot pickle replaced by a
    failure that says so."""
    checked = []
    for ok, value in outcomes:
        try:
            dumps(value)
        except Exception as exc:
            kind = "result" if ok else "exception"
            err = pickle.PicklingError(
                f"the {kind} ({type(value).__qualname__} object) cannot be pickled to send it back "
                f"from the worker process: {type(exc).__name__}: {exc}"
            )
            checked.append((False, (err, describe(exc))))
        else:
            checked.append((ok, value))
    return checked


def _outcome_message(outcomes: list, spans: list) -> tuple[bytes, list]:
    try:
        return dumps(("done", outcomes, spans))
    except Exception:
        return dumps(("done", checked_outcomes(outcomes, dumps), spans))


def run_calls(batch: list) -> tuple[list, list]:
    """Run each ``(func, args, kwargs)`` of ``batch`` in order: one ``(ok, value)``
    per call (a failure's value as :func:`_failure` makes it), and when each began
    and ended, ``(start, end)`` on the wall clock (which the driver reads on its
    own clock: :func:`dispatcher.attempts.wall_offset`)."""
    clock = time.time
    outcomes = []
    spans = []
    for func, args, kwargs in batch:
        start = clock()
        try:
            value = func(*args, **kwargs) if kwargs else func(*args)
            if type(value) is types.CoroutineType:  # an async def node: run it to its end here
                import asyncio

                value = asyncio.run(value)
        except BaseException as exc:  # SystemExit too: it fails the node, not the worker
            outcomes.append(failure(exc))
        else:
            outcomes.append((True, value))
        spans.append((start, clock()))
    return outcomes, spans


def _watch_parent(fd: int) -> None:
    try:
        while os.read(fd, 1):
            pass
    finally:
        os._exit(0)  # the parent has gone: so does this worker, even mid-node


def _watch_connection(sock: socket.socket) -> None:
    """A worker connected over the network has no pipe from its parent: it exits
    as soon as the pool's end of its connection closes, even mid-node."""
    import select

    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    while True:
        for _, events in poller.poll():
            if events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
                os._exit(0)


def _connect(addresses: str) -> tuple[socket.socket, int | None]:
    """Connect back to the pool at the first of ``addresses`` (``unix:PATH``, or
    ``unix:@NAME`` in the abstract namespace, on the pool's host; ``tcp:HOST:PORT``;
    separated by commas) that answers, and
    say who this worker is: the pool's token (from ``DISPATCHER_WORKER_TOKEN``),
    then its pid, host, MPI rank (an MPI job's ranks start MPI first, so nodes can
    use it) and launch."""
    token = bytes.fromhex(os.environ.pop("DISPATCHER_WORKER_TOKEN"))
    launch = os.environ.pop("DISPATCHER_WORKER_LAUNCH", "")
    rank = None
    if os.environ.pop("DISPATCHER_WORKER_MPI", "") == "1":
        from mpi4py import MPI

        rank = MPI.COMM_WORLD.Get_rank()
    sock = None
    for address in addresses.split(","):
        kind, _, where = address.partition(":")
        try:
            if kind == "unix":
                candidate = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    candidate.connect("\0" + where[1:] if where.startswith("@") else where)
                except OSError:
                    candidate.close()
                    raise
                sock = candidate
            else:
                host, _, port = where.rpartition(":")
                sock = socket.create_connection((host, int(port)))
            break
        except OSError:
            continue
    if sock is None:
        raise ConnectionError(f"cannot reach the worker pool at {addresses}")
    sock.sendall(token)
    send(sock, ("hello", os.getpid(), socket.gethostname(), rank, launch))
    return sock, rank


def _leave_to_the_pool(signum, frame) -> None:
    """SIGTERM: the driver stops this worker (see the module docstring)."""


def main(argv: list[str]) -> int:
    import faulthandler
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()
    mpi = False
    if argv[1] == "--connect":
        sock, rank = _connect(argv[2])
        mpi = rank is not None
        threading.Thread(target=_watch_connection, args=(sock,), daemon=True).start()
    else:
        sock = socket.socket(fileno=int(argv[1]))
        threading.Thread(target=_watch_parent, args=(int(argv[2]),), daemon=True).start()
    if not mpi:  # a worker of this machine's pool (an MPI rank keeps the rules of its launcher)
        signal.signal(signal.SIGTERM, _leave_to_the_pool)
    # a process a node forks must not hold the connection: the pool notices that
    # this worker died when the connection closes, not when the node's children end
    os.register_at_fork(after_in_child=sock.close)
    try:
        code = _serve(sock)
    finally:
        if mpi:  # MPI_Finalize would wait for ranks of the job that died: leave without it
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
    return code


def _serve(sock: socket.socket) -> int:
    try:
        _, path, init = recv(sock)
    except EOFError:
        return 0
    sys.path[:] = path
    try:
        if init is not None:
            func, args = pickle.loads(init)
            func(*args)
    except BaseException as exc:
        send(sock, ("init-failed", f"the worker initializer failed:\n{describe(exc)}"))
        return 1
    send(sock, ("ready", os.getpid()))
    while True:
        try:
            calls, timed = recv(sock)
        except EOFError:
            return 0
        except Exception as exc:  # a batch that cannot be unpickled here
            send(sock, ("unreadable", f"{type(exc).__name__}: {exc}\n{describe(exc)}"))
            continue
        if timed:  # its clock starts now, not when it was sent (see _pool)
            send(sock, ("started",))
        outcomes, spans = run_calls(calls)
        del calls
        send_payload(sock, *_outcome_message(outcomes, spans))
        del outcomes


if __name__ == "__main__":
    sys.exit(main(sys.argv))
