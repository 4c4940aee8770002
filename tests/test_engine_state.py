"""The engine's state machine driven directly, with a fake clock: no executor, no
thread and no sleep. Each test plays the driver: it takes tasks from
``next_task``, reports them with ``done``, moves the clock and calls ``expire``."""

from __future__ import annotations

import pytest

import dispatcher as dp
from dispatcher.engine import Backoff, NodeState, RunOptions, RunState, pipelining

S = NodeState


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def inc(x):
    return x + 1


def make(outputs, clock=None, **options) -> RunState:
    """A run state with a fake clock, no jitter, and nothing inlined."""
    options.setdefault("inline_light", False)
    options.setdefault("backoff", Backoff(first_delay=1.0, factor=2.0, jitter=0.0))
    state = RunState(outputs, clock=clock or Clock(), rand=lambda: 0.5, options=RunOptions(**options))
    state.start()
    return state


def states(state, *nodes) -> dict:
    return {n: state.state_of(n) for n in nodes}


def ok(state, task, value=None):
    state.done(task, True, task.run() if value is None else value)


def fail(state, task, exc):
    state.done(task, False, (exc, "traceback"))


def test_states_of_a_chain():
    a = dp.Op(inc, 1)
    b = dp.Op(inc, a)
    state = make([b])
    assert states(state, a, b) == {a: S.READY, b: S.WAITING}
    ta = state.next_task()
    assert state.state_of(a) is S.RUNNING and state.next_task() is None
    ok(state, ta)
    assert states(state, a, b) == {a: S.DONE, b: S.READY}
    tb = state.next_task()
    ok(state, tb)
    assert state.finished and [r.value for r in state.results()] == [3]


def test_timeout_fails_at_the_deadline_and_ignores_the_late_answer():
    clock = Clock()
    a = dp.op(inc, timeout=5)(1)
    state = make([a], clock, retries=0)
    task = state.next_task()
    assert state.next_wakeup() == 5.0
    clock.now = 4.9
    assert state.expire() == []
    clock.now = 5.0
    assert state.expire() == [task]  # the driver cancels its work
    assert state.state_of(a) is S.FAILED
    assert isinstance(state.errors[a].error, TimeoutError)
    assert "ran longer than its timeout of 5 s" in str(state.errors[a])
    ok(state, task, 2)  # the late answer changes nothing
    assert state.state_of(a) is S.FAILED and a not in state.values


def test_a_finished_task_leaves_no_wakeup():
    clock = Clock()
    a = dp.op(inc, timeout=5)(1)
    state = make([a], clock)
    ok(state, state.next_task())
    assert state.next_wakeup() is None and state.finished


def test_retry_backs_off_then_runs_again_with_the_next_attempt():
    clock = Clock()
    a = dp.op(inc, retries=2, retry_on=ValueError)(1)
    state = make([a], clock)
    first = state.next_task()
    fail(state, first, ValueError("flaky"))
    assert state.state_of(a) is S.BACKING_OFF and state.next_task() is None
    assert state.next_wakeup() == 1.0  # first_delay, no jitter
    clock.now = 0.99
    state.expire()
    assert state.next_task() is None
    clock.now = 1.0
    state.expire()
    assert state.state_of(a) is S.READY
    second = state.next_task()
    assert second.attempt == 2
    fail(state, first, ValueError("late"))  # the first attempt's late report: ignored
    assert state.state_of(a) is S.RUNNING
    fail(state, second, ValueError("again"))
    assert state.next_wakeup() == 1.0 + 2.0  # the delay doubles
    clock.now = 3.0
    state.expire()
    third = state.next_task()
    fail(state, third, ValueError("last"))
    assert state.state_of(a) is S.FAILED and state.errors[a].attempts == 3


def test_timeout_retried_when_retry_on_accepts_it():
    clock = Clock()
    a = dp.op(inc, timeout=2, retries=1, retry_on=TimeoutError)(1)
    state = make([a], clock)
    first = state.next_task()
    clock.now = 2.0
    assert state.expire() == [first]
    assert state.state_of(a) is S.BACKING_OFF
    clock.now = 3.0
    state.expire()
    second = state.next_task()
    assert second.attempt == 2 and state.next_wakeup() == 5.0
    ok(state, second)
    assert state.state_of(a) is S.DONE


def test_deadline_counts_from_when_the_executor_says_the_task_started():
    clock = Clock()
    a = dp.op(inc, timeout=2, retries=0)(1)
    state = make([a], clock, starts_reported=True, on_timeout="; its worker was killed")
    task = state.next_task()
    clock.now = 2.0
    assert state.expire() == []  # still queued where it runs: it cannot be late
    assert state.next_wakeup() == 4.0
    task.started = 3.0  # the executor's worker took it
    clock.now = 4.0
    assert state.expire() == []
    assert state.next_wakeup() == 5.0
    clock.now = 5.0
    assert state.expire() == [task] and task.expired
    message = "node 'inc' ran longer than its timeout of 2 s; its worker was killed"
    assert str(state.errors[a].error) == message


def test_failure_poisons_downstream_once_other_dependencies_finish():
    a = dp.Op(inc, 1)
    b = dp.Op(inc, 2)
    c = dp.Op(lambda x, y: x + y, a, b)
    state = make([c], retries=0, throw_error=False)
    tb, ta = state.next_task(), state.next_task()
    assert {tb.node, ta.node} == {a, b}
    fail(state, ta, ValueError("no"))
    assert state.state_of(c) is S.WAITING  # b still runs
    ok(state, tb)
    assert state.next_task() is None
    assert state.state_of(c) is S.FAILED and state.errors[c].node is a


def test_throw_error_ends_the_run_and_abort_returns_running_tasks():
    a, b = dp.Op(inc, 1), dp.Op(inc, 2)
    state = make([a, b], retries=0)
    t1, t2 = state.next_task(), state.next_task()
    fail(state, t1, ValueError("no"))
    assert state.finished and state.next_task() is None
    assert state.abort() == [t2]


def test_release_drops_values_no_one_needs():
    a = dp.Op(inc, 1)
    b = dp.Op(inc, a)
    c = dp.Op(inc, b)
    state = make([c], release=True)
    ok(state, state.next_task())
    ok(state, state.next_task())
    assert state.state_of(a) is S.RELEASED and a not in state.values
    ok(state, state.next_task())
    assert state.state_of(b) is S.RELEASED and state.state_of(c) is S.DONE


def test_bad_timeout_set_by_hand_fails_the_node_naming_it():
    a = dp.Op(inc, 1)
    a.timeout = -1
    state = make([a], throw_error=False)
    assert state.next_task() is None
    assert state.state_of(a) is S.FAILED and "timeout of node" in str(state.errors[a])


# -- pipelined --------------------------------------------------------------------


def pipelined(outputs, clock=None, **options):
    return make(outputs, clock, pipelined=True, **options)


def send(state):
    """next_task, then tell the state it was sent with a handle naming the node."""
    task = state.next_task()
    if task is not None:
        task.handle = f"handle of {task.node.label} #{task.attempt}"
        state.sent(task)
    return task


def test_pipelined_sends_before_dependencies_finish_and_parks_early_reports():
    a = dp.Op(inc, 1)
    b = dp.Op(inc, a)
    state = pipelined([b])
    ta = send(state)
    tb = send(state)  # sent on a's handle, a still running
    assert list(tb.args) == ["handle of inc #1"]
    assert states(state, a, b) == {a: S.RUNNING, b: S.SENT}
    state.done(tb, True, "handle of b")  # reported before a
    assert state.state_of(b) is S.PARKED
    state.done(ta, True, "handle of a")
    assert send(state) is None
    assert states(state, a, b) == {a: S.DONE, b: S.DONE}
    assert pipelining.remote_outputs(state) == ([b], ["handle of b"])


def test_pipelined_early_failure_is_not_blamed_on_the_node_whose_dependency_failed():
    a = dp.Op(inc, 1)
    b = dp.Op(inc, a)
    state = pipelined([b], retries=0, throw_error=False)
    ta, tb = send(state), send(state)
    fail(state, tb, ValueError("input was bad"))  # because a failed, on the backend
    assert state.state_of(b) is S.PARKED
    fail(state, ta, KeyError("a's own"))
    assert send(state) is None
    assert state.state_of(b) is S.FAILED and state.errors[b].node is a


def test_pipelined_retry_withdraws_and_resends_what_was_sent_on_its_handle():
    clock = Clock()
    a = dp.op(inc, retries=1, retry_on=ValueError)(1)
    b = dp.Op(inc, a)
    c = dp.Op(inc, b)
    state = pipelined([c], clock)
    ta, tb, tc = send(state), send(state), send(state)
    assert state.state_of(c) is S.SENT
    fail(state, ta, ValueError("flaky"))
    assert states(state, a, b, c) == {a: S.BACKING_OFF, b: S.WAITING, c: S.WAITING}
    assert state.take_revoked() == [tb, tc]  # the driver cancels them
    state.done(tb, True, "stale")  # a revoked task's report: ignored
    assert send(state) is None
    clock.now = 1.0
    state.expire()
    ta2, tb2, tc2 = send(state), send(state), send(state)
    assert (ta2.attempt, list(tb2.args), list(tc2.args)) == (2, ["handle of inc #2"], ["handle of inc #1"])
    for task in (tc2, tb2, ta2):
        state.done(task, True, f"value of {task.node.label}")
    send(state)
    assert state.finished and state.state_of(c) is S.DONE


def test_pipelined_timeout_counts_from_when_dependencies_finish():
    clock = Clock()
    a = dp.Op(inc, 1)
    b = dp.op(inc, timeout=1, retries=0)(a)
    state = pipelined([b], clock)
    ta, tb = send(state), send(state)
    assert state.next_wakeup() is None  # b cannot start before a finishes
    clock.now = 10.0
    state.done(ta, True, "handle")
    send(state)
    assert state.state_of(b) is S.RUNNING and state.next_wakeup() == 11.0
    clock.now = 11.0
    assert state.expire() == [tb]
    assert isinstance(state.errors[b].error, TimeoutError)


def test_options_as_keywords_or_record_not_both():
    with pytest.raises(TypeError, match="either as a RunOptions or as keywords"):
        RunState([dp.Op(inc, 1)], options=RunOptions(), retries=1)


def test_release_in_state_counts_every_dependent():
    a = dp.Op(inc, 1)
    b = dp.Op(inc, a)
    c = dp.Op(inc, a)
    d = dp.Op(sum, [b, c])
    state = RunState([d], release=True)
    assert state.needed == {a: 2, b: 1, c: 1}


def test_a_hand_set_timeout_of_another_number_type_is_used():
    from fractions import Fraction

    a = dp.Op(inc, 1)
    a.timeout = Fraction(1, 2)
    state = make([a])
    task = state.next_task()
    assert task.timeout == 0.5 and state.next_wakeup() == 0.5


class Intake:
    """An open run's intake, fed by the test: batches of nodes, and known outcomes."""

    def __init__(self, *batches, outcomes=None):
        self.batches = list(batches)
        self.outcomes = outcomes or {}
        self.ended = False

    def take(self, run, final):
        nodes = self.batches.pop(0) if self.batches else []
        self.ended = final and not nodes
        return nodes, self.outcomes.get


def test_an_open_run_takes_nodes_as_it_runs_and_forgets_each_once_nobody_needs_it():
    from dispatcher.engine import openrun

    a = dp.Op(inc, 1)
    b = dp.Op(inc, a)
    c = dp.Op(inc, 10)
    given = dp.Op(inc, 0)  # settled elsewhere: its outcome is known
    d = dp.Op(sum, [b, given])
    intake = Intake([a, b], [c, d], outcomes={given: (True, 100)})
    state = RunState([], intake=intake, options=RunOptions(inline_light=False))
    state.start()
    openrun.take_more(state, final=True)
    task_a = state.next_task()
    assert task_a.node is a and state.next_task() is None  # b waits for a
    ok(state, task_a, 2)
    assert a in state.values  # b still needs it
    openrun.take_more(state, final=False)  # c and d join while b is ready
    order = [state.next_task() for _ in range(2)]
    assert [t.node for t in order] == [b, c]  # b became ready first; c queued behind
    ok(state, order[0], 3)
    assert a not in state.values and a not in state.waiting  # b is done: a is forgotten
    ok(state, order[1], 11)
    assert c not in state.waiting  # nobody takes c
    task_d = state.next_task()
    assert list(task_d.args) == [[3, 100]]
    ok(state, task_d, 103)
    assert state.finished and not openrun.take_more(state, final=True) and intake.ended
    assert not state.values and not state.waiting and not state.needed and not state.state


def test_an_open_run_fails_a_node_whose_given_dependency_failed():
    from dispatcher.engine import openrun

    failed = dp.Op(inc, 0)
    error = dp.DependencyError(KeyError("k"), "", failed)
    taker = dp.Op(inc, failed)
    seen = []

    class Seen(dp.Callback):
        def on_fail(self, node, err):
            seen.append((node, err))

    intake = Intake([taker], outcomes={failed: (False, error)})
    state = RunState([], intake=intake, options=RunOptions(callbacks=(Seen(),), throw_error=False))
    state.start()
    openrun.take_more(state, final=True)
    assert state.next_task() is None and state.finished
    assert seen == [(taker, error)]
    assert not state.errors and not state.waiting  # forgotten once told


def test_the_clock_drops_the_deadlines_of_ended_tasks_when_they_outnumber_the_others():
    from dispatcher.engine.clock import Timers
    from dispatcher.engine.records import Task

    clock = Clock()
    timers = Timers(clock, RunOptions())
    live = Task(dp.Op(inc, 0), inc, (0,), None, 1, 5.0)
    timers.watch(live)
    for i in range(500):  # tasks that ended long before their deadline of an hour
        timers.watch(Task(dp.Op(inc, i), inc, (i,), None, 1, 3600.0))
        timers.next_wakeup({live.node: live})
    assert len(timers.heap) < 200  # not 501: the ended tasks (and their nodes) are let go
    assert timers.next_wakeup({live.node: live}) == 5.0
