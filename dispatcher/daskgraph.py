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
"""

from __future__ import annotations

from typing import Any

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


def _nodes(dsk: dict, wanted: list) -> dict:
    """key -> Op for every key that the ``wanted`` keys need."""
    from .executors._daskcompat import task_graph

    tasks = task_graph(dsk)
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
    wanted = _flat_keys(keys, []) if keys is not None else list(dsk)
    nodes = _nodes(dsk, wanted)
    return nodes, list(dict.fromkeys(nodes[k] for k in wanted))


def get(executor, dsk: dict, keys, run) -> Any:
    """The values of ``keys`` of the dask graph ``dsk``, in their shape; ``run(outputs)``
    runs the nodes on ``executor`` and gives their results."""
    nodes, outputs = dask_nodes(dsk, keys)
    try:
        results = run(outputs)
    except DependencyError as err:
        raise err.error from err
    values = {r.node: r.value for r in results}
    return _pack(keys, nodes, values)


def _pack(keys, nodes: dict, values: dict) -> Any:
    if isinstance(keys, list):
        return tuple(_pack(k, nodes, values) for k in keys)
    return values[nodes[keys]]
