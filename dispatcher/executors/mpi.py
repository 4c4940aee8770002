"""``MPIExecutor``: nodes run on MPI worker ranks, a pool of them.

It needs ``mpi4py`` and an MPI library (``pip install 'dispatcher-graph[mpi]'``
brings both as wheels); ``mpi4py`` is imported when an executor is made, not with
the package. Where the workers come from depends on how the script was started:

* ``mpiexec -n N python -m mpi4py.futures script.py``: ranks 1..N-1 are the
  workers and only rank 0 runs the script; nodes reach them through
  ``mpi4py.futures``.
* ``mpiexec -n N python script.py``: every rank runs the script. Making the
  executor (on every rank) splits the world as ``mpi4py.futures.MPICommExecutor``
  does: rank ``root`` goes on with the script and drives the runs, every other
  rank serves nodes inside the constructor until the driver exits, and then
  leaves the script with ``SystemExit(0)``, so code after the executor runs on the
  driver only, as in the first way.
* ``python script.py`` (a world of one): the executor starts ``max_workers``
  worker ranks as an ``mpiexec`` job on its first run (or :meth:`MPIExecutor.start`)
  and stops them on :meth:`~dispatcher.Executor.close`. They are served as
  :class:`~dispatcher.ProcessExecutor` serves its worker processes, over sockets
  (:mod:`dispatcher.executors._mpilaunch`, :mod:`dispatcher.executors._pool`): a
  rank that dies is replaced and its node retried, a node past its timeout has its
  rank killed and replaced, and their output reaches this process's own.

In the first two ways the world fixes the workers: they are shared by every
``MPIExecutor`` of the process and released when the driver's interpreter exits.
In a Slurm allocation a spawning executor takes ``SLURM_NTASKS - 1`` workers (the
driver is the first task); see :func:`slurm_allocation`.

Functions and values travel as cloudpickle bytes. Quick nodes go in batches (the
same policy as :class:`~dispatcher.ProcessExecutor`: a running estimate of each
function's time; a node whose function is unknown, slow or has a timeout goes
alone).

On the ranks of an ``mpiexec`` job started by the user (the first two ways), at
most one batch per worker is in flight, so that what is still waiting can be
batched and a node's timeout counts from when a worker has it. A node's timeout is
enforced on the worker with ``SIGALRM`` (the node is interrupted by a
``TimeoutError`` raised inside it); if that cannot stop it (code that blocks
signals) the driver fails the node :data:`TIMEOUT_SLACK` seconds later, and its
rank stays busy until the call returns. A node cancelled while on a worker (after
another node failed) is reported cancelled at once and runs to its end there.
Ctrl-C during a run cancels what is waiting and interrupts the nodes running on
worker ranks of this host (SIGINT raises ``KeyboardInterrupt`` inside a node on a
worker, and is ignored between nodes). A rank that dies ends the whole job, by
MPI's rule, the driver included, so nothing can be retried; a worker rank that is
sent SIGTERM (as Slurm does at a time limit or ``scancel``) first writes to its
standard error which nodes it was running, and a crashing one its Python
traceback.
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
from concurrent.futures import CancelledError

import cloudpickle

from ..results import ExecutorError, format_exception, is_worker_lost
from . import _mpiwork
from ._batching import (
    MAX_BATCH,
    PENDING,
    REPORTED,
    SENT,
    Job,
    check_worker_options,
    func_key,
    learn,
    take_batch,
)
from ._mpilaunch import START_TIMEOUT, MPILauncher, import_mpi, in_mpi_job, require_mpi4py
from ._pool import PoolHandle
from ._procworker import pickle_dumps
from ._serialize import decode_outcome, dumps_initializer, unpicklable_error
from ._slurm import SlurmAllocation, slurm_allocation
from .base import Executor
from .process import cpu_count

__all__ = ["MPIExecutor", "SlurmAllocation", "slurm_allocation"]

logger = logging.getLogger("dispatcher")

INTERRUPT_WAIT = 5.0  # seconds an interrupted run waits for its interrupted nodes
TIMEOUT_SLACK = 1.0  # seconds after a node's timeout that the driver fails it, if the worker did not
LAUNCH_OPTIONS = ("python_exe", "python_args", "env", "wdir")  # passed to the mpiexec launcher


def _base_options(options: dict) -> dict:
    return {k: options.pop(k) for k in ("retries", "retry_on", "backoff", "timeout") if k in options}


class MPIExecutor(Executor):
    """Run nodes on MPI worker ranks.

    Args:
        max_workers: worker ranks to start when the script runs as a world of one
            (default: ``SLURM_NTASKS - 1`` in a Slurm allocation, else
            ``MPI4PY_FUTURES_MAX_WORKERS``, else the CPUs this process may use).
            Ignored, with a warning, when the world's ranks are the workers.
        comm: the communicator whose ranks are driver and workers (default
            ``COMM_WORLD``).
        root: the driver's rank in ``comm`` (default 0).
        initializer: called with ``initargs`` on each worker rank as it starts.
        initargs: the arguments of ``initializer``.
        batch_size: ``"auto"`` sends nodes of functions known to be quick in
            batches of up to 1000; an int sets that limit (1 sends every node on
            its own).
        pool_options: for ranks this executor starts: ``python_exe``,
            ``python_args``, ``env`` (variables to set), ``wdir``, ``path`` (the
            workers' ``sys.path``, default this process's), ``mpi_info``
            (``{"hosts": "a,b"}`` or ``{"hostfile": path}``) and ``mpiexec_args``;
            for the ranks of a world, the options of
            ``mpi4py.futures.MPICommExecutor`` (``path``, ``use_pkl5``, ...).

    ``retries``, ``retry_on``, ``backoff`` and ``timeout`` are those of every
    :class:`~dispatcher.Executor`; a spawning executor retries a lost rank
    (:class:`~dispatcher.WorkerLostError`) by default.

    See :mod:`dispatcher.executors.mpi` for the three ways of starting it.

    >>> import dispatcher as dp
    >>> with dp.MPIExecutor(1) as ex:                   # doctest: +SKIP
    ...     dp.execute(dp.Op(lambda x: x + 1, 41), ex)
    42
    """

    enforces_timeouts = True

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        comm=None,
        root: int = 0,
        initializer=None,
        initargs=(),
        batch_size="auto",
        **options,
    ):
        super().__init__(**_base_options(options))
        check_worker_options(max_workers, batch_size, initializer)
        init = dumps_initializer(initializer, initargs)
        self.batch_size = batch_size
        self.slurm = slurm_allocation()
        self.spawns = comm is None and not in_mpi_job()
        if self.spawns:
            require_mpi4py()  # the ranks import it; this process does not start MPI
            self.max_workers = max_workers or _default_workers(self.slurm)
            self.default_retry_on = (is_worker_lost,)
            launch, path = _launch_options(options, self.slurm)
            self._ranks = PoolHandle(
                self.max_workers, init, batch_size, functools.partial(MPILauncher, **launch), path
            )
            if self.slurm is not None:
                logger.info("%s; MPIExecutor spawns %d worker ranks", self.slurm.describe(), self.max_workers)
        else:
            world = import_mpi().COMM_WORLD if comm is None else comm
            if world.Get_size() < 2:
                raise ValueError("MPIExecutor needs at least 2 ranks in comm: a driver and a worker")
            if not 0 <= root < world.Get_size():
                raise ValueError(f"root must be a rank of the communicator, got {root!r}")
            pool = _world_pool(world, root, init, options)  # a worker rank exits here
            self.max_workers = world.Get_size() - 1
            self._ranks = _WorldRanks(pool, self.max_workers, batch_size)
            if max_workers is not None and max_workers != self.max_workers:
                logger.warning(
                    "MPIExecutor: max_workers=%d ignored: the %d other ranks of the world are the workers",
                    max_workers,
                    self.max_workers,
                )
            if self.slurm is not None:
                logger.info("%s; MPIExecutor uses %d worker ranks", self.slurm.describe(), self.max_workers)

    # -- public ---------------------------------------------------------------------
    def start(self, timeout: float | None = START_TIMEOUT) -> MPIExecutor:
        """Start the workers now (launching them if need be) and wait until each has
        answered; returns ``self``."""
        self._open()
        if self.spawns:
            self._ranks.pool.wait_ready(timeout)
        else:
            self._ranks.start(self, timeout)
        return self

    def worker_pids(self) -> list[int]:
        """The process ids of the worker ranks (empty before the first run)."""
        return [pid for _, pid in self._ranks.workers_info()]

    def worker_hosts(self) -> list[str]:
        """The host name of each worker rank (empty before the first run)."""
        return [host for host, _ in self._ranks.workers_info()]

    @property
    def stats(self) -> dict:
        """Counts of ``tasks`` and ``batches`` sent, and of nodes that ``timeouts`` failed
        (and, for ranks this executor starts, of ranks ``started`` and ``lost``)."""
        return self._ranks.stats

    # -- the executor's part --------------------------------------------------------
    def _open(self) -> None:
        super()._open()
        if self.spawns:
            self._ranks.open(self)
        else:
            self._ranks.start(self, START_TIMEOUT)

    def _submit(self, task, done) -> None:
        self._ranks.submit(task, done)

    def _flush(self) -> None:
        self._ranks.flush()

    def _cancel(self, task) -> None:
        self._ranks.cancel(task)

    def _interrupt(self) -> None:
        self._ranks.interrupt()

    def _shutdown(self) -> None:
        self._ranks.shutdown()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        how = "spawned" if self.spawns else "world"
        return f"<MPIExecutor max_workers={self.max_workers} ({how}){state}>"


def _launch_options(options: dict, slurm: SlurmAllocation | None) -> tuple[dict, list | None]:
    """The options of ranks this executor starts: the launcher's keyword arguments
    and the workers' ``sys.path`` (None for this process's)."""
    options = dict(options)
    launch = {k: options.pop(k) for k in LAUNCH_OPTIONS if k in options}
    path = options.pop("path", None)
    mpiexec_args = list(options.pop("mpiexec_args", ()))
    info = options.pop("mpi_info", None) or {}
    for key, value in dict(info).items():
        if key in ("host", "hosts"):
            mpiexec_args += ["-hosts", str(value)]
        elif key == "hostfile":
            mpiexec_args += ["-f", str(value)]
        else:
            raise TypeError(f"MPIExecutor: mpi_info key {key!r} is not known (use host, hosts or hostfile)")
    options.pop("use_pkl5", None)  # the ranks it starts talk over sockets: no MPI pickling to choose
    if options:
        raise TypeError(f"MPIExecutor got unexpected options {sorted(options)}")
    launch["mpiexec_args"] = mpiexec_args
    launch["spread"] = bool(mpiexec_args) or (slurm is not None and len(slurm.nodes) > 1)
    return launch, None if path is None else list(path)


def _default_workers(slurm: SlurmAllocation | None) -> int:
    if slurm is not None and slurm.ntasks is not None and slurm.ntasks > 1:
        return slurm.ntasks - 1
    env = os.environ.get("MPI4PY_FUTURES_MAX_WORKERS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return cpu_count()


# -- the world's ranks as one shared pool ------------------------------------------

_WORLD: dict = {}  # "ctx", "pool", "comm", "root": the world split by MPICommExecutor


def _world_pool(comm, root: int, init: bytes | None, options: dict):
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
    imports they can import."""
    return {
        "main": False,
        "path": list(sys.path),
        **options,
        "initializer": _mpiwork.init_worker,
        "initargs": (init,),
    }


class _WorldRanks:
    """The ranks of an ``mpiexec`` job the user started, reached through
    ``mpi4py.futures`` (see the module docstring)."""

    def __init__(self, pool, max_workers: int, batch_size):
        self._pool = pool
        self.max_workers = max_workers
        self._max_batch = MAX_BATCH if batch_size == "auto" else batch_size
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._pending: collections.deque = collections.deque()
        self._inflight = 0
        self._est: dict = {}
        self.workers: list = []  # (host, pid) of each worker rank
        self._stats: collections.Counter = collections.Counter()

    def start(self, owner, timeout: float | None) -> None:
        if not self.workers:
            self._hello(timeout)

    def workers_info(self) -> list[tuple[str, int]]:
        return list(self.workers)

    @property
    def stats(self) -> dict:
        return dict(self._stats)

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
        job.key = func_key(task.func)
        task.handle = job
        with self._lock:
            self._pending.append(job)

    def flush(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        lock = self._lock
        while True:
            with lock:
                free = self.max_workers - self._inflight
                if free <= 0 or not self._pending or self._pool is None:
                    return
                batch = take_batch(self._pending, self._est, free, self._max_batch)
                if batch is None:
                    return
                for job in batch:
                    job.state = SENT
                self._inflight += 1
            try:
                sent = self._send(batch)
            except BaseException:  # Ctrl-C while pickling a large call: give the slot back
                self._requeue(batch)
                self._free_slot()
                raise
            if not sent:
                self._free_slot()

    def _free_slot(self) -> None:
        with self._lock:
            self._inflight -= 1
            if self._inflight <= 0:
                self._drained.notify_all()

    def _send(self, batch: list) -> bool:
        try:
            payload = pickle_dumps([(j.task.func, j.task.args, j.task.kwargs) for j in batch])
        except Exception as exc:
            if len(batch) > 1:  # find the culprit: send them one by one
                self._requeue(batch)
                return False
            task = batch[0].task
            err = unpicklable_error(task.node.label, task.func, task.args, task.kwargs)
            err.__cause__ = exc
            self._report(batch[0], False, (err, format_exception(exc)))
            return False
        task = batch[0].task
        timeout = task.timeout if len(batch) == 1 else None
        try:
            labels = [j.task.node.label for j in batch]
            future = self._pool.submit(_mpiwork.run_batch, payload, timeout, labels)
        except Exception as exc:  # a broken or shut-down pool
            err = ExecutorError(f"the MPI pool cannot take nodes: {type(exc).__name__}: {exc}")
            for job in batch:
                self._report(job, False, (err, format_exception(exc)))
            return False
        timer = None
        if timeout is not None:  # the worker's alarm rings first; this is for a stuck node
            timer = threading.Timer(timeout + TIMEOUT_SLACK, self._expire, (batch[0],))
            timer.daemon = True
        future.add_done_callback(functools.partial(self._finished, batch, timer))
        if timer is not None:
            timer.start()
        with self._lock:
            self._stats["batches"] += 1
            self._stats["tasks"] += len(batch)
        return True

    def _requeue(self, batch: list) -> None:
        with self._lock:
            for job in reversed(batch):
                if job.state == SENT:
                    job.state = PENDING
                    job.alone = True
                    self._pending.appendleft(job)

    def _finished(self, batch: list, timer, future) -> None:
        """A batch came back (in mpi4py's manager thread)."""
        if timer is not None:
            timer.cancel()
        self._free_slot()
        self._dispatch()  # keep the workers busy while we report
        try:
            kind, *rest = cloudpickle.loads(future.result())
        except BaseException as exc:  # cancelled, a broken pool, an unreadable answer
            if isinstance(exc, CancelledError):
                for job in batch:
                    self._report(job, False, (_cancelled_error(job), ""))
                return
            for job in batch:
                self._report(job, False, (exc, format_exception(exc)))
            return
        if kind == "unreadable":
            if len(batch) > 1:
                self._requeue(batch)
                self._dispatch()
                return
            label = batch[0].task.node.label
            exc = ExecutorError(f"node {label!r} cannot be unpickled on the worker rank: {rest[0]}")
            self._report(batch[0], False, (exc, rest[0]))
            return
        outcomes, seconds = rest
        with self._lock:
            learn(self._est, batch, seconds)
        for job, data in zip(batch, outcomes):
            try:
                ok, value = cloudpickle.loads(data)
            except Exception as exc:  # this outcome only: a class the driver lacks...
                label = job.task.node.label
                err = ExecutorError(
                    f"the outcome of node {label!r} cannot be unpickled here: {type(exc).__name__}: {exc}"
                )
                self._report(job, False, (err, format_exception(exc)))
                continue
            if ok:
                self._report(job, True, value)
            else:
                self._report(job, *decode_outcome(ok, value))

    def _report(self, job: Job, ok: bool, payload) -> None:
        with self._lock:
            if job.state == REPORTED:
                return
            job.state = REPORTED
        job.done(job.task, ok, payload)

    def _expire(self, job: Job) -> None:
        """The worker's alarm did not stop the node (it blocks signals): fail it here."""
        if job.state == SENT:
            with self._lock:
                self._stats["timeouts"] += 1
            task = job.task
            exc = TimeoutError(
                f"node {task.node.label!r} ran longer than its timeout of {task.timeout} s "
                "(and did not stop: its worker rank stays busy until the call returns)"
            )
            self._report(job, False, (exc, format_exception(exc)))

    def cancel(self, task) -> None:
        job = task.handle
        if isinstance(job, Job):
            self._report(job, False, (_cancelled_error(job), ""))

    def _cancel_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, collections.deque()
        for job in pending:
            self._report(job, False, (_cancelled_error(job), ""))

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
        if self._inflight > 0:
            self._signal_busy()
            self._drain(INTERRUPT_WAIT)

    def shutdown(self) -> None:
        self._cancel_pending()  # the world's ranks are released when the driver exits


def _cancelled_error(job: Job) -> CancelledError:
    return CancelledError(f"node {job.task.node.label!r} was cancelled")
