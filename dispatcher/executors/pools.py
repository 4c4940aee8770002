"""Executors over ``concurrent.futures``-style pools.

``PoolExecutor(pool)`` runs nodes on any object whose ``submit(fn, *args,
**kwargs)`` returns a future with ``add_done_callback``; it never shuts that pool
down (the pool is the caller's). Given a ``concurrent.futures.ProcessPoolExecutor``
(or an ``mpi4py.futures.MPIPoolExecutor``) it sends each call and its result as
cloudpickle bytes, so lambdas, closures and ``__main__`` functions work there too
(loky and dask pools pickle with cloudpickle themselves); ``cloudpickle=True`` or
``False`` decides it for any other pool. A process pool's broken worker breaks the
whole ``concurrent.futures`` pool, which only its owner can replace:
:class:`~dispatcher.ProcessExecutor` replaces lost workers itself.

``ThreadExecutor`` owns a thread pool, started on first use and shut down by
``close()``. A node that runs a nested graph on the executor it runs on lends its
thread's slot while it waits (see :mod:`dispatcher.executors._threads`), so
nested runs never deadlock. On a ``PoolExecutor`` over a thread pool, which the
executor cannot grow, a nested run started by one of its own nodes runs its
nodes one by one in that node's thread instead, as joblib runs nested parallel
calls sequentially.

``async def`` functions are run to their end where the node runs (see
:mod:`dispatcher.coroutines`).

A thread cannot be stopped from outside: a node that passes its timeout fails with
``TimeoutError`` at once, but its thread runs on until the function returns, and
``close()`` waits for it. Nodes not yet started when a run ends are cancelled.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import inspect
import os
import threading
import time

from ..coroutines import finish
from ..results import WorkerLostError, format_exception
from ._threads import SlotPool
from .base import Capabilities, Executor
from .codec import call_pickled, dumps_call, load_outcome

__all__ = ["PoolExecutor", "ThreadExecutor", "report_cancelled", "report_future"]


def report_cancelled(task, done) -> None:
    """Tell the engine that ``task`` was cancelled before it ran."""
    exc = cf.CancelledError(f"node {task.node.label!r} was cancelled")
    done(task, False, (exc, ""))


def report_future(task, done, future, pickled: bool = False, lost: tuple = ()) -> None:
    """Tell the engine how ``task`` ended, from its ``concurrent.futures`` future (a
    done callback): its value, decoded by :func:`~dispatcher.executors.codec.load_outcome`
    when ``pickled``; an exception of a type in ``lost`` means the worker running it
    died, and becomes a :class:`~dispatcher.WorkerLostError`."""
    task.handle = None  # the future holds this task in its callbacks: no cycle to keep values alive
    if future.cancelled():
        report_cancelled(task, done)
        return
    exc = future.exception()
    if lost and isinstance(exc, lost):
        gone = WorkerLostError(f"the worker running node {task.node.label!r} died: {exc}")
        gone.__cause__ = exc
        exc = gone
    if exc is None:
        if pickled:
            done(task, *load_outcome(future.result(), task))
        else:
            done(task, True, future.result())
        return
    done(task, False, (exc, format_exception(exc)))


def _call_to_end(func, args, kwargs):
    """``func(*args, **kwargs)`` with a coroutine it returns run to its end."""
    return finish(func(*args, **kwargs))


def _is_process_pool(pool) -> bool:
    if isinstance(pool, cf.ProcessPoolExecutor):
        return not type(pool).__module__.startswith("loky")  # loky uses cloudpickle itself
    return type(pool).__name__ == "MPIPoolExecutor"


class PoolExecutor(Executor):
    """Run nodes on a pool you own: anything with ``submit()`` returning futures.

    Args:
        pool: a ``concurrent.futures`` executor, a loky or ipyparallel pool, a
            ``distributed.Client``, an ``mpi4py.futures.MPIPoolExecutor``...;
            ``close()`` leaves it open.
        cloudpickle: send each call as cloudpickle bytes, so that lambdas and
            closures reach worker processes (default: True for a
            ``concurrent.futures.ProcessPoolExecutor`` or an
            ``mpi4py.futures.MPIPoolExecutor``, else False).

    ``retries``, ``retry_on``, ``backoff`` and ``timeout`` are those of every
    :class:`~dispatcher.Executor`; a node past its timeout fails on time, and
    its future is cancelled if it has not started.

    >>> import concurrent.futures, dispatcher as dp
    >>> with concurrent.futures.ThreadPoolExecutor(2) as pool:
    ...     dp.execute(dp.Op(pow, 2, 10), dp.PoolExecutor(pool))
    1024
    """

    def __init__(self, pool, *, cloudpickle: bool | None = None, **options):
        if not callable(getattr(pool, "submit", None)):
            raise TypeError(f"PoolExecutor needs an object with submit(), got {type(pool).__name__}")
        super().__init__(**options)
        self.pool = pool
        self.cloudpickle = _is_process_pool(pool) if cloudpickle is None else bool(cloudpickle)
        self._over_threads = isinstance(pool, cf.ThreadPoolExecutor) and not self.cloudpickle
        self.capabilities = Capabilities(
            in_process=self._over_threads, store_on_worker=not self._over_threads, queues_tasks=True
        )

    def slots(self) -> int | None:
        return getattr(self.pool, "_max_workers", None)  # concurrent.futures' pools say so

    def start_task(self, task, done) -> None:
        if self.cloudpickle:
            payload = dumps_call(task.node.label, task.func, task.args, task.kwargs)
            future = self.pool.submit(call_pickled, payload)
        elif self._over_threads:
            if getattr(_inside, "pool", None) is self.pool:  # a nested run from one of our calls
                _work(task, done)
                return
            future = self.pool.submit(self._call_marked, task)
        elif inspect.iscoroutinefunction(task.func):
            future = self.pool.submit(_call_to_end, task.func, task.args, task.kwargs or {})
        else:
            future = self.pool.submit(task.func, *task.args, **(task.kwargs or {}))
        task.handle = future
        future.add_done_callback(functools.partial(report_future, task, done, pickled=self.cloudpickle))

    def _call_marked(self, task):
        """A call in the caller's thread pool, marked so that a nested run from it
        on this executor runs its nodes here; the task is told which thread ran it,
        and when."""
        _inside.pool = self.pool
        task.where = threading.current_thread().name
        task.started = time.monotonic()
        try:
            return _call_to_end(task.func, task.args, task.kwargs or {})
        finally:
            task.finished = time.monotonic()
            _inside.pool = None

    def cancel_task(self, task) -> None:
        if task.handle is not None:
            task.handle.cancel()


_inside = threading.local()  # .pool: the caller's thread pool whose call runs in this thread


def run_outcome(task) -> tuple:
    """Run ``task`` (in a worker thread): ``(ok, value or (exception, traceback))``,
    never an exception, since a worker thread must always report back. The task
    is told which thread ran it, and when."""
    task.where = threading.current_thread().name
    task.started = time.monotonic()
    try:
        outcome = True, task.run()
    except BaseException as exc:
        outcome = False, (exc, format_exception(exc))
    task.finished = time.monotonic()
    return outcome


def _work(task, done) -> None:
    done(task, *run_outcome(task))


def default_threads() -> int:
    """The default size of a thread pool, as ``concurrent.futures`` picks it."""
    return min(32, (os.cpu_count() or 1) + 4)


class ThreadExecutor(Executor):
    """Run nodes in a pool of ``max_workers`` threads (default ``min(32, cpus + 4)``).

    Good for functions that release the GIL (numpy, I/O). The pool starts on the
    first run and is shut down, waiting for running nodes, by ``close()``. A
    thread cannot be stopped: a node past its timeout, or left running by an
    interrupted run (Ctrl-C, SIGTERM), fails on time, but its thread runs on until
    the function returns; ``close()`` does not wait for it (the threads are
    daemons: they end with the process at the latest). A node that runs a nested graph on
    this executor lends its thread's slot while it waits for it. ``retries``, ``retry_on``,
    ``backoff`` and ``timeout`` are those of every :class:`~dispatcher.Executor`.
    """

    capabilities = Capabilities(in_process=True, queues_tasks=True)

    def __init__(self, max_workers: int | None = None, **options):
        super().__init__(**options)
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers!r}")
        self.max_workers = max_workers or default_threads()
        self._pool: SlotPool | None = None

    def open(self) -> None:
        super().open()
        if self._pool is None:
            self._pool = SlotPool(self.max_workers, thread_name_prefix="dispatcher")

    def lend_worker(self):
        return self._pool.lent() if self._pool is not None else contextlib.nullcontext()

    def start_task(self, task, done) -> None:
        task.handle = (self._pool.start(_work, task, done), done)

    def cancel_task(self, task) -> None:
        ticket, done = task.handle
        if ticket.cancel():  # it never started, so _work will not report
            report_cancelled(task, done)

    def stop_workers(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
