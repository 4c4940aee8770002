"""Property test: on random DAGs, every executor returns exactly what a plain
recursive evaluation returns, also when random nodes raise."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dispatcher as dp

from .conftest import EXECUTOR_NAMES, make_executor


class NodeFailed(Exception):
    pass


def combine(i, fails, *inputs, scale=1):
    if fails:
        raise NodeFailed(i)
    return i + scale * sum(inputs)


@st.composite
def dags(draw):
    """(spec, outputs): spec[i] = (positional deps, keyword deps, nested?, fails)."""
    n = draw(st.integers(1, 25))
    spec = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), max_size=4)) if i else []
        kw = draw(st.lists(st.integers(0, i - 1), max_size=1)) if i else []
        nested = draw(st.booleans())
        fails = draw(st.booleans()) and draw(st.booleans())  # about one in four
        spec.append((deps, kw, nested, fails))
    outputs = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5))
    return spec, outputs


def build(spec):
    nodes = []
    for i, (deps, kw, nested, fails) in enumerate(spec):
        args = [nodes[d] for d in deps]
        kwargs = {"scale": nodes[kw[0]]} if kw else {}
        if nested and args:
            node = dp.Op(_nested, i, fails, [args[0], (tuple(args[1:]),)], kwargs)
        else:
            node = dp.Op(combine, i, fails, *args, **kwargs)
        nodes.append(node)
    return nodes


def _nested(i, fails, first_and_rest, kwargs):
    first, (rest,) = first_and_rest
    return combine(i, fails, first, *rest, **kwargs)


def reference(spec, i, memo):
    """Plain recursive evaluation: ('ok', value) or ('error', failing node index)."""
    if i in memo:
        return memo[i]
    deps, kw, _nested_args, fails = spec[i]
    for d in deps + kw:
        outcome = reference(spec, d, memo)
        if outcome[0] == "error":
            memo[i] = outcome
            return outcome
    if fails:
        memo[i] = ("error", i)
        return memo[i]
    values = [reference(spec, d, memo)[1] for d in deps]
    scale = reference(spec, kw[0], memo)[1] if kw else 1
    memo[i] = ("ok", i + scale * sum(values))
    return memo[i]


def failing_ancestors(spec, i):
    out, stack = set(), [i]
    while stack:
        j = stack.pop()
        if spec[j][3]:
            out.add(j)
        stack.extend(spec[j][0] + spec[j][1])
    return out


@pytest.fixture(scope="module")
def executors():
    made = {name: make_executor(name) for name in EXECUTOR_NAMES}
    yield {name: ex for name, (ex, _) in made.items()}
    for ex, pool in made.values():
        ex.close()
        if pool is not None:
            pool.shutdown()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_every_executor_matches_recursive_evaluation(executors, case):
    spec, outputs = case
    memo: dict = {}
    expected = [reference(spec, i, memo) for i in outputs]
    for name, ex in executors.items():
        nodes = build(spec)
        results = dp.run(ex, [nodes[i] for i in outputs], throw_error=False)
        for i, res, exp in zip(outputs, results, expected):
            if exp[0] == "ok":
                assert res.is_ok(), (name, i, res)
                assert res.value == exp[1], (name, i)
            else:
                assert res.is_error(), (name, i, res)
                # a parallel executor may meet another failing ancestor first
                failed = nodes.index(res.error.node)
                assert failed in failing_ancestors(spec, i)
                assert isinstance(res.error.error, NodeFailed)
                assert res.error.error.args == (failed,)
        # the same graph raises the first failure with throw_error=True
        if any(e[0] == "error" for e in expected):
            try:
                dp.run(ex, [nodes[i] for i in outputs])
            except dp.DependencyError as err:
                assert isinstance(err.error, NodeFailed)
            else:
                raise AssertionError(f"{name}: no error raised")
