"""DispatchGraph: the ports of Dispatcher.jl's graph tests, and structure queries."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import dispatcher as dp

# Dispatcher.jl's test graph (1-based there, 0-based here):
#   2 -> 1; 2 -> 3; 3 -> 4; 3 -> 5; 4 -> 6; 5 -> 6; 6 -> 7; 6 -> 8; 9 -> 8; 9 -> 10
EDGES = [(2, 1), (2, 3), (3, 4), (3, 5), (4, 6), (5, 6), (6, 7), (6, 8), (9, 8), (9, 10)]


@pytest.fixture
def f_nodes():
    return [None] + [dp.Op(lambda i=i: i) for i in range(1, 11)]


def build(nodes, node_ids, edges):
    g = dp.DispatchGraph()
    for i in node_ids:
        g.add(nodes[i])
    for parent, child in edges:
        g.add_edge(nodes[parent], nodes[child])
    return g


def test_adding(f_nodes):
    g = dp.DispatchGraph()
    node1, node2 = f_nodes[1], f_nodes[2]
    assert g.add(node1) is g
    g.add(node2)
    g.add_edge(node1, node2)
    assert len(g) == 2
    assert g.nodes() == [node1, node2]
    assert list(g) == [node1, node2]
    assert node1 in g and f_nodes[3] not in g
    assert g.dependents(node1) == [node2]
    assert g.dependencies(node2) == [node1]
    assert g.edges() == [(node1, node2)]
    with pytest.raises(KeyError, match="not in the graph"):
        g.add_edge(node1, f_nodes[3])
    with pytest.raises(TypeError):
        g.add(3)


def test_equality(f_nodes):
    g1 = build(f_nodes, range(1, 11), EDGES)
    g2 = dp.DispatchGraph()
    for i in reversed(range(1, 11)):
        g2.add(f_nodes[i])
    assert g1 != g2
    for parent, child in reversed(EDGES):
        assert g1 != g2
        g2.add_edge(f_nodes[parent], f_nodes[child])
    assert g1 == g2
    g2.add(f_nodes[1])  # adding a node twice is a no-op
    assert g1 == g2
    g2.add_edge(f_nodes[2], f_nodes[10])
    assert g1 != g2
    assert g1 != "graph"


def test_ancestor_subgraph(f_nodes):
    g = build(f_nodes, range(1, 11), EDGES)
    truth = build(f_nodes, [9, 10], [(9, 10)])
    assert g.subgraph([f_nodes[9], f_nodes[10]]) == truth
    assert g.subgraph([f_nodes[10]]) == truth
    assert g.subgraph(f_nodes[10]) == truth

    truth = build(f_nodes, range(1, 8), EDGES[:7])
    assert g.subgraph([f_nodes[1], f_nodes[7]]) == truth
    assert g.subgraph([f_nodes[7]]) != truth


def test_descendant_subgraph(f_nodes):
    g = build(f_nodes, range(1, 11), EDGES)
    truth = build(f_nodes, [1, 2, 6, 7, 8, 9, 10], [(6, 7), (6, 8), (9, 8), (9, 10), (2, 1)])
    assert g.subgraph([], [f_nodes[6]]) == truth
    assert g.subgraph(inputs=[f_nodes[6], f_nodes[5]]) == truth

    truth = build(f_nodes, [1, 7, 8, 10], [])
    assert g.subgraph(inputs=[f_nodes[i] for i in (1, 7, 8, 10)]) == truth
    with pytest.raises(KeyError):
        g.subgraph([dp.Op(int)])


def test_graph_from_outputs_and_inputs():
    a = dp.Op(int, "1")
    b = dp.Op(abs, a)
    c = dp.Op(max, a, b)
    d = dp.Op(min, c, 4)
    g = dp.DispatchGraph(d)
    assert set(g) == {a, b, c, d}
    assert g.root_nodes() == [a] and g.leaf_nodes() == [d]
    assert set(g.dependencies(c)) == {a, b}
    assert set(g.dependents(a)) == {b, c}
    cut = dp.DispatchGraph([d], [c])
    assert set(cut) == {c, d}
    assert cut.dependencies(c) == []
    assert g.subgraph([d], [c]) == cut
    order = g.topological_order()
    assert order.index(a) < order.index(b) < order.index(c) < order.index(d)
    assert not g.is_cyclic()


def test_components_like_the_macro_tests():
    def comp(node):
        return dp.Op(add3, node), dp.Op(add1, node)

    a = dp.Op(add, 1, 2)
    b, c = comp(a)
    d = dp.Op(mul, b, c)
    g = dp.DispatchGraph(d)
    assert len(g) == 4 and all(isinstance(n, dp.Op) for n in g)
    assert dp.execute(g) == [24]


def add(x, y):
    return x + y


def add1(x):
    return x + 1


def add3(x):
    return x + 3


def mul(x, y):
    return x * y


def test_cycles_are_found():
    a = dp.Op(add1, 1)
    b = dp.Op(add1, a)
    g = dp.DispatchGraph(b)
    g.add_edge(b, a)
    assert g.is_cyclic()
    with pytest.raises(dp.ExecutorError, match="cycle"):
        g.topological_order()


def test_to_dot_lists_labels_and_edges():
    a = dp.Op(add1, 1)
    a.label = 'say "hi"'
    b = dp.Op(add1, a)
    dot = dp.DispatchGraph(b).to_dot()
    assert dot.startswith('digraph "dispatch" {')
    assert 'label="say \\"hi\\""' in dot
    assert 'label="add1"' in dot
    assert dot.count("->") == 1


def test_repr():
    g = dp.DispatchGraph(dp.Op(add1, dp.Op(add1, 0)))
    assert repr(g) == "<DispatchGraph: 2 nodes, 1 edges>"


@pytest.mark.slow  # eight seconds of building: in make test-all
def test_million_node_graph_fits_in_memory():
    """A 1,000,000-node graph (nodes and DispatchGraph) stays under 2 GiB."""
    script = textwrap.dedent(
        """
        import resource, dispatcher as dp
        def f(*a):
            return None
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        level = [dp.Op(f, i) for i in range(500_000)]
        while len(level) > 1:
            level = [dp.Op(f, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)] + (
                [level[-1]] if len(level) % 2 else [])
        g = dp.DispatchGraph(level[0])
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(len(g), (after - before) * 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    nodes, grown = map(int, out.stdout.split())
    assert nodes == 999_999
    assert grown < 2 * 1024**3, f"{grown / 1024**2:.0f} MiB"
