"""The shared engine suites: the engine's semantics on every executor of the
registry (errors, retries, timeouts, inputs, callbacks, progress, logging, release
of intermediates, run_async). A new executor passes these by adding its line to
``dispatcher/executors/registry.py``. The state machine alone is tested in
``test_engine_state.py``, each executor's own behaviour in its own file."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import weakref

import pytest

import dispatcher as dp
from dispatcher.engine import Backoff

from .conftest import FileChannel, make_executor, start_workers

FAST = Backoff(first_delay=0.001, factor=2.0, max_delay=0.01, jitter=0.1)


def inc(x):
    return x + 1


def boom(*args):
    raise ValueError("boom")


# -- errors -------------------------------------------------------------------------


def test_failure_deep_in_graph_names_the_node_and_spares_the_rest(executor):
    chain = [dp.Op(inc, 0)]
    for i in range(1, 300):
        chain.append(dp.Op(boom if i == 150 else inc, chain[-1]))
    chain[150].label = "deep-failure"
    side = dp.Op(inc, chain[100])
    results = dp.run(executor, [chain[-1], side, chain[149]], throw_error=False)
    assert results[0].is_error()
    err = results[0].error
    assert err.node is chain[150] and isinstance(err.error, ValueError)
    assert "deep-failure" in str(err) and "boom" in str(err)
    assert "in boom" in err.traceback
    assert err.__cause__ is err.error
    assert results[1].value == 102 and results[2].value == 150
    # every node downstream of the failure carries the same error
    assert all(n.state() == "failed" for n in chain[150:])
    with pytest.raises(dp.DependencyError) as info:
        chain[200].fetch()
    assert info.value is err
    with pytest.raises(dp.DependencyError, match="deep-failure"):
        dp.run(executor, [chain[-1]])


@pytest.mark.parametrize("name", ["async", "threads", "pool"])
def test_throw_error_awaits_running_nodes(name):
    ex, pool = make_executor(name)
    finished = []

    def slow():
        time.sleep(0.3)
        finished.append(True)

    async def slow_async():
        await asyncio.sleep(0.3)
        finished.append(True)

    def fail_soon():
        time.sleep(0.05)
        raise ValueError("first")

    slow_fn = slow_async if name == "async" else slow
    with pytest.raises(dp.DependencyError, match="first"):
        dp.run(ex, [dp.Op(slow_fn), dp.Op(fail_soon)])
    ex.close()
    if pool is not None:
        pool.shutdown()
    if name == "async":
        assert finished == []  # cancelled
    else:
        assert finished == [True]  # a thread cannot be stopped: awaited
    time.sleep(0.4)
    assert finished in ([], [True])


def test_throw_error_false_runs_everything_independent(executor):
    bad = dp.Op(boom)
    after = dp.Op(inc, bad)
    fine = dp.Op(inc, 1)
    results = dp.run(executor, [after, fine, bad], throw_error=False)
    assert [r.is_error() for r in results] == [True, False, True]
    assert results[0].error is results[2].error
    assert results[1].unwrap() == 2


def test_failed_input_propagates_and_unrun_input_is_refused(executor):
    bad = dp.Op(boom)
    dp.run(executor, [bad], throw_error=False)
    child = dp.Op(inc, bad)
    (result,) = dp.run(executor, [child], [bad], throw_error=False)
    assert result.error.node is bad
    fresh = dp.Op(inc, 1)
    with pytest.raises(dp.ExecutorError, match="has not run"):
        dp.run(executor, [dp.Op(inc, fresh)], [fresh])


def test_nodes_inside_every_container_are_dependencies(executor):
    # lists, tuples, dicts, sets and frozensets: the contract looks inside each
    a, b = dp.Op(inc, 1), dp.Op(inc, 2)

    def unpack(items, pair, mapping, chosen, frozen):
        return items, pair, mapping, sorted(chosen), sorted(frozen)

    node = dp.Op(unpack, [a, [b]], (a, b), {"k": b}, {a, b}, frozenset([a, b]))
    assert dp.execute(node, executor) == ([2, [3]], (2, 3), {"k": 3}, [2, 3], [2, 3])


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("timeout", "10s", "the timeout of node 'f' must be a positive number of seconds"),
        ("timeout", -1, "the timeout of node 'f' must be a positive number of seconds"),
        ("nout", "x", "the nout of node 'f' must be a non-negative int, got str: 'x'"),
        ("retries", "2", "the retries of node 'f' must be a non-negative int"),
    ],
)
def test_an_option_set_by_hand_on_a_node_fails_that_node_naming_it(executor, option, value, message):
    def f(x):
        return int(x)  # "x" fails, so that a wrong `retries` is looked at

    node = dp.Op(f, "x" if option == "retries" else 1)
    setattr(node, option, value)
    (result,) = dp.run(executor, [node], throw_error=False)
    assert message in str(result.error)
    if option == "retries":
        assert isinstance(result.error.error.__context__, ValueError)  # the node's own error


def test_bad_arguments_are_refused(executor):
    with pytest.raises(TypeError, match="outputs must be nodes"):
        dp.run(executor, [3])
    with pytest.raises(TypeError, match="input_map keys"):
        dp.run(executor, [dp.Op(inc, 1)], input_map={"x": 1})
    with pytest.raises(TypeError, match="executor"):
        dp.run("serial", [dp.Op(inc, 1)])
    with pytest.raises(TypeError, match="Callback"):
        dp.run(executor, [dp.Op(inc, 1)], callbacks=[print])


def test_graph_missing_an_edge_is_refused(executor):
    a = dp.Op(inc, 1)
    b = dp.Op(inc, a)
    g = dp.DispatchGraph()
    g.add(a).add(b)
    with pytest.raises(dp.ExecutorError, match="no edge"):
        dp.run(executor, g)
    g.add_edge(a, b)
    assert [r.value for r in dp.run(executor, g)] == [3]


def test_graph_edges_order_nodes_without_data(executor):
    seen = FileChannel()
    first = dp.Op(seen.append, "first")
    second = dp.Op(seen.append, "second")
    g = dp.DispatchGraph([first, second])
    g.add_edge(first, second)
    dp.run(executor, g)
    assert seen.items() == ["first", "second"]


def test_closed_executor_refuses_to_run(executor):
    node = dp.Op(inc, 1)
    assert dp.run(executor, [node])[0].value == 2
    assert executor.run([node])[0].value == 2  # reusable
    executor.close()
    executor.close()
    with pytest.raises(dp.ExecutorError, match="closed"):
        dp.run(executor, [node])


def test_outputs_given_by_input_map_and_data_nodes(executor):
    a = dp.Op(boom)
    b = dp.Op(inc, a)
    results = dp.run(executor, [a, b, dp.DataNode("x")], input_map={a: 10})
    assert [r.value for r in results] == [10, 11, "x"]


# -- execute -----------------------------------------------------------------------


def test_execute_forms(executor):
    a = dp.Op(inc, 1)
    b = dp.Op(inc, a)
    assert dp.execute(b, executor) == 3
    assert dp.execute([a, b], executor) == [2, 3]
    assert dp.execute(dp.DispatchGraph([a, b])) == [3]
    with pytest.raises(dp.DependencyError):
        dp.execute(dp.Op(boom))
    with pytest.raises(ValueError, match="throw_error"):
        dp.execute(a, throw_error=False)


def test_a_graph_whose_every_node_lies_on_a_cycle_is_refused(executor):
    a = dp.Op(inc, 1)
    b = dp.Op(inc, a)
    graph = dp.DispatchGraph([b])
    graph.add_edge(b, a)  # every node has a dependent: the graph has no leaf
    with pytest.raises(dp.ExecutorError, match="cycle"):
        dp.run(executor, graph)
    with pytest.raises(dp.ExecutorError, match="cycle"):
        dp.execute(graph, executor)
    graph.add(dp.Op(inc, 5))  # a leaf apart from the cycle: the cycle is still refused
    with pytest.raises(dp.ExecutorError, match="cycle"):
        dp.run(executor, graph)


async def _async_double(x):
    await asyncio.sleep(0.01)
    return 2 * x


def test_async_def_nodes_give_the_same_values_everywhere(executor):
    a = dp.Op(_async_double, 3)
    b = dp.Op(inc, a)
    c = dp.op(_async_double, label="twice")(b)
    assert dp.execute([a, c], executor) == [6, 14]


def _three():
    return 1, 2, 3


def test_a_node_returning_other_than_its_declared_nout_fails_naming_it(executor):
    node = dp.op(_three, nout=2)()
    first, _ = node
    (result,) = dp.run(executor, [first], throw_error=False)
    assert str(result.error) == (
        "node '_three' failed: ValueError: node '_three' was declared with nout=2 but its "
        "function returned 3 values"
    )
    assert result.error.node is node
    assert dp.execute(dp.op(_three, nout=3)()[2], executor) == 3


def test_a_traceback_from_any_worker_names_the_file_and_line_of_the_failing_code(executor):
    def make():
        def fails(x):
            raise ValueError(f"bad {x}")  # this very line

        return fails

    (result,) = dp.run(executor, [dp.Op(make(), 1)], throw_error=False)
    tb = result.error.traceback
    assert f'File "{__file__}"' in tb and "<dynamic-code>" not in tb
    assert 'raise ValueError(f"bad {x}")  # this very line' in tb


def _plain(x):
    return x


@pytest.mark.parametrize(
    "given, message",
    [
        (_plain, "'_plain' is a function: make a node of a call to it with dp.Op(_plain, *args)"),
        (3, "got int: 3; if this is what a function returned, that function ran at once"),
        ([dp.Op(abs, 1), 3], "outputs must be nodes, got int at position 1: 3"),
    ],
)
def test_something_else_than_nodes_to_run_is_refused_saying_what_to_do(executor, given, message):
    with pytest.raises(TypeError) as info:
        dp.run(executor, given)
    assert message in str(info.value)
    with pytest.raises(TypeError) as info:
        dp.execute(given, executor)
    assert message in str(info.value)


def test_a_base_exception_fails_its_node_as_any_other_on_every_executor(executor):
    def leave():
        raise SystemExit(7)

    (result,) = dp.run(executor, [dp.Op(leave)], throw_error=False)
    assert isinstance(result.error.error, SystemExit) and str(result.error.error) == "7"
    assert dp.execute(dp.Op(inc, 1), executor) == 2  # nothing was taken down


# -- retries ------------------------------------------------------------------------


class Flaky:
    """Fails its first ``failures`` calls; counts calls in a file, so that it
    works in worker processes too."""

    def __init__(self, failures, exc=ConnectionError):
        self.failures = failures
        self.log = FileChannel()
        self.exc = exc

    @property
    def calls(self) -> int:
        return len(self.log)

    def __call__(self, x):
        self.log.put(1)
        calls = self.calls
        if calls <= self.failures:
            raise self.exc(f"failure {calls}")
        return x * 10


def test_retry_until_success(executor_factory):
    ex = executor_factory(retries=3, retry_on=[lambda e: isinstance(e, ConnectionError)], backoff=FAST)
    flaky = Flaky(2)
    retried = []

    class Watch(dp.Callback):
        def on_retry(self, node, error, attempt, delay):
            retried.append((attempt, str(error), delay > 0))

    assert dp.run(ex, [dp.Op(flaky, 4)], callbacks=[Watch()])[0].value == 40
    assert flaky.calls == 3
    assert retried == [(1, "failure 1", True), (2, "failure 2", True)]


def test_retries_run_out(executor_factory):
    ex = executor_factory(retries=2, retry_on=lambda e: True, backoff=FAST)
    flaky = Flaky(10)
    with pytest.raises(dp.DependencyError, match="failure 3"):
        dp.run(ex, [dp.Op(flaky, 1)])
    assert flaky.calls == 3


def test_no_retry_without_a_predicate_saying_so(executor_factory):
    ex = executor_factory(backoff=FAST)  # default retry_on: none for in-process executors
    flaky = Flaky(1)
    with pytest.raises(dp.DependencyError):
        dp.run(ex, [dp.Op(flaky, 1)])
    assert flaky.calls == 1
    ex2 = executor_factory(retry_on=lambda e: isinstance(e, KeyError), backoff=FAST)
    flaky = Flaky(1)
    with pytest.raises(dp.DependencyError):
        dp.run(ex2, [dp.Op(flaky, 1)])
    assert flaky.calls == 1


def test_node_options_override_executor_retries(executor_factory):
    ex = executor_factory(retries=0, backoff=FAST)
    flaky = Flaky(2)
    node = dp.op(flaky, retries=2, retry_on=lambda e: True)(5)
    assert dp.run(ex, [node])[0].value == 50
    never = Flaky(1)
    node = dp.op(never, retry_on=lambda e: False)(5)
    ex2 = executor_factory(retries=5, retry_on=lambda e: True, backoff=FAST)
    with pytest.raises(dp.DependencyError):
        dp.run(ex2, [node])
    assert never.calls == 1


def test_retry_predicate_that_raises_is_reported(executor_factory):
    ex = executor_factory(retry_on=lambda e: 1 / 0, backoff=FAST)
    with pytest.raises(dp.DispatcherError, match="retry_on predicate"):
        dp.run(ex, [dp.Op(boom)])


# -- timeouts ----------------------------------------------------------------------


CALL = 3.0  # seconds the call of a timed-out node would take


def test_node_timeout_fails_with_timeout_error(executor_factory):
    ex = executor_factory()
    finished = FileChannel()
    name = executor_factory.name

    if name == "async":

        async def slow():
            await asyncio.sleep(CALL)
            finished.append(True)
    else:

        def slow():
            time.sleep(CALL) if name != "serial" else _spin(CALL)
            finished.append(True)

    node = dp.op(slow, timeout=0.2)()
    start_workers(ex)
    start = time.monotonic()
    with pytest.raises(dp.DependencyError) as info:
        dp.run(ex, [node])
    assert time.monotonic() - start < CALL - 0.5  # the run did not wait for the call (a busy machine: slack)
    assert isinstance(info.value.error, TimeoutError)
    assert "timeout of 0.2 s" in str(info.value)
    if name in ("serial", "async", "processes", "mpi"):
        time.sleep(max(0.1, start + CALL + 0.3 - time.monotonic()))
        assert finished.items() == []  # the work was stopped: it did not end when it would have


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_timeout_then_retry_succeeds(executor_factory):
    # 2.5 s: a second attempt on a worker restarted after the first is in time on a
    # busy machine (a loky worker, started afresh with two test sessions beside it,
    # took over 1 s)
    ex = executor_factory(timeout=2.5, retry_on=lambda e: isinstance(e, TimeoutError), backoff=FAST)
    calls = FileChannel()

    def first_slow():
        calls.append(1)
        if len(calls) == 1:
            time.sleep(3.0)
        return "ok"

    assert dp.run(ex, [dp.Op(first_slow)])[0].value == "ok"
    assert len(calls) == 2


# -- callbacks, progress, logging --------------------------------------------------


class Recorder(dp.Callback):
    def __init__(self):
        self.events = []

    def on_start(self, total):
        self.events.append(("start", total))

    def on_submit(self, node):
        self.events.append(("submit", node.label))

    def on_finish(self, node, value):
        if type(value).__name__ == "Future":  # a value kept on the dask cluster
            value = value.result()
        self.events.append(("finish", node.label, value))

    def on_fail(self, node, error):
        self.events.append(("fail", node.label, error.node.label))

    def on_end(self):
        self.events.append(("end",))


def test_callbacks_see_every_node(executor):
    a = dp.op(inc, label="a")(1)
    b = dp.op(inc, label="b")(a)
    bad = dp.op(boom, label="bad")(a)
    after = dp.op(inc, label="after")(bad)
    rec = Recorder()
    dp.run(executor, [b, after], callbacks=[rec], throw_error=False)
    ev = rec.events
    assert ev[0] == ("start", 4) and ev[-1] == ("end",)
    assert ("finish", "b", 3) in ev
    assert ("fail", "bad", "bad") in ev and ("fail", "after", "bad") in ev
    assert ev.index(("finish", "a", 2)) < ev.index(("finish", "b", 3))
    assert (
        ev.index(("finish", "a", 2)) < ev.index(("fail", "bad", "bad")) < ev.index(("fail", "after", "bad"))
    )
    if executor.capabilities.pipelines:
        # nodes are handed over before their dependencies finish (and on_finish
        # gets the dask future holding the value)
        assert ev.index(("submit", "a")) < ev.index(("submit", "b")) < ev.index(("finish", "b", 3))
    else:
        assert ev.index(("submit", "a")) < ev.index(("finish", "a", 2)) < ev.index(("submit", "b"))
        assert ("submit", "after") not in ev


def test_exception_in_callback_ends_the_run_clearly(executor):
    class Broken(dp.Callback):
        def on_finish(self, node, value):
            raise RuntimeError("callback bug")

    with pytest.raises(dp.DispatcherError, match=r"Broken.on_finish for node 'inc'.*callback bug"):
        dp.run(executor, [dp.Op(inc, dp.Op(inc, 1))], callbacks=[Broken()])
    # the executor is still usable
    assert dp.run(executor, [dp.Op(inc, 1)])[0].value == 2


def test_a_callback_method_that_is_no_bound_method_is_named_when_it_raises():
    class Static(dp.Callback):
        @staticmethod
        def on_attempt(node, attempt):
            raise RuntimeError("static bug")

    plain = dp.Callback()
    plain.on_finish = lambda node, value: 1 / 0  # a function set on the object
    with pytest.raises(dp.DispatcherError, match=r"Static.on_attempt for node 'inc'.*static bug"):
        dp.run(dp.SerialExecutor(), [dp.Op(inc, 1)], callbacks=[Static()])
    with pytest.raises(dp.DispatcherError, match=r"Callback.on_finish for node 'inc'.*ZeroDivisionError"):
        dp.run(dp.SerialExecutor(), [dp.Op(inc, 1)], callbacks=[plain])


def test_progress_bar_on_stderr(executor, capsys):
    dp.run(executor, [dp.Op(sum, [dp.Op(inc, i) for i in range(7)])], progress=True)
    err = capsys.readouterr().err
    assert "8/8" in err and "dispatcher" in err and "running=0, failed=0" in err
    dp.run(executor, [dp.Op(inc, 1), dp.op(retries=0)(boom)()], progress=True, throw_error=False)
    assert "2/2" in (err := capsys.readouterr().err) and "failed=1" in err


def test_progress_bar_counts_running_and_failed_nodes():
    bar = dp.ProgressBar(disable=True)
    a, b, c = dp.Op(inc, 1), dp.Op(inc, 2), dp.Op(inc, 3)
    bar.on_start(3)
    for node in (a, b, c):
        bar.on_submit(node)
    bar.on_finish(a, 2)
    assert bar.bar.postfix == "running=2, failed=0"
    bar.on_retry(b, ValueError(), 1, 0.1)
    assert len(bar.running) == 1  # b waits to run again: it is not running
    bar.on_submit(b)
    bar.on_fail(b, None)
    assert len(bar.running) == 1 and bar.bar.postfix == "running=1, failed=1"
    bar.on_end()


def test_logging(executor, caplog):
    with caplog.at_level(logging.DEBUG, logger="dispatcher"):
        dp.run(executor, [dp.op(inc, label="logged")(1), dp.Op(boom)], throw_error=False)
    messages = [r.getMessage() for r in caplog.records if r.name == "dispatcher"]
    assert "start 'logged'" in messages and "finished 'logged'" in messages
    assert any("node 'boom' failed: ValueError: boom" in m for m in messages)


# -- release of intermediates -------------------------------------------------------


class Big:
    pass


def test_release_frees_intermediates_but_keeps_outputs(local_executor):
    executor = local_executor
    refs = []

    def make():
        value = Big()
        refs.append(weakref.ref(value))
        return value

    def use(v):
        return "used"

    def check(_):
        gc.collect()
        return refs[0]() is None

    a = dp.Op(make)
    b = dp.Op(use, a)
    c = dp.Op(check, b)
    assert dp.run(executor, [c, b], release=True)[0].value is True
    with pytest.raises(dp.DispatcherError, match="released"):
        a.fetch()
    assert a.state() == "released"
    assert b.fetch() == "used"
    # a later run that needs a as an input is refused instead of using a stale value
    with pytest.raises(dp.ExecutorError, match="released"):
        dp.run(executor, [dp.Op(use, a)], [a])
    refs.clear()
    assert dp.run(executor, [c])[0].value is False  # kept by default
    assert isinstance(a.fetch(), Big)


def test_release_frees_values_without_a_garbage_collection(local_executor):
    # a reference cycle (a future holding its task in its callbacks) would keep each
    # released value alive until a collection: peak memory would not fall
    refs = []

    def make(i):
        value = Big()
        refs.append(weakref.ref(value))
        return value

    def alive(*_):
        return sum(ref() is not None for ref in refs)

    uses = [dp.Op(lambda v: 1, dp.Op(make, i)) for i in range(20)]
    gc.disable()
    try:
        assert dp.run(local_executor, [dp.Op(alive, *uses)], release=True)[0].value == 0
    finally:
        gc.enable()


# -- run_async and loops -------------------------------------------------------------


def test_run_async_inside_a_loop(executor):
    async def main():
        other = asyncio.create_task(asyncio.sleep(0.01, "other"))
        results = await dp.run_async(executor, [dp.Op(inc, dp.Op(inc, 1))])
        return results[0].value, await other

    assert asyncio.run(main()) == (3, "other")
