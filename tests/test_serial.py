"""SerialExecutor: a run stops at the first failure; timeouts off the main thread."""

from __future__ import annotations

import threading
import time

import pytest

import dispatcher as dp


def boom(*args):
    raise ValueError("boom")


def test_throw_error_stops_starting_nodes_serial():
    ran = []
    a = dp.Op(boom)
    others = [dp.Op(ran.append, i) for i in range(5)]
    with pytest.raises(dp.DependencyError):
        dp.run(dp.SerialExecutor(), [a, *others])
    assert ran == []


def test_serial_timeout_off_the_main_thread():
    box = []

    def target():
        try:
            dp.execute(dp.op(time.sleep, timeout=0.1)(1))
        except dp.DependencyError as err:
            box.append(err)

    t = threading.Thread(target=target)
    t.start()
    t.join(5)
    assert isinstance(box[0].error, TimeoutError)


def test_a_callback_that_raises_in_a_timed_nodes_report_ends_the_run_naming_it():
    class NoFinish(dp.Callback):
        def on_finish(self, node, value):
            raise RuntimeError("no finish")

    with pytest.raises(dp.DispatcherError, match=r"NoFinish\.on_finish.*no finish"):
        dp.run(dp.SerialExecutor(), [dp.op(abs, timeout=5)(-1)], callbacks=[NoFinish()])
