"""``MPIExecutor``: nodes run on MPI worker ranks, a pool of them.

It needs ``mpi4py`` and an MPI library (``pip install 'dispatcher-graph[mpi]'``
brings both as wheels); ``mpi4py`` is imported when an executor is made under
``mpiexec`` (a spawning one only checks that it is installed: its ranks import
it), never with the package. Where the workers come from depends on how the script was started:

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

Functions and values travel as cloudpickle bytes; on the ranks of an ``mpiexec``
job started by the user, the large buffers of arrays travel beside them as MPI
messages of their own (``mpi4py``'s ``pkl5`` communicators), not copied into a
pickle. Quick nodes go in batches (the
same policy as :class:`~dispatcher.ProcessExecutor`: a running estimate of each
function's time; a node whose function is unknown, slow or has a timeout goes
alone).

On the ranks of an ``mpiexec`` job started by the user (the first two ways), see
:mod:`dispatcher.executors._mpiworld` for how nodes are sent, timed out and
cancelled. Ctrl-C during a run cancels what is waiting and interrupts the nodes
running on worker ranks of this host (SIGINT raises ``KeyboardInterrupt`` inside a
node on a worker, and is ignored between nodes). A worker rank that is sent
SIGTERM (as Slurm does at a time limit or ``scancel``) first writes to its
standard error which nodes it was running, and a crashing one its Python
traceback.

A node granted ``k`` cores runs SPMD on ``k`` worker ranks, with a communicator
of its own (see :mod:`dispatcher.executors._mpigang` for the ranks of a user's
job, and :mod:`dispatcher.executors._pool` for spawned ranks, whose ``k`` ranks
are taken from one ``mpiexec`` job so that they can share a communicator).
"""

from __future__ import annotations

import functools
import logging
import os

from ..slurm import SlurmAllocation, slurm_allocation
from ._jobs import check_worker_options
from ._launch import cpu_count
from ._mpicomm import check_grace
from ._mpilaunch import START_TIMEOUT, MPILauncher, import_mpi, in_mpi_job, require_mpi4py
from ._mpiworld import TIMEOUT_SLACK, WORLD_LATE, WorldRanks, world_pool
from .base import Capabilities, Executor
from .codec import dumps_initializer
from .pooled import PooledExecutor, PoolHandle

__all__ = ["MPIExecutor", "SlurmAllocation", "slurm_allocation"]

logger = logging.getLogger("dispatcher")

LAUNCH_OPTIONS = ("python_exe", "python_args", "env", "wdir")  # passed to the mpiexec launcher


def _base_options(options: dict) -> dict:
    return {k: options.pop(k) for k in ("retries", "retry_on", "backoff", "timeout", "cores") if k in options}


class MPIExecutor(PooledExecutor):
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
        grace: for a node that runs SPMD on several ranks of a job the user
            started (below): seconds a rank whose call failed waits for the others
            to finish theirs before it aborts the MPI job (they are then blocked
            in a collective call that needs it), as
            :class:`~dispatcher.SerialMPIExecutor` does. Spawned ranks need no
            grace: the driver kills the rest of a failed node.
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

    A node that asks for ``cores=k`` runs SPMD on ``k`` worker ranks (one core
    per rank): each calls its function with a communicator of the ``k`` ranks
    (``comm=`` where the function takes it, and ``dp.allocation().comm``), rank
    0's value is the node's, and other nodes run on the other ranks meanwhile.

    >>> import dispatcher as dp
    >>> with dp.MPIExecutor(1) as ex:                   # doctest: +SKIP
    ...     dp.execute(dp.Op(lambda x: x + 1, 41), ex)
    42
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        comm=None,
        root: int = 0,
        initializer=None,
        initargs=(),
        batch_size="auto",
        grace: float = 60.0,
        **options,
    ):
        super().__init__(**_base_options(options))
        check_worker_options(max_workers, batch_size, initializer)
        grace = check_grace(grace)
        init = dumps_initializer(initializer, initargs)
        self.batch_size = batch_size
        self.slurm = slurm_allocation()
        self.spawns = comm is None and not in_mpi_job()
        # a spawned rank past its deadline is killed; a rank of the user's job stops
        # the call with an alarm, if the call lets it
        if self.spawns:
            self.capabilities = Capabilities(
                reports_start=True,
                store_on_worker=True,
                on_timeout="; its worker rank ({where}) was killed",
                queues_tasks=True,
            )
        else:
            self.capabilities = Capabilities(
                reports_start=True,
                store_on_worker=True,
                on_timeout=WORLD_LATE,
                timeout_grace=TIMEOUT_SLACK,
                queues_tasks=True,
            )
        if self.spawns:
            require_mpi4py()  # the ranks import it; this process does not start MPI
            self.max_workers = max_workers or _default_workers(self.slurm)
            launch, path = _launch_options(options, self.slurm)
            self._workers = PoolHandle(
                self.max_workers, init, batch_size, functools.partial(MPILauncher, **launch), path
            )
            if self.slurm is not None:
                logger.info("%s; MPIExecutor spawns %d worker ranks", self.slurm.describe(), self.max_workers)
        else:
            self.default_retry_on = ()  # a rank lost under the user's mpiexec ends the job
            world = import_mpi().COMM_WORLD if comm is None else comm
            if world.Get_size() < 2:
                raise ValueError("MPIExecutor needs at least 2 ranks in comm: a driver and a worker")
            if not 0 <= root < world.Get_size():
                raise ValueError(f"root must be a rank of the communicator, got {root!r}")
            pool = world_pool(world, root, init, options)  # a worker rank exits here
            self.max_workers = world.Get_size() - 1
            self._workers = WorldRanks(pool, self.max_workers, batch_size, grace)
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
        self.open()
        if self.spawns:
            self._workers.pool.wait_ready(timeout)
        else:
            self._workers.start(self, timeout)
        return self

    def worker_hosts(self) -> list[str]:
        """The host name of each worker rank (empty before the first run)."""
        return [host for host, _ in self._workers.workers_info()]

    # -- the executor's part (the rest is PooledExecutor's) ----------------------------
    def reachable_cores(self) -> int:
        """One core per worker rank (the ranks may span hosts)."""
        return self.max_workers

    def open(self) -> None:
        if self.spawns:
            super().open()
        else:
            Executor.open(self)  # refuses a closed executor
            self._workers.start(self, START_TIMEOUT)

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
    launch["spread"] = bool(mpiexec_args) or (slurm is not None and slurm.reaches_other_hosts)
    return launch, None if path is None else list(path)


def _default_workers(slurm: SlurmAllocation | None) -> int:
    if slurm is not None and slurm.ntasks is not None and slurm.ntasks > 1:
        return slurm.ntasks - 1
    env = os.environ.get("MPI4PY_FUTURES_MAX_WORKERS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return cpu_count()


# -- the world's ranks as one shared pool ------------------------------------------
