"""Every executor as a ``concurrent.futures.Executor`` (``dispatcher/futures.py``):
submit, map, as_completed, wait, futures as arguments, original exceptions,
timeouts, cancellation and shutdown."""

from __future__ import annotations

import concurrent.futures as cf
import time

import pytest

import dispatcher as dp

from .conftest import DiesOnce


def inc(x):
    return x + 1


def nap(seconds):
    time.sleep(seconds)
    return seconds


def refuse(x):
    raise KeyError(x)


def test_submit_gives_futures_of_the_values(executor):
    assert isinstance(executor, cf.Executor)
    futures = [executor.submit(inc, i) for i in range(200)]
    assert [f.result(timeout=60) for f in futures] == list(range(1, 201))
    assert {f.result() for f in cf.as_completed(futures, timeout=60)} == set(range(1, 201))
    done, not_done = cf.wait(futures, timeout=60)
    assert len(done) == 200 and not not_done


def test_futures_as_arguments_are_dependencies(executor):
    a = executor.submit(inc, 1)
    b = executor.submit(inc, a)  # the same burst: one graph
    c = executor.submit(sum, [a, b])
    assert c.result(timeout=60) == 5
    slow = executor.submit(nap, 0.3)
    assert slow.result(timeout=60) == 0.3
    later = executor.submit(inc, slow)  # an earlier burst, already done
    assert later.result(timeout=60) == 1.3
    held = executor.submit(inc, executor.submit(nap, 0.2))
    assert held.result(timeout=60) == 1.2


def test_a_future_raises_the_original_exception_with_the_node_as_its_cause(executor_factory):
    ex = executor_factory(retries=0)
    future = ex.submit(refuse, 7)
    with pytest.raises(KeyError) as info:
        future.result(timeout=60)
    assert isinstance(info.value.__cause__, dp.DependencyError)
    assert info.value.__cause__.node.label == "refuse"
    downstream = ex.submit(inc, future)
    with pytest.raises(KeyError):
        downstream.result(timeout=60)


def test_map_keeps_the_order_and_takes_a_timeout(executor):
    assert list(executor.map(inc, range(50), timeout=60, chunksize=10)) == list(range(1, 51))
    with pytest.raises(TimeoutError):
        list(executor.map(nap, [1.0], timeout=0.2))


def test_a_submitted_call_has_the_executors_timeout(executor_factory):
    ex = executor_factory(timeout=0.3, retries=0)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        ex.submit(nap, 3.0).result(timeout=60)
    assert time.monotonic() - start < 2.5  # not the call's 3 s (a busy machine: slack)


def test_shutdown_cancels_what_has_not_started_and_refuses_new_calls(executor_factory):
    ex = executor_factory()
    ex.submit(nap, 0.2)
    ex.shutdown(wait=True, cancel_futures=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(inc, 1)
    assert ex.closed


def test_a_worker_that_dies_costs_its_call_one_attempt():
    with dp.ProcessExecutor(2) as ex:
        assert ex.submit(DiesOnce()).result(timeout=60) == "second"
