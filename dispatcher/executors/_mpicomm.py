"""What the MPI executors do on the ranks that call one node together (SPMD): wait
for a request without holding a CPU, hand the node its communicator, and agree on
how the call went.

Used by :class:`~dispatcher.SerialMPIExecutor` (every node on every rank) and by
the SPMD nodes of :class:`~dispatcher.MPIExecutor` (a node granted ``k`` cores on
``k`` worker ranks, :mod:`~dispatcher.executors._mpigang`).

Policy:

* A function with a parameter named ``comm`` gets the node's communicator, unless
  the node passes its own.
* After the call, the ranks exchange one byte each (did the call succeed?). A
  rank whose call failed waits ``grace`` seconds for the others. Ranks still
  inside the call after that are, in all likelihood, blocked in a collective
  operation that needs the failed rank, and MPI has no way to take them out (nor
  to end some ranks of a job and not the others): the rank prints the node, its
  rank and the error to its standard error and aborts the MPI job
  (``MPI_Abort``), so that the job ends with an error instead of hanging.
"""

from __future__ import annotations

import inspect
import sys
import time

__all__ = ["agree", "check_grace", "error_text", "too_many_ranks", "wait_request", "wants_comm", "with_comm"]

_SPIN = 0.002  # seconds a wait only yields the CPU between tests of its request
_POLL_MAX = 0.001  # then the longest sleep between tests, for the first second
_POLL_SLOW = 0.01  # ... and after


def too_many_ranks(label: str, cores: int, ranks: int):
    """The error of an SPMD node that asks for more cores than there are worker ranks."""
    from ..results import ExecutorError

    return ExecutorError(
        f"node {label!r} asks for {cores} cores, which on MPIExecutor are as many worker ranks, "
        f"but there are {ranks}"
    )


def check_grace(grace) -> float:
    """``grace`` if it is a positive number of seconds."""
    if not (isinstance(grace, (int, float)) and grace > 0):
        raise ValueError(f"grace must be a positive number of seconds, got {grace!r}")
    return float(grace)


def wait_request(request, limit: float | None = None) -> bool:
    """Wait for ``request`` without holding a CPU for long; False if ``limit``
    seconds pass first. A rank waiting for the next node while another runs a long
    one sleeps between tests, so the ranks of an oversubscribed host keep their
    CPUs for the work."""
    if request.Test():
        return True
    clock = time.monotonic
    start = clock()
    delay = 0.0
    while not request.Test():
        waited = clock() - start
        if limit is not None and waited > limit:
            return False
        time.sleep(delay)
        if waited > _SPIN:
            delay = min(max(delay * 2, 1e-4), _POLL_MAX if waited < 1.0 else _POLL_SLOW)
    return True


def wants_comm(func) -> bool:
    """Whether ``func`` (or what it wraps) has a parameter named ``comm``."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    p = params.get("comm")
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def with_comm(func, kwargs: dict | None, comm) -> dict | None:
    """``kwargs`` for calling ``func`` on ``comm``: with ``comm=comm`` added where
    ``func`` takes one and the node did not pass its own."""
    if wants_comm(func) and not (kwargs and "comm" in kwargs):
        return {**(kwargs or {}), "comm": comm}
    return kwargs


def agree(comm, label: str, error: str | None, grace: float) -> bytearray:
    """Every rank's flag (1: its call of node ``label`` succeeded), on every rank of
    ``comm``. A rank whose call failed (``error``: what it raised, and where)
    aborts the job when the others are still inside the call ``grace`` seconds
    later (see the module docstring)."""
    from mpi4py import MPI

    size = comm.Get_size()
    flags = bytearray(size)
    ok = error is None
    request = comm.Iallgather([bytearray(b"\1" if ok else b"\0"), MPI.BYTE], [flags, MPI.BYTE])
    if ok:
        wait_request(request)
    elif not wait_request(request, grace):
        sys.stderr.write(
            f"dispatcher: node {label!r} failed on rank {comm.Get_rank()} of {size} and "
            f"other ranks are still inside it after {grace} s, in all likelihood blocked in "
            f"a collective call that needs this rank: aborting the MPI job.\n{error}"
        )
        sys.stderr.flush()
        comm.Abort(1)
    return flags


def error_text(failure: tuple) -> str:
    """What a failed call raised, for :func:`agree`, from its failure: ``(exception,
    traceback)``, or ``(type name, message, traceback)`` for an exception that
    cannot travel."""
    if len(failure) == 3:
        name, message, tb = failure
    else:
        exc, tb = failure
        name, message = type(exc).__name__, exc
    return f"{name}: {message}\n{tb}"
