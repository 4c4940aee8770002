"""The executor base: the options every executor takes are checked."""

from __future__ import annotations

import pytest

import dispatcher as dp


def test_executor_options_are_validated():
    with pytest.raises(ValueError):
        dp.ThreadExecutor(timeout=-1)
    with pytest.raises(ValueError):
        dp.SerialExecutor(retries=-1)
    with pytest.raises(ValueError):
        dp.ThreadExecutor(0)
    with pytest.raises(ValueError):
        dp.AsyncExecutor(sync="processes")


def test_an_executor_says_whether_its_tasks_run_in_this_process(executor_factory):
    """``capabilities.in_process``, which tools that start runs from inside a task
    need, is what the registry says of the executor's nodes."""
    from dispatcher.executors.registry import EXECUTORS

    ex = executor_factory()
    assert ex.capabilities.in_process is EXECUTORS[executor_factory.name].local


def test_a_pool_executor_runs_in_this_process_only_over_threads():
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(1) as threads, cf.ProcessPoolExecutor(1) as processes:
        assert dp.PoolExecutor(threads).capabilities.in_process
        assert not dp.PoolExecutor(threads, cloudpickle=True).capabilities.in_process
        assert not dp.PoolExecutor(processes).capabilities.in_process


def inc(x):
    return x + 1


class InFlight(dp.Callback):
    """The most tasks handed to the executor and not yet finished at once."""

    def __init__(self):
        self.now = self.most = 0

    def on_submit(self, node) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def on_finish(self, node, value) -> None:
        self.now -= 1


def test_a_run_hands_an_executor_that_queues_tasks_at_most_its_window(executor):
    """A wide graph's ready nodes wait in the engine once the executor holds its
    window of tasks (``Executor.task_window``): a million ready nodes do not make a
    million tasks, jobs or futures at once."""
    from dispatcher.executors.base import TASK_WINDOW

    window = executor.task_window()
    assert (window is not None) == executor.capabilities.queues_tasks
    count = TASK_WINDOW * 2 + 100
    in_flight = InFlight()
    (result,) = dp.run(executor, [dp.Op(sum, [dp.Op(inc, i) for i in range(count)])], callbacks=[in_flight])
    assert result.value == sum(range(1, count + 1)) and in_flight.now == 0
    if window is not None:
        assert window >= max(TASK_WINDOW, 4 * executor.slots())
        assert in_flight.most == window  # the window is filled, never passed


def test_a_node_waiting_for_cores_goes_before_the_ready_nodes_the_window_holds_back():
    """Chains keep the ready nodes coming faster than the window lets them go; a
    node that waits for cores starts as soon as they are free all the same."""
    from dispatcher.executors.base import TASK_WINDOW

    chains = []
    for c in range(TASK_WINDOW + 100):
        node = dp.Op(inc, c)
        for _ in range(20):
            node = dp.Op(inc, node)
        chains.append(node)
    wants_cores = dp.op(inc, cores=1)(0)
    order: list = []

    class Order(dp.Callback):
        def on_finish(self, node, value) -> None:
            order.append(node)

    with dp.ThreadExecutor(2) as ex:
        dp.run(ex, [*chains, wants_cores], callbacks=[Order()])
    assert len(order) == 21 * len(chains) + 1
    assert order.index(wants_cores) < len(order) // 4  # (held back to the end, it came 21,585th of 23,101)


def test_a_task_window_below_one_is_refused_at_once():
    class Shut(dp.ThreadExecutor):
        def task_window(self):
            return 0  # (would start nothing, and wait for ever)

    with Shut(2) as ex, pytest.raises(ValueError, match="task_window"):
        dp.run(ex, [dp.Op(inc, 1)])


def test_a_full_window_keeps_the_run_depth_first():
    """With the window full, the newest ready nodes go first (the engine's depth-first
    order): chains started are finished before others start, so a wide graph of
    chains keeps no more of them open (and their values alive) than the window holds."""
    from dispatcher.executors.base import TASK_WINDOW

    firsts, lasts = {}, {}
    for c in range(TASK_WINDOW * 3):
        node = firsts_node = dp.Op(inc, c)
        for _ in range(4):
            node = dp.Op(inc, node)
        firsts[firsts_node], lasts[node] = c, c
    open_now, most = set(), 0

    class Open(dp.Callback):
        def on_finish(self, node, value) -> None:
            nonlocal most
            if node in firsts:
                open_now.add(firsts[node])
                most = max(most, len(open_now))
            if node in lasts:
                open_now.discard(lasts[node])

    with dp.ThreadExecutor(2) as ex:
        dp.run(ex, list(lasts), release=True, callbacks=[Open()])
    assert most <= ex.task_window() + 2  # (breadth first: all 3,072 open at once)


def test_a_first_node_that_asks_for_too_many_cores_fails_after_the_run_starts():
    """Nodes that ask for cores wait for them from the moment they are ready, also
    the first ones; the callbacks still hear of the run's start first."""
    events: list = []

    class Events(dp.Callback):
        def on_start(self, total) -> None:
            events.append("start")

        def on_fail(self, node, error) -> None:
            events.append("fail")

    with dp.ThreadExecutor(2, cores=1) as ex:
        (result,) = dp.run(ex, [dp.op(inc, cores=2)(1)], throw_error=False, callbacks=[Events()])
    assert "asks for 2 cores" in str(result.error) and events == ["start", "fail"]
