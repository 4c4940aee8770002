"""PoolExecutor and ThreadExecutor: a pool that refuses calls."""

from __future__ import annotations

import pytest

import dispatcher as dp


def inc(x):
    return x + 1


def test_pool_that_refuses_a_call_fails_the_node_instead_of_hanging():
    class Refusing:
        def submit(self, fn, *args, **kwargs):
            raise RuntimeError("cannot schedule new futures after shutdown")

    ex = dp.PoolExecutor(Refusing())
    with pytest.raises(dp.DependencyError, match="after shutdown") as info:
        dp.run(ex, [dp.op(inc, label="refused")(1)])
    assert info.value.node.label == "refused"
    (result,) = dp.run(ex, [dp.Op(inc, 1)], throw_error=False)
    assert isinstance(result.error.error, RuntimeError)
