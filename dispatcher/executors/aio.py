"""AsyncExecutor: nodes on an asyncio event loop.

``async def`` functions (and, with ``sync="loop"``, any function whose call
returns an awaitable) are awaited as tasks on the loop, all of them concurrently, or at most
``max_concurrency`` at a time. Plain functions run directly on the loop by
default (``sync="loop"``), as Dispatcher.jl's tasks do: cheap glue code costs no
thread hop, but a slow plain function holds up the loop. With ``sync="threads"``
they run in a thread pool of ``max_workers`` threads instead.

A node past its timeout is cancelled: its coroutine gets ``CancelledError`` at its
next ``await`` and the node fails with ``TimeoutError``. A plain function in a
thread cannot be stopped and runs on in its thread.

``dispatcher.run`` with this executor starts an event loop in the calling thread
(``asyncio.run``), or, when that thread already runs a loop (a notebook), in a
helper thread; inside a coroutine use ``await dispatcher.run_async(...)``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
import inspect
import weakref

from ..results import format_exception
from .base import Executor
from .pools import _report as _report_future

__all__ = ["AsyncExecutor"]


class AsyncExecutor(Executor):
    """Run nodes on an asyncio event loop; coroutines run concurrently.

    Args:
        max_concurrency: at most this many nodes run at once (default: no limit),
            a connection limit for instance.
        sync: where plain (not ``async``) functions run: ``"loop"`` on the loop
            itself (quick glue code), ``"threads"`` in a thread pool (blocking
            calls).
        max_workers: the size of that thread pool (default: as for
            :class:`ThreadExecutor`).

    A node past its timeout is cancelled. ``retries``, ``retry_on``, ``backoff``
    and ``timeout`` are those of every :class:`~dispatcher.Executor`.

    >>> import asyncio, dispatcher as dp
    >>> async def slow_double(x):
    ...     await asyncio.sleep(0.01)
    ...     return 2 * x
    >>> dp.execute(dp.CollectNode([dp.Op(slow_double, i) for i in range(3)]), dp.AsyncExecutor())
    [0, 2, 4]
    """

    needs_loop = True

    def __init__(
        self,
        *,
        max_concurrency: int | None = None,
        sync: str = "loop",
        max_workers: int | None = None,
        **options,
    ):
        super().__init__(**options)
        if sync not in ("loop", "threads"):
            raise ValueError(f"sync must be 'loop' or 'threads', got {sync!r}")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency!r}")
        self.max_concurrency = max_concurrency
        self.sync = sync
        self.max_workers = max_workers
        self._threads: cf.ThreadPoolExecutor | None = None
        self._limits = weakref.WeakKeyDictionary()  # loop -> its semaphore

    def _open(self) -> None:
        super()._open()
        if self.sync == "threads" and self._threads is None:
            self._threads = cf.ThreadPoolExecutor(self.max_workers, thread_name_prefix="dispatcher-async")

    def _submit(self, task, done) -> None:
        loop = asyncio.get_running_loop()
        if self._threads is not None and not inspect.iscoroutinefunction(task.func):
            awaitable = loop.run_in_executor(self._threads, task.call)
        else:
            try:
                awaitable = task.call()
            except Exception as exc:
                done(task, False, (exc, format_exception(exc)))
                return
            if not inspect.isawaitable(awaitable):
                done(task, True, awaitable)
                return
        handle = task.handle = loop.create_task(self._await(awaitable, loop))
        handle.add_done_callback(functools.partial(_report, task, done, awaitable))

    async def _await(self, awaitable, loop):
        if self.max_concurrency is None:
            return await awaitable
        limit = self._limits.get(loop)
        if limit is None:
            limit = self._limits[loop] = asyncio.Semaphore(self.max_concurrency)
        async with limit:
            return await awaitable

    def _cancel(self, task) -> None:
        if task.handle is not None:
            task.handle.cancel()

    def _shutdown(self) -> None:
        self._limits.clear()
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
            self._threads = None


def _report(task, done, awaitable, handle) -> None:
    if handle.cancelled() and inspect.iscoroutine(awaitable):
        awaitable.close()  # cancelled before it started: never awaited
    _report_future(task, done, handle)
