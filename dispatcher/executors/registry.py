"""The executors by name: what the test suite's shared fixture and the bench
harness both run.

Policy: an entry names its executor class by import path, so that reading the
registry imports no backend; it says how to make an instance to test or measure
from shared :class:`Resources` (how many workers, a shared dask client, a thread
pool), whether its nodes run in the calling process (they share its memory), which
optional packages it needs, and which group of the bench it belongs to. Adding an
executor takes its module and one line here.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any, Protocol

import attrs

__all__ = ["EXECUTORS", "Entry", "Resources"]


class Resources(Protocol):
    """What the makers of the entries draw on; the tests and the bench each have one."""

    workers: int  # worker processes or ranks of a pool
    threads: int  # threads of a thread pool

    def dask_client(self) -> Any: ...

    def thread_pool(self) -> Any: ...


@attrs.frozen
class Entry:
    """One executor of the registry."""

    name: str
    path: str
    """``module:Class``; a module starting with a dot is one of :mod:`dispatcher.executors`."""
    make: Callable[..., Any]
    """``make(cls, resources, **options)``: an instance to test or measure."""
    about: str
    """How the bench's tables describe it."""
    local: bool = False
    """Its nodes run in the calling process (they can share its memory)."""
    needs: tuple[str, ...] = ()
    """Packages it imports, from the extras (``mpi4py``, ``distributed``, ``loky``)."""
    group: str = "local"
    """The bench measures a group at a time (see :data:`dispatcher.bench.contenders.GROUPS`)."""
    flavour: str = "sync"
    """The version of a bench suite's functions it takes (``async``: ``async def``)."""

    def load(self) -> type:
        module, _, name = self.path.partition(":")
        return getattr(importlib.import_module(module, __package__), name)

    def available(self) -> bool:
        """Its optional packages are installed."""
        return all(importlib.util.find_spec(package) is not None for package in self.needs)

    def create(self, resources: Resources, **options: Any) -> Any:
        return self.make(self.load(), resources, **options)


def _alone(cls, resources, **options):
    return cls(**options)


def _on_workers(cls, resources, **options):
    return cls(resources.workers, **options)


def _on_threads(cls, resources, **options):
    return cls(resources.threads, **options)


def _on_thread_pool(cls, resources, **options):
    return cls(resources.thread_pool(), **options)


def _on_dask(cls, resources, **options):
    return cls(resources.dask_client(), **options)


# fmt: off
EXECUTORS: dict[str, Entry] = {e.name: e for e in (
    Entry("serial", ".serial:SerialExecutor", _alone, "SerialExecutor", local=True),
    Entry("async", ".aio:AsyncExecutor", _alone,
          "AsyncExecutor (async def nodes where a suite has them)", local=True, flavour="async"),
    Entry("threads", ".pools:ThreadExecutor", _on_threads, "ThreadExecutor(workers)",
          local=True),
    Entry("pool", ".pools:PoolExecutor", _on_thread_pool,
          "PoolExecutor over a concurrent.futures ThreadPoolExecutor", local=True),
    Entry("processes", ".process:ProcessExecutor", _on_workers, "ProcessExecutor(workers)"),
    Entry("loky", ".loky:LokyExecutor", _on_workers, "LokyExecutor(workers)",
          needs=("loky",)),
    Entry("dask", ".dask:DaskExecutor", _on_dask, "DaskExecutor on an embedded LocalCluster",
          needs=("distributed",), group="dask"),
    Entry("mpi", ".mpi:MPIExecutor", _on_workers, "MPIExecutor(workers), spawned worker ranks",
          needs=("mpi4py",), group="mpi"),
)}
# fmt: on
