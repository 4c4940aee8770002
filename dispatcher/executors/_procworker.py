"""The worker process of :class:`~dispatcher.ProcessExecutor`, and the wire format
both ends speak.

A worker is started as ``python _procworker.py SOCKET_FD ALIVE_FD``: this file runs
as a script and imports nothing of the ``dispatcher`` package, so a worker is ready
in a few tens of milliseconds and never imports the user's ``__main__`` module
(functions from ``__main__`` arrive by value, through cloudpickle). The parent
imports the same file as a module for :func:`send` and :func:`recv`.

Wire format: each message is one cloudpickle stream (protocol 5) plus the
out-of-band buffers of the large contiguous arrays in it, framed as::

    !Q payload length, !I number of buffers, !Q length of each buffer,
    payload bytes, then each buffer's bytes

Buffers are written straight from the array's memory and read straight into a
fresh ``bytearray`` that becomes the array's memory on the other side: no copy
beyond the kernel's.

Conversation: the parent sends ``("init", sys_path, initializer_bytes)``; the worker
answers ``("ready", pid)`` or ``("init-failed", description)``. Then each message
from the parent is a batch, a list of ``(func, args, kwargs)``; the worker runs
them in order and answers ``("done", outcomes, seconds)`` with one
``(ok, value)`` per call, where a failure's value is ``(exception, traceback)``,
or ``(type name, message, traceback)`` when the exception itself cannot be
pickled, and ``seconds`` the time each call took. A batch that cannot be
unpickled is answered ``("unreadable", description)``. End of file on the socket
means stop.

A worker ignores SIGINT (the parent decides what Ctrl-C stops) and exits as soon as
its parent does: a watchdog thread waits on a pipe whose only write end the parent
holds.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(
    os.path.abspath(__file__)
):
    del sys.path[0]  # never let this directory's files shadow the user's modules

import pickle  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import cloudpickle  # noqa: E402

_HEADER = struct.Struct("!QI")
OUT_OF_BAND_MIN = 1 << 16  # smaller buffers stay in the pickle stream


def dumps(obj) -> tuple[bytes, list]:
    """``obj`` as a cloudpickle payload and its large out-of-band buffers."""
    buffers: list = []

    def out_of_band(buf):  # a false answer keeps the buffer out of band
        raw = buf.raw()
        if raw.nbytes < OUT_OF_BAND_MIN:
            return True
        buffers.append(raw)
        return False

    return cloudpickle.dumps(obj, protocol=5, buffer_callback=out_of_band), buffers


def send_payload(sock: socket.socket, payload: bytes, buffers: list) -> None:
    """Send what :func:`dumps` made as one message."""
    head = _HEADER.pack(len(payload), len(buffers))
    if buffers:
        head += struct.pack(f"!{len(buffers)}Q", *(b.nbytes for b in buffers))
        sock.sendall(head)
        sock.sendall(payload)
        for buf in buffers:
            sock.sendall(buf)
    else:
        sock.sendall(head + payload)


def send(sock: socket.socket, obj) -> None:
    send_payload(sock, *dumps(obj))


def _recv_exact(sock: socket.socket, size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got, socket.MSG_WAITALL)
        if n == 0:
            raise EOFError("the other end closed the connection")
        got += n
    return buf


def recv(sock: socket.socket):
    """The next message; ``EOFError`` when the other end has gone."""
    size, nbuf = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    sizes = struct.unpack(f"!{nbuf}Q", _recv_exact(sock, 8 * nbuf)) if nbuf else ()
    payload = _recv_exact(sock, size)
    buffers = [_recv_exact(sock, n) for n in sizes]
    return pickle.loads(payload, buffers=buffers)


# -- the worker --------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _failure(exc: BaseException) -> tuple:
    tb = _describe(exc)
    try:
        pickle.loads(cloudpickle.dumps(exc))
    except Exception:  # an exception that cannot travel goes as its name and text
        return (False, (f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc), tb))
    return (False, (exc, tb))


def _outcome_message(outcomes: list, seconds: list) -> tuple[bytes, list]:
    try:
        return dumps(("done", outcomes, seconds))
    except Exception:
        pass
    checked = []
    for ok, value in outcomes:  # find the values that cannot be pickled
        try:
            dumps(value)
        except Exception as exc:
            kind = "result" if ok else "exception"
            err = pickle.PicklingError(
                f"the {kind} ({type(value).__qualname__} object) cannot be pickled to send it back "
                f"from the worker process: {type(exc).__name__}: {exc}"
            )
            checked.append((False, (err, _describe(exc))))
        else:
            checked.append((ok, value))
    return dumps(("done", checked, seconds))


def _watch_parent(fd: int) -> None:
    try:
        while os.read(fd, 1):
            pass
    finally:
        os._exit(0)  # the parent has gone: so does this worker, even mid-node


def main(argv: list[str]) -> int:
    import faulthandler
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()
    sock = socket.socket(fileno=int(argv[1]))
    threading.Thread(target=_watch_parent, args=(int(argv[2]),), daemon=True).start()
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
        send(sock, ("init-failed", f"the worker initializer failed:\n{_describe(exc)}"))
        return 1
    send(sock, ("ready", os.getpid()))
    clock = time.perf_counter
    func = args = kwargs = None
    while True:
        try:
            batch = recv(sock)
        except EOFError:
            return 0
        except Exception as exc:  # a batch that cannot be unpickled here
            send(sock, ("unreadable", f"{type(exc).__name__}: {exc}\n{_describe(exc)}"))
            continue
        outcomes = []
        seconds = []
        for func, args, kwargs in batch:
            start = clock()
            try:
                value = func(*args, **kwargs) if kwargs else func(*args)
            except BaseException as exc:  # SystemExit too: it fails the node, not the worker
                outcomes.append(_failure(exc))
            else:
                outcomes.append((True, value))
            seconds.append(clock() - start)
        del batch, func, args, kwargs
        send_payload(sock, *_outcome_message(outcomes, seconds))
        del outcomes


if __name__ == "__main__":
    sys.exit(main(sys.argv))
