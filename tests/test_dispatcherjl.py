"""Ports of Dispatcher.jl's executor tests (test/runtests.jl), on every executor."""

from __future__ import annotations

import math

import pytest

import dispatcher as dp

from .conftest import FileChannel


def factorials(x):
    return (math.factorial(x), math.factorial(2 * x))


def test_executor_example(executor):
    comm = FileChannel()  # Dispatcher.jl uses a RemoteChannel for its parallel runs

    a = dp.Op(lambda: 3)
    a.set_label("3")
    assert a.dependencies() == ()
    b = dp.Op(lambda x: x, 4)
    b.set_label("four")
    assert b.dependencies() == ()
    c = dp.Op(max, a, b)
    assert a in c.dependencies() and b in c.dependencies()
    d = dp.Op(math.sqrt, c)
    assert c in d.dependencies()
    e = dp.op(factorials, nout=2)(c)
    e.set_label("factorials")
    f, g = e
    h = dp.Op(lambda x: comm.put(x / 2), g)
    h.set_label("put!")
    assert g in h.dependencies()

    results = dp.run(executor, [h])
    assert len(results) == 1 and results[0].is_ok()
    assert comm.get_nowait() == math.factorial(2 * max(3, 4)) / 2
    assert comm.empty()
    # every node that ran keeps its latest value; d and f are not upstream of h
    assert (c.fetch(), g.fetch()) == (4, math.factorial(8))
    for node in (d, f):
        with pytest.raises(dp.DispatcherError, match="has not run"):
            node.fetch()


def test_executor_example_on_graph(executor):
    a = dp.Op(lambda: 3)
    b = dp.Op(lambda x: x, 4)
    c = dp.Op(max, a, b)
    e = dp.op(factorials, nout=2)(c)
    _f, g = e
    h = dp.Op(lambda x: x / 2, g)
    results = dp.run(executor, dp.DispatchGraph(h))
    assert [r.unwrap() for r in results] == [math.factorial(8) / 2]


def _stateful_graph():
    comm = FileChannel()

    def start():
        comm.put(4)
        return comm

    def plus(amount):
        def step(ch):
            x = ch.get_nowait()
            ch.put(x + amount)
            return ch

        return step

    a = dp.Op(start)
    a.set_label("put!(4)")
    b = dp.Op(plus(1), a)
    b.set_label("put!(x + 1)")
    c = dp.Op(plus(2), a)
    c.set_label("put!(x + 2)")
    return comm, a, b, c


def test_partial_run_with_dict_input(executor):
    comm, a, b, c = _stateful_graph()
    ret = dp.run(executor, [b])
    assert len(ret) == 1 and not ret[0].is_error()
    assert ret[0].unwrap() == comm
    assert comm.peek() == 5
    # run the remainder of the graph: a is not run again
    results = dp.run(executor, [c], input_map={a: a.fetch()})
    assert comm.peek() == 7
    assert len(results) == 1 and results[0].is_ok()
    assert results[0].node is c


def test_partial_run_with_array_input(executor):
    comm, a, b, c = _stateful_graph()
    b_ret = dp.run(executor, [b])
    assert b_ret[0].is_ok()
    assert comm.peek() == 5
    results = dp.run(executor, [c], [a])
    assert comm.peek() == 7
    assert len(results) == 1 and results[0].is_ok()


def test_no_cycles_allowed(executor):
    ran = []
    a = dp.Op(lambda x: ran.append(x), 3)
    a.set_label("3")
    b = dp.Op(lambda x: ran.append(x), a)
    b.set_label("a")
    a.args = (b,)
    for outputs in ([a], [b]):
        with pytest.raises(dp.ExecutorError, match="cycle") as info:
            dp.run(executor, outputs)
        assert "'3'" in str(info.value) and "'a'" in str(info.value)
    assert ran == []


def test_functions(executor):
    def comp(node):
        return dp.Op(lambda v: v + 3, node), dp.Op(lambda v: v + 1, node)

    a = dp.Op(lambda: 1 + 2)
    b, c = comp(a)
    d = dp.Op(lambda x, y: x * y, b, c)
    result = dp.run(executor, [d])
    assert len(result) == 1 and not result[0].is_error()
    assert result[0].node is d
    assert result[0].unwrap() == 24
    assert d.fetch() == 24


def test_application_errors(executor):
    comm = FileChannel()

    def application_error(x):
        return (math.factorial(x), _raise(RuntimeError("Application Error")))

    a = dp.Op(lambda: 3)
    b = dp.Op(lambda x: x, 4)
    c = dp.Op(max, a, b)
    d = dp.Op(math.sqrt, c)
    e = dp.op(application_error, nout=2)(c)
    e.set_label("ApplicationError")
    _f, g = e
    h = dp.Op(lambda x: comm.put(x / 2), g)
    h.set_label("put!")

    with pytest.raises(dp.DependencyError) as info:
        dp.run(executor, [h])
    err = info.value
    assert err.node is e
    assert isinstance(err.error, RuntimeError)
    assert "ApplicationError" in str(err) and "Application Error" in str(err)
    assert "application_error" in err.traceback

    results = dp.run(executor, [h, d], throw_error=False)
    assert results[0].is_error() and isinstance(results[0].error, dp.DependencyError)
    assert results[0].error.node is e
    with pytest.raises(dp.DependencyError):
        results[0].unwrap()
    assert results[1].is_ok() and results[1].value == 2.0
    assert comm.empty()


def _raise(exc):
    raise exc


def slowadd(x, y):
    return x + y


def slowinc(x):
    return x + 1


def slowsum(*a):
    return sum(a)


def test_dask_do_example(executor):
    data = [1, 2, 3]
    A = [dp.Op(slowinc, i) for i in data]
    B = [dp.Op(slowadd, a, 10) for a in A]
    C = [dp.Op(slowadd, a, 100) for a in A]
    result = dp.Op(
        lambda x, y, z: x + y + z,
        dp.Op(slowsum, *A),
        dp.Op(slowsum, *B),
        dp.Op(slowsum, *C),
    )
    (run_result,) = dp.run(executor, [result])
    assert not run_result.is_error()
    assert run_result.unwrap() == 357


def test_dask_cluster_example(executor):
    """The manual's load / process / roll / compare / reduce graph."""
    import random

    rng = random.Random(0)
    data = [dp.Op(lambda name: len(name), f"mydata-{d}.dat") for d in range(1, 101)]
    reference = dp.Op(lambda address: 1, "sql://mytable")
    processed = [dp.Op(lambda x, ref: x + ref, d, reference) for d in data]
    rolled = [dp.Op(lambda a, b, c: a + b + c, *processed[i : i + 3]) for i in range(len(processed) - 2)]
    compared = [dp.Op(lambda a, b: a - b, rng.choice(rolled), rng.choice(rolled)) for _ in range(200)]
    best = dp.Op(max, dp.CollectNode(compared))
    (run_best,) = dp.run(executor, [best])
    expected = max(c.fetch() for c in compared)
    assert run_best.unwrap() == expected
    assert all(n.state() == "done" for n in dp.DispatchGraph(best))
