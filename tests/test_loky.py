"""LokyExecutor, the docs' worked example of a new executor: what it does beyond
the shared suites (a worker that dies, a call that cannot travel, close)."""

from __future__ import annotations

import os
import threading

import pytest

import dispatcher as dp
from dispatcher.executors.loky import LokyExecutor

from .conftest import DiesOnce, wait_gone


def die():
    os._exit(3)


def test_a_dead_worker_fails_its_node_as_lost_and_a_new_pool_goes_on():
    with LokyExecutor(2, retries=0) as ex:
        with pytest.raises(dp.DependencyError) as info:
            dp.execute(dp.op(die, label="dies")(), ex)
        assert isinstance(info.value.error, dp.WorkerLostError)
        assert "node 'dies'" in str(info.value)
        assert dp.execute(dp.Op(abs, -4), ex) == 4


def test_a_node_whose_worker_died_is_retried():
    with LokyExecutor(2) as ex:
        assert dp.execute(dp.Op(DiesOnce()), ex) == "second"


def test_a_call_that_cannot_travel_is_named():
    with LokyExecutor(1) as ex, pytest.raises(dp.DependencyError, match=r"argument 0.*_thread\.lock"):
        dp.execute(dp.Op(len, [threading.Lock()]), ex)


def test_close_stops_the_workers():
    ex = LokyExecutor(2)
    pid = dp.execute(dp.Op(os.getpid), ex)
    assert pid != os.getpid()
    ex.close()
    assert wait_gone([pid]) == []
    with pytest.raises(dp.ExecutorError, match="closed"):
        dp.execute(dp.Op(abs, 1), ex)
