"""The one driver loop, stepped by hand with a fake executor and a fake clock: what
it asks to wait for, what it cancels, how it settles an interrupted run."""

from __future__ import annotations

import pytest

import dispatcher as dp
from dispatcher.engine import RunOptions, RunState
from dispatcher.engine.driver import SETTLE_SECONDS, Gather, _steps
from dispatcher.executors.base import Capabilities


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


class Recorder:
    """An executor that only records what the driver asks of it."""

    capabilities = Capabilities()

    def __init__(self):
        self.submitted, self.cancelled, self.flushes, self.interrupted = [], [], 0, False

    def start_task(self, task, report):
        task.handle = f"handle {len(self.submitted)}"
        self.submitted.append(task)

    def flush_tasks(self):
        self.flushes += 1

    def cancel_task(self, task):
        self.cancelled.append(task)

    def interrupt_run(self):
        self.interrupted = True


class Ends(dp.Callback):
    ended = False

    def on_end(self):
        self.ended = True


def inc(x):
    return x + 1


def test_the_loop_waits_until_the_deadline_then_cancels_the_late_task():
    clock, ex = Clock(), Recorder()
    a = dp.op(inc, timeout=3, retries=0)(1)
    state = RunState([a], clock=clock, options=RunOptions(throw_error=False))
    steps = _steps(state, ex, state.done)
    assert next(steps) == 3.0  # wait for a report, at most until the deadline
    assert ex.submitted and ex.flushes == 1
    clock.now = 3.0
    with pytest.raises(StopIteration) as stop:
        steps.send(None)
    assert ex.cancelled == ex.submitted
    [result] = stop.value.value
    assert isinstance(result.error.error, TimeoutError)


def test_an_interrupted_run_cancels_and_awaits_its_tasks_then_raises():
    clock, ex, ends = Clock(), Recorder(), Ends()
    nodes = [dp.Op(inc, i) for i in range(3)]
    state = RunState(nodes, clock=clock, options=RunOptions(callbacks=(ends,)))
    steps = _steps(state, ex, state.done)
    assert next(steps) is None
    # still awaiting the cancelled tasks, for a bounded time
    assert steps.throw(KeyboardInterrupt()) == SETTLE_SECONDS
    assert ex.interrupted and ex.cancelled == ex.submitted and len(ex.submitted) == 3
    for task in ex.submitted[:2]:
        state.done(task, False, (RuntimeError("cancelled"), ""))
    clock.now = 1.0
    assert steps.send(None) == SETTLE_SECONDS and not ends.ended
    state.done(ex.submitted[2], False, (RuntimeError("cancelled"), ""))
    with pytest.raises(KeyboardInterrupt):
        steps.send(None)
    assert ends.ended and not state.running


def test_a_second_interruption_stops_the_wait_with_a_warning(caplog):
    ex = Recorder()
    state = RunState([dp.Op(inc, 1)], options=RunOptions())
    steps = _steps(state, ex, state.done)
    next(steps)
    steps.throw(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        steps.throw(KeyboardInterrupt())
    assert "stopped waiting for 1 running node(s)" in caplog.text


def test_tasks_that_never_report_are_abandoned_after_a_bounded_wait(caplog):
    """A report lost to the interruption itself (or a thread that cannot be
    stopped) must not hang the run: it ends with the exception that interrupted it."""
    clock, ex, ends = Clock(), Recorder(), Ends()
    state = RunState([dp.Op(inc, 1), dp.Op(inc, 2)], clock=clock, options=RunOptions(callbacks=(ends,)))
    steps = _steps(state, ex, state.done)
    next(steps)
    assert steps.throw(KeyboardInterrupt()) == SETTLE_SECONDS
    clock.now = SETTLE_SECONDS
    with pytest.raises(KeyboardInterrupt):
        steps.send(None)
    assert ends.ended
    assert "stopped waiting for 2 running node(s) after 10 s: inc" in caplog.text


def test_a_pipelined_run_asks_for_its_outputs_once_at_the_end():
    ex = Recorder()
    a = dp.Op(inc, 1)
    b = dp.Op(inc, a)
    state = RunState([b], options=RunOptions(pipelined=True, inline_light=False))
    steps = _steps(state, ex, state.done)
    assert next(steps) is None
    ta, tb = ex.submitted  # b went with a, on a's handle
    assert list(tb.args) == ["handle 0"]
    state.done(ta, True, "handle 0")
    state.done(tb, True, "handle 1")
    request = steps.send(None)
    assert request == Gather(["handle 1"])
    with pytest.raises(StopIteration) as stop:
        steps.send([(True, 3)])
    assert [r.value for r in stop.value.value] == [3]


def test_a_refused_task_fails_its_node_at_once():
    class Refuses(Recorder):
        def start_task(self, task, report):
            raise OSError("the pool is broken")

    state = RunState([dp.Op(inc, 1)], options=RunOptions(retries=0))
    steps = _steps(state, Refuses(), state.done)
    with pytest.raises(dp.DependencyError, match="the pool is broken"):
        next(steps)


def test_a_callback_failing_on_submit_ends_the_run_with_nothing_left_running():
    class NoSubmit(dp.Callback):
        def on_submit(self, node):
            raise RuntimeError("refused")

    ex = Recorder()
    state = RunState([dp.Op(inc, 1), dp.Op(inc, 2)], options=RunOptions(callbacks=(NoSubmit(),)))
    steps = _steps(state, ex, state.done)
    with pytest.raises(dp.DispatcherError, match=r"NoSubmit\.on_submit.*refused"):
        next(steps)  # raised at once: no task was handed over, none is awaited
    assert ex.submitted == [] and not state.running
