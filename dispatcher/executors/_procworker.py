"""The worker process of :class:`~dispatcher.ProcessExecutor`.

A worker is started as ``python _procworker.py SOCKET_FD ALIVE_FD`` (a worker
process, given one end of a socket pair) or ``python _procworker.py --connect
ADDRESSES`` (an MPI rank, which connects back to the pool and proves itself with
the pool's token: see :func:`_connect`). This file runs as a script and imports
nothing of the ``dispatcher`` package (the wire format, :mod:`_wire`, it loads
from the file beside it), so a worker is ready in a few tens of milliseconds and
never imports the user's ``__main__`` module (functions from ``__main__`` arrive
by value, through cloudpickle). The package imports it as a module for how a
worker runs calls and reports failures (:func:`run_calls`, :func:`failure`).

Conversation: the parent sends ``("init", sys_path, initializer_bytes)``; the worker
answers ``("ready", pid)`` or ``("init-failed", description)``. Then each message
from the parent is a batch, ``(calls, timed, forget)`` with ``calls`` a list of
``(func, args, kwargs)`` and ``forget`` the keys of the held values the worker may
drop (a message with no calls only forgets, and gets no answer); for a ``timed``
batch (a node with a timeout) the worker first answers ``("started",)``, from which
the parent counts the timeout, so that neither the unpickling nor the imports it
brings count. It runs the calls in order and answers ``("done", outcomes,
spans)`` with one ``(ok, value)`` per call, where a value of 1 KiB or more
goes as a :class:`~_wire.Held` (values stay where they are made:
:mod:`_held`), a failure's value is ``(exception, traceback)``, or ``(type name,
message, traceback)`` when the exception itself cannot be pickled, and ``spans``
when each call began and ended (``(start, end)``, wall clock). A batch that
cannot be unpickled, or whose buffers cannot be taken, is answered
``("unreadable", description)``, and the worker drops the held values it kept.
End of file on the socket means stop.

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

if __name__ == "__main__":
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # never let this directory's files shadow the user's modules
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "_dispatcher_wire", os.path.join(os.path.dirname(os.path.abspath(__file__)), "_wire.py")
    )
    _wire = sys.modules["_dispatcher_wire"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_wire)
    # one wire module in the process: the package's (a node that runs a pool of its own) is this one
    sys.modules["dispatcher.executors._wire"] = _wire
else:
    from . import _wire

import pickle
import socket
import time
import traceback
import types

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
        pickle.loads(_wire.pickle_dumps(exc))
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
        return _wire.dumps(("done", outcomes, spans))
    except Exception:
        return _wire.dumps(("done", checked_outcomes(outcomes, _wire.dumps), spans))


def run_calls(batch: list, hold: bool = False, interruptible: bool = False) -> tuple[list, list]:
    """Run each ``(func, args, kwargs)`` of ``batch`` in order: one ``(ok, value)``
    per call (a failure's value as :func:`_failure` makes it), and when each began
    and ended, ``(start, end)`` on the wall clock (which the driver reads on its
    own clock: :func:`dispatcher.attempts.wall_offset`). With ``hold``, a value
    not of the :data:`~_wire.AS_IS` types whose pickle takes :data:`~_wire.HELD_MIN`
    bytes or more goes as a :class:`~_wire.Held`, unless
    its function says how it reports (``reports_itself``: a stored call, which
    may send the key of its value in the run's store). With ``interruptible`` (an
    MPI world rank, where the SIGINT that ends a run interrupts the call), a call
    that raised ``KeyboardInterrupt`` ends the batch: the calls after it fail the
    same way, not run."""
    clock = time.time
    outcomes = []
    spans = []
    for func, args, kwargs in batch:
        start = clock()
        if (
            interruptible
            and outcomes
            and not outcomes[-1][0]
            and type(outcomes[-1][1][0]) is KeyboardInterrupt
        ):
            outcomes.append(failure(KeyboardInterrupt("not run: the batch was interrupted")))
            spans.append((start, start))
            continue
        try:
            value = func(*args, **kwargs) if kwargs else func(*args)
            if type(value) is types.CoroutineType:  # an async def node: run it to its end here
                import asyncio

                value = asyncio.run(value)
        except BaseException as exc:  # SystemExit too: it fails the node, not the worker
            outcomes.append(failure(exc))
        else:
            if hold and type(value) not in _wire.AS_IS and not getattr(func, "reports_itself", False):
                value = _held(value)
            outcomes.append((True, value))
        spans.append((start, clock()))
    return outcomes, spans


def _held(value):
    """``value`` as a :class:`~_wire.Held` (if it is large enough), or as itself if
    it will not pickle (the report then says why)."""
    try:
        return _wire.Held.of(value)
    except Exception:
        return value


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
    _wire.send(sock, ("hello", os.getpid(), socket.gethostname(), rank, launch))
    return sock, rank


def _leave_to_the_pool(signum, frame) -> None:
    """SIGTERM: the driver stops this worker (see the module docstring)."""


def main(argv: list[str]) -> int:
    import faulthandler
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()
    _wire.IN_WORKER = True
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
        _, path, init = _wire.recv(sock)
    except EOFError:
        return 0
    sys.path[:] = path
    try:
        if init is not None:
            func, args = pickle.loads(init)
            func(*args)
    except BaseException as exc:
        _wire.send(sock, ("init-failed", f"the worker initializer failed:\n{describe(exc)}"))
        return 1
    _wire.send(sock, ("ready", os.getpid()))
    while True:
        try:
            calls, timed, forget = _wire.recv(sock)
        except EOFError:
            return 0
        except Exception as exc:  # a batch that cannot be unpickled here
            _wire.forget(list(_wire._cache))  # (the pool forgets what this worker kept)
            _wire.send(sock, ("unreadable", f"{type(exc).__name__}: {exc}\n{describe(exc)}"))
            continue
        _wire.forget(forget)
        if not calls:  # (only values to forget: no answer)
            continue
        if timed:  # its clock starts now, not when it was sent (see _pool)
            _wire.send(sock, ("started",))
        outcomes, spans = run_calls(calls, hold=True)
        del calls
        _wire.send_payload(sock, *_outcome_message(outcomes, spans))
        del outcomes


if __name__ == "__main__":
    sys.exit(main(sys.argv))
