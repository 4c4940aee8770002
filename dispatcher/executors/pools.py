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
``close()``.

A thread cannot be stopped from outside: a node that passes its timeout fails with
``TimeoutError`` at once, but its thread runs on until the function returns, and
``close()`` waits for it. Nodes not yet started when a run ends are cancelled.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import os

import cloudpickle

from ..results import format_exception
from ._serialize import call_pickled, decode_outcome, dumps_call
from .base import Executor

__all__ = ["PoolExecutor", "ThreadExecutor"]


def _cancelled(task, done) -> None:
    exc = cf.CancelledError(f"node {task.node.label!r} was cancelled")
    done(task, False, (exc, ""))


def _report(task, done, future, pickled: bool = False) -> None:
    if future.cancelled():
        _cancelled(task, done)
        return
    exc = future.exception()
    if exc is None:
        if not pickled:
            done(task, True, future.result())
            return
        try:
            ok, value = decode_outcome(*cloudpickle.loads(future.result()))
        except Exception as err:  # a result this process cannot unpickle
            exc = err
        else:
            done(task, ok, value)
            return
    done(task, False, (exc, format_exception(exc)))


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

    def _submit(self, task, done) -> None:
        if self.cloudpickle:
            payload = dumps_call(task.node.label, task.func, task.args, task.kwargs)
            future = self.pool.submit(call_pickled, payload)
        else:
            future = self.pool.submit(task.func, *task.args, **(task.kwargs or {}))
        task.handle = future
        future.add_done_callback(functools.partial(_report, task, done, pickled=self.cloudpickle))

    def _cancel(self, task) -> None:
        if task.handle is not None:
            task.handle.cancel()


def _work(task, done) -> None:
    try:
        value = task.call()
    except BaseException as exc:  # a worker thread must always report back
        done(task, False, (exc, format_exception(exc)))
    else:
        done(task, True, value)


class ThreadExecutor(Executor):
    """Run nodes in a pool of ``max_workers`` threads (default ``min(32, cpus + 4)``).

    Good for functions that release the GIL (numpy, I/O). The pool starts on the
    first run and is shut down, waiting for running nodes, by ``close()``. A
    thread cannot be stopped: a node past its timeout fails on time, but its
    thread runs on until the function returns. ``retries``, ``retry_on``,
    ``backoff`` and ``timeout`` are those of every :class:`~dispatcher.Executor`.
    """

    def __init__(self, max_workers: int | None = None, **options):
        super().__init__(**options)
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers!r}")
        self.max_workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._pool: cf.ThreadPoolExecutor | None = None

    def _open(self) -> None:
        super()._open()
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(self.max_workers, thread_name_prefix="dispatcher")

    def _submit(self, task, done) -> None:
        task.handle = (self._pool.submit(_work, task, done), done)

    def _cancel(self, task) -> None:
        future, done = task.handle
        if future.cancel():  # it never started, so _work will not report
            _cancelled(task, done)

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
