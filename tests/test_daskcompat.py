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


def _stream_counts(dask_worker):
    stream = dask_worker.batched_stream
    return stream.batch_count, stream.message_count


def test_when_a_call_ran_goes_with_its_result():
    """A worker's event on when a call ran is sent with the call's result, not on
    its own: on its own it would hold the result back for the stream's interval at
    every hop of a chain. So a chain costs each worker about one message batch a hop
    (two if the event went alone), and every attempt still names its worker."""
    client = dask_client()
    hops = 40
    node = dp.Op(abs, -1)
    for _ in range(hops - 1):
        node = dp.Op(add, node, 1)
    with dp.DaskExecutor(client) as ex:
        dp.execute(dp.Op(abs, 0), ex)  # (the client follows the events from its first run)
        before = client.run(_stream_counts)
        trace = dp.Trace()
        assert dp.execute(node, ex, trace=trace) == hops
        after = client.run(_stream_counts)
    batches = sum(after[w][0] - before[w][0] for w in after)
    messages = sum(after[w][1] - before[w][1] for w in after)
    assert messages >= 2 * hops  # an event and a result for each call
    assert batches <= hops + hops // 4, (batches, messages)
    assert len(trace.attempts) == hops and all(a.where in after for a in trace.attempts)
