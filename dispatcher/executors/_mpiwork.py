"""What :class:`~dispatcher.MPIExecutor` runs on its worker ranks.

Each task that ``mpi4py.futures`` carries to a worker is a call of
:func:`run_batch` with a list of ``(func, args, kwargs)`` :func:`packed`: cloudpickle
bytes and the large buffers of the arguments beside them, run in order by the
same loop as :class:`~dispatcher.ProcessExecutor`'s workers
(:func:`~dispatcher.executors._procworker.run_calls`). The answer is
``("done", outcomes, spans, rank)`` with each outcome packed on its own, the
wall-clock start and end of each call and the rank that ran them, or
``("unreadable", description)``. Lambdas, closures and functions of ``__main__``
so travel both ways whatever pickle ``mpi4py`` itself uses, and, on the ``pkl5``
communicators the executor asks for, a large array goes from the memory of one
process into that of the other as an MPI message of its own, not copied into a
pickle (:class:`Beside`). A rank keeps testing for its answer while it leaves
(:func:`~._mpipoll.sending`): MPI moves a large message only then. The ranks of
an SPMD node each run :func:`run_member` (:mod:`~dispatcher.executors._mpigang`).

:func:`init_worker` runs first on every worker: it lets SIGINT interrupt a node
(and only a node: between nodes it is ignored, so the executor can interrupt a
run without taking its workers down), makes a worker sent SIGTERM say on its
standard error which nodes it was running before it dies (MPI then ends the job,
the driver included, which cannot say it), prints the Python traceback of a
crash (``faulthandler``), then runs the user's initializer.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import pickle
import signal
import socket
import threading

import cloudpickle

from . import _mpipoll, _wire
from ._alarm import alarm
from ._mpigang import SpmdCall, join
from ._procworker import checked_outcomes, describe, run_calls

_in_call = False
_running: list = []  # the labels of the nodes of the batch this worker runs


def _on_sigint(signum, frame) -> None:
    if _in_call:
        raise KeyboardInterrupt


def _on_sigterm(signum, frame) -> None:
    """Say which nodes this rank was running, then die of the signal as it would
    have (written with ``os.write``: the handler may interrupt a write to
    ``sys.stderr``, which is not reentrant)."""
    try:
        if _running:
            nodes = ", ".join(repr(label) for label in _running)
            text = (
                f"dispatcher: worker rank (pid {os.getpid()} on {socket.gethostname()}) was running "
                f"node(s) {nodes} when it was sent SIGTERM\n"
            )
            os.write(2, text.encode(errors="replace"))
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def init_worker(user_init: bytes | None) -> None:
    """Set up a worker rank (see the module docstring); then the user's initializer."""
    faulthandler.enable()
    _mpipoll.install()  # (under ``python -m mpi4py.futures``, before this rank's loop starts waiting)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)
        signal.signal(signal.SIGTERM, _on_sigterm)
    if user_init is not None:
        func, args = cloudpickle.loads(user_init)
        func(*args)


def hello() -> list:
    """``(host, pid)`` of every worker: a collective task, one per worker at once."""
    from mpi4py.futures import get_comm_workers

    return get_comm_workers().allgather((socket.gethostname(), os.getpid()))


def run_batch(payload: tuple, timeout: float | None = None, labels: list = (), late: str = "") -> tuple:
    """Run the calls in ``payload`` (the nodes ``labels``); a node alone with a
    ``timeout`` is stopped by ``SIGALRM`` with a ``TimeoutError(late)`` (the
    driver's message) when it runs longer; the driver's engine fails the node itself
    only if this did not stop it."""
    global _in_call
    try:
        calls = unpacked(payload)
    except Exception as exc:  # a module of the driver this worker cannot import
        return ("unreadable", f"{type(exc).__name__}: {exc}\n{describe(exc)}")
    del payload
    timed = timeout is not None and threading.current_thread() is threading.main_thread()
    _in_call = True
    _running[:] = labels
    try:
        with alarm(timeout, lambda: TimeoutError(late)) if timed else contextlib.nullcontext():
            outcomes, spans = run_calls(calls, interruptible=True)
    finally:
        _in_call = False
        _running.clear()
    del calls
    done = [_outcome_packed(o) for o in outcomes]
    return _answer(("done", done, spans, _this_rank()), done)


def run_member(
    payload: tuple, gang: tuple, timeout: float | None, label: str, late: str, grace: float
) -> tuple:
    """One of the calls of an SPMD node (:mod:`_mpigang`): meet the other members
    of ``gang`` (the rendezvous's address and token, and the gang's number), then
    call the node on the communicator of their ranks (stopped at ``timeout`` as
    :func:`run_batch` does). Answers ``("done", rank in the gang, packed outcome,
    span)``, with the value of rank 0 only, or ``("cancelled",)``."""
    global _in_call
    from mpi4py.futures import get_comm_workers

    address, token, number = gang
    try:
        (func, args, kwargs), broken = unpacked(payload)[0], None
    except Exception as exc:  # it still meets the others, who would wait for it
        func, args, kwargs = None, (), None
        broken = RuntimeError(
            f"node {label!r} cannot be unpickled on a worker rank: {type(exc).__name__}: {exc}"
        )
    del payload
    workers = get_comm_workers()
    members = join(address, token, number, workers.Get_rank(), socket.gethostname())
    if members is None:
        return ("cancelled",)
    rank = [r for r, _ in members].index(workers.Get_rank())
    call = SpmdCall(func if broken is None else _raiser(broken), members, "workers", number, label, grace)
    timed = timeout is not None and threading.current_thread() is threading.main_thread()
    _in_call = True
    _running[:] = [label]
    try:
        with alarm(timeout, lambda: TimeoutError(late)) if timed else contextlib.nullcontext():
            outcomes, spans = run_calls([(call, args, kwargs)])
    finally:
        _in_call = False
        _running.clear()
    outcome = _outcome_packed(outcomes[0])
    return _answer(("done", rank, outcome, spans[0]), [outcome])


def packed(obj) -> tuple[bytes, list]:
    """``obj`` as it travels between the driver and a rank: :mod:`._wire`'s
    cloudpickle bytes (protocol 5) and its large buffers beside them, each a view
    of the object's own memory (:class:`Beside`)."""
    stream, buffers = _wire.dumps(obj)
    return stream, [Beside(raw) for raw in buffers]


class Beside:
    """A large buffer of a :func:`packed` object. Pickled with protocol 5 it is a
    ``pickle.PickleBuffer`` of the object's memory, which ``mpi4py``'s ``pkl5``
    communicators send as an MPI message of its own (from ``MPI4PY_PICKLE_THRESHOLD``
    bytes, 256 KiB by default); pickled with an older protocol (``mpi4py``'s
    ``MPI4PY_PICKLE_PROTOCOL``), a copy of its bytes."""

    __slots__ = ("raw",)

    def __init__(self, raw: memoryview):
        self.raw = raw

    def __reduce_ex__(self, protocol):
        if protocol >= 5:
            return _same, (pickle.PickleBuffer(self.raw),)
        return bytearray, (self.raw.tobytes(),)


def _same(buffer):
    return buffer


def unpacked(data: tuple[bytes, list]):
    """The object :func:`packed` gave ``data`` for, built on the received buffers."""
    stream, buffers = data
    return pickle.loads(stream, buffers=buffers)


def packed_size(data: tuple[bytes, list]) -> int:
    """The bytes of what :func:`packed` gave."""
    stream, buffers = data
    return len(stream) + sum(b.raw.nbytes for b in buffers)


def _answer(answer: tuple, outcomes: list) -> tuple:
    """``answer``, which leaves now with ``outcomes``: this rank keeps testing for
    it until they have had time to go (:func:`~._mpipoll.sending`)."""
    _mpipoll.sending(sum(map(packed_size, outcomes)))
    return answer


def _this_rank() -> str:
    """This worker rank, as the attempts of its nodes name it."""
    from mpi4py import MPI

    return f"rank {MPI.COMM_WORLD.Get_rank()} on {socket.gethostname()}"


def _raiser(exc: BaseException):
    def raises(*args, **kwargs):
        raise exc

    return raises


def _outcome_packed(outcome: tuple) -> tuple[bytes, list]:
    """One call's outcome, :func:`packed` on its own, so that one the driver cannot
    load fails only its node."""
    try:
        return packed(outcome)
    except Exception:
        return packed(checked_outcomes([outcome], _wire.pickle_dumps)[0])
