"""Faults and mistakes that once hung a run, took minutes to fail, or left something
behind. Each case runs as a script in a fresh interpreter under a time limit
(``run_script``), so a hang fails its test instead of blocking the suite; the
limits are generous, for a busy machine, and the assertions say what must happen."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import textwrap
import time

import pytest

import dispatcher as dp
from dispatcher.executors import _mpisuper

from .conftest import BIN, alive, run_script, start_script, wait_gone

MPIEXEC = os.path.join(BIN, "mpiexec")


def outcome(proc) -> dict:
    """The JSON the script printed on its last line of output."""
    if proc.returncode != 0:
        raise AssertionError(f"exit code {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- lost MPI ranks ------------------------------------------------------------------


def test_a_killed_rank_of_a_spawned_mpi_executor_is_replaced_and_its_node_retried(tmp_path):
    proc = run_script(
        tmp_path,
        """
        import json, os, signal, threading, time
        import dispatcher as dp

        def nap(i):
            time.sleep(0.2)
            return i

        ex = dp.MPIExecutor(2).start()
        first = ex.worker_pids()
        threading.Timer(1.0, os.kill, (first[0], signal.SIGKILL)).start()
        start = time.monotonic()
        values = dp.execute([dp.Op(nap, i) for i in range(40)], ex)
        seconds = time.monotonic() - start
        now = ex.start().worker_pids()
        ex.close()
        print(json.dumps({"values": values, "seconds": seconds, "first": first, "now": now,
                          "lost": ex.stats.get("lost", 0)}))
        """,
        timeout=120,
    )
    out = outcome(proc)
    assert out["values"] == list(range(40))
    assert out["seconds"] < 30  # 4 s of work on 2 ranks; it used to wait forever
    assert len(out["now"]) == 2 and out["first"][0] not in out["now"]
    assert "WorkerLostError" in proc.stderr and "node 'nap'" in proc.stderr
    assert wait_gone(out["first"] + out["now"], 20.0) == []


def test_a_node_that_kills_its_rank_fails_naming_it_and_the_executor_goes_on(tmp_path):
    proc = run_script(
        tmp_path,
        """
        import json, os, time
        import dispatcher as dp

        ex = dp.MPIExecutor(2, retries=2, backoff=dp.Backoff(first_delay=0.01)).start()
        start = time.monotonic()
        (result,) = dp.run(ex, [dp.op(os._exit, label="suicide")(3)], throw_error=False)
        seconds = time.monotonic() - start
        after = dp.execute([dp.Op(abs, -i) for i in range(10)], ex)
        pids = ex.start().worker_pids()
        ex.close()
        print(json.dumps({"error": str(result.error), "lost": type(result.error.error).__name__,
                          "attempts": result.error.attempts, "seconds": seconds, "after": after,
                          "pids": pids}))
        """,
        timeout=120,
    )
    out = outcome(proc)
    assert out["lost"] == "WorkerLostError" and out["attempts"] == 3
    assert "node 'suicide' failed after 3 attempts" in out["error"] and "died" in out["error"]
    assert out["seconds"] < 30
    assert out["after"] == list(range(10))
    assert wait_gone(out["pids"], 20.0) == []


def test_a_spawned_mpi_executor_closed_while_its_ranks_start_ends_at_once_and_quietly(tmp_path):
    # closing during start-up once waited the supervisor's grace period, mpiexec
    # printed that the application was terminated, and the Hydra proxies killed with
    # the job left their files in /tmp; a mistake in the graph starts nothing
    before = _mpisuper.left_files()
    proc = run_script(
        tmp_path,
        """
        import json, time
        import dispatcher as dp

        ex = dp.MPIExecutor(2)
        try:
            dp.run(ex, [3])
        except TypeError:
            pass
        started = ex.worker_pids()
        closes = []
        for delay in (0, 0.1, 0.3):  # at several points of the start-up
            ex = dp.MPIExecutor(2)
            ex.open()  # the ranks start in the background
            time.sleep(delay)
            begin = time.monotonic()
            ex.close()
            closes.append(time.monotonic() - begin)
        print(json.dumps({"started": started, "close": max(closes)}))
        """,
    )
    out = outcome(proc)
    assert out["started"] == []
    assert out["close"] < _mpisuper.GRACE, out
    assert "TERMINATED" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert _left_behind(before) == set()


def test_closing_while_a_rank_is_still_setting_up_lets_it_finish_quietly(tmp_path):
    # a rank in its initializer was killed at close, and mpiexec then reported the
    # job as terminated in the script's output
    proc = run_script(
        tmp_path,
        """
        import os, time
        import dispatcher as dp

        def set_up():
            try:
                os.close(os.open("first", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                time.sleep(2)  # the second rank is slow to set up

        with dp.MPIExecutor(2, initializer=set_up) as ex:
            print(dp.execute(dp.Op(abs, -3), ex), flush=True)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3", proc.stdout
    assert "TERMINATED" not in proc.stderr, proc.stderr


def test_a_world_rank_sent_sigterm_says_which_node_it_was_running(tmp_path):
    # under mpiexec -n 3 python -m mpi4py.futures, a rank that dies ends the whole
    # job (MPI's rule): what can be said must be said before
    code = """
        import os, time
        import dispatcher as dp

        def sleepy(path):
            with open(path, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(60)

        ex = dp.MPIExecutor()
        dp.execute(dp.Op(sleepy, "running.pid"), ex)
        """
    (tmp_path / "script.py").write_text(textwrap.dedent(code))
    job = start_script([MPIEXEC, "-n", "3", sys.executable, "-m", "mpi4py.futures", "script.py"], tmp_path)
    try:
        marker = tmp_path / "running.pid"
        end = time.monotonic() + 60
        while time.monotonic() < end and not (marker.exists() and marker.read_text()):
            time.sleep(0.05)
        os.kill(int(marker.read_text()), signal.SIGTERM)
        _, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert "was running node(s) 'sleepy' when it was sent SIGTERM" in err


# -- the asyncio executor ----------------------------------------------------------------


@pytest.mark.parametrize(
    "raising, expected",
    [("SystemExit(7)", "SystemExit: 7"), ("Custom('x')", "Custom: x"), ("KeyboardInterrupt()", "raised")],
)
def test_async_executor_plain_node_raising_a_base_exception(tmp_path, raising, expected):
    proc = run_script(
        tmp_path,
        f"""
        import json
        import dispatcher as dp

        class Custom(BaseException):
            pass

        def node():
            raise {raising}

        try:
            (result,) = dp.run(dp.AsyncExecutor(sync="loop"), [dp.Op(node)], throw_error=False)
            said = str(result.error)
        except KeyboardInterrupt:
            said = "raised"  # Ctrl-C in the thread that drives the run ends it
        print(json.dumps(said))
        """,
        timeout=30,
    )
    assert expected in outcome(proc)


@pytest.mark.parametrize("count", [40, 200])
def test_ctrl_c_stops_an_async_executor_running_plain_nodes_on_its_loop(tmp_path, count):
    proc = run_script(
        tmp_path,
        f"""
        import json, os, signal, threading, time
        import dispatcher as dp

        started = []
        def nap(i):
            started.append(i)
            time.sleep(0.3)

        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        start = time.monotonic()
        try:
            dp.execute([dp.Op(nap, i) for i in range({count})], dp.AsyncExecutor(sync="loop"))
        except KeyboardInterrupt:
            print(json.dumps({{"started": len(started), "seconds": time.monotonic() - start}}))
        """,
        timeout=60,
    )
    out = outcome(proc)
    assert out["started"] < 10  # about 4 by the interrupt, then none (all of them before)
    assert out["seconds"] < 5


def test_a_blocking_plain_node_with_a_timeout_fails_on_time_on_the_loop(tmp_path):
    proc = run_script(
        tmp_path,
        """
        import json, time
        import dispatcher as dp

        start = time.monotonic()
        (result,) = dp.run(dp.AsyncExecutor(sync="loop"), [dp.op(time.sleep, timeout=0.3)(5)],
                           throw_error=False)
        print(json.dumps([type(result.error.error).__name__, time.monotonic() - start]))
        """,
        timeout=30,
    )
    kind, seconds = outcome(proc)
    assert kind == "TimeoutError" and seconds < 3


# -- dask: a node that kills its worker ----------------------------------------------------

DASK_CLUSTER = "n_workers=2, threads_per_worker=1, dashboard_address=':0'"


@pytest.mark.slow  # six worker deaths: in make test-all
def test_a_dask_node_that_kills_its_worker_fails_after_retries_plus_one_attempts(tmp_path):
    proc = run_script(
        tmp_path,
        f"""
        import json, os, time
        import dispatcher as dp

        if __name__ == "__main__":
            with dp.DaskExecutor({DASK_CLUSTER}) as ex:
                ex.start()
                start = time.monotonic()
                (result,) = dp.run(ex, [dp.op(os._exit, label="killer")(3)], throw_error=False)
                seconds = time.monotonic() - start
                deaths = ex.client.run_on_scheduler(
                    lambda dask_scheduler: sum(1 for _, m in dask_scheduler.get_events("all")
                                               if m.get("action") == "remove-worker"
                                               and not m.get("expected")))
                print(json.dumps([type(result.error.error).__name__, result.error.attempts,
                                  seconds, deaths]))
        """,
        timeout=120,
    )
    kind, attempts, seconds, deaths = outcome(proc)
    assert kind == "WorkerLostError"
    assert attempts == 6 and deaths == 6  # retries=5: 6 attempts, one worker each
    assert seconds < 30  # it took 4 s to 53 s, with 24 worker deaths


@pytest.mark.parametrize("raising", ["KeyboardInterrupt()", "SystemExit(7)"])
def test_a_dask_node_raising_a_base_exception_fails_without_killing_its_worker(tmp_path, raising):
    proc = run_script(
        tmp_path,
        f"""
        import json, time
        import dispatcher as dp

        def node():
            raise {raising}

        if __name__ == "__main__":
            with dp.DaskExecutor({DASK_CLUSTER}) as ex:
                ex.start()
                start = time.monotonic()
                (result,) = dp.run(ex, [dp.Op(node)], throw_error=False)
                print(json.dumps([type(result.error.error).__name__, result.error.attempts,
                                  time.monotonic() - start]))
        """,
        timeout=120,
    )
    kind, attempts, seconds = outcome(proc)
    assert kind == raising.split("(")[0] and attempts == 1
    assert seconds < 10  # it took 52 s, with 24 worker restarts
    assert "Compute Failed" not in proc.stderr  # the library reports failures, not dask's logs


def test_the_embedded_dask_cluster_is_quiet_and_starts_on_request(tmp_path):
    proc = run_script(
        tmp_path,
        """
        import json
        import dispatcher as dp

        def boom():
            raise ValueError("boom")

        if __name__ == "__main__":
            with dp.DaskExecutor(n_workers=1) as first, dp.DaskExecutor(n_workers=1) as second:
                started = first.start() is first and first.client is not None
                results = [dp.run(ex, [dp.Op(boom)], throw_error=False)[0] for ex in (first, second)]
                print(json.dumps([started] + [str(r.error) for r in results]))
        """,
        timeout=120,
    )
    started, *errors = outcome(proc)
    assert started and errors == ["node 'boom' failed: ValueError: boom"] * 2
    assert "Compute Failed" not in proc.stderr and "already in use" not in proc.stderr


# -- nested runs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        "dp.ThreadExecutor(2)",
        "dp.ThreadExecutor(1)",
        "dp.AsyncExecutor(sync='threads', max_workers=1)",
        "dp.PoolExecutor(cf.ThreadPoolExecutor(1))",
    ],
)
def test_nested_runs_on_the_executor_a_node_runs_on_do_not_deadlock(tmp_path, make):
    # a workflow tool's task starting its own tasks: three levels deep
    proc = run_script(
        tmp_path,
        f"""
        import concurrent.futures as cf, json, time
        import dispatcher as dp

        ex = {make}

        def fit(i):
            time.sleep(0.02)
            return i

        def tool(k):
            return sum(dp.execute([dp.Op(fit, i) for i in range(4)], ex)) + k

        def workflow():
            return dp.execute([dp.Op(tool, k) for k in range(3)], ex)

        print(json.dumps(dp.execute([dp.Op(workflow), dp.Op(workflow)], ex)))
        """,
        timeout=60,
    )
    assert outcome(proc) == [[6, 7, 8], [6, 7, 8]]


@pytest.mark.parametrize("limit", [1, 2])
def test_nested_async_runs_under_max_concurrency_do_not_deadlock(tmp_path, limit):
    # a coroutine node awaiting a nested run gives back its place while it waits
    proc = run_script(
        tmp_path,
        f"""
        import asyncio, json
        import dispatcher as dp

        ex = dp.AsyncExecutor(max_concurrency={limit})

        async def fit(i):
            await asyncio.sleep(0.01)
            return i

        async def tool(k):
            results = await dp.run_async(ex, [dp.Op(fit, i) for i in range(4)])
            return sum(r.value for r in results) + k

        async def workflow():
            return [r.value for r in await dp.run_async(ex, [dp.Op(tool, k) for k in range(3)])]

        print(json.dumps(dp.execute([dp.Op(workflow), dp.Op(workflow)], ex)))
        """,
        timeout=60,
    )
    assert outcome(proc) == [[6, 7, 8], [6, 7, 8]]


# -- processes a node leaves running --------------------------------------------------------


@pytest.mark.parametrize("executor", ["dp.ProcessExecutor(2)", "dp.MPIExecutor(2)"])
def test_a_process_left_running_by_a_node_does_not_hold_the_scripts_output(tmp_path, executor):
    start = time.monotonic()
    proc = run_script(
        tmp_path,
        f"""
        import subprocess
        import dispatcher as dp

        def daemon():
            subprocess.Popen("sleep 30 &", shell=True)
            return "started"

        with {executor} as ex:
            print(dp.execute(dp.Op(daemon), ex), flush=True)
        """,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "started"
    assert time.monotonic() - start < 20  # the caller reads to the end: it used to wait 30 s


# MPI's spawned ranks share the pool with ProcessExecutor: their case runs in `make test-all`
@pytest.mark.parametrize(
    "executor",
    [
        "dp.ProcessExecutor(1, retries=0)",
        pytest.param("dp.MPIExecutor(1, retries=0)", marks=pytest.mark.slow),
    ],
)
def test_a_worker_that_dies_is_noticed_while_a_process_it_forked_lives_on(tmp_path, executor):
    # the forked child once held the worker's connection: the death went unseen
    # until the child ended
    proc = run_script(
        tmp_path,
        f"""
        import json, os, time
        import dispatcher as dp

        def node():
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            os._exit(3)

        with {executor} as ex:
            begin = time.monotonic()
            (result,) = dp.run(ex, [dp.Op(node)], throw_error=False)
            print(json.dumps([type(result.error.error).__name__, time.monotonic() - begin]))
        """,
    )
    kind, seconds = outcome(proc)
    assert kind == "WorkerLostError" and seconds < 20


# -- timeouts count the call, not a fresh worker's imports ---------------------------------


@pytest.mark.parametrize(
    "executor", ["dp.ProcessExecutor(1)", pytest.param("dp.MPIExecutor(1)", marks=pytest.mark.slow)]
)
def test_a_timeout_does_not_count_the_import_of_the_nodes_module(tmp_path, executor):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "slowimport.py").write_text(
        "import time\ntime.sleep(1.5)\n\ndef quick(x):\n    return x + 1\n"
    )
    proc = run_script(
        tmp_path,
        f"""
        import json, sys
        sys.path.insert(0, "lib")
        import dispatcher as dp
        import slowimport  # each fresh worker imports it again when a call arrives

        with {executor} as ex:
            print(json.dumps(dp.execute(dp.op(slowimport.quick, timeout=1.0, retries=0)(1), ex)))
        """,
        timeout=120,
    )
    assert outcome(proc) == 2


# -- what a run leaves behind ----------------------------------------------------------------


LEAK_SCRIPT = """
import concurrent.futures as cf, ctypes, gc, json, os, sys, threading
import numpy as np
import psutil
import dispatcher as dp

def make(i):
    # 320 kB: a run moves about 7 MB between processes, and a value kept from each
    # run would add over 100 MB by the last
    return np.full(40_000, float(i))

def add(a, b):
    return a + b

def total(a):
    return float(a.sum())

def state():
    # what the process holds, not what the C allocator keeps cached: freed memory
    # goes back first (worker threads allocate from arenas of their own, whose
    # cached size varies with how the threads happened to interleave)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    me = psutil.Process()
    return {"rss": me.memory_info().rss / 2**20, "fds": me.num_fds(),
            "threads": threading.active_count(), "children": len(me.children(recursive=True))}

if __name__ == "__main__":
    ex = EXECUTOR
    seen = {}
    for run in range(1, RUNS + 1):
        a = [dp.Op(make, i) for i in range(4)]
        b = [dp.Op(add, a[i], a[i + 1]) for i in range(3)]
        dp.execute(dp.Op(total, dp.Op(add, b[0], b[2])), ex)
        if run in (20, RUNS):
            seen[run] = state()
    ex.close()
    print(json.dumps([seen[20], seen[RUNS]]))
"""


# make test runs 150 runs on threads; the slow set (make test-all) runs 400 on every
# executor, and 150 on those whose workers take several seconds to make them
@pytest.mark.parametrize(
    "executor",
    [
        pytest.param("dp.PoolExecutor(cf.ProcessPoolExecutor(2))", marks=pytest.mark.slow),
        pytest.param("dp.MPIExecutor(2)", marks=pytest.mark.slow),
        pytest.param("dp.ProcessExecutor(2)", marks=pytest.mark.slow),
        "dp.ThreadExecutor(2)",
    ],
)
@pytest.mark.parametrize("runs", [150, pytest.param(400, marks=pytest.mark.slow)])
@pytest.mark.timeout(330)  # beyond the script's own limit, which says what it was doing
def test_the_driver_keeps_nothing_from_run_to_run(tmp_path, executor, runs):
    # the RSS after the last run within 10 % of the RSS after run 20
    code = LEAK_SCRIPT.replace("EXECUTOR", executor).replace("RUNS", str(runs))
    early, late = outcome(run_script(tmp_path, code, timeout=300))
    assert late["rss"] <= early["rss"] * 1.10, (early, late)
    assert (late["fds"], late["threads"], late["children"]) == (
        early["fds"],
        early["threads"],
        early["children"],
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_spawned_mpi_job_ended_by_a_signal_leaves_no_shared_memory(tmp_path, signum):
    before = _mpisuper.left_files()
    temporary_before = _our_temporary_files()
    (tmp_path / "script.py").write_text(
        textwrap.dedent(
            """
            import time
            import dispatcher as dp
            ex = dp.MPIExecutor(2).start()
            print(*ex.worker_pids(), flush=True)
            dp.execute([dp.Op(time.sleep, 60) for _ in range(4)], ex)
            """
        )
    )
    proc = start_script([sys.executable, "script.py"], tmp_path)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        time.sleep(0.5)
        proc.send_signal(signum)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert wait_gone(pids, 20.0) == []
    assert _left_behind(before) == set()
    assert _our_temporary_files() - temporary_before == set()  # no socket or folder of the pool


def hold_open(path: str, seconds: float) -> str:
    """Keep ``path`` open and mapped for ``seconds`` (what a rank does with its data)."""
    import mmap

    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0):
        time.sleep(seconds)
    return path


def test_the_files_ranks_used_in_tmp_are_not_taken_for_mpis_leftovers():
    """The supervisor of a spawned job removes MPI's own files that killed ranks
    leave (shared memory, Hydra's topology files), never the ranks' files or an
    environment that lives under /tmp (its mpiexec is mapped by the proxies)."""
    fd, path = tempfile.mkstemp(prefix="rank-data-", dir="/tmp")
    os.write(fd, b"x" * 4096)
    os.close(fd)
    try:
        with dp.MPIExecutor(2) as ex:
            assert dp.execute([dp.Op(hold_open, path, 2.5) for _ in range(2)], ex) == [path, path]
        deadline = time.monotonic() + 3  # the supervisor cleans up once mpiexec has ended
        while os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert os.path.exists(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _left_behind(before: set, wait: float = 20.0) -> set:
    """MPI files new since ``before`` that no live process uses, once those of MPI
    jobs that were only starting (another copy of the suite beside this one) have
    had ``wait`` seconds to be used or removed: what the tested job left behind."""
    end = time.monotonic() + wait
    while True:
        left = _mpisuper.left_files() - before
        if left:
            left -= _mpisuper.files_in_use()
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.2)


def _our_temporary_files() -> set:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("dispatcher-")}
