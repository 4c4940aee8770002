"""Executors over the shared job pool: what ``ProcessExecutor`` and ``MPIExecutor``
have in common.

Policy: the executor's side of its pool (:class:`PoolHandle`) makes the pool on
first use, with a new launcher, replaces it after an interrupted run (every worker
is killed, the next run starts new ones), and stops it when the executor closes,
when the executor is garbage collected, or at exit. A task becomes a
:class:`~dispatcher.executors._jobs.Job` whose report reaches the engine once;
the pool itself (:mod:`~dispatcher.executors._pool`) says how jobs are batched,
when a timed call starts (the engine decides when its time is up) and what a lost
worker costs. A :class:`PooledExecutor` only forwards
the engine's calls to its handle, so that both executors behave alike.
"""

from __future__ import annotations

import weakref

from ..results import is_worker_lost
from ._jobs import Job
from ._pool import POOLS, Pool
from .base import Capabilities, Executor

__all__ = ["PoolHandle", "PooledExecutor"]


class PooledExecutor(Executor):
    """Base of the executors whose nodes run on the workers of a job pool: its
    :attr:`_workers` is a :class:`PoolHandle` (or an object with the same methods),
    set by the subclass."""

    capabilities = Capabilities(
        reports_start=True,
        store_on_worker=True,
        on_timeout="; its worker process ({where}) was killed",
        queues_tasks=True,
    )
    default_retry_on = (is_worker_lost,)
    _workers: PoolHandle

    def worker_pids(self) -> list[int]:
        """The process ids of the current workers (empty before the first run)."""
        return [pid for _, pid in self._workers.workers_info()]

    @property
    def stats(self) -> dict:
        """Counts for the current pool of ``tasks`` and ``batches`` sent, of nodes
        that ``timeouts`` failed, of workers ``started`` and ``lost``, and of the
        bytes that went between this process and the workers: ``bytes_copied``
        (messages both ways, with the large buffers written to shared-memory files)
        and ``bytes_shared`` (buffers a worker made, passed on to others as the file
        they came in, without a copy)."""
        return self._workers.stats

    def open(self) -> None:
        super().open()
        self._workers.open(self)

    def start_task(self, task, done) -> None:
        self._workers.submit(task, done)

    def flush_tasks(self) -> None:
        self._workers.flush()

    def cancel_task(self, task) -> None:
        self._workers.cancel(task)

    def interrupt_run(self) -> None:
        self._workers.interrupt()

    def stop_workers(self) -> None:
        self._workers.shutdown()


class PoolHandle:
    """An executor's side of its :class:`~dispatcher.executors._pool.Pool` (see the
    module's docstring); ``make_launcher()`` makes each new pool's launcher."""

    def __init__(self, size: int, init: bytes | None, batch_size, make_launcher, path: list | None = None):
        self.size = size
        self.init = init
        self.max_batch = batch_size  # "auto" or an int (see dispatcher.executors._jobs)
        self.make_launcher = make_launcher
        self.path = path
        self.pool: Pool | None = None
        self._finalizer: weakref.finalize | None = None

    def open(self, owner) -> Pool:
        if self.pool is None:
            self.pool = Pool(self.size, self.init, self.max_batch, self.make_launcher(), self.path)
            POOLS.add(self.pool)
            if self._finalizer is None:  # one for the handle, whichever pool it has then
                self._finalizer = weakref.finalize(owner, self.interrupt)
        return self.pool

    def submit(self, task, done) -> None:
        job = Job(task, done)
        task.handle = job
        self.pool.submit(job)

    def flush(self) -> None:
        self.pool.wake()

    def cancel(self, task) -> None:
        if self.pool is not None and task.handle is not None:
            self.pool.cancel(task.handle)

    def interrupt(self) -> None:
        """Kill every worker now; the next run starts new ones."""
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.stop(kill=True)

    def shutdown(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.stop(kill=False)

    def workers_info(self) -> list[tuple[str, int]]:
        return self.pool.workers_info() if self.pool is not None else []

    @property
    def stats(self) -> dict:
        return dict(self.pool.stats) if self.pool is not None else {}
