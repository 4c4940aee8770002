"""An MDAnalysis analysis backend that runs on a dispatcher executor.

Policy: MDAnalysis (2.8 or later) splits a parallelizable analysis into
``n_parts`` groups of frames and hands them, with the function that analyses one
group, to a backend's ``apply(func, computations)``; :class:`ExecutorBackend`
maps that function over the groups with the executor's ``map``, so each group is
a node with the executor's retries, timeouts and lost-worker handling, and the
first group that fails raises its own exception. Its ``n_workers`` (the default
number of parts) is the executor's :func:`~dispatcher.interop.worker_count`.

MDAnalysis accepts a backend it does not ship only with
``unsupported_backend=True``. Each group's function carries the analysis and its
``Universe``; on executors whose calls run in other processes (processes, MPI,
dask) each worker gets its own copy, as with MDAnalysis's own multiprocessing
backend. Threads share one ``Universe`` and its trajectory reader, which is not
safe: use an executor with worker processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from MDAnalysis.analysis.backends import BackendBase

from . import worker_count

__all__ = ["ExecutorBackend"]


class ExecutorBackend(BackendBase):
    """Run an MDAnalysis analysis's frame groups on ``executor``.

    >>> from MDAnalysis.analysis.rms import RMSD            # doctest: +SKIP
    >>> with dp.ProcessExecutor(4) as ex:                   # doctest: +SKIP
    ...     RMSD(u).run(backend=ExecutorBackend(ex), unsupported_backend=True)
    """

    def __init__(self, executor: Any, n_workers: int | None = None):
        self.executor = executor
        super().__init__(n_workers if n_workers is not None else worker_count(executor))

    def apply(self, func: Callable, computations: list) -> list:
        return list(self.executor.map(func, computations))
