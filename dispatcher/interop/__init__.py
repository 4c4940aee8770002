"""Adapters that let other tools run their work on a dispatcher executor.

Policy: an executor already speaks two surfaces that other tools accept as they
are: ``concurrent.futures.Executor`` (xyzpy's ``executor=``, dask's
``scheduler=ex``) and a dask scheduler's ``get`` (``scheduler=ex.get``: dask
collections, pmda). This package holds the few adapters a tool needs beyond
them, one module per tool, each importing its tool only when it is imported
itself (importing :mod:`dispatcher` imports none of them):

* :mod:`dispatcher.interop.mdanalysis`: an MDAnalysis (2.8 or later) analysis
  backend;
* :mod:`dispatcher.interop.joblib`: a joblib parallel backend;
* :mod:`dispatcher.interop.pharmpy`: a Pharmpy dispatcher.

The docs page "Using dispatcher from other tools" shows each one at work.
"""

from __future__ import annotations

from typing import Any

__all__ = ["worker_count"]


def worker_count(executor: Any) -> int:
    """How many calls ``executor`` runs at once, as far as it says: its
    ``max_workers``, 1 for an executor that runs one task at a time, else the CPUs
    this process may use. Tools that split their work in as many parts as there are
    workers ask this."""
    from ..executors._launch import cpu_count

    workers = getattr(executor, "max_workers", None)
    if workers:
        return int(workers)
    if executor.capabilities.synchronous:
        return 1
    return cpu_count()
