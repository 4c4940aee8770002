"""Planning a run: which nodes run, what each waits for, and whether all can run.

Policy: a run starts from its outputs and walks back through each node's
dependencies (or a graph's edges), stopping at nodes whose values are given
(``inputs``, the keys of ``input_map``). Each node to run gets a count of the
dependencies it waits for and the nodes that wait for it. Before anything runs the
counts are checked with Kahn's algorithm: a graph in which some nodes can never
become ready has a cycle, and the run raises :class:`~dispatcher.ExecutorError`
naming it. A node given as an input that has no value (it never ran, or its value
was released) is refused at once; one that failed passes its failure on.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ..graph import DispatchGraph, _deps_of, topological_order
from ..nodes import DispatchNode, _func_name
from ..outcomes import NEVER, RELEASED, Failure
from ..results import ExecutorError

__all__ = ["Plan", "given_values", "kids", "make_plan", "output_nodes"]


@attrs.define(slots=True)
class Plan:
    """The nodes a run must finish, as :func:`make_plan` found them."""

    outputs: list
    """The output nodes, in the caller's order."""
    waiting: dict
    """node -> number of its dependencies not yet finished, for every node to run."""
    children: dict
    """node -> the node that waits for it, or a list of several (see :func:`kids`)."""
    poison: dict
    """node -> the DependencyError of a failed given dependency."""
    ready: list
    """The nodes that wait for nothing, the first to start last (a stack)."""
    deps_of: Callable
    """node -> the nodes it waits for (its dependencies, or a graph's edges)."""
    edges_pass_values: bool
    """True when the edges are the nodes' own dependencies (no graph)."""


def kids(entry) -> list | tuple:
    """The nodes of a ``children`` entry (a bare node or a list)."""
    return entry if type(entry) is list else (entry,)


def given_values(inputs, input_map, values: dict, errors: dict, value_of: Callable) -> None:
    """Fill ``values`` and ``errors`` with what the caller gives: ``input_map``'s
    values, and each input node's latest outcome (``value_of(node, outcome)``)."""
    if input_map:
        for node, value in dict(input_map).items():
            if not isinstance(node, DispatchNode):
                raise TypeError(f"input_map keys must be nodes, got {type(node).__name__}: {node!r:.80}")
            values[node] = value
    for node in output_nodes(inputs, "inputs"):
        if node in values:
            continue
        outcome = node._outcome
        if outcome is NEVER or outcome is RELEASED:
            raise ExecutorError(
                f"input node {node.label!r} has no value to give: "
                + ("it has not run" if outcome is NEVER else "its value was released")
            )
        if type(outcome) is Failure:
            errors[node] = outcome.error
        else:
            values[node] = value_of(node, outcome)


def make_plan(outputs: list | DispatchGraph, given: dict, failed_given: dict) -> Plan:
    """Walk back from ``outputs`` (a list of nodes, see :func:`output_nodes`, or a
    DispatchGraph whose leaves are the outputs) to the given nodes."""
    if isinstance(outputs, DispatchGraph):
        graph: DispatchGraph | None = outputs
        outs = graph.leaf_nodes()
        deps_of = graph._parents.__getitem__
    else:
        graph = None
        outs = outputs
        deps_of = _deps_of
    waiting: dict = {}
    children: dict = {}
    poison: dict = {}
    ready: list = []
    out_of_order = False  # an edge against creation order: a cycle is possible
    stack = [n for n in reversed(outs) if n not in given and n not in failed_given]
    while stack:
        node = stack.pop()
        if node in waiting:
            continue
        count = 0
        seq = node._seq
        for dep in deps_of(node):
            if given or failed_given:
                if dep in given:
                    continue
                if dep in failed_given:
                    poison.setdefault(node, failed_given[dep])
                    continue
            count += 1
            if dep._seq >= seq:
                out_of_order = True
            entry = children.get(dep)
            if entry is None:
                # one waiting node is stored bare: most nodes have one, and a
                # list for each would cost memory and garbage collection
                children[dep] = node
                if dep not in waiting:
                    stack.append(dep)
            elif type(entry) is list:
                entry.append(node)
            else:
                children[dep] = [entry, node]
        waiting[node] = count
        if count == 0:
            ready.append(node)
    if graph is not None:
        _check_graph_edges(waiting, graph, given, failed_given)
        if len(waiting) < len(graph):  # nodes not reached from the leaves: a cycle may hold them
            graph.topological_order()  # raises on a cycle
    if out_of_order and not _all_reachable(waiting, children, ready):
        topological_order(list(waiting), lambda n: [d for d in deps_of(n) if d in waiting])
        raise ExecutorError("the graph has a cycle")  # pragma: no cover - found above
    ready.reverse()  # the first-found roots start first
    return Plan(outs, waiting, children, poison, ready, deps_of, graph is None)


def output_nodes(nodes, what: str = "outputs") -> list:
    """``nodes`` (a node or an iterable of nodes) as a list; anything else is refused
    with a message saying what to do."""
    if isinstance(nodes, DispatchNode):
        return [nodes]
    if isinstance(nodes, DispatchGraph):
        raise TypeError(f"{what} must be nodes, not a DispatchGraph")
    try:
        out = list(nodes)
    except TypeError:
        raise TypeError(
            f"{what} must be a node, a list of nodes or a DispatchGraph, got "
            f"{type(nodes).__name__}: {nodes!r:.80}{_not_a_node_hint(nodes)}"
        ) from None
    for i, n in enumerate(out):
        if not isinstance(n, DispatchNode):
            raise TypeError(
                f"{what} must be nodes, got {type(n).__name__} at position {i}: {n!r:.80}"
                f"{_not_a_node_hint(n)}"
            )
    return out


def _not_a_node_hint(value) -> str:
    """What to do when a value was given where a node was expected."""
    if callable(value):
        name = _func_name(value)
        return (
            f"; {name!r} is a function: make a node of a call to it with dp.Op({name}, *args), "
            f"or decorate it with @dp.op so that {name}(*args) makes one"
        )
    return (
        "; if this is what a function returned, that function ran at once: decorate it "
        "with @dp.op (or call it as dp.Op(f, *args)) so that calling it makes a node"
    )


def _check_graph_edges(waiting, graph, given, failed_given) -> None:
    parents = graph._parents
    for node in waiting:
        mine = parents.get(node)
        if mine is None:
            raise ExecutorError(f"node {node.label!r} is not in the graph")
        for dep in node.dependencies():
            if dep not in mine and dep not in given and dep not in failed_given:
                raise ExecutorError(
                    f"node {node.label!r} needs the value of {dep.label!r}, which the graph "
                    f"has no edge for; add the edge, or give {dep.label!r} in inputs"
                )


def _all_reachable(waiting, children, ready) -> bool:
    """Kahn's check: can every node become ready?"""
    if len(ready) == len(waiting):
        return True
    count = dict(waiting)
    stack = list(ready)
    seen = 0
    while stack:
        node = stack.pop()
        seen += 1
        for kid in kids(children.get(node, [])):
            n = count[kid] - 1
            count[kid] = n
            if n == 0:
                stack.append(kid)
    return seen == len(waiting)
