"""Dask graphs as dispatcher graphs, and every executor as a dask scheduler.

Policy: a dask graph (a dict of keys to tasks, in dask's legacy tuple form or its
task specification) becomes one :class:`~dispatcher.Op` per key that the wanted
keys need, whose arguments are the task and the nodes of the keys it depends on;
running the node runs the task with their values. Dask's task specification is
read through :mod:`dispatcher.executors._daskcompat`, the one place that knows
dask's internals. ``ex.get(dsk, keys)`` runs such a graph as one dispatcher run,
dropping each intermediate value once no remaining task needs it, and returns the
values in the shape of ``keys`` (a list of keys gives a tuple, as dask's schedulers do); a
task that fails raises its own exception. A key
that is not in the graph raises ``KeyError``. Keyword arguments that dask passes to
a scheduler (``num_workers``, ``pool``, ...) are accepted and have no effect: the
executor decides where tasks run.

dask's local callbacks (:mod:`dask.callbacks`: ``dask.diagnostics.ProgressBar``,
``Profiler``, ``ResourceProfiler``, ``CacheProfiler``, or ``callbacks=`` given to
``compute``) are honoured as dask's own local schedulers honour them, through
dask's public callback API: ``start(dsk)`` before the run, ``start_state(dsk,
state)`` as it starts, ``pretask(key, dsk, state)`` when a task is handed to the
executor (once per attempt), ``posttask(key, value, dsk, state, id)`` when it
finishes and ``finish(dsk, state, errored)`` at the end, also when it failed. The
``state`` they see has dask's ``waiting``, ``ready``, ``running``, ``finished`` and
``released`` collections of keys, kept up to date; its ``cache`` stays empty,
because values live where the executor keeps them, and the ``id`` of ``posttask``
is the id of the thread that drives the run.
"""

from __future__ import annotations

import threading
from typing import Any

from .engine.callbacks import Callback
from .nodes import Op
from .results import DependencyError

__all__ = ["dask_nodes", "get"]


class _Spec:
    """A dask task as a node's argument, opaque to the dask that a DaskExecutor sends
    the node to (which would read a bare task as a task of its own graph)."""

    __slots__ = ("task",)

    def __init__(self, task):
        self.task = task

    def __getstate__(self):
        return self.task

    def __setstate__(self, task):
        self.task = task


def _run_task(spec: _Spec, values: dict) -> Any:
    """One dask task, given the values of the keys it depends on."""
    return spec.task(values)


def _flat_keys(keys, out: list) -> list:
    if isinstance(keys, list):
        for k in keys:
            _flat_keys(k, out)
    else:
        out.append(keys)
    return out


def _nodes(tasks: dict, wanted: list) -> dict:
    """key -> Op for every key that the ``wanted`` keys need, from dask's ``tasks``."""
    for key in wanted:
        if key not in tasks:
            raise KeyError(key)
    needed, stack = {}, list(wanted)
    while stack:  # the keys needed, each once (no recursion: dask graphs can be deep)
        key = stack.pop()
        if key not in needed:
            needed[key] = tasks[key]
            stack.extend(d for d in tasks[key].dependencies if d not in needed)
    nodes: dict = {}
    order = _topological(needed)
    for key in order:
        task = needed[key]
        deps = {d: nodes[d] for d in task.dependencies}
        nodes[key] = Op(_run_task, _Spec(task), deps)
        nodes[key].label = str(key)
    return nodes


def _topological(tasks: dict) -> list:
    import graphlib

    return list(graphlib.TopologicalSorter({k: t.dependencies for k, t in tasks.items()}).static_order())


def dask_nodes(dsk: dict, keys=None) -> tuple[dict, list]:
    """``key -> node`` for the tasks of ``dsk`` that ``keys`` need (default: every
    key), and the output nodes of ``keys`` in order, each once."""
    from .executors._daskcompat import task_graph

    return _graph_nodes(task_graph(dsk), keys)


def _graph_nodes(tasks: dict, keys) -> tuple[dict, list]:
    wanted = _flat_keys(keys, []) if keys is not None else list(tasks)
    nodes = _nodes(tasks, wanted)
    return nodes, list(dict.fromkeys(nodes[k] for k in wanted))


def get(dsk: dict, keys, run, callbacks=None) -> Any:
    """The values of ``keys`` of the dask graph ``dsk``, in their shape.
    ``run(outputs, callbacks)`` runs the nodes with those dispatcher callbacks and
    gives their results; ``callbacks`` are dask's (as ``compute(callbacks=...)``
    gives them), besides the ones active in dask."""
    from dask.callbacks import local_callbacks

    from .executors._daskcompat import task_graph

    tasks = task_graph(dsk)
    nodes, outputs = _graph_nodes(tasks, keys)
    with local_callbacks(callbacks) as dask_callbacks:
        if dask_callbacks:
            told = _DaskCallbacks(dask_callbacks, tasks, {node: key for key, node in nodes.items()})
            results = told.run(run, outputs)
        else:
            results = _results(run, outputs, ())
    values = {r.node: r.value for r in results}
    return _pack(keys, nodes, values)


def _results(run, outputs: list, callbacks: tuple) -> list:
    try:
        return run(outputs, callbacks)
    except DependencyError as err:
        raise err.error from err


class _DaskCallbacks(Callback):
    """dask's local callbacks (tuples of ``start, start_state, pretask, posttask,
    finish``) told about a dispatcher run of a dask graph."""

    def __init__(self, dask_callbacks, dsk: dict, key_of: dict):
        from dask.callbacks import normalize_callback, unpack_callbacks

        self.callbacks = [normalize_callback(cb) for cb in dask_callbacks]
        _, self.start_states, self.pretasks, self.posttasks, _ = unpack_callbacks(self.callbacks)
        self.dsk = dsk
        self.key_of = key_of
        self.state = {
            "waiting": set(key_of.values()),
            "ready": [],
            "running": set(),
            "finished": set(),
            "released": set(),
            "cache": {},
        }

    def run(self, run, outputs: list) -> list:
        started = []
        errored = True
        try:
            for cb in self.callbacks:
                if cb[0]:
                    cb[0](self.dsk)
                started.append(cb)
            results = _results(run, outputs, (self,))
            errored = False
            return results
        finally:
            for cb in started:
                if cb[4]:
                    cb[4](self.dsk, self.state, errored)

    def on_start(self, total: int) -> None:
        for start_state in self.start_states:
            start_state(self.dsk, self.state)

    def on_submit(self, node) -> None:
        key = self.key_of[node]
        self.state["waiting"].discard(key)
        self.state["running"].add(key)
        for pretask in self.pretasks:
            pretask(key, self.dsk, self.state)

    def on_finish(self, node, value) -> None:
        key = self.key_of[node]
        self.state["running"].discard(key)
        self.state["finished"].add(key)
        for posttask in self.posttasks:
            posttask(key, value, self.dsk, self.state, threading.get_ident())

    def on_fail(self, node, error) -> None:
        key = self.key_of[node]
        self.state["running"].discard(key)
        self.state["waiting"].discard(key)


def _pack(keys, nodes: dict, values: dict) -> Any:
    if isinstance(keys, list):
        return tuple(_pack(k, nodes, values) for k in keys)
    return values[nodes[keys]]
