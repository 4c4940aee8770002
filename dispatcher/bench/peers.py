"""Contenders from other tools, which the ``peers`` extra installs: joblib's
``Parallel`` (on loky), Ray's tasks and Parsl's apps. ``python -m dispatcher.bench --peers``
(``make bench-peers``) adds them to a run; they are not in the default run, which
needs none of their packages.

Each runs a suite's graph as a user of that tool writes it:

* **ray**: every call a ``ray.remote`` task, given the ``ObjectRef`` of each call
  it needs as its argument, so that Ray resolves the dependencies on its workers
  and keeps large values in its shared-memory object store; the outputs are
  ``ray.get`` at the end. A dependency inside a list goes through a task that
  rebuilds the list from its resolved arguments (Ray resolves only top-level
  references). Ray runs in this process with as many CPUs as the pools' workers.
* **parsl**: every call a ``python_app`` on a ``HighThroughputExecutor`` with as
  many workers as the pools' (a local block of its own, its interchange and worker
  pool started from this environment's scripts), given the ``AppFuture`` of each
  call it needs as its argument, also inside lists (Parsl's deep dependency
  resolver), so that Parsl starts each call once its inputs are done; its run
  directory is a temporary one, removed at close.
* **joblib**: joblib has no graph: the calls go level by level, each level (the
  calls whose inputs are all computed) one ``Parallel`` call with joblib's
  automatic batching on a reused loky pool, and each value is dropped after the
  level of its last use.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
import tempfile
from typing import Any

from .contenders import Contender
from .graphs import _subst
from .suites import Ref

__all__ = ["PEERS", "PEER_GROUPS", "Joblib", "Parsl", "Ray", "make_peers"]


def _refs(value, found: list) -> Any:
    """``value`` with each Ref (inside lists and tuples too) appended to ``found``
    and replaced by a Ref to its place there."""
    return _subst(value, lambda ref: found.append(ref) or Ref(len(found) - 1))


def _call_filled(func, template, *values):
    """``func(*template)`` with the values of the references pulled out of it."""
    return func(*_subst(template, lambda ref: values[ref.index]))


class Ray(Contender):
    """Ray tasks with ``ObjectRef`` arguments."""

    group = "ray"

    def __init__(self):
        super().__init__("ray", "Ray tasks, ObjectRefs as arguments (peers extra)")
        self.ray = None
        self.logs: str | None = None
        self.remote: dict = {}

    def start(self, shared) -> None:
        import ray

        self.logs = tempfile.mkdtemp(prefix="dispatcher-ray-")  # Ray's session files, removed at close
        ray.init(num_cpus=shared.workers, include_dashboard=False, log_to_driver=False, _temp_dir=self.logs)
        self.ray = ray
        self.remote = {_call_filled: ray.remote(_call_filled)}
        ray.get([self.remote[_call_filled].remote(abs, (-1,)) for _ in range(shared.workers * 4)])

    def _task(self, func):
        task = self.remote.get(func)
        if task is None:
            task = self.remote[func] = self.ray.remote(func)
        return task

    def build(self, graph) -> list:
        calls = []
        for func, args in graph.calls:
            if all(type(a) is Ref or not isinstance(a, (list, tuple)) for a in args):
                calls.append((func, args, None))  # Ray resolves top-level references itself
            else:
                found: list = []
                calls.append((func, _refs(args, found), found))
        return [calls, graph.outputs]

    def run(self, built) -> list:
        calls, outputs = built
        refs: list = []
        get = lambda ref: refs[ref.index]  # noqa: E731
        filled = self.remote[_call_filled]
        for func, args, found in calls:
            if found is None:
                refs.append(self._task(func).remote(*_subst(args, get)))
            else:
                refs.append(filled.remote(func, args, *(refs[r.index] for r in found)))
        return self.ray.get([refs[i] for i in outputs])

    def close(self) -> None:
        if self.ray is not None and self.ray.is_initialized():
            self.ray.shutdown()
        self.ray = None
        if self.logs:
            shutil.rmtree(self.logs, ignore_errors=True)
            self.logs = None


class Parsl(Contender):
    """Parsl python_apps with ``AppFuture`` arguments, on a HighThroughputExecutor."""

    group = "parsl"

    def __init__(self):
        super().__init__("parsl", "Parsl apps on a HighThroughputExecutor, AppFutures as arguments (peers)")
        self.dfk = None
        self.run_dir: str | None = None
        self.apps: dict = {}

    def start(self, shared) -> None:
        from parsl.config import Config
        from parsl.dataflow.dependency_resolvers import DEEP_DEPENDENCY_RESOLVER
        from parsl.dataflow.dflow import DataFlowKernel
        from parsl.executors import HighThroughputExecutor
        from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD
        from parsl.providers import LocalProvider

        scripts = sysconfig.get_path("scripts")  # (the scripts need not be on PATH)
        self.run_dir = tempfile.mkdtemp(prefix="dispatcher-parsl-")
        executor = HighThroughputExecutor(
            label="bench",
            max_workers_per_node=shared.workers,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
            launch_cmd=DEFAULT_LAUNCH_CMD.replace(
                "process_worker_pool.py", os.path.join(scripts, "process_worker_pool.py"), 1
            ),
            interchange_launch_cmd=[os.path.join(scripts, "interchange.py")],
            worker_logdir_root=self.run_dir,
        )
        config = Config(
            executors=[executor],
            run_dir=self.run_dir,
            dependency_resolver=DEEP_DEPENDENCY_RESOLVER,
            strategy="none",
            initialize_logging=False,
        )
        self.dfk = DataFlowKernel(config)
        self._app(abs)(-1).result()
        for future in [self._app(abs)(-i) for i in range(shared.workers * 4)]:
            future.result()

    def _app(self, func):
        app = self.apps.get(func)
        if app is None:
            from parsl.app.python import PythonApp

            app = self.apps[func] = PythonApp(func, data_flow_kernel=self.dfk, executors=["bench"])
        return app

    def build(self, graph) -> list:
        return [graph.calls, graph.outputs]

    def run(self, built) -> list:
        calls, outputs = built
        futures: list = []
        get = lambda ref: futures[ref.index]  # noqa: E731
        for func, args in calls:
            futures.append(self._app(func)(*_subst(args, get)))
        return [futures[i].result() for i in outputs]

    def close(self) -> None:
        if self.dfk is not None:
            self.dfk.cleanup()  # stops the interchange, the worker pool and the DFK's threads
            self.dfk = None
        self.apps = {}
        if self.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None


class Joblib(Contender):
    """joblib.Parallel, level by level."""

    def __init__(self):
        super().__init__("joblib", "joblib.Parallel (loky), the graph level by level (peers extra)")
        self.parallel = None

    def start(self, shared) -> None:
        import joblib

        self.delayed = joblib.delayed
        self.parallel = joblib.Parallel(n_jobs=shared.workers)
        self.parallel.__enter__()  # one pool for every run
        self.parallel(self.delayed(abs)(-i) for i in range(shared.workers * 4))

    def build(self, graph) -> tuple:
        level: list = []  # of each call: 1 + the highest level among its inputs
        last: dict = {}  # value -> the highest level that uses it
        for _, args in graph.calls:
            deps: list = []
            _subst(args, deps.append)
            lv = 1 + max((level[ref.index] for ref in deps), default=-1)
            for ref in deps:
                last[ref.index] = max(last.get(ref.index, 0), lv)
            level.append(lv)
        levels: list = [[] for _ in range(max(level, default=-1) + 1)]
        for i, lv in enumerate(level):
            levels[lv].append(i)
        drops: list = [[] for _ in levels]  # values to drop after each level
        keep = set(graph.outputs)
        for index, lv in last.items():
            if index not in keep:
                drops[lv].append(index)
        return graph.calls, levels, drops, graph.outputs

    def run(self, built) -> list:
        calls, levels, drops, outputs = built
        values: list = [None] * len(calls)
        get = lambda ref: values[ref.index]  # noqa: E731
        delayed = self.delayed
        for indices, drop in zip(levels, drops):
            jobs = (delayed(calls[i][0])(*_subst(calls[i][1], get)) for i in indices)
            for i, value in zip(indices, self.parallel(jobs)):
                values[i] = value
            for i in drop:
                values[i] = None
        return [values[i] for i in outputs]

    def close(self) -> None:
        if self.parallel is not None:
            self.parallel.__exit__(None, None, None)
            self.parallel = None


PEERS = ("joblib", "ray", "parsl")
"""The names of the contenders from other tools, run with ``--peers``."""

PEER_GROUPS = ("ray", "parsl")
"""Groups of their own (see :data:`~dispatcher.bench.contenders.GROUPS`): Ray's and
Parsl's processes run only while they are measured; joblib's loky pool sits idle as the
local pools do."""


def make_peers() -> dict:
    return {c.name: c for c in (Joblib(), Ray(), Parsl())}
