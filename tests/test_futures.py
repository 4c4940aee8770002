"""Every executor as a ``concurrent.futures.Executor`` (``dispatcher/futures.py``):
submit, map, as_completed, wait, futures as arguments, original exceptions,
timeouts, cancellation and shutdown."""

from __future__ import annotations

import concurrent.futures as cf
import time

import pytest

import dispatcher as dp

from .conftest import DiesOnce, start_workers


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


def refuse_seven(x):
    if x == 7:
        raise KeyError(x)
    return x


def test_map_with_a_chunksize_makes_a_node_per_chunk(executor_factory):
    ex = executor_factory(retries=0)
    assert list(ex.map(lambda a, b: a * b, range(11), range(1, 12), chunksize=4)) == [
        a * b for a, b in zip(range(11), range(1, 12))
    ]
    values = ex.map(refuse_seven, range(20), chunksize=4)
    assert [next(values) for _ in range(4)] == [0, 1, 2, 3]
    with pytest.raises(KeyError) as info:
        next(values)  # the chunk of calls 4 to 7 fails as one node
    assert isinstance(info.value.__cause__, dp.DependencyError)
    assert info.value.__cause__.node.label == "map(refuse_seven)[4:8]"
    with pytest.raises(ValueError, match="chunksize"):
        ex.map(inc, range(3), chunksize=0)


def test_map_takes_an_iterable_that_submits_calls_itself(executor):
    """The iterables are read before the calls go in: one that submits to the same
    executor does not deadlock (its futures are arguments: dependencies)."""
    submitted = (executor.submit(inc, i) for i in range(5))
    assert list(executor.map(lambda v: v * 10, submitted, timeout=120)) == [10, 20, 30, 40, 50]


def test_a_submitted_call_has_the_executors_timeout(executor_factory):
    ex = executor_factory(timeout=0.3, retries=0)
    start_workers(ex)
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


class Big:
    """A value whose lifetime a test follows with a weak reference."""


def make_big():
    return Big()


def wait_for(event, started=None, seconds=60):
    if started is not None:
        started.set()
    assert event.wait(seconds)
    return "released"


async def wait_async(event, started=None, seconds=60):
    import asyncio

    if started is not None:
        started.set()
    deadline = time.monotonic() + seconds
    while not event.is_set():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)
    return "released"


def blocker_for(executor):
    """A call that waits for an event without holding up the executor's other calls
    (on an AsyncExecutor's loop, a coroutine)."""
    return wait_async if isinstance(executor, dp.AsyncExecutor) else wait_for


def test_calls_submitted_while_a_call_runs_join_its_run_and_are_let_go_when_settled(local_executor):
    import gc
    import threading
    import weakref

    from dispatcher.futures import takes_calls_as_they_come

    one_run = takes_calls_as_they_come(local_executor)
    release, started = threading.Event(), threading.Event()
    try:
        big = local_executor.submit(make_big)
        blocker = local_executor.submit(blocker_for(local_executor), release, started)
        ref = weakref.ref(big.result(timeout=60))
        assert started.wait(60) and not blocker.done()
        # (on an executor whose bursts are runs of their own, calls submitted while
        # the blocker's burst still gathers are in its run, and wait behind it)
        quick = [local_executor.submit(inc, i) for i in range(100)]  # beside the blocked call
        assert [f.result(timeout=60) for f in quick] == list(range(1, 101))
        if one_run:  # (else the quick calls were a run of their own)
            submit_threads = [t for t in threading.enumerate() if t.name == "dispatcher-submit"]
            assert len(submit_threads) == 1  # one open run took them all
            del big
            gc.collect()
            assert ref() is None  # the run, still going, no longer holds a settled call's value
        assert not blocker.done()
    finally:
        release.set()
    assert blocker.result(timeout=60) == "released"


def test_a_call_that_submits_a_call_and_waits_for_it_gets_its_value(local_executor):
    def outer():
        return local_executor.submit(inc, 1).result(timeout=30) + 1

    assert local_executor.submit(outer).result(timeout=60) == 3


def test_a_call_cancelled_before_its_run_took_it_does_not_stop_later_calls(local_executor):
    for i in range(20):
        local_executor.submit(abs, -1).cancel()  # (taken or not: either way)
        assert local_executor.submit(abs, -i).result(timeout=30) == i


def test_a_future_kept_does_not_keep_the_calls_it_took(local_executor):
    import gc
    import weakref

    from dispatcher.futures import takes_calls_as_they_come

    first = local_executor.submit(make_big)
    last = local_executor.submit(lambda big: type(big).__name__, first)
    assert last.result(timeout=60) == "Big"
    ref = weakref.ref(first.result())
    del first
    gc.collect()
    # (a burst's run leaves its nodes' values on them, as every run does)
    assert (ref() is None) == takes_calls_as_they_come(local_executor)


def test_a_node_among_the_arguments_runs_and_a_cycle_is_refused_at_once(local_executor):
    a = dp.Op(inc, 1)
    b = dp.Op(inc, a)
    assert local_executor.submit(inc, b).result(timeout=60) == 4
    a.args = (b,)  # a cycle: a <- b <- a
    with pytest.raises(dp.ExecutorError, match="cycle"):
        local_executor.submit(inc, b)


def test_a_call_may_take_a_call_its_run_has_forgotten(local_executor):
    import threading

    release = threading.Event()
    try:
        if not local_executor.capabilities.synchronous:  # (a serial run would wait for it)
            local_executor.submit(blocker_for(local_executor), release)  # keeps the run going
        first = local_executor.submit(inc, 1)
        assert first.result(timeout=60) == 2
        failed = local_executor.submit(refuse, 3)
        with pytest.raises(KeyError):
            failed.result(timeout=60)
        assert local_executor.submit(inc, first).result(timeout=60) == 3
        with pytest.raises(KeyError):
            local_executor.submit(inc, failed).result(timeout=60)
        assert local_executor.submit(sum, [first, first]).result(timeout=60) == 4
        assert local_executor.submit(inc, dp.Op(inc, 1)).result(timeout=60) == 3  # a node: it runs
    finally:
        release.set()


def test_calls_ready_together_start_in_the_order_submitted():
    import threading

    started = []
    release = threading.Event()
    with dp.ThreadExecutor(1) as ex:
        first = ex.submit(wait_for, release)
        later = [ex.submit(started.append, i) for i in range(50)]
        time.sleep(0.05)  # (more calls join while the first one runs)
        later += [ex.submit(started.append, i) for i in range(50, 100)]
        release.set()
        cf.wait([first, *later], timeout=60)
    assert started == list(range(100))


def test_a_retry_predicate_that_raises_fails_only_its_call():
    import threading

    def broken_predicate(exc):
        raise RuntimeError("broken predicate")

    go = threading.Event()
    with dp.ThreadExecutor(2, retry_on=broken_predicate) as ex:
        try:
            waiting = ex.submit(go.wait, 60)  # in flight in the same open run
            failed = ex.submit(refuse, 1)
            with pytest.raises(dp.DispatcherError, match="raised for node") as info:
                failed.result(timeout=60)
            assert not waiting.done()  # its run goes on
            assert isinstance(info.value.__cause__, RuntimeError)
            assert isinstance(info.value.__context__, KeyError)  # the call's own error
        finally:
            go.set()
        assert waiting.result(timeout=60) is True
        assert ex.submit(inc, 1).result(timeout=60) == 2
