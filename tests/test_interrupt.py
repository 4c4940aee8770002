"""Ctrl-C during a run: the interrupt reaches the caller, no new node starts, and
nothing is left running."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import dispatcher as dp


def _interrupt_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


class Tracker:
    def __init__(self):
        self.lock = threading.Lock()
        self.started = 0
        self.running = 0

    def job(self, i):
        with self.lock:
            self.started += 1
            self.running += 1
        try:
            time.sleep(0.1)
        finally:
            with self.lock:
                self.running -= 1
        return i

    async def ajob(self, i):
        self.started += 1
        self.running += 1
        try:
            await asyncio.sleep(0.1)
        finally:
            self.running -= 1
        return i


@pytest.mark.parametrize("name", ["serial", "threads", "async"])
def test_ctrl_c_stops_the_run_and_leaves_nothing_running(name):
    tracker = Tracker()
    job = tracker.ajob if name == "async" else tracker.job
    ex = {
        "serial": dp.SerialExecutor,
        "threads": lambda: dp.ThreadExecutor(4),
        "async": lambda: dp.AsyncExecutor(max_concurrency=4),
    }[name]()
    nodes = [dp.Op(job, i) for i in range(200)]
    timer = _interrupt_after(0.35)
    with pytest.raises(KeyboardInterrupt):
        dp.run(ex, nodes)
    timer.join()
    assert tracker.running == 0
    started = tracker.started
    assert 0 < started < 200
    time.sleep(0.3)
    assert tracker.started == started  # nothing new started after the interrupt
    # the executor still works
    assert dp.execute(dp.Op(sum, [1, 2]), ex) == 3
    ex.close()


def test_keyboard_interrupt_inside_a_serial_node_propagates():
    def stop():
        raise KeyboardInterrupt

    ran = []
    with pytest.raises(KeyboardInterrupt):
        dp.run(dp.SerialExecutor(), [dp.Op(stop), dp.Op(ran.append, 1)])
    assert ran == []


def test_ctrl_c_in_a_script_exits_without_leftover_threads(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time, dispatcher as dp
            def work(i):
                time.sleep(0.2)
                return i
            with dp.ThreadExecutor(4) as ex:
                print("started", flush=True)
                dp.run(ex, [dp.Op(work, i) for i in range(1000)])
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "started"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err


def test_ctrl_c_that_reaches_another_thread_still_ends_the_run(tmp_path):
    """A process's signal may reach any of its threads; Python runs the handler in
    the main thread once it wakes, so the driver never waits without end."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import signal, threading, time, dispatcher as dp
            def nap():
                time.sleep(120)
            def poke():
                time.sleep(1.0)
                signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # to this thread alone
            class Ended(dp.Callback):
                def on_end(self):
                    print("settled", flush=True)
            with dp.ProcessExecutor(1) as ex:
                ex.start()
                threading.Thread(target=poke, daemon=True).start()
                try:
                    dp.run(ex, [dp.Op(nap)], callbacks=[Ended()])
                except KeyboardInterrupt:
                    print("interrupted", flush=True)
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["settled", "interrupted"], proc.stderr  # the run settled, then raised
    assert "Error" not in proc.stderr, proc.stderr
