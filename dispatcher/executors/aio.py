"""AsyncExecutor: nodes on an asyncio event loop.

``async def`` functions (and, with ``sync="loop"``, any function whose call
returns an awaitable) are awaited as tasks on the loop, all of them concurrently, or at most
``max_concurrency`` at a time. Plain functions run directly on the loop by
default (``sync="loop"``), as Dispatcher.jl's tasks do: cheap glue code costs no
thread hop, but a slow plain function holds up the loop. With ``sync="threads"``
they run in a thread pool of ``max_workers`` threads instead.

A node past its timeout is cancelled: its coroutine gets ``CancelledError`` at its
next ``await`` and the node fails with ``TimeoutError``. A plain function with a
timeout runs in a thread even with ``sync="loop"`` (a call blocking the loop could
not fail on time); at its deadline it fails, and its thread, which cannot be
stopped, runs on until the call returns.

Failures: any exception a plain function on the loop raises fails its node,
``SystemExit`` included, except ``KeyboardInterrupt``, which is Ctrl-C in the
thread that drives the run: it ends the run. Ctrl-C (``asyncio.run``'s first
SIGINT cancels the run) stops the run before the next node starts: a plain node
already running on the loop finishes first, a running coroutine is cancelled.
A node that runs a nested graph on this executor lends what it holds while it
waits: from one of its threads, that thread's slot; as a coroutine awaiting
``run_async``, its place among the ``max_concurrency`` nodes, taken back when the
nested run ends. Nested runs never deadlock.

``dispatcher.run`` with this executor starts an event loop in the calling thread
(``asyncio.run``), or, when that thread already runs a loop (a notebook), in a
helper thread; inside a coroutine use ``await dispatcher.run_async(...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import weakref

from ..results import format_exception
from ._threads import SlotPool
from .base import Capabilities, Executor
from .pools import default_threads, report_cancelled, run_outcome

__all__ = ["AsyncExecutor"]

_permit: contextvars.ContextVar = contextvars.ContextVar("dispatcher_async_permit", default=None)
"""In a node's coroutine: the :class:`_Permit` it runs under, if its executor has a
``max_concurrency``."""


class _Permit:
    """A node's place among an executor's ``max_concurrency``: given back while the
    node waits on a nested run of the same executor."""

    __slots__ = ("executor", "held", "limit")

    def __init__(self, executor, limit: asyncio.Semaphore):
        self.executor = executor
        self.limit = limit
        self.held = False

    async def acquire(self) -> None:
        await self.limit.acquire()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.limit.release()


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

    capabilities = Capabilities(needs_loop=True, in_process=True)

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
        self._threads: SlotPool | None = None
        self._limits = weakref.WeakKeyDictionary()  # loop -> its semaphore

    def _thread_pool(self) -> SlotPool:
        if self._threads is None:
            self._threads = SlotPool(
                self.max_workers or default_threads(), thread_name_prefix="dispatcher-async"
            )
        return self._threads

    def lend_worker(self):
        return self._threads.lent() if self._threads is not None else contextlib.nullcontext()

    @contextlib.asynccontextmanager
    async def lend_worker_async(self):
        permit = _permit.get()
        if permit is None or permit.executor is not self or not permit.held:
            yield
            return
        permit.release()
        try:
            yield
        finally:
            await permit.acquire()

    def slots(self) -> int | None:
        return self.max_concurrency

    def start_task(self, task, done) -> None:
        loop = asyncio.get_running_loop()
        in_thread = self.sync == "threads" or task.timeout is not None
        if in_thread and not inspect.iscoroutinefunction(task.func):
            awaitable = value = loop.run_in_executor(self._thread_pool(), run_outcome, task)
        else:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise asyncio.CancelledError  # Ctrl-C or a cancelled run: start nothing more
            task.where = "event loop"
            try:
                value = task.call()
            except KeyboardInterrupt:
                raise  # Ctrl-C in the thread that drives the run ends the run
            except BaseException as exc:  # SystemExit too: it fails the node
                done(task, False, (exc, format_exception(exc)))
                return
            if not inspect.isawaitable(value):
                done(task, True, value)
                return
            awaitable = self._awaited(value)
        handle = task.handle = loop.create_task(self._limited(awaitable, loop))
        handle.add_done_callback(functools.partial(_report, task, done, awaitable, value))

    @staticmethod
    async def _awaited(awaitable):
        """The outcome of awaiting a node's awaitable: ``(ok, value or (exception,
        traceback))``; no exception but cancellation and Ctrl-C leaves it, so none
        reaches asyncio, which would end the loop for ``SystemExit``."""
        try:
            return True, await awaitable
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except BaseException as exc:
            return False, (exc, format_exception(exc))

    async def _limited(self, outcome, loop):
        if self.max_concurrency is None:
            return await outcome
        limit = self._limits.get(loop)
        if limit is None:
            limit = self._limits[loop] = asyncio.Semaphore(self.max_concurrency)
        permit = _Permit(self, limit)
        await permit.acquire()
        _permit.set(permit)  # this task's own context: seen by the node's coroutine
        try:
            return await outcome
        finally:
            permit.release()

    def cancel_task(self, task) -> None:
        if task.handle is not None:
            task.handle.cancel()

    def stop_workers(self) -> None:
        self._limits.clear()
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
            self._threads = None


def _report(task, done, awaitable, value, handle) -> None:
    task.handle = None  # the handle holds this task in its callbacks: no cycle to keep values alive
    if handle.cancelled():
        for coroutine in (awaitable, value):  # cancelled before it started: never awaited
            if inspect.iscoroutine(coroutine):
                coroutine.close()
        report_cancelled(task, done)
        return
    exc = handle.exception()
    if exc is not None:  # KeyboardInterrupt in a coroutine
        done(task, False, (exc, format_exception(exc)))
        return
    done(task, *handle.result())
