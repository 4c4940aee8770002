"""DispatchGraph: a set of nodes and the edges between them.

``DispatchGraph(outputs, inputs)`` collects ``outputs`` and all their ancestors,
walking ``dependencies()`` but not past any node in ``inputs``. Nodes are kept in
the order they were added; the edges are kept in both directions, so that queries
for dependencies, dependents, roots and leaves are cheap. Edges may also be added
by hand (``add_edge``), for example to order two nodes that share no data.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator

from .nodes import DispatchNode
from .results import ExecutorError

__all__ = ["DispatchGraph"]

_deps_of = operator.methodcaller("dependencies")
"""A node's own dependencies: ``_deps_of(node) == node.dependencies()``."""


def _node_list(nodes: DispatchNode | Iterable[DispatchNode]) -> list[DispatchNode]:
    if isinstance(nodes, DispatchNode):
        return [nodes]
    out = list(nodes)
    for n in out:
        if not isinstance(n, DispatchNode):
            raise TypeError(f"expected a node, got {type(n).__name__}: {n!r:.80}")
    return out


class DispatchGraph:
    """The nodes of a computation and what depends on what.

    >>> import dispatcher as dp
    >>> a = dp.Op(int, "3")
    >>> b = dp.Op(abs, a)
    >>> g = dp.DispatchGraph(b)
    >>> len(g), g.root_nodes() == [a], g.leaf_nodes() == [b]
    (2, True, True)
    """

    __slots__ = ("_children", "_parents")

    def __init__(
        self,
        outputs: DispatchNode | Iterable[DispatchNode] = (),
        inputs: DispatchNode | Iterable[DispatchNode] = (),
    ):
        # node -> {parent: None} and node -> {child: None}: ordered sets.
        self._parents: dict[DispatchNode, dict] = {}
        self._children: dict[DispatchNode, dict] = {}
        outputs = _node_list(outputs)
        if outputs:
            self._collect(outputs, set(_node_list(inputs)), _deps_of)

    def _collect(self, outputs, stop, deps_of) -> None:
        """Add ``outputs`` and their ancestors under ``deps_of``, not past ``stop``."""
        parents = self._parents
        children = self._children
        stack = list(reversed(outputs))
        while stack:
            node = stack.pop()
            if node in parents:
                continue
            mine = parents[node] = {}
            children.setdefault(node, {})
            if node in stop:
                continue
            for dep in deps_of(node):
                mine[dep] = None
                if dep not in parents:
                    stack.append(dep)
                    kids = children.setdefault(dep, {})
                else:
                    kids = children[dep]
                kids[node] = None
        # Nodes reached only as dependencies were given child sets above but may
        # still be waiting on the stack; every node has both sets now.

    # -- container protocol --------------------------------------------------
    @classmethod
    def from_dask(cls, dsk: dict, keys=None) -> DispatchGraph:
        """A dask graph (``{key: task}``) as a graph of the tasks ``keys`` need
        (default: every key), one :class:`~dispatcher.Op` per key labelled with it
        (see :mod:`dispatcher.daskgraph`)."""
        from .daskgraph import dask_nodes

        _, outputs = dask_nodes(dsk, keys)
        return cls(outputs)

    def __len__(self) -> int:
        return len(self._parents)

    def __contains__(self, node: object) -> bool:
        return node in self._parents

    def __iter__(self) -> Iterator[DispatchNode]:
        return iter(self._parents)

    def nodes(self) -> list[DispatchNode]:
        """The nodes, in the order they were added."""
        return list(self._parents)

    def add(self, node: DispatchNode) -> DispatchGraph:
        """Add one node (no edges); adding a node twice does nothing."""
        if not isinstance(node, DispatchNode):
            raise TypeError(f"expected a node, got {type(node).__name__}: {node!r:.80}")
        if node not in self._parents:
            self._parents[node] = {}
            self._children[node] = {}
        return self

    def add_edge(self, parent: DispatchNode, child: DispatchNode) -> DispatchGraph:
        """Record that ``child`` depends on ``parent``; both must be in the graph."""
        for n in (parent, child):
            if n not in self._parents:
                raise KeyError(f"node {getattr(n, 'label', n)!r} is not in the graph")
        self._parents[child][parent] = None
        self._children[parent][child] = None
        return self

    # -- queries -------------------------------------------------------------
    def dependencies(self, node: DispatchNode) -> list[DispatchNode]:
        """The nodes that ``node`` depends on in this graph."""
        return list(self._parents[node])

    def dependents(self, node: DispatchNode) -> list[DispatchNode]:
        """The nodes that depend on ``node`` in this graph."""
        return list(self._children[node])

    def leaf_nodes(self) -> list[DispatchNode]:
        """Nodes with no dependents, in insertion order."""
        return [n for n, kids in self._children.items() if not kids]

    def root_nodes(self) -> list[DispatchNode]:
        """Nodes with no dependencies, in insertion order."""
        return [n for n, deps in self._parents.items() if not deps]

    def edges(self) -> list[tuple[DispatchNode, DispatchNode]]:
        """All ``(parent, child)`` pairs."""
        return [(p, c) for c, deps in self._parents.items() for p in deps]

    def subgraph(
        self,
        outputs: DispatchNode | Iterable[DispatchNode] = (),
        inputs: DispatchNode | Iterable[DispatchNode] = (),
    ) -> DispatchGraph:
        """The part of this graph that ends in ``outputs`` and starts at ``inputs``.

        ``outputs`` defaults to all leaf nodes. The result holds the outputs and
        their ancestors in this graph, walking back no further than ``inputs``
        (which are kept, as roots): with only outputs it is their ancestor
        subgraph, with only inputs the graph without what lies solely upstream of
        them.
        """
        outputs = _node_list(outputs) or self.leaf_nodes()
        inputs = _node_list(inputs)
        for n in (*outputs, *inputs):
            if n not in self._parents:
                raise KeyError(f"node {n.label!r} is not in the graph")
        sub = DispatchGraph()
        sub._collect(outputs, set(inputs), self._parents.__getitem__)
        return sub

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DispatchGraph):
            return NotImplemented
        if self._parents.keys() != other._parents.keys():
            return False
        theirs = other._parents
        return all(deps.keys() == theirs[n].keys() for n, deps in self._parents.items())

    __hash__ = None  # type: ignore[assignment]

    def is_cyclic(self) -> bool:
        """True when some node depends, through the edges, on itself."""
        try:
            self.topological_order()
        except ExecutorError:
            return True
        return False

    def topological_order(self) -> list[DispatchNode]:
        """Every node after all of its dependencies; raises ExecutorError on a cycle."""
        return topological_order(list(self._children), self._parents.__getitem__)

    def to_dot(self, name: str = "dispatch") -> str:
        """Graphviz DOT text with each node's label."""
        ids = {n: i for i, n in enumerate(self._parents)}
        lines = [f"digraph {_dot_quote(name)} {{"]
        for n, i in ids.items():
            lines.append(f"    n{i} [label={_dot_quote(n.label)}];")
        for child, deps in self._parents.items():
            for p in deps:
                lines.append(f"    n{ids[p]} -> n{ids[child]};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def visualize(self, path, *, trace=None):
        """Draw the graph to ``path`` (``.svg``, ``.png``, ...) with Graphviz: each
        node labelled with its function and arguments and coloured by the state of
        its latest run (given the run's :class:`~dispatcher.Trace`, the nodes found
        in a store show as cached); see :mod:`dispatcher.picture`. Returns the path."""
        from .picture import draw

        return draw(self, path, trace)

    def __repr__(self) -> str:
        edges = sum(len(d) for d in self._parents.values())
        return f"<DispatchGraph: {len(self)} nodes, {edges} edges>"


def _dot_quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def topological_order(outputs, deps_of) -> list[DispatchNode]:
    """The ancestors of ``outputs`` (under ``deps_of``) and the outputs, dependencies first.

    Raises :class:`ExecutorError` naming the nodes of a cycle if there is one.
    """
    order: list[DispatchNode] = []
    state: dict[DispatchNode, bool] = {}  # False: on the current path; True: done
    for root in outputs:
        if root in state:
            continue
        state[root] = False
        stack = [(root, iter(deps_of(root)))]
        while stack:
            node, it = stack[-1]
            for dep in it:
                seen = state.get(dep)
                if seen is None:
                    state[dep] = False
                    stack.append((dep, iter(deps_of(dep))))
                    break
                if seen is False:
                    path = [n for n, _ in stack]
                    cycle = path[path.index(dep) :] + [dep]
                    labels = " -> ".join(repr(n.label) for n in reversed(cycle))
                    raise ExecutorError(f"the graph has a cycle: {labels}")
            else:
                stack.pop()
                state[node] = True
                order.append(node)
    return order
