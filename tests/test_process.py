"""ProcessExecutor: cloudpickled calls, lost workers, timeouts that stop the work,
no worker left behind, batching, large arrays; and PoolExecutor on process pools."""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import dispatcher as dp
from dispatcher.engine import Backoff

from .conftest import FileChannel, alive, wait_gone

FAST = Backoff(first_delay=0.001, factor=2.0, max_delay=0.01, jitter=0.1)


@pytest.fixture
def ex():
    with dp.ProcessExecutor(2, backoff=FAST) as executor:
        yield executor


def test_parallel_executor_is_the_process_executor():
    assert dp.ParallelExecutor is dp.ProcessExecutor
    with pytest.raises(ValueError):
        dp.ProcessExecutor(0)
    with pytest.raises(ValueError):
        dp.ProcessExecutor(2, batch_size=0)
    assert dp.ProcessExecutor().max_workers >= 1


def test_nodes_run_in_other_processes_with_lambdas_and_closures(ex):
    offset = 100

    def add_offset(x):
        return x + offset

    a = dp.Op(lambda: os.getpid())
    b = dp.Op(add_offset, 1)
    c = dp.Op(lambda x, y: (x, y, lambda z: z * 2), a, b)
    pid, value, doubler = dp.execute(c, ex)
    assert pid != os.getpid() and pid in ex.worker_pids()
    assert value == 101
    assert doubler(21) == 42  # a lambda came back as a result


def test_functions_from_main_work_in_a_script_without_a_main_guard(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import dispatcher as dp

            def square(x):
                return x * x

            class Box:
                def __init__(self, v):
                    self.v = v

            boxes = dp.CollectNode([dp.Op(Box, dp.Op(square, i)) for i in range(5)])
            total = dp.Op(lambda xs: sum(b.v for b in xs), boxes)
            with dp.ProcessExecutor(2) as ex:
                print("total", dp.execute(total, ex))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["total", "30"]


def test_workers_see_modules_next_to_the_script(tmp_path):
    (tmp_path / "helpers_mod.py").write_text("def triple(x):\n    return 3 * x\n")
    script = tmp_path / "main.py"
    script.write_text(
        "import dispatcher as dp, helpers_mod\n"
        "with dp.ProcessExecutor(1) as ex:\n"
        "    print(dp.execute(dp.Op(helpers_mod.triple, 14), ex))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"


# -- what cannot be pickled -----------------------------------------------------------


def test_unpicklable_argument_fails_at_once_naming_node_argument_and_object(ex):
    lock = threading.Lock()
    node = dp.Op(lambda cfg: cfg, {"name": "x", "lock": lock})
    node.label = "configure"
    start = time.monotonic()
    with pytest.raises(dp.DependencyError) as info:
        dp.run(ex, [dp.Op(len, node)])
    assert time.monotonic() - start < 10
    err = info.value
    assert err.node is node
    assert isinstance(err.error, pickle.PicklingError)
    text = str(err)
    assert "'configure'" in text and "argument 0" in text and "['lock']" in text and "_thread.lock" in text


def test_unpicklable_function_names_what_it_captured(ex):
    lock = threading.Lock()

    def locked(x):
        with lock:
            return x

    node = dp.Op(locked, 1)
    with pytest.raises(dp.DependencyError, match=r"its function .*captured 'lock'.*_thread\.lock"):
        dp.run(ex, [node])
    # a batch holding one bad call still runs the good ones
    fine = [dp.Op(abs, -i) for i in range(50)]
    results = dp.run(ex, [*fine, dp.Op(locked, 2)], throw_error=False)
    assert [r.value for r in results[:-1]] == list(range(50))
    assert results[-1].is_error()


def test_unpicklable_result_and_exception_are_reported(ex):
    def make_generator():
        return (i for i in range(3))

    class Odd(Exception):
        def __init__(self):
            super().__init__("odd failure")
            self.lock = threading.Lock()

    def raise_odd():
        raise Odd()

    results = dp.run(ex, [dp.Op(make_generator), dp.Op(raise_odd)], throw_error=False)
    assert "generator" in str(results[0].error) and "make_generator" in str(results[0].error)
    err = results[1].error
    assert isinstance(err.error, dp.RemoteError)
    assert "Odd" in err.error.type_name and "odd failure" in str(err)
    assert "raise_odd" in err.traceback


def test_node_errors_keep_their_type_and_remote_traceback(ex):
    def fail(x):
        raise KeyError(x)

    with pytest.raises(dp.DependencyError) as info:
        dp.execute(dp.Op(fail, "missing"), ex)
    assert isinstance(info.value.error, KeyError)
    assert "in fail" in info.value.traceback


# -- lost workers ---------------------------------------------------------------------


def die_once(marker, value):
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return value


def test_a_worker_that_dies_is_replaced_and_its_node_retried(ex, tmp_path):
    ex.start()
    before = set(ex.worker_pids())
    node = dp.Op(die_once, str(tmp_path / "died"), 7)
    assert dp.execute(dp.Op(lambda x: x * 6, node), ex) == 42
    assert ex.stats["lost"] == 1
    after = set(ex.worker_pids())
    assert len(after) == 2 and after != before


def always_die():
    os._exit(3)


def segfault():
    import ctypes

    ctypes.string_at(0)


def test_a_node_that_keeps_killing_its_worker_fails_saying_so(tmp_path):
    with dp.ProcessExecutor(2, retries=2, backoff=FAST) as ex:
        with pytest.raises(dp.DependencyError) as info:
            dp.execute(dp.Op(always_die), ex)
        err = info.value
        assert isinstance(err.error, dp.WorkerLostError)
        assert err.attempts == 3
        assert "after 3 attempts" in str(err) and "died" in str(err) and "exited with code 3" in str(err)
        with pytest.raises(dp.DependencyError, match="SIGSEGV"):
            dp.execute(dp.op(segfault, retries=0)(), ex)
        # the pool is whole again and keeps working
        assert dp.execute([dp.Op(abs, -1), dp.Op(abs, -2)], ex) == [1, 2]
        assert len(ex.worker_pids()) == 2


def test_a_batch_whose_worker_dies_is_resent_one_by_one(tmp_path):
    marker = str(tmp_path / "died")
    with dp.ProcessExecutor(1, backoff=FAST) as ex:
        dp.execute([dp.Op(die_once, "/", 0), dp.Op(abs, 0)], ex)  # learn that both are quick
        nodes = [dp.Op(abs, -i) for i in range(20)] + [dp.Op(die_once, marker, 99)]
        assert dp.execute(nodes, ex) == [*range(20), 99]
        assert ex.stats["lost"] == 1


def rand_sleep():
    time.sleep(random.choice([0.05, 0.1, 0.15, 0.2]))


# the rest of Dispatcher.jl's matrix of delays runs in the slow set (make test-all)
SLOW_DELAYS = [pytest.param(d, marks=pytest.mark.slow) for d in (0.1, 0.2, 0.25)]


@pytest.mark.parametrize("killed", [1, 2])
@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3, *SLOW_DELAYS])
def test_procs_removed(killed, delay):
    """Dispatcher.jl's "$i procs removed (delay $s)": kill workers during a run."""

    def three():
        rand_sleep()
        return 3

    def ident(x):
        rand_sleep()
        return x

    def biggest(x, y):
        rand_sleep()
        return max(x, y)

    def sqrt(x):
        rand_sleep()
        return math.sqrt(x)

    def facts(x):
        rand_sleep()
        return math.factorial(x), math.factorial(2 * x)

    def half(x):
        rand_sleep()
        return x / 2

    a = dp.Op(three)
    b = dp.Op(ident, 4)
    c = dp.Op(biggest, a, b)
    d = dp.Op(sqrt, c)
    _f, g = dp.op(facts, nout=2)(c)
    h = dp.Op(half, g)
    with dp.ProcessExecutor(2, backoff=FAST) as ex:
        ex.start()
        pids = ex.worker_pids()
        timer = threading.Timer(delay, lambda: [os.kill(p, signal.SIGKILL) for p in pids[:killed]])
        timer.start()
        try:
            results = dp.run(ex, [h, d])
        finally:
            timer.join()
        assert [r.unwrap() for r in results] == [math.factorial(8) / 2, 2.0]
        # a kill that came after the run ended is noticed a moment later
        end = time.monotonic() + 10
        while time.monotonic() < end and (
            len(ex.worker_pids()) != 2 or set(ex.worker_pids()) & set(pids[:killed])
        ):
            time.sleep(0.02)
        assert len(ex.worker_pids()) == 2
        assert not set(ex.worker_pids()) & set(pids[:killed])
        assert dp.execute(dp.Op(abs, -1), ex) == 1


# -- timeouts, cancellation, interruption ----------------------------------------------


def test_timeout_kills_the_worker_and_the_pool_goes_on(ex):
    log = FileChannel()

    def report_and_sleep():
        log.put(os.getpid())
        time.sleep(30)
        log.put("finished")

    start = time.monotonic()
    with pytest.raises(dp.DependencyError) as info:
        dp.execute(dp.op(report_and_sleep, timeout=1.0)(), ex)  # time to start even when loaded
    assert time.monotonic() - start < 10
    assert isinstance(info.value.error, TimeoutError)
    assert "killed" in str(info.value)
    (pid,) = log.items()
    assert wait_gone([pid]) == []
    assert ex.stats["timeouts"] == 1
    assert dp.execute(dp.Op(abs, -3), ex) == 3
    assert log.items() == [pid]


def test_timeout_counts_from_the_start_on_a_worker_not_from_the_queue(ex):
    # four 0.3 s nodes on two workers: the last two wait 0.3 s for a worker
    nodes = [dp.op(time.sleep, timeout=0.5)(0.3) for _ in range(4)]
    assert dp.execute(nodes, ex) == [None] * 4


def test_a_failure_cancels_running_nodes_by_killing_their_workers(ex):
    log = FileChannel()

    def long(x):
        log.put(os.getpid())
        time.sleep(30)

    def fail_soon():
        time.sleep(0.2)
        raise ValueError("soon")

    ex.start()
    start = time.monotonic()
    with pytest.raises(dp.DependencyError, match="soon"):
        dp.run(ex, [dp.Op(long, 1), dp.Op(fail_soon)])
    assert time.monotonic() - start < 10
    assert wait_gone(log.items()) == []
    assert dp.execute(dp.Op(abs, -1), ex) == 1


def test_ctrl_c_leaves_no_worker_behind():
    def long(i):
        time.sleep(30)

    ex = dp.ProcessExecutor(2)
    ex.start()
    pids = ex.worker_pids()
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        dp.run(ex, [dp.Op(long, i) for i in range(4)])
    timer.join()
    assert time.monotonic() - start < 10
    assert wait_gone(pids) == []
    assert ex.worker_pids() == []
    # the executor is still usable: the next run starts new workers
    assert dp.execute(dp.Op(abs, -5), ex) == 5
    pids = ex.worker_pids()
    ex.close()
    assert wait_gone(pids) == []


def test_an_exception_in_the_caller_leaves_no_worker_behind():
    class Fails(dp.Callback):
        def on_finish(self, node, value):
            raise RuntimeError("callback broke")

    with dp.ProcessExecutor(2) as ex:
        ex.start()
        pids = ex.worker_pids()
        slow = dp.Op(time.sleep, 30)
        with pytest.raises(dp.DispatcherError, match="callback broke"):
            dp.run(ex, [dp.Op(abs, -1), slow], callbacks=[Fails()])
        assert wait_gone(pids) == []


def test_close_and_with_shut_the_workers_down():
    ex = dp.ProcessExecutor(2).start()
    pids = ex.worker_pids()
    assert len(pids) == 2 and all(alive(p) for p in pids)
    ex.close()
    assert wait_gone(pids) == []
    with pytest.raises(dp.ExecutorError, match="closed"):
        dp.execute(dp.Op(abs, 1), ex)
    with dp.ProcessExecutor(2) as ex2:
        dp.execute(dp.Op(abs, 1), ex2)
        pids = ex2.worker_pids()
    assert wait_gone(pids) == []


def _script_in_long_nodes(tmp_path, nodes: int):
    """A script whose two workers run 60 s nodes; returns it and the workers' pids."""
    script = tmp_path / "long_nodes.py"
    script.write_text(
        "import time, dispatcher as dp\n"
        "ex = dp.ProcessExecutor(2).start()\n"
        "print(*ex.worker_pids(), flush=True)\n"
        f"dp.run(ex, [dp.Op(time.sleep, 60) for _ in range({nodes})])\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    time.sleep(0.3)  # the workers are inside their 60 s nodes
    return proc, pids


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    proc, pids = _script_in_long_nodes(tmp_path, 2)
    proc.kill()
    proc.wait()
    assert wait_gone(pids) == []


def test_ctrl_c_in_a_script_leaves_no_worker_behind(tmp_path):
    proc, pids = _script_in_long_nodes(tmp_path, 4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert wait_gone(pids) == []


# -- start-up ---------------------------------------------------------------------------


_SETTING = None


def _configure(value):
    global _SETTING
    _SETTING = value


def _read_setting():
    return _SETTING


def _broken_init():
    raise RuntimeError("no licence for the solver")


def test_initializer_runs_in_each_worker():
    with dp.ProcessExecutor(2, initializer=_configure, initargs=("ready",)) as ex:
        assert dp.execute([dp.Op(_read_setting) for _ in range(4)], ex) == ["ready"] * 4


def test_a_failing_initializer_gives_a_clear_error_not_a_hang():
    with dp.ProcessExecutor(2, initializer=_broken_init) as ex:
        start = time.monotonic()
        with pytest.raises(dp.DependencyError) as info:
            dp.execute(dp.Op(abs, -1), ex)
        assert time.monotonic() - start < 30
        assert isinstance(info.value.error, dp.ExecutorError)
        assert "no licence for the solver" in str(info.value)
        with pytest.raises(dp.ExecutorError, match="cannot start"):
            ex.start()


# -- batching and data ---------------------------------------------------------------


def test_tiny_nodes_are_batched_and_slow_ones_are_not(ex):
    nodes = [dp.Op(abs, -i) for i in range(2000)]
    assert dp.execute(nodes, ex) == list(range(2000))
    assert ex.stats["batches"] < ex.stats["tasks"] / 10
    sent = dict(ex.stats)
    slow = [dp.Op(time.sleep, 0.05) for _ in range(6)]
    dp.execute(slow, ex)
    dp.execute(slow, ex)  # now known to be slow
    assert ex.stats["tasks"] - sent["tasks"] == ex.stats["batches"] - sent["batches"] == 12


def test_batch_size_one_sends_every_node_alone():
    with dp.ProcessExecutor(2, batch_size=1) as ex:
        dp.execute([dp.Op(abs, -i) for i in range(200)], ex)
        assert ex.stats["batches"] == ex.stats["tasks"] == 200


def test_large_arrays_travel_whole_and_writable(ex):
    c_order = np.arange(3_000_000, dtype=np.float64).reshape(1000, 3000)
    f_order = np.asfortranarray(c_order)
    strided = c_order[::2, ::3]

    def bump(a):
        a += 1  # arrays that arrive are writable
        return a

    results = dp.execute(
        [dp.Op(bump, c_order.copy()), dp.Op(bump, f_order.copy(order="F")), dp.Op(bump, strided)], ex
    )
    for got, want in zip(results, (c_order + 1, f_order + 1, strided + 1)):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert results[1].flags.f_contiguous


def test_run_async_on_processes(ex):
    import asyncio

    async def main():
        return await dp.run_async(ex, [dp.Op(abs, -4), dp.Op(lambda: 5)])

    assert [r.value for r in asyncio.run(main())] == [4, 5]


def test_many_runs_on_one_pool(ex):
    for i in range(20):
        assert dp.execute(dp.Op(lambda x: x + 1, dp.Op(abs, -i)), ex) == i + 1


# -- PoolExecutor on a process pool ------------------------------------------------------


def test_pool_executor_sends_cloudpickled_calls_to_a_process_pool():
    factor = 3
    with cf.ProcessPoolExecutor(2) as pool:
        ex = dp.PoolExecutor(pool)
        assert ex.cloudpickle
        a = dp.Op(lambda x: x * factor, 5)
        b = dp.Op(lambda x: (os.getpid(), lambda y: y + x), a)
        pid, adder = dp.execute(b, ex)
        assert pid != os.getpid() and adder(1) == 16
        with pytest.raises(dp.DependencyError, match=r"argument 0 .*_thread\.lock"):
            dp.execute(dp.Op(lambda x: x, threading.Lock()), ex)
        with pytest.raises(dp.DependencyError) as info:
            dp.execute(dp.Op(lambda: 1 / 0), ex)
        assert isinstance(info.value.error, ZeroDivisionError)
    with cf.ThreadPoolExecutor(2) as threads:
        assert not dp.PoolExecutor(threads).cloudpickle


class NeedsTwo(Exception):
    """Pickles, but cannot be rebuilt: unpickling calls NeedsTwo(message). (Its own
    ``__reduce__`` says so: importing distributed installs tblib's pickling of
    exceptions, which would otherwise rebuild it without calling ``__init__``.)"""

    def __init__(self, a, b):
        super().__init__(f"needs {a} and {b}")

    def __reduce__(self):
        return (NeedsTwo, self.args)


def raise_needs_two():
    raise NeedsTwo(1, 2)


@pytest.mark.parametrize("pool_kind", ["ProcessExecutor", "ProcessPoolExecutor"])
def test_exception_that_cannot_be_rebuilt_is_a_remote_error(pool_kind):
    # the same RemoteError on both, never the TypeError of unpickling it
    pool = cf.ProcessPoolExecutor(1) if pool_kind == "ProcessPoolExecutor" else None
    ex = dp.PoolExecutor(pool) if pool else dp.ProcessExecutor(1)
    try:
        (result,) = dp.run(ex, [dp.Op(raise_needs_two)], throw_error=False)
    finally:
        ex.close()
        if pool:
            pool.shutdown()
    assert isinstance(result.error.error, dp.RemoteError), repr(result.error.error)
    assert "NeedsTwo" in result.error.error.type_name
    assert "needs 1 and 2" in str(result.error)


def test_a_batch_interrupted_by_sigint_runs_none_of_its_later_calls():
    # (on MPI world ranks, where SIGINT interrupts a call and ends the run)
    from dispatcher.executors._procworker import run_calls

    ran: list = []

    def interrupted():
        raise KeyboardInterrupt

    calls = [(interrupted, (), None), (ran.append, (1,), None)]
    outcomes, spans = run_calls(calls, interruptible=True)
    assert ran == [] and [ok for ok, _ in outcomes] == [False, False] and len(spans) == 2
    assert type(outcomes[1][1][0]) is KeyboardInterrupt and "not run" in str(outcomes[1][1][0])
    # elsewhere (a worker process, which ignores SIGINT) only the call that raised it fails
    outcomes, _ = run_calls(calls)
    assert ran == [1] and [ok for ok, _ in outcomes] == [False, True]
