"""The garbage collector during a run (``dispatcher/engine/collector.py``): the
objects that exist when a run starts are frozen until the runs end, unless the
program froze objects itself, disabled the collector, or turned this off."""

from __future__ import annotations

import gc
import time

import pytest

import dispatcher as dp
from dispatcher.engine import collector


def frozen_count(_=None) -> int:
    return gc.get_freeze_count()


def nested_run(_=None) -> tuple:
    inner = dp.run(dp.SerialExecutor(), dp.Op(frozen_count))[0].value
    return inner, gc.get_freeze_count()


@pytest.fixture(autouse=True)
def no_run_going():
    deadline = time.monotonic() + 30
    while collector._runs and time.monotonic() < deadline:  # (another test's calls ending)
        time.sleep(0.01)
    assert collector._runs == 0 and gc.get_freeze_count() == 0
    yield
    gc.unfreeze()


def test_a_run_freezes_the_objects_that_exist_until_it_ends(local_executor):
    during = dp.run(local_executor, dp.Op(frozen_count))[0].value
    assert during > 1000  # (the modules, the graph, the executor...)
    assert gc.get_freeze_count() == 0
    assert dp.execute(dp.Op(frozen_count), local_executor) > 1000  # and again


def test_a_nested_run_leaves_them_frozen_for_the_run_around_it():
    inner, after_inner = dp.run(dp.ThreadExecutor(2), dp.Op(nested_run))[0].value
    assert inner > 0 and after_inner > 0
    assert gc.get_freeze_count() == 0


def test_objects_the_program_froze_stay_as_it_left_them():
    gc.freeze()
    mine = gc.get_freeze_count()  # (frozen objects still die: the count only falls)
    assert mine - 1000 < dp.execute(dp.Op(frozen_count), dp.SerialExecutor()) <= mine  # no more
    assert mine - 1000 < gc.get_freeze_count() <= mine  # and not unfrozen


def test_nothing_is_frozen_with_the_collector_disabled_or_freezing_turned_off(monkeypatch):
    gc.disable()
    try:
        assert dp.execute(dp.Op(frozen_count), dp.SerialExecutor()) == 0
    finally:
        gc.enable()
    monkeypatch.setattr(collector, "FREEZE", False)
    assert dp.execute(dp.Op(frozen_count), dp.SerialExecutor()) == 0


def test_garbage_made_during_a_run_is_collected():
    import weakref

    class Cycle:
        pass

    def make_cycle():
        c = Cycle()
        c.me = c
        ref = weakref.ref(c)
        del c
        gc.collect()
        return ref() is None

    assert dp.execute(dp.Op(make_cycle), dp.SerialExecutor())
