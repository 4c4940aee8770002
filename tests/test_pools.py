"""PoolExecutor and ThreadExecutor: a pool that refuses calls."""

from __future__ import annotations

import threading

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


@pytest.mark.timeout(60)
def test_closing_a_thread_executor_does_not_wait_for_a_node_its_run_gave_up_on():
    release = threading.Event()
    started = threading.Event()

    def stuck():
        started.set()
        release.wait(300)  # a call that cannot be stopped, far longer than the test may take
        return "late"

    ex = dp.ThreadExecutor(2)
    try:
        (result,) = dp.run(ex, [dp.op(stuck, timeout=0.5)()], throw_error=False)
        assert started.is_set() and isinstance(result.error.error, TimeoutError)
        ex.close()  # returns although the node's thread still runs
        assert not release.is_set()
        assert any(t.name.startswith("dispatcher-") and t.daemon for t in threading.enumerate())
        # a call still wanted is waited for
        with dp.ThreadExecutor(1) as ex2:
            future = ex2.submit(lambda: started.wait(60) and not release.wait(0.5))
        assert future.done() and future.result() is True
    finally:
        release.set()
