"""A joblib parallel backend that runs ``joblib.Parallel`` calls on a dispatcher executor.

Policy: joblib hands its backend batches of calls; :class:`ExecutorBackend`
``submit``-s each batch to the executor, so a batch is a node with the executor's
retries, timeouts and lost-worker handling, and a failing call raises its own
exception from ``Parallel``. joblib's automatic batching sizes the batches from
their durations, as for its own process backend. ``n_jobs`` of -1 (or None) means
the executor's :func:`~dispatcher.interop.worker_count`, -2 one fewer, and so on;
a positive ``n_jobs`` bounds how many batches joblib keeps in flight. joblib
stopping early (an exception, a generator dropped) cancels the batches not yet
started; the executor itself stays open: it belongs to the caller.

Use it by instance or by name::

    with joblib.parallel_config(backend=ExecutorBackend(ex)):
        Parallel(n_jobs=-1)(delayed(f)(x) for x in xs)

    register()                                      # the name "dispatcher"
    with joblib.parallel_config(backend="dispatcher", executor=ex):
        ...
"""

from __future__ import annotations

import threading
from typing import Any

from joblib.parallel import AutoBatchingMixin, ParallelBackendBase, register_parallel_backend

from . import worker_count

__all__ = ["ExecutorBackend", "register"]


class ExecutorBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's batches as calls submitted to ``executor`` (see the module docstring)."""

    supports_retrieve_callback = True
    supports_timeout = True

    def __init__(self, executor: Any = None, **backend_options: Any):
        if executor is None:
            raise TypeError(
                "the dispatcher joblib backend needs the executor to run on: "
                "parallel_config(backend='dispatcher', executor=ex)"
            )
        super().__init__(**backend_options)
        self.executor = executor
        self._lock = threading.Lock()
        self._in_flight: set = set()

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        workers = worker_count(self.executor)
        if n_jobs is None:
            return workers
        if n_jobs < 0:
            return max(workers + 1 + n_jobs, 1)
        return n_jobs

    def submit(self, func, callback=None):
        future = self.executor.submit(func)
        with self._lock:
            self._in_flight.add(future)
        future.add_done_callback(self._forget)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def _forget(self, future) -> None:
        with self._lock:
            self._in_flight.discard(future)

    def retrieve_result_callback(self, future):
        return future.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        with self._lock:
            pending, self._in_flight = list(self._in_flight), set()
        for future in pending:
            future.cancel()


def register(name: str = "dispatcher") -> None:
    """Register :class:`ExecutorBackend` with joblib as ``name``; the executor is then
    given to ``joblib.parallel_config(backend=name, executor=ex)``."""
    register_parallel_backend(name, ExecutorBackend)
