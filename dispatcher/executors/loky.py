"""``LokyExecutor``: nodes run in loky's reusable pool of worker processes.

This module is also the worked example of the docs' page "Writing an executor":
the whole of an executor over a pool that dispatcher does not manage itself.

Policy: the executor runs its nodes on ``loky.get_reusable_executor(max_workers)``,
the pool joblib uses, which is one per process: every ``LokyExecutor`` of the
process (and joblib) shares it, one of another size resizes it, and closing one
shuts it down for all (the next run starts it again). Each call travels as
cloudpickle bytes
(:mod:`~dispatcher.executors.codec`), so lambdas, closures and functions defined
in ``__main__`` work, and a call that cannot be pickled fails its node with an
error naming the culprit. A worker that dies (killed, a segfault, ``os._exit``)
breaks loky's pool: every node it was running fails with
:class:`~dispatcher.WorkerLostError`, retried by default, and the next node
starts a new pool. A node's timeout counts from when it is handed to loky, its wait
in loky's queue included (loky does not say when a call starts); a node past it
fails on time, but its call runs on to its end (loky cannot stop one call). Ctrl-C
kills the workers. ``close()`` shuts the pool down, and kills the workers if a call
that timed out may still run.
"""

from __future__ import annotations

import functools

from ..results import is_worker_lost
from ._launch import cpu_count
from .base import Capabilities, Executor
from .codec import call_pickled, dumps_call
from .pools import report_future

__all__ = ["LokyExecutor"]


class LokyExecutor(Executor):
    """Run nodes on loky's reusable pool of ``max_workers`` processes (default: the CPUs).

    >>> import dispatcher as dp
    >>> from dispatcher.executors.loky import LokyExecutor
    >>> with LokyExecutor(2) as ex:
    ...     dp.execute(dp.Op(lambda x: x * 2, 21), ex)
    42
    """

    capabilities = Capabilities(store_on_worker=True, queues_tasks=True)
    default_retry_on = (is_worker_lost,)  # a lost worker's nodes run again

    def __init__(self, max_workers: int | None = None, **options):
        super().__init__(**options)  # retries, retry_on, backoff, timeout
        self.max_workers = max_workers or cpu_count()
        self._pool = None
        self._late = False  # a call that timed out may still run

    def open(self) -> None:  # every run: refuse a closed executor, start the pool
        super().open()
        if self._pool is None:
            import loky  # an optional dependency, loaded when first used

            self._pool = loky.get_reusable_executor(max_workers=self.max_workers)

    def start_task(self, task, done) -> None:
        from loky.process_executor import BrokenProcessPool, ShutdownExecutorError, TerminatedWorkerError

        call = dumps_call(task.node.label, task.func, task.args, task.kwargs)  # raises naming the culprit
        try:
            future = self._pool.submit(call_pickled, call)
        except (BrokenProcessPool, ShutdownExecutorError):  # a worker died, or it was shut down: a new one
            self._pool = None
            self.open()
            future = self._pool.submit(call_pickled, call)
        task.handle = future
        future.add_done_callback(
            functools.partial(report_future, task, done, pickled=True, lost=(TerminatedWorkerError,))
        )

    def cancel_task(self, task) -> None:
        future = task.handle  # None once it has reported
        if future is not None and not future.cancel():  # one not yet started will not run
            self._late = self._late or task.expired  # a running one runs on

    def interrupt_run(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, kill_workers=True)  # fails the running futures at once
            self._pool = None

    def stop_workers(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, kill_workers=self._late)
            self._pool = None
