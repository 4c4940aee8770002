"""``SerialMPIExecutor``: every node on every rank of an MPI communicator, one node
at a time (SPMD).

It needs ``mpi4py`` and an MPI library (``pip install 'dispatcher-graph[mpi]'``
brings both as wheels); ``mpi4py`` is imported when the executor is made, not
with the package.

For MPI-parallel programs called from Python (a model fit whose function takes a
communicator). Every rank runs the same script and makes the executor and the
same graph. Rank 0 drives the run: for each node it broadcasts the call (the
function and rank 0's values of its arguments), every rank calls it, and the
ranks agree on the outcome. A function with a parameter named ``comm`` gets the
executor's communicator. The node's value is rank 0's. If the call raises on any
rank, the node fails on all of them with the exception of the lowest failing rank
(its traceback says which rank), and retries, ``throw_error=False`` and
callbacks behave as on any executor. Every exception counts, ``SystemExit``
included; Ctrl-C on rank 0 ends the run on every rank.

A rank whose call failed waits ``grace`` seconds for the others to finish theirs.
Other ranks still inside the call after that are, in all likelihood, blocked in a
collective operation that needs the failed rank, and MPI has no way to take them
out: the rank prints the node, its rank and the error to stderr and aborts the MPI
job (``MPI_Abort``), so the job ends with an error instead of hanging.

``run`` returns the same results on every rank: rank 0's output values (and
errors), broadcast at the end of the run, are set on each rank's own output nodes;
intermediate nodes' values are kept on rank 0 only. The ``inputs`` and
``input_map`` of rank 0 are the ones used. An exception that ends the run on rank
0 is raised on every rank.
"""

from __future__ import annotations

import contextlib
import threading
import types

import cloudpickle

from ..engine import Task
from ..graph import DispatchGraph, _deps_of, topological_order
from ..nodes import DataNode, DispatchNode
from ..outcomes import Failure
from ..results import (
    DependencyError,
    DispatcherError,
    DispatchResult,
    ExecutorError,
    RemoteError,
    format_exception,
)
from ._mpicomm import agree, check_grace, error_text, wait_request, with_comm
from ._mpilaunch import import_mpi
from ._wire import pickle_dumps
from .base import Capabilities, Executor
from .codec import dumps_failure, loads_failure, stand_in, unpicklable_error
from .serial import call_in_thread, call_with_alarm

__all__ = ["SerialMPIExecutor"]

INTERRUPT_WAIT = 5.0  # seconds rank 0 waits for the other ranks to hear that a run was interrupted

_FIRST = 4096  # bytes of a message that go in its first broadcast


class SerialMPIExecutor(Executor):
    """Run one node at a time, each on every rank of ``comm`` (SPMD).

    Args:
        comm: the communicator (default ``COMM_WORLD``); a node's function with a
            ``comm`` parameter gets it (unless the node passes its own).
        grace: seconds a rank whose call failed waits for the other ranks to finish
            theirs before it aborts the MPI job (they are then blocked in a
            collective call that needs it).

    ``retries``, ``retry_on``, ``backoff`` and ``timeout`` are those of every
    :class:`~dispatcher.Executor`; a node's timeout is enforced on every rank with
    ``SIGALRM``.

    Make it on every rank (it duplicates ``comm``, a collective call) and call
    ``run`` with the same graph on every rank. See :mod:`dispatcher.executors.mpi`.

    >>> import dispatcher as dp
    >>> def size(comm):
    ...     return comm.Get_size()
    >>> with dp.SerialMPIExecutor() as ex:               # doctest: +SKIP
    ...     dp.execute(dp.Op(size), ex)
    1
    """

    capabilities = Capabilities(synchronous=True)

    def __init__(self, comm=None, *, grace: float = 60.0, **options):
        super().__init__(**options)
        MPI = import_mpi()
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        if self.comm.Is_inter():
            raise ValueError("SerialMPIExecutor needs an intracommunicator")
        self.grace = check_grace(grace)
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._ctl = self.comm.Dup()  # the executor's own messages never meet the user's
        self._runs = 0  # runs begun on this rank: every message says which run it belongs to

    # -- messages from rank 0 -----------------------------------------------------------
    def _bcast(self, data: bytes | None = None, limit: float | None = None) -> bytes:
        """Rank 0's ``data`` on every rank: one broadcast of a fixed-size first part
        (its length and up to :data:`_FIRST` bytes), a second one for the rest.
        Rank 0 gives up after ``limit`` seconds."""
        MPI, ctl = self._MPI, self._ctl
        first = bytearray(8 + _FIRST)
        if self.rank == 0:
            first[:8] = len(data).to_bytes(8, "little")
            first[8 : 8 + min(len(data), _FIRST)] = data[:_FIRST]
        if not wait_request(ctl.Ibcast([first, MPI.BYTE], root=0), limit):
            return b""
        size = int.from_bytes(first[:8], "little")
        if size <= _FIRST:
            return bytes(first[8 : 8 + size])
        rest = bytearray(data[_FIRST:]) if self.rank == 0 else bytearray(size - _FIRST)
        wait_request(ctl.Ibcast([rest, MPI.BYTE], root=0), limit)
        return bytes(first[8:]) + bytes(rest)

    # -- one node on every rank -----------------------------------------------------
    def _call(self, task) -> tuple:
        """Call the node here: ``(ok, value or (exception, traceback))``. Every
        exception fails the node (SystemExit and KeyboardInterrupt too: the other
        ranks wait to hear how the call went)."""
        try:
            task.kwargs = with_comm(task.func, task.kwargs, self.comm)
            if task.timeout is None:
                return True, task.run()
            if threading.current_thread() is threading.main_thread():
                return call_with_alarm(task)
            return call_in_thread(task)
        except BaseException as exc:
            return False, (exc, format_exception(exc))

    def _agree(self, label: str, outcome: tuple) -> tuple | None:
        """Every rank's outcome of the call; rank 0 gets the node's outcome.

        The ranks exchange one byte each (did the call succeed?); that exchange is
        also where a failed rank notices others stuck inside the call. The lowest
        failing rank then sends its exception to rank 0.
        """
        ok, payload = outcome
        if self.size == 1:
            return outcome
        ctl = self._ctl
        flags = agree(ctl, label, None if ok else error_text(payload), self.grace)
        if all(flags):
            return outcome if self.rank == 0 else None
        first = flags.index(0)
        if self.rank == first and first != 0:
            ctl.send(dumps_failure(*payload), dest=0, tag=first)
        if self.rank != 0:
            return None
        if first == 0:
            exc, tb = payload
        else:
            exc, tb = loads_failure(ctl.recv(source=first, tag=first))
            if hasattr(exc, "add_note"):
                exc.add_note(f"(raised on rank {first} of {self.size})")
        return False, (exc, f"raised on rank {first} of {self.size}:\n{tb}")

    def slots(self) -> int:
        return 1  # one node at a time, on every rank

    def start_task(self, task, done) -> None:  # rank 0 only
        label = task.node.label
        if self.size > 1:
            try:
                call = pickle_dumps((task.func, task.args, task.kwargs))
            except Exception as exc:  # fails here, before any rank hears of it
                err = unpicklable_error(label, task.func, task.args, task.kwargs)
                err.__cause__ = exc
                done(task, False, (err, format_exception(exc)))
                return
            self._tell("call", label, task.timeout, call)
        outcome = self._call(task)
        agreed = self._agree(label, outcome)
        if not outcome[0] and isinstance(outcome[1][0], KeyboardInterrupt):
            raise outcome[1][0]  # Ctrl-C here: the run ends, and rank 0 tells the others
        done(task, *agreed)

    def _follow_call(self, label: str, timeout, call: bytes) -> None:
        try:
            func, args, kwargs = cloudpickle.loads(call)
        except BaseException as exc:  # a module only rank 0 can import...
            err = ExecutorError(
                f"node {label!r} cannot be unpickled on rank {self.rank}: {type(exc).__name__}: {exc}"
            )
            outcome = (False, (err, format_exception(exc)))
        else:
            outcome = self._call(Task(types.SimpleNamespace(label=label), func, args, kwargs, 0, timeout))
        self._agree(label, outcome)

    # -- a whole run on every rank -----------------------------------------------------
    def _begin(self) -> bool:
        """Start a run on this rank; False when it runs here alone (one rank)."""
        if self.closed:
            raise ExecutorError("SerialMPIExecutor is closed")
        self._runs += 1
        return self.size > 1

    def wrap_run(self, outputs, run):
        if not self._begin():
            return run()
        if self.rank != 0:
            return self._follow(outputs)
        try:
            results = run()
        except BaseException as exc:
            self._tell_raise(outputs, exc)
            raise
        self._tell_end(outputs, results)
        return results

    async def wrap_run_async(self, outputs, run):
        if not self._begin():
            return await run()
        if self.rank != 0:
            return self._follow(outputs)  # other ranks only follow: this blocks their loop
        try:
            results = await run()
        except BaseException as exc:
            self._tell_raise(outputs, exc)
            raise
        self._tell_end(outputs, results)
        return results

    def _tell(self, kind: str, *body, limit: float | None = None) -> None:
        """Broadcast a message of this run from rank 0."""
        self._bcast(cloudpickle.dumps((kind, self._runs, *body)), limit)

    def _tell_raise(self, outputs, exc: BaseException) -> None:
        # After Ctrl-C the other ranks may have stopped listening: do not wait for them long.
        limit = None if isinstance(exc, Exception) else INTERRUPT_WAIT
        if isinstance(exc, DependencyError):
            self._tell("raise", _error_parts(exc, _run_nodes(outputs)), limit=limit)
            return
        try:
            data = cloudpickle.dumps(exc)
            cloudpickle.loads(data)
        except Exception:
            data = cloudpickle.dumps(DispatcherError(f"{type(exc).__name__}: {exc}"))
        self._tell("raise", data, limit=limit)

    def _tell_end(self, outputs, results) -> None:
        nodes = _run_nodes(outputs) if any(r.error is not None for r in results) else []
        parts = []
        for r in results:
            if r.error is not None:
                parts.append(("error", _error_parts(r.error, nodes)))
                continue
            try:
                parts.append(("value", cloudpickle.dumps(r.value)))
            except Exception as exc:
                err = RemoteError(
                    f"{type(r.value).__module__}.{type(r.value).__qualname__}",
                    f"the value of output node {r.node.label!r} cannot be pickled to send it "
                    f"from rank 0 to the other ranks: {type(exc).__name__}: {exc}",
                )
                parts.append(("error", (cloudpickle.dumps(err), "", None, r.node.label, 1)))
        self._tell("end", parts)

    def _follow(self, outputs):
        """Run rank 0's calls until it says the run is over; its results, here."""
        while True:
            kind, run, *body = cloudpickle.loads(self._bcast())
            if run != self._runs:
                raise ExecutorError(
                    f"rank {self.rank} is in its run {self._runs} but rank 0 in its run {run}: "
                    "every rank must make the same runs"
                )
            if kind == "call":
                self._follow_call(*body)
            elif kind == "end":
                return self._results_here(outputs, body[0])
            elif isinstance(body[0], tuple):
                raise _error_here(body[0], _run_nodes(outputs))
            else:
                raise cloudpickle.loads(body[0])

    def _results_here(self, outputs, parts) -> list[DispatchResult]:
        nodes = _run_nodes(outputs)
        outs = _output_list(outputs)
        if len(outs) != len(parts):
            raise ExecutorError(
                f"rank {self.rank} asked for {len(outs)} outputs but rank 0 for {len(parts)}: "
                "every rank must run the same graph"
            )
        results = []
        for node, (kind, data) in zip(outs, parts):
            if kind == "value":
                value = cloudpickle.loads(data)
                node._outcome = value
                results.append(DispatchResult(node, value=value))
            else:
                error = _error_here(data, nodes)
                node._outcome = Failure(error)
                results.append(DispatchResult(node, error=error))
        return results

    def stop_workers(self) -> None:
        MPI = self._MPI
        if not MPI.Is_finalized():
            with contextlib.suppress(Exception):  # freed already, or MPI is going away
                self._ctl.Free()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<SerialMPIExecutor rank {self.rank} of {self.size}{state}>"


def _output_list(outputs) -> list:
    if isinstance(outputs, DispatchGraph):
        return outputs.leaf_nodes()
    if isinstance(outputs, DispatchNode):
        return [outputs]
    return list(outputs)


def _run_nodes(outputs) -> list:
    """Every node of the run, dependencies first: the same order on every rank."""
    try:
        if isinstance(outputs, DispatchGraph):
            return outputs.topological_order()
        return topological_order(_output_list(outputs), _deps_of)
    except Exception:
        return []


def _error_parts(error: DependencyError, nodes: list) -> tuple:
    """A :class:`DependencyError` to send to the other ranks: its node goes as its
    position among the run's nodes (and its label)."""
    try:
        inner = cloudpickle.dumps(error.error)
    except Exception:
        inner = cloudpickle.dumps(stand_in(error.error))
    try:
        index = nodes.index(error.node)
    except ValueError:
        index = None
    label = error.node.label if error.node is not None else None
    return inner, error.traceback, index, label, error.attempts


def _error_here(parts: tuple, nodes: list) -> DependencyError:
    inner, tb, index, label, attempts = parts
    node = None
    if index is not None and index < len(nodes) and nodes[index].label == label:
        node = nodes[index]
    elif label is not None:
        node = next((n for n in nodes if n.label == label), None)
        if node is None:
            node = DataNode(None, label=label)  # stands for rank 0's node
    return DependencyError(cloudpickle.loads(inner), tb, node, attempts)
