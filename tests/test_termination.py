"""SIGTERM during a run (what a batch system sends on ``scancel`` or at a time
limit): the run stops, every node it had not finished fails with ``Terminated``
saying so, the signal's handler is put back, and no worker outlives the run.
The same through a real Slurm job is in ``tests/slurm``."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import dispatcher as dp
from dispatcher.engine import driver

from .conftest import wait_gone

RELEASE = threading.Event()  # lets the threads of the thread executor go after the run


def quick(i):
    return i


def hold(path):
    """Say it started (a file), then wait for long."""
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    if threading.current_thread() is threading.main_thread():
        time.sleep(60)  # the driver's thread: SIGTERM interrupts the sleep
    else:
        RELEASE.wait(60)
    return path


def _sigterm_when(paths, timeout=60.0):
    """SIGTERM to this process once every file of ``paths`` exists."""

    def watch():
        deadline = time.monotonic() + timeout
        while not all(os.path.exists(p) for p in paths):
            if time.monotonic() > deadline:  # the run went wrong: its test fails, the suite goes on
                return
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


EXECUTORS = {
    "serial": dp.SerialExecutor,
    "threads": lambda: dp.ThreadExecutor(2),
    "processes": lambda: dp.ProcessExecutor(2),
}


@pytest.mark.parametrize("name", sorted(EXECUTORS))
def test_sigterm_fails_the_unfinished_nodes_and_the_run_returns(name, tmp_path, monkeypatch):
    monkeypatch.setattr(driver, "SETTLE_SECONDS", 1.0)  # threads cannot be stopped: do not wait 10 s
    RELEASE.clear()
    running = 1 if name == "serial" else 2
    paths = [str(tmp_path / f"started-{i}") for i in range(running)]
    done = dp.Op(quick, 7)
    held = [dp.Op(hold, p) for p in paths]
    after = dp.Op(sum, [done, *[dp.Op(len, h) for h in held]])
    _sigterm_when(paths)
    t0 = time.monotonic()
    with EXECUTORS[name]() as ex:
        try:
            results = dp.run(ex, [done, *held, after], throw_error=False)
        finally:
            RELEASE.set()  # (threads cannot be stopped: the run abandoned them after a while)
    assert time.monotonic() - t0 < 45  # nothing waited for the held nodes to end
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back
    assert results[0].value == 7
    for r in results[1:-1]:
        assert isinstance(r.error.error, dp.Terminated), r.error
        assert "stopped by SIGTERM" in str(r.error) and "while the node was running" in str(r.error)
        assert r.error.node is r.node
    assert "before the node started" in str(results[-1].error)
    if name == "processes":  # the workers that ran the held nodes are gone
        assert wait_gone([int(pathlib.Path(p).read_text()) for p in paths]) == []


def test_sigterm_with_throw_error_raises_the_running_node_error(tmp_path):
    path = str(tmp_path / "started")
    held = dp.Op(hold, path)
    _sigterm_when([path])
    with pytest.raises(dp.DependencyError) as info, dp.ProcessExecutor(1) as ex:
        dp.execute(dp.Op(len, held), ex)
    assert info.value.node is held and isinstance(info.value.error, dp.Terminated)
    assert isinstance(info.value.__cause__, dp.Terminated)


def test_a_handler_of_the_script_is_kept(tmp_path):
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        path = str(tmp_path / "started")
        _sigterm_when([path])

        def wait_for_signal():
            open(path, "w").close()
            deadline = time.monotonic() + 30
            while not seen and time.monotonic() < deadline:
                time.sleep(0.01)
            return len(seen)

        assert dp.execute(dp.Op(wait_for_signal), dp.SerialExecutor()) == 1
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


SCRIPT = """
import os, sys, time
import dispatcher as dp
from dispatcher.engine import driver

def hold(i):
    with open(os.path.join(HERE, f"pid-{i}.tmp"), "w") as f:
        f.write(str(os.getpid()))
    os.replace(os.path.join(HERE, f"pid-{i}.tmp"), os.path.join(HERE, f"pid-{i}"))
    time.sleep(120)

def outer():  # a run inside a node passes the signal on to the run that drives it
    with dp.ProcessExecutor(2) as ex:
        return dp.execute(dp.Op(sum, [dp.Op(hold, i) for i in range(2)]), ex)

try:
    dp.execute(dp.Op(outer), dp.SerialExecutor())
except dp.DependencyError as exc:
    print("error:", exc, flush=True)
    sys.exit(3)
"""


def test_a_script_sent_sigterm_says_why_and_leaves_no_worker(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT).replace("HERE", repr(str(tmp_path))))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    files = [tmp_path / f"pid-{i}" for i in range(2)]
    deadline = time.monotonic() + 120
    while not all(f.exists() for f in files):  # both workers are in their node
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    pids = [int(f.read_text()) for f in files]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "error: node 'outer' failed: Terminated: the run was stopped by SIGTERM" in out
    assert "while the node was running" in out
    assert wait_gone(pids, reaped=True) == [], "a worker outlived the script"


def test_a_signal_between_the_loops_steps_settles_the_run_too(tmp_path, monkeypatch):
    """SIGTERM's handler may raise anywhere in the driver's thread, also outside the
    wait for reports (here: just after it): the run settles the same way."""
    monkeypatch.setattr(driver, "SETTLE_SECONDS", 1.0)
    RELEASE.clear()
    path = str(tmp_path / "started")
    serve = driver._serve
    signalled = []

    def serve_then_signal(state, executor, inbox, request):
        answer = serve(state, executor, inbox, request)
        if os.path.exists(path) and not signalled:
            signalled.append(True)
            raise dp.Terminated("SIGTERM between the loop's steps")
        return answer

    def once_held(path):  # its report, once the held node runs, ends a wait
        while not os.path.exists(path):
            time.sleep(0.01)
        return 1

    monkeypatch.setattr(driver, "_serve", serve_then_signal)
    with dp.ThreadExecutor(2) as ex:
        try:
            done, held = dp.run(ex, [dp.Op(once_held, path), dp.Op(hold, path)], throw_error=False)
        finally:
            RELEASE.set()
    assert done.value == 1
    assert isinstance(held.error.error, dp.Terminated) and "while the node was running" in str(held.error)


def test_sigterm_during_a_timed_serial_node_says_it_was_running(tmp_path):
    path = str(tmp_path / "started")
    held = dp.op(hold, timeout=50)(path)  # a timed node runs under the alarm of the serial executor
    _sigterm_when([path])
    (result,) = dp.run(dp.SerialExecutor(), [held], throw_error=False)
    assert isinstance(result.error.error, dp.Terminated)
    assert "while the node was running" in str(result.error)


def test_sigterm_twice_still_returns_the_results(tmp_path, monkeypatch):
    """srun passes SIGTERM on to its tasks, which slurmstepd signals too: a second
    one while the run waits for its stopped nodes does not lose what the run says."""
    monkeypatch.setattr(driver, "SETTLE_SECONDS", 5.0)
    RELEASE.clear()
    path = str(tmp_path / "started")

    def twice():
        while not os.path.exists(path):
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # the run is waiting for its thread, which cannot be stopped
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=twice, daemon=True).start()
    with dp.ThreadExecutor(2) as ex:
        try:
            (result,) = dp.run(ex, [dp.Op(hold, path)], throw_error=False)
        finally:
            RELEASE.set()
    assert isinstance(result.error.error, dp.Terminated)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_process_worker_leaves_sigterm_to_its_driver():
    """scancel signals every process of the job: the workers let the driver, which
    gets it too, decide; they end when the executor stops them."""
    with dp.ProcessExecutor(1) as ex:
        (pid,) = ex.start().worker_pids()
        os.kill(pid, signal.SIGTERM)
        assert dp.execute(dp.Op(os.getpid), ex) == pid  # the same worker, alive, runs the next node
    assert wait_gone([pid], reaped=True) == []
