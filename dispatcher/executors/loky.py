"""``LokyExecutor``: nodes run in loky's reusable pool of worker processes.

This module is also the worked example of the docs' page "Writing an executor":
the whole of an executor over a pool that dispatcher does not manage itself.

Policy: the executor runs its nodes on ``loky.get_reusable_executor(max_workers)``,
the pool joblib uses. Each call travels as cloudpickle bytes
(:mod:`~dispatcher.executors.codec`), so lambdas, closures and functions defined
in ``__main__`` work, and a call that cannot be pickled fails its node with an
error naming the culprit. A worker that dies (killed, a segfault, ``os._exit``)
breaks loky's pool: every node it was running fails with
:class:`~dispatcher.WorkerLostError`, retried by default, and the next node
starts a new pool. A node past its timeout fails on time, but its call runs on to
its end (loky cannot stop one call); Ctrl-C kills the workers. ``close()`` shuts
the pool down.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import CancelledError

from ..results import WorkerLostError, format_exception, is_worker_lost
from .base import Executor
from .codec import call_pickled, dumps_call, load_outcome

__all__ = ["LokyExecutor"]


class LokyExecutor(Executor):
    """Run nodes on loky's reusable pool of ``max_workers`` processes (default: the CPUs).

    >>> import dispatcher as dp
    >>> from dispatcher.executors.loky import LokyExecutor
    >>> with LokyExecutor(2) as ex:
    ...     dp.execute(dp.Op(lambda x: x * 2, 21), ex)
    42
    """

    default_retry_on = (is_worker_lost,)  # a lost worker's nodes run again

    def __init__(self, max_workers: int | None = None, **options):
        super().__init__(**options)  # retries, retry_on, backoff, timeout
        self.max_workers = max_workers or os.cpu_count() or 1
        self._pool = None

    def open(self) -> None:  # every run: refuse a closed executor, start the pool
        super().open()
        if self._pool is None:
            import loky  # an optional dependency, loaded when first used

            self._pool = loky.get_reusable_executor(max_workers=self.max_workers)

    def start_task(self, task, done) -> None:
        from loky.process_executor import BrokenProcessPool, ShutdownExecutorError

        call = dumps_call(task.node.label, task.func, task.args, task.kwargs)  # raises naming the culprit
        try:
            future = self._pool.submit(call_pickled, call)
        except (BrokenProcessPool, ShutdownExecutorError):  # a worker died, or it was shut down: a new one
            self._pool = None
            self.open()
            future = self._pool.submit(call_pickled, call)
        task.handle = future
        future.add_done_callback(functools.partial(_report, task, done))

    def cancel_task(self, task) -> None:
        task.handle.cancel()  # a call not yet started will not run; a running one runs on

    def interrupt_run(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, kill_workers=True)  # fails the running futures at once
            self._pool = None

    def stop_workers(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _report(task, done, future) -> None:
    """Tell the engine how ``task`` ended (in a thread of loky's)."""
    from loky.process_executor import TerminatedWorkerError

    task.handle = None  # the future holds this task in its callbacks: no cycle
    if future.cancelled():
        exc: BaseException = CancelledError(f"node {task.node.label!r} was cancelled")
    elif (exc := future.exception()) is None:
        done(task, *load_outcome(future.result(), task.node.label))
        return
    elif isinstance(exc, TerminatedWorkerError):
        exc = WorkerLostError(f"the worker running node {task.node.label!r} died: {exc}")
    done(task, False, (exc, format_exception(exc)))
