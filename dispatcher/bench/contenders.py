"""The contenders of the benchmark: the library's executors (every one of
:data:`~dispatcher.executors.registry.EXECUTORS`) and the baselines
(plain Python calls, ``dask.delayed`` on its schedulers, raw ``concurrent.futures``
and ``mpi4py.futures`` pools), each a way of building and running a suite's graph.

Pools and clusters that several contenders use are started once, by
:class:`Shared`, and serve every suite; the harness never times their start-up.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import sys
from typing import Any

import dispatcher as dp

from ..executors.registry import EXECUTORS
from .graphs import compile_plain, run_futures, run_program, to_delayed, to_ops

GROUPS = ("local", "dask", "mpi", "mpi4py")
"""Contenders are measured a group at a time, and a group's clusters and pools run
only while it is measured: the threads of an idle dask scheduler or MPI pool in this
process (an MPI pool's manager thread polls every millisecond) would otherwise slow
every other contender (the two MPI contenders, each with its own ranks, are two
groups). Within a group, the contenders of each case run one after another."""


class Contender:
    """One way of running a graph. ``kind`` is ``"executor"`` (this library) or
    ``"baseline"``; ``flavour`` the version of a suite's functions it takes;
    ``group`` the backend whose workers it needs (see :data:`GROUPS`)."""

    kind = "baseline"
    flavour = "sync"
    group = "local"

    def __init__(self, name: str, about: str):
        self.name = name
        self.about = about

    def start(self, shared: Shared) -> None:
        """Start pools or clusters (not timed); raise to say it cannot run here."""

    def build(self, graph) -> Any:
        return graph

    def run(self, built) -> list:
        raise NotImplementedError

    def bytes_copied(self) -> int | None:
        """The bytes copied between processes so far, where the contender counts
        them (the library's executors whose workers are processes), else None."""
        return None

    def close(self) -> None:
        pass


class Plain(Contender):
    def build(self, graph) -> tuple:
        return compile_plain(graph)

    def run(self, built) -> list:
        return run_program(built)


class Library(Contender):
    kind = "executor"

    def __init__(self, name: str, about: str, make, flavour: str = "sync", group: str = "local"):
        super().__init__(name, about)
        self.make = make
        self.flavour = flavour
        self.group = group
        self.ex = None

    def start(self, shared: Shared) -> None:
        self.ex = self.make(shared, cores=shared.workers)  # the budget the suites assume
        if hasattr(self.ex, "start"):
            self.ex.start()

    def build(self, graph) -> list:
        return to_ops(graph)

    def run(self, built) -> list:
        return [r.value for r in dp.run(self.ex, built)]

    def bytes_copied(self) -> int | None:
        stats = getattr(self.ex, "stats", None)
        return stats.get("bytes_copied", 0) if isinstance(stats, dict) else None

    def close(self) -> None:
        if self.ex is not None:
            self.ex.close()


class Delayed(Contender):
    def __init__(self, name: str, about: str, scheduler):
        super().__init__(name, about)
        self.scheduler = scheduler
        self.options: dict = {}
        if scheduler == "distributed":
            self.group = "dask"

    def start(self, shared: Shared) -> None:
        import dask  # noqa: F401

        if self.scheduler == "processes":
            self.options = {"scheduler": "processes", "pool": shared.process_pool()}
        elif self.scheduler == "threads":
            self.options = {"scheduler": "threads", "num_workers": shared.workers}
        elif self.scheduler == "distributed":
            self.options = {"scheduler": shared.dask_client().get}
        else:
            self.options = {"scheduler": "sync"}

    def build(self, graph) -> list:
        return to_delayed(graph)

    def run(self, built) -> list:
        import dask

        return list(dask.compute(*built, **self.options))


class Futures(Contender):
    def __init__(self, name: str, about: str, pool):
        super().__init__(name, about)
        self.pool_name = pool
        self.pool = None
        if pool == "mpi4py":
            self.group = "mpi4py"

    def start(self, shared: Shared) -> None:
        self.pool = getattr(shared, f"{self.pool_name}_pool")()

    def run(self, built) -> list:
        return run_futures(self.pool, built)


class Shared:
    """Pools and clusters that several contenders use, started once, closed at the end
    (the :class:`~dispatcher.executors.registry.Resources` of the library's executors)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.threads = workers
        self._made: dict = {}

    def _get(self, key, make, close):
        if key not in self._made:
            self._made[key] = (make(), close)
        return self._made[key][0]

    def thread_pool(self):
        return self._get("threads", lambda: cf.ThreadPoolExecutor(self.workers), lambda p: p.shutdown())

    def process_pool(self):
        def make():
            pool = cf.ProcessPoolExecutor(self.workers)
            list(pool.map(abs, range(self.workers * 4)))  # start the workers now
            return pool

        return self._get("processes", make, lambda p: p.shutdown())

    def dask_client(self):
        def make():
            from distributed import Client, LocalCluster

            cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            return Client(cluster, set_as_default=False)

        def close(client):
            cluster = client.cluster
            client.close()
            cluster.close()

        return self._get("dask", make, close)

    def mpi4py_pool(self):
        def make():
            from mpi4py.futures import MPIPoolExecutor

            from ..executors._mpilaunch import import_mpi, mpiexec_in_own_session

            with mpiexec_in_own_session(import_mpi()):
                pool = MPIPoolExecutor(self.workers, main=False, path=list(sys.path))
                pool.bootup()
            list(pool.map(abs, range(self.workers * 4)))
            return pool

        return self._get("mpi4py", make, lambda p: p.shutdown())

    def close(self) -> None:
        for thing, close in reversed(list(self._made.values())):
            with contextlib.suppress(Exception):
                close(thing)
        self._made.clear()


def make_contenders() -> dict:
    items = [
        Plain("python", "plain Python calls in topological order (the floor)"),
        *(Library(e.name, e.about, e.create, e.flavour, e.group) for e in EXECUTORS.values()),
        Delayed("delayed-sync", "dask.delayed, scheduler='sync'", "sync"),
        Delayed("delayed-threads", "dask.delayed, scheduler='threads'", "threads"),
        Delayed("delayed-processes", "dask.delayed, scheduler='processes' on a warm pool", "processes"),
        Delayed("delayed-distributed", "dask.delayed on the same LocalCluster", "distributed"),
        Futures("futures-threads", "raw concurrent.futures ThreadPoolExecutor.submit", "thread"),
        Futures("futures-processes", "raw concurrent.futures ProcessPoolExecutor.submit", "process"),
        Futures("mpi4py", "raw mpi4py.futures MPIPoolExecutor.submit", "mpi4py"),
    ]
    return {c.name: c for c in items}


CONTENDERS = tuple(make_contenders())
