"""Runs that resume: real drivers killed with SIGKILL and run again, two drivers on
one store at once, and a function whose source is edited between two runs."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import textwrap
import time

import pytest

from dispatcher.store import FileStore

from .conftest import EXECUTOR_NAMES, run_script, start_script, wait_gone

QUICK = ("serial", "threads", "processes")  # the rest of the registry runs in the slow set

DRIVER = """
import asyncio, concurrent.futures as cf, os, sys, time
import dispatcher as dp
from dispatcher.executors.registry import EXECUTORS

def step(i):
    with open(os.environ["STEP_LOG"], "a") as log:  # read at run time: not part of the key
        log.write(f"{i}\\n")
    time.sleep(float(os.environ["STEP_SECONDS"]) * (1 + i / 10))
    return i * i

async def step_async(i):  # for an executor whose nodes are coroutines
    with open(os.environ["STEP_LOG"], "a") as log:
        log.write(f"{i}\\n")
    await asyncio.sleep(float(os.environ["STEP_SECONDS"]) * (1 + i / 10))
    return i * i

def total(*values):
    return sum(values)

class Resources:
    workers, threads = 2, 4
    def dask_client(self):
        from distributed import Client, LocalCluster
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
        return Client(cluster, set_as_default=False)
    def thread_pool(self):
        return cf.ThreadPoolExecutor(4)

if __name__ == "__main__":
    name, store, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    entry = EXECUTORS[name]
    func = step_async if entry.flavour == "async" else step
    with entry.create(Resources()) as ex:
        out = dp.Op(total, *[dp.Op(func, i) for i in range(n)])
        print("total", dp.run(ex, [out], store=store)[0].value, flush=True)
"""


def _driver(tmp_path, name, n=30, seconds=0.05, log="steps.log"):
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    env = {"STEP_LOG": str(tmp_path / log), "STEP_SECONDS": str(seconds)}
    return start_script([sys.executable, str(script), name, str(tmp_path / "store"), str(n)], tmp_path, env)


def _calls(tmp_path, log="steps.log") -> list[int]:
    path = tmp_path / log
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _wait_for_calls(tmp_path, count, proc, timeout=120, log="steps.log") -> None:
    end = time.monotonic() + timeout
    while len(_calls(tmp_path, log)) < count:
        if proc.poll() is not None:
            pytest.fail(f"the driver ended early: {proc.communicate()}")
        if time.monotonic() > end:
            pytest.fail(f"the driver made {len(_calls(tmp_path, log))} calls in {timeout} s")
        time.sleep(0.02)


def _finish(proc, timeout=180) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        _kill_session(proc)
    assert proc.returncode == 0, err
    return out


def _session_pids(sid: int) -> list:
    """The processes of session ``sid`` (the driver's: it leads one)."""
    pids = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if entry.isdigit() and os.getsid(int(entry)) == sid:
                pids.append(int(entry))
    return pids


def _kill_session(proc) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _stored_steps(tmp_path) -> int:
    if not (tmp_path / "store").exists():
        return 0
    return sum(e.function.startswith("step") for e in FileStore(tmp_path / "store").entries())


def _wait_for_stored(tmp_path, count, proc, timeout=120) -> None:
    end = time.monotonic() + timeout
    while _stored_steps(tmp_path) < count:
        if proc.poll() is not None:
            pytest.fail(f"the driver ended early: {proc.communicate()}")
        if time.monotonic() > end:
            pytest.fail(f"the driver stored {_stored_steps(tmp_path)} values in {timeout} s")
        time.sleep(0.02)


@pytest.mark.parametrize(
    "name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow) for n in EXECUTOR_NAMES]
)
def test_a_driver_killed_halfway_resumes_where_it_stopped(tmp_path, name):
    first = _driver(tmp_path, name)
    _wait_for_stored(tmp_path, 12, first)
    os.kill(first.pid, signal.SIGKILL)  # the driver alone, as the out-of-memory killer would
    first.wait()
    # its workers see it gone and end, and so do the helpers that clean up after
    # them (loky's resource tracker unlinks its semaphores): nothing is left
    left = wait_gone(_session_pids(first.pid), 60)
    _kill_session(first)
    first.communicate()
    assert not left, f"processes of the killed driver still running: {left}"
    stored = _stored_steps(tmp_path)
    before = _calls(tmp_path)
    assert 0 < stored < 30
    again = _driver(tmp_path, name)
    out = _finish(again)
    assert f"total {sum(i * i for i in range(30))}" in out
    rerun = _calls(tmp_path)[len(before) :]
    assert len(rerun) == 30 - stored, (stored, rerun)  # what was stored is not called again
    assert set(rerun) | set(before) == set(range(30))
    assert _stored_steps(tmp_path) == 30


def test_two_drivers_at_once_compute_each_node_once(tmp_path):
    drivers = [_driver(tmp_path, "threads", n=24, seconds=0.2) for _ in range(2)]
    outs = [_finish(d) for d in drivers]
    assert all(f"total {sum(i * i for i in range(24))}" in out for out in outs)
    calls = _calls(tmp_path)
    assert sorted(calls) == list(range(24)), calls  # each exactly once


def test_the_claims_of_a_killed_driver_lapse_and_another_finishes_the_work(tmp_path):
    holder = _driver(tmp_path, "threads", n=16, seconds=30)  # holds 4 claims for 30 s
    _wait_for_calls(tmp_path, 4, holder)
    waiter = _driver(tmp_path, "threads", n=16, seconds=0.05)  # takes the other 12, waits for 4
    time.sleep(1.5)
    assert waiter.poll() is None  # still waiting for the held nodes
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    _kill_session(holder)
    holder.communicate()
    out = _finish(waiter, timeout=60)
    assert f"total {sum(i * i for i in range(16))}" in out
    calls = _calls(tmp_path)
    assert sorted(set(calls)) == list(range(16))
    assert len(calls) == 16 + 4  # the killed driver's 4 ran twice, nothing else


PIPELINE = """
import os

def log(name):
    with open(os.environ["STEP_LOG"], "a") as f:
        f.write(name + "\\n")

def load(n):
    log("load")
    return list(range(n))

def scale(values):
    log("scale")
    return [v * {factor} for v in values]

def count(values):
    log("count")
    return len(values)

def report(scaled, n):
    log("report")
    return sum(scaled), n
"""

RUN_PIPELINE = """
import sys
sys.path.insert(0, {modules!r})
import dispatcher as dp
import pipeline as p

data = dp.Op(p.load, 10)
print(dp.execute(dp.Op(p.report, dp.Op(p.scale, data), dp.Op(p.count, data)), store={store!r}))
"""


def test_editing_one_function_reruns_it_and_what_is_downstream_only(tmp_path):
    modules = tmp_path / "modules"
    modules.mkdir()
    env = {"STEP_LOG": str(tmp_path / "steps.log")}

    def run(factor):
        (modules / "pipeline.py").write_text(textwrap.dedent(PIPELINE.format(factor=factor)))
        code = RUN_PIPELINE.format(modules=str(modules), store=str(tmp_path / "store"))
        done = run_script(tmp_path, code, env=env, command=[sys.executable, "-B"])
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def logged():
        path = tmp_path / "steps.log"
        lines = path.read_text().split()
        path.write_text("")
        return sorted(lines)

    assert run(2) == "(90, 10)" and logged() == ["count", "load", "report", "scale"]
    assert run(2) == "(90, 10)" and (tmp_path / "steps.log").read_text() == ""
    assert run(3) == "(135, 10)" and logged() == ["report", "scale"]
