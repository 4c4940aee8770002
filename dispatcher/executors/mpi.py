"""MPI executors: ``MPIExecutor`` (a pool of worker ranks) and ``SerialMPIExecutor``
(every node on every rank, one node at a time).

Both need ``mpi4py`` and an MPI library (``pip install 'dispatcher[mpi]'`` brings
both as wheels); ``mpi4py`` is imported when an executor is made, not with the
package.

MPIExecutor
-----------
Nodes run on worker ranks through ``mpi4py.futures``. Where the workers come from
depends on how the script was started:

* ``mpiexec -n N python -m mpi4py.futures script.py``: ranks 1..N-1 are the
  workers and only rank 0 runs the script.
* ``mpiexec -n N python script.py``: every rank runs the script. Making the
  executor (on every rank) splits the world as ``mpi4py.futures.MPICommExecutor``
  does: rank ``root`` goes on with the script and drives the runs, every other
  rank serves nodes inside the constructor until the driver exits, and then
  leaves the script with ``SystemExit(0)``, so code after the executor runs on the
  driver only, as in the first way.
* ``python script.py`` (a world of one): the executor spawns ``max_workers`` worker
  ranks with ``MPI_Comm_spawn`` on its first run (or :meth:`MPIExecutor.start`) and
  stops them on :meth:`~dispatcher.Executor.close`.

In the first two ways the world fixes the workers: they are shared by every
``MPIExecutor`` of the process and released when the driver's interpreter exits.
In a Slurm allocation a spawning executor takes ``SLURM_NTASKS - 1`` workers (the
driver is the first task); see :func:`slurm_allocation`.

Functions and values travel as cloudpickle bytes. Quick nodes go in batches (the
same policy as :class:`~dispatcher.ProcessExecutor`: a running estimate of each
function's time; a node whose function is unknown, slow or has a timeout goes
alone), and at most one batch per worker is in flight, so that what is still
waiting can be batched and a node's timeout counts from when a worker has it.

A node's timeout is enforced on the worker with ``SIGALRM`` (the node is
interrupted by a ``TimeoutError`` raised inside it); if that cannot stop it (code
that blocks signals) the driver fails the node :data:`TIMEOUT_SLACK` seconds
later, and its rank stays busy until the call returns. A node cancelled while on a
worker (after another node failed) is reported cancelled at once and runs to its
end there. Ctrl-C during a run cancels what is waiting and interrupts the nodes
running on worker ranks of this host (SIGINT raises ``KeyboardInterrupt`` inside a
node on a worker, and is ignored between nodes).

SerialMPIExecutor
-----------------
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

import atexit
import collections
import contextlib
import functools
import inspect
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import sysconfig
import tempfile
import threading
import time
import types
import weakref
from concurrent.futures import CancelledError

import cloudpickle

from ..engine import Task
from ..graph import DispatchGraph, _deps_of, topological_order
from ..nodes import DispatchNode, Failure
from ..results import (
    DependencyError,
    DispatcherError,
    DispatchResult,
    ExecutorError,
    RemoteError,
    format_exception,
)
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
from ._serialize import decode_outcome, dumps_initializer, unpicklable_error
from ._slurm import SlurmAllocation, slurm_allocation
from .base import Executor
from .process import cpu_count
from .serial import _call_in_thread, _call_with_alarm

__all__ = ["MPIExecutor", "SerialMPIExecutor", "SlurmAllocation", "slurm_allocation"]

logger = logging.getLogger("dispatcher")

START_TIMEOUT = 120.0  # seconds for spawned workers to start and answer
INTERRUPT_WAIT = 5.0  # seconds an interrupted run waits for its interrupted nodes
TIMEOUT_SLACK = 1.0  # seconds after a node's timeout that the driver fails it, if the worker did not
CLOSE_WARN = 10.0  # seconds close() waits for running nodes before it says so


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ExecutorError(
            "the MPI executors need mpi4py and an MPI library: pip install 'dispatcher[mpi]' "
            f"(mpi4py and the mpich wheels), or mpi4py built against your MPI ({exc})"
        ) from exc
    return MPI


def _base_options(options: dict) -> dict:
    return {k: options.pop(k) for k in ("retries", "retry_on", "backoff", "timeout") if k in options}


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


_SPAWNED: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for ex in list(_SPAWNED):
        ex.close()


class MPIExecutor(Executor):
    """Run nodes on MPI worker ranks through ``mpi4py.futures``.

    Args:
        max_workers: worker ranks to spawn when the script runs as a world of one
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
        pool_options: passed to ``mpi4py.futures.MPIPoolExecutor``
            (``python_exe``, ``python_args``, ``mpi_info``, ``env``, ``path``,
            ``wdir``, ``use_pkl5``, ...).

    ``retries``, ``retry_on``, ``backoff`` and ``timeout`` are those of every
    :class:`~dispatcher.Executor`.

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
        MPI = self._MPI = _mpi()
        self._init = dumps_initializer(initializer, initargs)
        self.batch_size = batch_size
        self._max_batch = MAX_BATCH if batch_size == "auto" else batch_size
        self._pool_options = options
        self.slurm = slurm_allocation()
        world = MPI.COMM_WORLD if comm is None else comm
        self.spawns = comm is None and world.Get_size() == 1
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._pending: collections.deque = collections.deque()
        self._inflight = 0
        self._est: dict = {}
        self._workers: list = []  # (host, pid) of each worker rank
        self._stats: collections.Counter = collections.Counter()
        self._pool = None
        if self.spawns:
            self.max_workers = max_workers or _default_workers(self.slurm)
            if self.slurm is not None:
                logger.info("%s; MPIExecutor spawns %d worker ranks", self.slurm.describe(), self.max_workers)
            _SPAWNED.add(self)
        else:
            if world.Get_size() < 2:
                raise ValueError("MPIExecutor needs at least 2 ranks in comm: a driver and a worker")
            if not 0 <= root < world.Get_size():
                raise ValueError(f"root must be a rank of the communicator, got {root!r}")
            self._pool = _world_pool(world, root, self._init, options)  # a worker rank exits here
            self.max_workers = world.Get_size() - 1
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
        """Start the workers now (spawning them if need be) and wait until each has
        answered; returns ``self``."""
        self._open(timeout)
        return self

    def worker_pids(self) -> list[int]:
        """The process ids of the worker ranks (empty before the first run)."""
        return [pid for _, pid in self._workers]

    def worker_hosts(self) -> list[str]:
        """The host name of each worker rank (empty before the first run)."""
        return [host for host, _ in self._workers]

    @property
    def stats(self) -> dict:
        """Counts of ``tasks`` and ``batches`` sent, and of nodes that ``timeouts`` failed."""
        return dict(self._stats)

    # -- the executor's part --------------------------------------------------------
    def _open(self, timeout: float | None = START_TIMEOUT) -> None:
        super()._open()
        if self._pool is None:
            from mpi4py.futures import MPIPoolExecutor

            with _launcher(self._MPI):
                self._pool = MPIPoolExecutor(
                    self.max_workers, **_pool_options(self._init, self._pool_options)
                )
                self._hello(timeout)
        elif not self._workers:
            self._hello(timeout)

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
            how = f"spawn {self.max_workers} worker ranks" if self.spawns else "reach the worker ranks"
            raise ExecutorError(f"MPIExecutor could not {how}: {type(exc).__name__}: {exc}") from exc
        self._workers = [tuple(w) for w in workers]

    def _submit(self, task, done) -> None:
        job = Job(task, done)
        job.key = func_key(task.func)
        task.handle = job
        with self._lock:
            self._pending.append(job)

    def _flush(self) -> None:
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
            payload = cloudpickle.dumps([(j.task.func, j.task.args, j.task.kwargs) for j in batch])
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
            future = self._pool.submit(_mpiwork.run_batch, payload, timeout, task.node.label)
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

    def _cancel(self, task) -> None:
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
        for host, pid in self._workers:
            if host == here:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGINT)

    def _drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the batches on the workers to come back."""
        with self._drained:
            return self._drained.wait_for(lambda: self._inflight <= 0, timeout)

    def _interrupt(self) -> None:
        self._cancel_pending()
        if self._inflight > 0:
            self._signal_busy()
            self._drain(INTERRUPT_WAIT)

    def _shutdown(self) -> None:
        self._cancel_pending()
        if not self.spawns:
            return  # the world's ranks are released when the driver exits
        pool, self._pool = self._pool, None
        if pool is not None:
            if self._inflight > 0:  # nodes of an ended run still running
                self._signal_busy()
                if not self._drain(CLOSE_WARN):
                    logger.warning(
                        "MPIExecutor.close(): %d batch(es) of nodes still run on the worker ranks "
                        "(a node that ignores SIGINT); waiting for them to return",
                        self._inflight,
                    )
            pool.shutdown(wait=True, cancel_futures=True)
        _SPAWNED.discard(self)

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        how = "spawned" if self.spawns else "world"
        return f"<MPIExecutor max_workers={self.max_workers} ({how}){state}>"


def _cancelled_error(job: Job) -> CancelledError:
    return CancelledError(f"node {job.task.node.label!r} was cancelled")


@contextlib.contextmanager
def _launcher(MPI):
    """Where a world of one spawns its workers, MPICH starts ``mpiexec`` (found on
    ``PATH``) to manage them. That ``mpiexec`` would share the process group of the
    script, and when the script dies by a signal (Ctrl-C, the out-of-memory killer)
    it kills its whole process group, the shell pipeline, ``make`` or test runner
    that started the script included. For the spawn, ``PATH`` leads to a wrapper
    that starts the real ``mpiexec`` in a session of its own; it still ends the
    workers when the script goes. Without any ``mpiexec``, a clear error instead of
    MPICH's abort."""
    if "MPICH" not in MPI.Get_library_version():
        yield
        return
    real = None  # the mpiexec of the MPICH beside this Python first, then PATH's
    for where in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        if real is None and where:
            real = shutil.which("mpiexec", path=where)
    real = real or shutil.which("mpiexec")
    if real is None:
        raise ExecutorError(
            "MPIExecutor cannot spawn worker ranks: MPICH needs its mpiexec on PATH to spawn "
            "from a script started without mpiexec (install the mpich wheel, or start the script "
            "with mpiexec -n N python -m mpi4py.futures script.py)"
        )
    with tempfile.TemporaryDirectory(prefix="dispatcher-mpi-") as folder:
        wrapper = os.path.join(folder, "mpiexec")
        with open(wrapper, "w") as f:
            f.write(
                "#!/bin/sh\n"
                f"exec {shlex.quote(sys.executable)} -I -c "
                "'import os, sys; os.setsid(); os.execv(sys.argv[1], sys.argv[1:])' "
                f'{shlex.quote(os.path.realpath(real))} "$@"\n'
            )
        os.chmod(wrapper, 0o755)
        path = os.environ.get("PATH")
        os.environ["PATH"] = folder + os.pathsep + (path or "")
        try:
            yield
        finally:
            if path is None:
                os.environ.pop("PATH", None)
            else:
                os.environ["PATH"] = path


def _default_workers(slurm: SlurmAllocation | None) -> int:
    if slurm is not None and slurm.ntasks is not None and slurm.ntasks > 1:
        return slurm.ntasks - 1
    env = os.environ.get("MPI4PY_FUTURES_MAX_WORKERS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return cpu_count()


# -- serial with MPI -----------------------------------------------------------------

_FIRST = 4096  # bytes of a message that go in its first broadcast
_SPIN = 0.002  # seconds a wait only yields the CPU between tests of its request
_POLL_MAX = 0.001  # then the longest sleep between tests, for the first second
_POLL_SLOW = 0.01  # ... and after


def _wait(request, limit: float | None = None) -> bool:
    """Wait for ``request`` without holding a CPU for long; False if ``limit``
    seconds pass first. A rank waiting for the next node while rank 0 runs a long
    one sleeps between tests, so the ranks of an oversubscribed node keep their CPUs
    for the work."""
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


def _wants_comm(func) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    p = params.get("comm")
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def _failure_bytes(exc: BaseException, tb: str) -> bytes:
    """A failure to send to rank 0: the exception if it survives the trip (some
    pickle but cannot be rebuilt), else a :class:`RemoteError` standing for it."""
    try:
        data = cloudpickle.dumps((exc, tb))
        cloudpickle.loads(data)
    except Exception:
        return cloudpickle.dumps((_stand_in(exc), tb))
    return data


def _load_failure(data: bytes) -> tuple:
    try:
        return cloudpickle.loads(data)
    except Exception as exc:
        return RemoteError(type(exc).__qualname__, f"the exception cannot be rebuilt here: {exc}"), ""


def _stand_in(exc: BaseException) -> RemoteError:
    """What travels in place of an exception that cannot be pickled."""
    return RemoteError(f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc))


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

    synchronous = True
    enforces_timeouts = True

    def __init__(self, comm=None, *, grace: float = 60.0, **options):
        super().__init__(**options)
        if not grace > 0:
            raise ValueError(f"grace must be a positive number of seconds, got {grace!r}")
        MPI = _mpi()
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        if self.comm.Is_inter():
            raise ValueError("SerialMPIExecutor needs an intracommunicator")
        self.grace = grace
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
        if not _wait(ctl.Ibcast([first, MPI.BYTE], root=0), limit):
            return b""
        size = int.from_bytes(first[:8], "little")
        if size <= _FIRST:
            return bytes(first[8 : 8 + size])
        rest = bytearray(data[_FIRST:]) if self.rank == 0 else bytearray(size - _FIRST)
        _wait(ctl.Ibcast([rest, MPI.BYTE], root=0), limit)
        return bytes(first[8:]) + bytes(rest)

    # -- one node on every rank -----------------------------------------------------
    def _call(self, task) -> tuple:
        """Call the node here: ``(ok, value or (exception, traceback))``. Every
        exception fails the node (SystemExit and KeyboardInterrupt too: the other
        ranks wait to hear how the call went)."""
        try:
            if _wants_comm(task.func) and not (task.kwargs and "comm" in task.kwargs):
                task.kwargs = {**(task.kwargs or {}), "comm": self.comm}
            if task.timeout is None:
                return True, task.call()
            if threading.current_thread() is threading.main_thread():
                return _call_with_alarm(task)
            return _call_in_thread(task)
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
        MPI, ctl = self._MPI, self._ctl
        flags = bytearray(self.size)
        request = ctl.Iallgather([bytearray(b"\1" if ok else b"\0"), MPI.BYTE], [flags, MPI.BYTE])
        if ok:
            _wait(request)
        elif not _wait(request, self.grace):
            exc, tb = payload
            sys.stderr.write(
                f"dispatcher: node {label!r} failed on rank {self.rank} of {self.size} "
                f"({type(exc).__name__}: {exc}) and other ranks are still inside it after "
                f"{self.grace} s, in all likelihood blocked in a collective call that needs "
                f"this rank: aborting the MPI job.\n{tb}"
            )
            sys.stderr.flush()
            ctl.Abort(1)
        if all(flags):
            return outcome if self.rank == 0 else None
        first = flags.index(0)
        if self.rank == first and first != 0:
            ctl.send(_failure_bytes(*payload), dest=0, tag=first)
        if self.rank != 0:
            return None
        if first == 0:
            exc, tb = payload
        else:
            exc, tb = _load_failure(ctl.recv(source=first, tag=first))
            if hasattr(exc, "add_note"):
                exc.add_note(f"(raised on rank {first} of {self.size})")
        return False, (exc, f"raised on rank {first} of {self.size}:\n{tb}")

    def _submit(self, task, done) -> None:  # rank 0 only
        label = task.node.label
        if self.size > 1:
            try:
                call = cloudpickle.dumps((task.func, task.args, task.kwargs))
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

    def _run_spmd(self, outputs, run):
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

    async def _run_spmd_async(self, outputs, run):
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

    def _shutdown(self) -> None:
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
        inner = cloudpickle.dumps(_stand_in(error.error))
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
            from ..nodes import DataNode

            node = DataNode(None, label=label)  # stands for rank 0's node
    return DependencyError(cloudpickle.loads(inner), tb, node, attempts)
