"""The ranks of an ``mpiexec`` job the user started, as the workers of an
``MPIExecutor``: the world split by ``mpi4py.futures.MPICommExecutor`` (rank
``root`` drives, the others serve) and :class:`WorldRanks`, which sends them
nodes through ``mpi4py.futures`` (whose waits for a message are quick soon after
the last one: :mod:`~dispatcher.executors._mpipoll`).

Policy: at most one batch per worker is in flight, so that what is still waiting
can be batched and a node's timeout counts from when a worker has it
(``task.started``). The worker stops the call at its timeout with ``SIGALRM``
(:mod:`_mpiwork`) and reports the ``TimeoutError``; if that cannot stop it (code
that blocks signals), the engine fails the node :data:`TIMEOUT_SLACK` seconds
later, and its rank stays busy until the call returns: MPI cannot kill one rank of
a job. A node cancelled while on a worker is
reported cancelled at once and runs to its end there. A rank that dies ends the
whole job, by MPI's rule, so nothing is retried. The world's ranks serve every
``MPIExecutor`` of the process and are released when the driver's interpreter
exits.

A node granted more than one core runs SPMD on that many ranks at once
(:mod:`~dispatcher.executors._mpigang`): it waits at the head of the queue until
they are free, and no other node passes it meanwhile.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import CancelledError

from ..engine.records import timeout_error
from ..results import ExecutorError, format_exception
from . import _mpipoll, _mpiwork
from ._jobs import PENDING, SENT, Job, JobQueue
from ._mpicomm import too_many_ranks
from ._mpigang import GangRun, Rendezvous
from .codec import decode_outcome

__all__ = ["WorldRanks", "world_pool"]

logger = logging.getLogger("dispatcher")

INTERRUPT_WAIT = 5.0  # seconds an interrupted run waits for its interrupted nodes
RESIGNAL_AFTER = 1.0  # seconds an interrupted node has to clean up before it is signalled again
TIMEOUT_SLACK = 1.0  # seconds after a node's timeout that the engine fails it, if the worker did not
WORLD_LATE = " (and did not stop: its worker rank stays busy until the call returns)"


_WORLD: dict = {}  # "ctx", "pool", "comm", "root": the world split by MPICommExecutor


def world_pool(comm, root: int, init: bytes | None, options: dict):
    """The pool of this world's worker ranks; on a worker rank, serve, then exit."""
    from mpi4py.futures import MPICommExecutor

    if _WORLD:
        if _WORLD["comm"] is not comm or _WORLD["root"] != root:
            raise ExecutorError(
                "the ranks of this MPI world already serve another MPIExecutor "
                f"(comm={_WORLD['comm']!r}, root={_WORLD['root']}); make every MPIExecutor "
                "of the script with the same comm and root"
            )
        if init is not None or options:
            raise ExecutorError(
                "the worker ranks of this MPI world were set up by the first MPIExecutor; "
                "a later one cannot pass an initializer or pool options"
            )
        return _WORLD["pool"]
    _mpipoll.install()  # (every rank: the driver's thread and the workers' loops wait so)
    ctx = MPICommExecutor(comm, root, **_pool_options(init, options))
    pool = ctx.__enter__()
    if pool is None:  # a worker rank: it has served until the driver exited
        raise SystemExit(0)
    _WORLD.update(ctx=ctx, pool=pool, comm=comm, root=root)
    atexit.register(_release_world)
    return pool


def _release_world() -> None:
    ctx = _WORLD.get("ctx")
    if ctx is not None:
        _WORLD["ctx"] = None
        ctx.__exit__(None, None, None)


def _pool_options(init: bytes | None, options: dict) -> dict:
    """Options of an ``mpi4py.futures`` pool. Workers do not import the driver's
    ``__main__`` (``main=False``): its functions arrive by value, with cloudpickle,
    and a script without an ``if __name__ == "__main__":`` guard is not run again.
    They add the driver's ``sys.path`` to theirs (``path``), so that what the driver
    imports they can import. Messages go through ``mpi4py``'s ``pkl5``
    communicators (``use_pkl5``, unless ``MPI4PY_FUTURES_USE_PKL5`` says
    otherwise): the large buffers of a call or a value (:func:`~._mpiwork.packed`)
    travel as MPI messages of their own, sent from the object's memory and received
    into the buffer the value is then built on."""
    pkl5 = {} if "MPI4PY_FUTURES_USE_PKL5" in os.environ else {"use_pkl5": True}
    return {
        "main": False,
        "path": list(sys.path),
        **pkl5,
        **options,
        "initializer": _mpiwork.init_worker,
        "initargs": (init,),
    }


class WorldRanks:
    """The ranks of an ``mpiexec`` job the user started, reached through
    ``mpi4py.futures`` (see the module docstring)."""

    def __init__(self, pool, max_workers: int, batch_size, grace: float):
        self._pool = pool
        self.max_workers = max_workers
        self.grace = grace  # seconds the ranks of an SPMD node wait for a failed one's peers
        self._gangs: collections.deque = collections.deque()  # SPMD nodes waiting for their ranks
        self._rendezvous: Rendezvous | None = None  # made for the first SPMD node
        self._lock = threading.Lock()  # the slots in flight: the engine's and mpi4py's threads
        self._drained = threading.Condition(self._lock)
        self._jobs = JobQueue(batch_size)
        self._inflight = 0
        self.workers: list = []  # (host, pid) of each worker rank

    def start(self, owner, timeout: float | None) -> None:
        if not self.workers:
            self._hello(timeout)

    def workers_info(self) -> list[tuple[str, int]]:
        return list(self.workers)

    @property
    def stats(self) -> dict:
        return dict(self._jobs.stats)

    def _hello(self, timeout: float | None) -> None:
        pool = self._pool
        try:
            pool.bootup(wait=True)
            n = pool.num_workers
            if n < 1:
                raise ExecutorError("the MPI pool has no workers")
            futures = [pool.submit(_mpiwork.hello) for _ in range(n)]
            workers = futures[0].result(timeout)
            for f in futures[1:]:
                f.result(timeout)
        except ExecutorError:
            raise
        except Exception as exc:
            raise ExecutorError(
                f"MPIExecutor could not reach the worker ranks: {type(exc).__name__}: {exc}"
            ) from exc
        self.workers = [tuple(w) for w in workers]

    def submit(self, task, done) -> None:
        job = Job(task, done)
        task.handle = job
        if task.cores is not None and task.cores > 1:  # SPMD on task.cores ranks
            if task.cores > self.max_workers:
                self._jobs.report(
                    job, False, (too_many_ranks(task.node.label, task.cores, self.max_workers), "")
                )
                return
            with self._lock:
                self._gangs.append(job)
            return
        with self._lock:
            self._jobs.add([job])

    def flush(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        lock = self._lock
        while True:
            with lock:
                free = self.max_workers - self._inflight
                if free <= 0 or self._pool is None:
                    return
                gangs = self._gangs
                while gangs and gangs[0].state != PENDING:  # reported meanwhile (cancelled)
                    gangs.popleft()
                if gangs:
                    if gangs[0].task.cores > free:
                        return  # the SPMD node at the head waits for its ranks: nothing passes it
                    job = gangs.popleft()
                    self._inflight += job.task.cores
                    batch = None
                else:
                    if not self._jobs.pending:
                        return
                    batch = self._jobs.take(free)
                    if batch is None:
                        return
                    self._inflight += 1
            if batch is None:
                self._send_gang(job)
                continue
            try:
                sent = self._send(batch)
            except BaseException:  # Ctrl-C while pickling a large call: give the slot back
                self._requeue(batch)
                self._free_slot()
                raise
            if not sent:
                self._free_slot()

    def _free_slot(self, count: int = 1) -> None:
        with self._lock:
            self._inflight -= count
            if self._inflight <= 0:
                self._drained.notify_all()

    def _send(self, batch: list) -> bool:
        payload = self._jobs.encode(batch, _mpiwork.packed)  # None: it went back one job at a time
        if payload is None:
            return False
        self._jobs.sent(batch)
        task = batch[0].task
        timeout = task.timeout if len(batch) == 1 else None
        late = str(timeout_error(task.node.label, timeout)) if timeout is not None else ""
        try:
            labels = [j.task.node.label for j in batch]
            task.started = time.monotonic()  # a free rank takes it now
            task.where = "a worker rank"
            _mpipoll.sending(_mpiwork.packed_size(payload))
            future = self._pool.submit(_mpiwork.run_batch, payload, timeout, labels, late)
        except Exception as exc:  # a broken or shut-down pool
            err = ExecutorError(f"the MPI pool cannot take nodes: {type(exc).__name__}: {exc}")
            self._jobs.fail(batch, err, format_exception(exc))
            return False
        future.add_done_callback(functools.partial(self._finished, batch))
        return True

    def _send_gang(self, job: Job) -> None:
        """Send the members of an SPMD node, its ranks being free (see :mod:`_mpigang`)."""
        task = job.task
        size = task.cores
        payload = self._jobs.encode([job], _mpiwork.packed)
        if payload is None:  # it failed, naming what would not pickle
            self._free_slot(size)
            return
        try:
            with self._lock:
                if self._rendezvous is None:
                    self._rendezvous = Rendezvous()
                rendezvous = self._rendezvous
            number = rendezvous.open(size)
        except BaseException as exc:  # no socket for the rendezvous, or Ctrl-C: the node fails
            self._free_slot(size)
            err = ExecutorError(
                f"node {task.node.label!r} cannot meet its ranks: {type(exc).__name__}: {exc}"
            )
            self._jobs.fail([job], err, format_exception(exc))
            if not isinstance(exc, Exception):
                raise
            return
        run = GangRun(job, number, size)
        self._jobs.sent([job], run)
        late = str(timeout_error(task.node.label, task.timeout)) if task.timeout is not None else ""
        gang = (rendezvous.address, rendezvous.token, run.gang)
        task.started = time.monotonic()
        task.where = f"{size} worker ranks"
        _mpipoll.sending(_mpiwork.packed_size(payload) * size)
        for i in range(size):
            try:
                future = self._pool.submit(
                    _mpiwork.run_member, payload, gang, task.timeout, task.node.label, late, self.grace
                )
            except Exception as exc:  # a broken or shut-down pool
                rendezvous.cancel(run.gang)  # the members sent go home
                self._free_slot(size - i)
                err = ExecutorError(f"the MPI pool cannot take nodes: {type(exc).__name__}: {exc}")
                self._jobs.fail([job], err, format_exception(exc))
                return
            future.add_done_callback(functools.partial(self._member_finished, run))

    def _member_finished(self, run: GangRun, future) -> None:
        """A member of an SPMD node came back (in mpi4py's manager thread)."""
        self._free_slot()
        self._dispatch()
        job = run.job
        try:
            kind, *rest = future.result()
        except BaseException as exc:  # cancelled, a broken pool, an unreadable answer
            if isinstance(exc, CancelledError):
                self._jobs.report(job, False, (_cancelled_error(job), ""))
            else:
                self._jobs.fail([job], exc, format_exception(exc))
            return
        if kind == "cancelled":
            self._jobs.report(job, False, (_cancelled_error(job), ""))
            return
        rank, data, (start, end) = rest
        try:
            outcome = _mpiwork.unpacked(data)
        except Exception as exc:
            err = ExecutorError(
                f"the outcome of node {job.task.node.label!r} on its rank {rank} cannot be unpickled "
                f"here: {type(exc).__name__}: {exc}"
            )
            outcome = (False, (err, format_exception(exc)))
        if not run.add(rank, outcome):
            return
        outcome, failed = run.outcome()
        if failed is None:
            self._jobs.learn([job], [(start, end)], f"{run.size} worker ranks")  # the last member's
            self._jobs.finished([job], [outcome])
            return
        self._jobs.report(job, False, run.failure(*decode_outcome(*outcome)[1], failed))

    def _requeue(self, batch: list) -> None:
        self._jobs.requeue(batch, alone=True)

    def _finished(self, batch: list, future) -> None:
        """A batch came back (in mpi4py's manager thread)."""
        self._free_slot()
        self._dispatch()  # keep the workers busy while we report
        try:
            kind, *rest = future.result()
        except BaseException as exc:  # cancelled, a broken pool, an unreadable answer
            if isinstance(exc, CancelledError):
                for job in batch:
                    self._jobs.report(job, False, (_cancelled_error(job), ""))
                return
            self._jobs.fail(batch, exc, format_exception(exc))
            return
        if kind == "unreadable":
            self._jobs.unreadable(batch, rest[0], "worker rank")
            self._dispatch()
            return
        outcomes, spans, where = rest
        loaded = []
        for job, data in zip(batch, outcomes):
            try:
                loaded.append(_mpiwork.unpacked(data))
            except Exception as exc:  # this outcome only: a class the driver lacks...
                label = job.task.node.label
                err = ExecutorError(
                    f"the outcome of node {label!r} cannot be unpickled here: {type(exc).__name__}: {exc}"
                )
                loaded.append((False, (err, format_exception(exc))))
        self._jobs.learn(batch, spans, where)
        self._jobs.finished(batch, loaded)

    def cancel(self, task) -> None:
        job = task.handle
        if isinstance(job, Job):
            if task.expired and job.state == SENT:
                self._jobs.stats["timeouts"] += 1
            run = job.worker
            self._jobs.report(job, False, (_cancelled_error(job), ""))
            if isinstance(run, GangRun) and self._rendezvous is not None:
                self._rendezvous.cancel(run.gang)  # members still to meet go home

    def _cancel_pending(self) -> None:
        self._jobs.fail_pending(_cancelled_error)
        with self._lock:
            gangs, self._gangs = self._gangs, collections.deque()
        self._jobs.fail(gangs, CancelledError("the run was interrupted"))

    def _signal_busy(self) -> None:
        """SIGINT the worker ranks of this host (a node running there raises
        ``KeyboardInterrupt``; an idle worker ignores it)."""
        here = socket.gethostname()
        for host, pid in self.workers:
            if host == here:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGINT)

    def _drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the batches on the workers to come back."""
        with self._drained:
            return self._drained.wait_for(lambda: self._inflight <= 0, timeout)

    def interrupt(self) -> None:
        self._cancel_pending()
        deadline = time.monotonic() + INTERRUPT_WAIT
        while self._inflight > 0 and time.monotonic() < deadline:
            self._signal_busy()  # (again after a while: a rank whose batch had not started ignored it)
            self._drain(RESIGNAL_AFTER)

    def shutdown(self) -> None:
        self._cancel_pending()  # the world's ranks are released when the driver exits
        if self._rendezvous is not None:
            self._rendezvous.close()
            self._rendezvous = None


def _cancelled_error(job: Job) -> CancelledError:
    return CancelledError(f"node {job.task.node.label!r} was cancelled")
