"""DaskExecutor on dask's public API only: the fallback used when the private parts
that :mod:`dispatcher.executors._daskcompat` relies on are missing. The same graphs
give the same values and errors as with them (``tests/test_dask.py`` and the
shared suites run the private path)."""

from __future__ import annotations

import time

import pytest

import dispatcher as dp
from dispatcher.executors import _daskcompat

from .conftest import FileChannel, dask_client


@pytest.fixture(params=["private", "public"])
def ex(request, monkeypatch):
    if request.param == "public":
        monkeypatch.setattr(_daskcompat, "internals", lambda: False)
    with dp.DaskExecutor(dask_client()) as executor:
        assert (executor._burst is None) == (request.param == "public")
        yield executor


def add(*xs):
    return sum(xs)


def test_values_pass_through_containers_frozensets_and_edges(ex):
    a, b = dp.Op(add, 1), dp.Op(add, 2)
    both = dp.Op(lambda s, d, lst: (sorted(s), d["k"], lst), frozenset([a, b]), {"k": a}, [b, 3])
    assert dp.execute(both, ex) == ([1, 2], 1, [2, 3])
    seen = FileChannel()
    first, second = dp.Op(seen.append, "first"), dp.Op(seen.append, "second")
    g = dp.DispatchGraph([first, second])
    g.add_edge(first, second)
    dp.run(ex, g)
    assert seen.items() == ["first", "second"]


def test_errors_name_the_node_and_keep_their_type(ex):
    def bad(x):
        raise KeyError(x)

    with pytest.raises(dp.DependencyError, match="node 'bad' failed: KeyError") as info:
        dp.execute(dp.Op(add, dp.op(bad, retries=0)(1)), ex)
    assert "raise KeyError(x)" in info.value.traceback

    def leave():
        raise SystemExit(3)

    with pytest.raises(dp.DependencyError) as info:
        dp.execute(dp.op(leave, retries=0)(), ex)
    assert isinstance(info.value.error, SystemExit) and str(info.value.error) == "3"
    with pytest.raises(dp.DependencyError, match="nout"):
        dp.execute(dp.op(lambda: (1, 2, 3), nout=2, retries=0)()[0], ex)


def test_a_flaky_node_is_retried_and_intermediates_stay_on_the_cluster(ex):
    tries = FileChannel()

    def flaky(x):
        tries.append(1)
        if len(tries.items()) < 2:
            raise OSError("flaky")
        return x

    mid = dp.op(flaky, retry_on=OSError)(5)
    assert dp.execute(dp.Op(add, mid, 1), ex) == 6
    assert len(tries.items()) == 2 and mid.fetch() == 5


def test_a_timeout_fails_the_node_on_time(ex):
    start = time.monotonic()
    with pytest.raises(dp.DependencyError) as info:
        dp.execute(dp.op(time.sleep, timeout=0.3, retries=0)(3), ex)
    assert isinstance(info.value.error, TimeoutError) and time.monotonic() - start < 2.5
