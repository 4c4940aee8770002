"""Nodes: construction, dependency discovery, the op decorator, labels, fetch."""

from __future__ import annotations

import functools

import pytest

import dispatcher as dp
from dispatcher.outcomes import NEVER


def add(x, y):
    return x + y


def test_op_records_call_and_default_label():
    node = dp.Op(add, 1, y=2)
    assert node.func is add
    assert node.args == (1,)
    assert node.kwargs == {"y": 2}
    assert node.dependencies() == ()
    assert node.label == "add"
    assert node.get_label() == "add"
    assert node.has_label()


@pytest.mark.parametrize("bad", [3, True, None, [1, 2], "text"])
def test_op_rejects_non_callable(bad):
    with pytest.raises(TypeError, match="callable"):
        dp.Op(bad)


def test_op_accepts_types_and_callable_objects():
    class Callable:
        def __call__(self):
            return 1

    assert dp.Op(int, 2.0).label == "int"
    assert dp.Op(Callable()).label == "Callable"
    assert dp.Op(functools.partial(add, 1), 2).label == "add"
    assert dp.Op(lambda: 3).label == "<lambda>"


def test_dependencies_found_in_nested_containers_once_each_in_order():
    a, b, c, d, e = (dp.Op(int, i) for i in range(5))
    node = dp.Op(add, [a, (b, {"k": c})], y={frozenset([d]), e} and {"z": [a, e]})
    assert node.dependencies() == (a, b, c, e)
    s = dp.Op(sorted, {d, e})
    assert set(s.dependencies()) == {d, e}


def test_dict_keys_and_other_types_are_not_searched():
    a = dp.Op(int, 1)

    class Box:
        value = a

    node = dp.Op(len, {a: 1}, Box())
    assert node.dependencies() == ()


def test_nested_substitution_keeps_container_types():
    a = dp.Op(int, "1")
    b = dp.Op(int, "2")
    node = dp.Op(lambda *xs, **kw: (xs, kw), [a, (b,)], {"x": a}, frozenset([b]), key={"y": [b]})
    assert dp.execute(node) == (([1, (2,)], {"x": 1}, frozenset([2])), {"key": {"y": [2]}})


def test_replacing_args_rescans_dependencies():
    a = dp.Op(int, 1)
    b = dp.Op(int, 2)
    node = dp.Op(add, a, 1)
    node.args = (b, b)
    assert node.dependencies() == (b,)
    node.kwargs = {"y": a}
    node.args = (b,)
    assert node.dependencies() == (b, a)
    assert dp.execute(node) == 3


def test_func_and_options_may_be_keyword_names_of_the_function():
    def f(func, label, timeout):
        return (func, label, timeout)

    assert dp.execute(dp.Op(f, func=1, label=2, timeout=3)) == (1, 2, 3)

    @dp.op(label="wrapped", timeout=5)
    def g(label, retries):
        return label + retries

    node = g(label=1, retries=2)
    assert node.label == "wrapped" and node.timeout == 5
    assert dp.execute(node) == 3


def test_op_decorator_forms():
    @dp.op
    def double(x):
        return 2 * x

    assert double.__name__ == "double"
    node = double(4)
    assert isinstance(node, dp.Op) and node.label == "double"
    assert dp.execute(node) == 8

    made = dp.op(add, label="plus", retries=2, retry_on=lambda e: True)(1, 2)
    assert made.label == "plus" and made.retries == 2 and len(made.retry_on) == 1
    assert dp.execute(made) == 3

    @dp.op()
    def nothing():
        return None

    assert dp.execute(nothing()) is None


def test_op_decorator_validates_options():
    with pytest.raises(ValueError, match="nout"):
        dp.op(add, nout=-1)
    with pytest.raises(ValueError, match="timeout"):
        dp.op(add, timeout=0)
    with pytest.raises(ValueError, match="retries"):
        dp.op(add, retries=-2)
    with pytest.raises(TypeError, match="retry_on"):
        dp.op(add, retry_on=[3])
    with pytest.raises(TypeError, match="callable"):
        dp.op(5)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("timeout", "10s", "must be a positive number of seconds (an int or a float), got str: '10s'"),
        ("timeout", True, "must be a positive number of seconds (an int or a float), got bool"),
        ("timeout", float("inf"), "must be a positive number of seconds"),
        ("retries", "3", "must be a non-negative int, got str: '3'"),
        ("retries", 2.5, "must be a non-negative int, got float: 2.5"),
        ("nout", "2", "must be a non-negative int, got str: '2'"),
        ("retry_on", 5, "takes a predicate (exception -> bool), an exception class, or a list"),
        ("retry_on", ["x"], "takes predicates (exception -> bool) or exception classes, got str"),
    ],
)
def test_a_wrong_option_is_refused_where_it_is_given_naming_it(option, value, message):
    with pytest.raises((TypeError, ValueError)) as info:
        dp.op(add, **{option: value})
    assert f"{option} of op 'add' {message}" in str(info.value)
    with pytest.raises((TypeError, ValueError)) as info:

        @dp.op(label="fit", **{option: value})
        def fit():
            pass

    assert f"{option} of op 'fit' {message}" in str(info.value)
    if option in ("timeout", "retries", "retry_on"):  # executors take them too, with the same checks
        with pytest.raises((TypeError, ValueError)) as info:
            dp.ThreadExecutor(**{option: value})
        assert str(info.value).startswith(f"{option} {message}")


def test_retry_on_takes_exception_classes():
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("busy")
        return "ok"

    backoff = dp.Backoff(first_delay=0.001)
    assert dp.execute(dp.op(flaky, retry_on=OSError)(), dp.SerialExecutor(backoff=backoff)) == "ok"
    assert len(attempts) == 3
    # an exception of another class is not retried: the class is not a predicate that is always true
    node = dp.op(int, retry_on=OSError)("x")
    (result,) = dp.run(dp.SerialExecutor(backoff=backoff), [node], throw_error=False)
    assert result.error.attempts == 1 and isinstance(result.error.error, ValueError)


def test_a_generator_argument_is_refused_when_the_node_is_made():
    parts = [dp.Op(add, i, 1) for i in range(3)]
    with pytest.raises(TypeError) as info:
        dp.Op(sum, (p for p in parts))
    assert "argument 0 of node 'sum' is a generator" in str(info.value)
    assert "pass a list (list(...))" in str(info.value)
    with pytest.raises(TypeError, match="keyword argument 'values' of node 'add' is a generator"):
        dp.Op(add, 1, values=[(p for p in parts)])
    assert dp.execute(dp.Op(sum, list(p for p in parts))) == 6


def test_op_decorator_on_methods():
    class Model:
        factor = 3

        @dp.op
        def scale(self, x):
            return self.factor * x

    assert dp.execute(Model().scale(2)) == 6


def test_index_node_and_unpacking():
    @dp.op(nout=2)
    def pair():
        return ("a", "b")

    first, second = pair()
    assert isinstance(first, dp.IndexNode)
    assert first.label == "pair[0]"
    assert dp.execute([first, second]) == ["a", "b"]
    node = dp.Op(dict, x=1)
    assert dp.execute(node["x"]) == 1
    with pytest.raises(TypeError, match="nout"):
        _a, _b = dp.Op(tuple, [1, 2])
    with pytest.raises(TypeError, match="node"):
        dp.IndexNode(3, 0)


def test_collect_node_and_data_node():
    a = dp.Op(int, "1")
    data = dp.DataNode([5, 6])
    both = dp.CollectNode([a, data, a])
    assert both.dependencies() == (a, data)
    assert both.label == "collect(3)"
    assert data.fetch() == [5, 6]
    assert dp.execute(both) == [1, [5, 6], 1]
    with pytest.raises(TypeError, match="nodes"):
        dp.CollectNode([a, 3])


def test_labels_accessors():
    node = dp.Op(add, 1, 2)
    assert node.set_label("three") == "three"
    assert node.get_label() == "three" and node.label == "three"
    node.label = "again"
    assert node.label == "again"
    index = node[0]
    assert not index.has_label()
    index.set_label("first")
    assert index.has_label() and index.label == "first"


def test_nodes_compare_and_hash_by_identity():
    a = dp.Op(add, 1, 2)
    b = dp.Op(add, 1, 2)
    assert a != b and a == a
    assert len({a, b, a}) == 2


def test_fetch_before_and_after_runs():
    def fail():
        raise ValueError("boom")

    ok = dp.Op(add, 1, 2)
    bad = dp.Op(fail)
    assert ok._outcome is NEVER
    with pytest.raises(dp.DispatcherError, match="has not run"):
        ok.fetch()
    assert ok.summary().endswith("[not run]")
    dp.run(dp.SerialExecutor(), [ok, bad], throw_error=False)
    assert ok.fetch() == 3
    assert ok.summary().endswith("[done]")
    with pytest.raises(dp.DependencyError, match="boom") as info:
        bad.fetch()
    assert info.value.node is bad
    assert bad.state() == "failed"


def test_repr_and_summary_show_label_and_arguments():
    a = dp.Op(add, 1, 2)
    b = dp.Op(add, a, list(range(100)), y="z" * 100)
    assert repr(a) == "<Op 'add': add(1, 2)>"
    text = repr(b)
    assert "<add>" in text and "list[100]" in text and "..." in text
    assert len(text) < 200
    assert b.summary().startswith("Op 'add'")
    assert "data" in repr(dp.DataNode(3))


def test_a_node_whose_arguments_are_nodes_depends_on_its_keyword_nodes_too():
    a, b = dp.Op(abs, -1), dp.Op(abs, -2)
    assert dp.Op(max, a, a, default=b).dependencies() == (a, b)
    assert dp.Op(max, a, b).dependencies() == (a, b)
    assert dp.execute(dp.Op(lambda x, y, z: x + y + z, a, a, z=b)) == 4
