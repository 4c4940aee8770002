"""DaskExecutor on real dask.distributed clusters: an embedded LocalCluster, a
scheduler and worker started from the command line, a given (also asynchronous)
client; values staying on the workers; lost workers, timeouts and pickling errors.

The engine's semantics on dask are also covered by the shared suites
(``tests/test_engine.py`` and others run every test on a session LocalCluster)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from distributed import Client

import dispatcher as dp
from dispatcher.engine import Backoff

from .conftest import FileChannel, alive, dask_client, wait_gone

FAST = Backoff(first_delay=0.01, max_delay=0.05)
CLUSTER = dict(n_workers=1, threads_per_worker=2, dashboard_address=":0", silence_logs=logging.ERROR)


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def _worker_pids(client) -> list:
    return sorted(client.run(os.getpid).values())


# -- where it runs ---------------------------------------------------------------------


def test_embedded_cluster_starts_on_first_use_logs_its_dashboard_and_closes(caplog):
    ex = dp.DaskExecutor(**CLUSTER)
    assert ex.cluster is None and ex.client is None  # nothing starts before a run
    with caplog.at_level(logging.INFO, logger="dispatcher"):
        assert dp.execute(dp.Op(add, dp.Op(inc, 1), 10), ex) == 12
    assert ex.dashboard_link and ex.dashboard_link.startswith("http")
    assert any("dashboard at " + ex.dashboard_link in r.getMessage() for r in caplog.records)
    pids = _worker_pids(ex.client)
    assert pids and os.getpid() not in pids
    client = ex.client
    ex.close()
    assert client.status == "closed" and ex.cluster is None
    assert wait_gone(pids, 20.0) == []
    with pytest.raises(dp.ExecutorError, match="closed"):
        dp.run(ex, [dp.Op(inc, 1)])


def test_cluster_options_only_go_to_the_embedded_cluster():
    with pytest.raises(TypeError, match="embedded LocalCluster"):
        dp.DaskExecutor(dask_client(), n_workers=2)
    with pytest.raises(ValueError, match="not both"):
        dp.DaskExecutor(dask_client(), "tcp://127.0.0.1:8786")


def test_given_client_is_left_open():
    client = dask_client()
    with dp.DaskExecutor(client) as ex:
        assert dp.execute(dp.Op(inc, 41), ex) == 42
    assert client.status == "running"
    assert client.submit(inc, 1).result() == 2


@pytest.mark.slow  # starts a scheduler and a worker from the command line: in make test-all
def test_scheduler_address_of_command_line_scheduler_and_worker(tmp_path):
    """``dask scheduler`` and ``dask worker`` on loopback, reached by address."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    scheduler_file = tmp_path / "scheduler.json"
    common = ["--no-dashboard"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0"]
            + common
            + ["--scheduler-file", str(scheduler_file)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        end = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < end:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", address, "--host", "127.0.0.1"]
                + ["--nworkers", "1", "--nthreads", "2"]
                + common,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        with dp.DaskExecutor(address=address) as ex:
            ex.open()
            ex.client.wait_for_workers(1, timeout=60)
            total = dp.Op(sum, [dp.Op(lambda i: i * i, i) for i in range(10)])
            assert dp.execute(total, ex) == 285
            client = ex.client
        assert client.status == "closed"  # the executor's own client; the cluster stays
        assert procs[0].poll() is None
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# -- values stay on the workers ---------------------------------------------------------


def _note_unpickled(log_path, data):
    with open(log_path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return Traced(log_path, data)


class Traced:
    """A value that writes the pid of every process that unpickles it."""

    def __init__(self, log_path, data):
        self.log_path = log_path
        self.data = data

    def __reduce__(self):
        return _note_unpickled, (self.log_path, self.data)


def make_traced(log_path, n):
    return Traced(log_path, list(range(n)))


def grow(t):
    return Traced(t.log_path, t.data + [len(t.data)])


def _unpickled_here(log_path) -> int:
    with open(log_path) as f:
        return sum(int(line) == os.getpid() for line in f)


def test_only_outputs_come_back_to_the_client(tmp_path):
    log = str(tmp_path / "unpickled")
    open(log, "w").close()
    ex = dp.DaskExecutor(dask_client())
    a = dp.Op(make_traced, log, 3)
    b = dp.Op(grow, a)
    c = dp.Op(grow, b)
    (result,) = dp.run(ex, [c])
    assert result.value.data == [0, 1, 2, 3, 4]
    assert _unpickled_here(log) == 1  # the output, once; a and b stayed on the cluster
    # a later run that takes b as an input uses it where it is
    d = dp.Op(grow, b)
    assert dp.run(ex, [d], inputs=[b])[0].value.data == [0, 1, 2, 3, 4]
    assert _unpickled_here(log) == 2
    # fetch() of an intermediate node brings its value back then
    assert b.state() == "done"
    assert b.fetch().data == [0, 1, 2, 3]
    assert _unpickled_here(log) == 3
    ex.close()
    with pytest.raises(dp.DispatcherError, match="list the node among the outputs"):
        b.fetch()


def test_release_lets_dask_free_intermediate_values():
    ex = dp.DaskExecutor(dask_client())
    a = dp.Op(inc, 1)
    b = dp.Op(inc, a)
    c = dp.Op(inc, b)
    assert dp.run(ex, [c], release=True)[0].value == 4
    assert a.state() == "released" and b.state() == "released"
    assert c.fetch() == 4


# -- failures -----------------------------------------------------------------------------


class Flaky:
    def __init__(self, failures):
        self.failures = failures
        self.log = FileChannel()

    def __call__(self, x):
        self.log.put(1)
        if len(self.log) <= self.failures:
            raise ConnectionError(f"failure {len(self.log)}")
        return x


def counted(log, x):
    log.put(x)
    return x + 1


def test_retried_node_resends_what_was_pipelined_on_it_without_blaming_it():
    """Nodes sent on a failed attempt's future fail in dask too; they are sent
    again with the new attempt's future, and never counted as failures."""
    ex = dp.DaskExecutor(dask_client(), retry_on=lambda e: isinstance(e, ConnectionError), backoff=FAST)
    flaky = Flaky(2)
    runs = FileChannel()
    root = dp.Op(flaky, 1)
    chain = root
    for _ in range(3):
        chain = dp.Op(counted, runs, chain)
    failed = []

    class Watch(dp.Callback):
        def on_fail(self, node, error):
            failed.append(node.label)

        def on_retry(self, node, error, attempt, delay):
            failed.append(("retry", node.label))

    assert dp.run(ex, [chain], callbacks=[Watch()])[0].value == 4
    assert len(flaky.log) == 3
    assert runs.items() == [1, 2, 3]  # each dependent ran once, on the good value
    assert failed == [("retry", "Flaky"), ("retry", "Flaky")]


def boom(*args):
    raise ValueError("boom")


def test_failure_is_blamed_on_the_node_that_raised():
    ex = dp.DaskExecutor(dask_client())
    bad = dp.op(boom, label="bad")(1)
    downstream = [dp.Op(inc, bad)]
    for _ in range(3):
        downstream.append(dp.Op(inc, downstream[-1]))
    ok = dp.Op(inc, 1)
    results = dp.run(ex, [downstream[-1], ok], throw_error=False)
    assert results[1].value == 2
    error = results[0].error
    assert error.node is bad and isinstance(error.error, ValueError)
    assert all(n.state() == "failed" for n in downstream)
    assert all(n._outcome.error.node is bad for n in downstream)


def test_unpicklable_arguments_get_the_process_executor_message():
    ex = dp.DaskExecutor(dask_client())
    lock = threading.Lock()
    results = dp.run(ex, [dp.Op(len, {"lock": lock}), dp.Op(inc, 1)], throw_error=False)
    assert results[1].value == 2
    error = results[0].error
    assert "cannot send node 'len' to another process" in str(error)
    assert "argument 0 holds a _thread.lock object (at argument 0['lock'])" in str(error)


def make_lock():
    return threading.Lock()


def test_unpicklable_output_names_its_node():
    ex = dp.DaskExecutor(dask_client())
    node = dp.op(make_lock, label="lock maker")()
    (result,) = dp.run(ex, [node], throw_error=False)
    assert result.error.node is node
    assert "lock" in str(result.error)


def slow_then(log, seconds, value):
    time.sleep(seconds)
    log.put(value)
    return value


def test_timeout_cancels_the_task_and_its_dependents_never_run():
    ex = dp.DaskExecutor(dask_client())
    log = FileChannel()
    slow = dp.op(slow_then, timeout=0.3, label="slow")(log, 1.0, "slow")
    after = dp.op(slow_then, label="after")(log, 0, slow)
    start = time.monotonic()
    (result,) = dp.run(ex, [after], throw_error=False)
    assert time.monotonic() - start < 0.9
    assert isinstance(result.error.error, TimeoutError) and result.error.node is slow
    time.sleep(1.2)  # the worker thread finishes its call; nothing runs on its value
    assert log.items() == ["slow"]


def test_timeout_counts_from_when_the_dependencies_are_done():
    ex = dp.DaskExecutor(dask_client())
    log = FileChannel()
    first = dp.Op(slow_then, log, 0.8, 1)
    second = dp.op(slow_then, timeout=0.6)(log, 0.1, first)
    assert dp.execute(second, ex) == 1


def kill_my_worker():
    os.kill(os.getpid(), signal.SIGKILL)


def test_dask_killed_worker_is_a_lost_worker_retried_by_default():
    # each worker that dies costs the node one attempt: dask's own allowed
    # failures do not multiply the executor's retries
    with dp.DaskExecutor(retries=1, backoff=FAST, **CLUSTER) as ex:
        with pytest.raises(dp.DependencyError, match="failed after 2 attempts") as info:
            dp.run(ex, [dp.op(kill_my_worker, label="doomed")()])
        assert isinstance(info.value.error, dp.WorkerLostError)
        assert "node 'doomed' was lost with its dask worker" in str(info.value)
        assert ex.client.run_on_scheduler(_worker_deaths) == 2


def _worker_deaths(dask_scheduler) -> int:
    return sum(
        1
        for _, msg in dask_scheduler.get_events("all")
        if msg.get("action") == "remove-worker" and not msg.get("expected")
    )


def nap(log, i, seconds):
    time.sleep(seconds)
    return i


def test_killing_a_worker_mid_run_still_gives_the_right_values():
    with dp.DaskExecutor(
        n_workers=2, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.ERROR
    ) as ex:
        ex.open()
        pids = _worker_pids(ex.client)
        assert len(pids) == 2
        layer = [dp.Op(nap, None, i, 0.2) for i in range(8)]
        pairs = [dp.Op(add, layer[i], layer[i + 1]) for i in range(0, 8, 2)]
        total = dp.Op(sum, pairs)
        killer = threading.Timer(0.5, os.kill, (pids[0], signal.SIGKILL))
        killer.start()
        try:
            assert dp.execute(total, ex) == sum(range(8))
        finally:
            killer.join()
        assert not alive(pids[0])


# -- asyncio ------------------------------------------------------------------------------


def test_run_async_with_an_asynchronous_client():
    address = dask_client().scheduler.address

    async def main():
        async with Client(address, asynchronous=True) as client:
            ex = dp.DaskExecutor(client)
            a = dp.Op(inc, 1)
            b = dp.Op(add, a, dp.Op(inc, a))
            other = asyncio.create_task(asyncio.sleep(0.01, "loop stays free"))
            (result,) = await dp.run_async(ex, [b])
            assert await other == "loop stays free"
            with pytest.raises(dp.DispatcherError, match="asynchronous client"):
                a.fetch()
            return result.value

    assert asyncio.run(main()) == 5


def test_run_async_on_an_embedded_cluster():
    async def main():
        with dp.DaskExecutor(**CLUSTER) as ex:
            return (await dp.run_async(ex, [dp.Op(add, dp.Op(inc, 1), 3)]))[0].value

    assert asyncio.run(main()) == 5


# -- scripts ------------------------------------------------------------------------------


def _script(tmp_path, body: str) -> str:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


@pytest.mark.slow  # a whole cluster started and interrupted: in make test-all
def test_ctrl_c_leaves_no_worker_processes(tmp_path):
    script = _script(
        tmp_path,
        """
        import logging, os, sys, time
        import dispatcher as dp

        if __name__ == "__main__":
            with dp.DaskExecutor(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                                 silence_logs=logging.ERROR) as ex:
                ex.open()
                print(*ex.client.run(os.getpid).values(), flush=True)
                dp.execute([dp.Op(time.sleep, 30) for _ in range(4)], ex)
        """,
    )
    proc = subprocess.Popen([sys.executable, script], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    assert proc.returncode != 0
    assert wait_gone(pids, 20.0) == []


def test_script_without_main_guard_gets_a_clear_error(tmp_path):
    script = _script(
        tmp_path,
        """
        import dispatcher as dp
        ex = dp.DaskExecutor(n_workers=1, threads_per_worker=1, dashboard_address=":0")
        print(dp.execute(dp.Op(abs, -1), ex))
        """,
    )
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "ExecutorError: the dask LocalCluster could not start" in last
    assert "if __name__" in last


def _stream_counts(dask_worker):
    stream = dask_worker.batched_stream
    return stream.batch_count, stream.message_count


def test_when_a_call_ran_goes_with_its_result():
    """A worker's event on when a call ran is sent with the call's result, not on
    its own: on its own it would hold the result back for the stream's interval at
    every hop of a chain. So a chain costs each worker about one message batch a hop
    (two if the event went alone), and every attempt still names its worker."""
    client = dask_client()
    hops = 40
    node = dp.Op(abs, -1)
    for _ in range(hops - 1):
        node = dp.Op(add, node, 1)
    with dp.DaskExecutor(client) as ex:
        dp.execute(dp.Op(abs, 0), ex)  # (the client follows the events from its first run)
        before = client.run(_stream_counts)
        trace = dp.Trace()
        assert dp.execute(node, ex, trace=trace) == hops
        after = client.run(_stream_counts)
    batches = sum(after[w][0] - before[w][0] for w in after)
    messages = sum(after[w][1] - before[w][1] for w in after)
    assert messages >= 2 * hops  # an event and a result for each call
    assert batches <= hops + hops // 4, (batches, messages)
    assert len(trace.attempts) == hops and all(a.where in after for a in trace.attempts)
