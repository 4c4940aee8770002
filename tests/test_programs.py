"""Nodes that run programs (:mod:`dispatcher.programs`): exit codes, the error
stream in the error, placeholders, and no program left running however the node
ends."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

import dispatcher as dp
from dispatcher.guard import _live_groups


def marker() -> str:
    """A number of seconds no other program sleeps: how the tests find theirs."""
    return f"{4000 + uuid.uuid4().int % 5000}.{uuid.uuid4().int % 10**6:06d}"


def running(mark: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", f"sleep {mark}"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def gone(mark: str, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while running(mark):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


EXECUTORS = {
    "serial": dp.SerialExecutor,
    "threads": lambda: dp.ThreadExecutor(2),
    "processes": lambda: dp.ProcessExecutor(2),
}


@pytest.mark.parametrize("kind", list(EXECUTORS))
def test_output_exit_codes_and_the_error_stream(kind, tmp_path):
    with EXECUTORS[kind]() as ex:
        made = dp.Op(str, tmp_path / "in.txt")  # an argument made upstream
        ok = dp.command(
            ["sh", "-c", 'echo "$1" {cores}; echo note >&2', "sh", made], cores=(1, 2), cwd=tmp_path
        )
        result = dp.execute(ok, ex)
        assert isinstance(result, dp.CommandResult) and result.returncode == 0
        assert result.stdout.split()[0] == str(tmp_path / "in.txt") and result.stderr == "note\n"
        assert int(result.stdout.split()[1]) in (1, 2) and ok.label == "sh"
        bad = dp.command(["sh", "-c", "for i in $(seq 30); do echo line$i >&2; done; exit 3"], retries=0)
        with pytest.raises(dp.DependencyError) as info:
            dp.execute(bad, ex)
        error = info.value.error
        assert isinstance(error, dp.CommandError) and error.returncode == 3
        assert "exited with code 3" in str(error) and "line30" in str(error) and "line10\n" not in str(error)
        with pytest.raises(dp.DependencyError, match="No such file"):
            dp.execute(dp.command(["no-such-program-here"], retries=0), ex)


def test_placeholders_and_environment(tmp_path):
    node = dp.command(
        ["sh", "-c", 'echo {cores} {hosts} "$OMP_NUM_THREADS" "$EXTRA"; cat {hostfile}; echo {literal}'],
        cores=3,
        env={"EXTRA": "yes"},
        cwd=tmp_path,
    )
    with dp.ThreadExecutor(2, cores=4) as ex:
        out = dp.execute(node, ex).stdout.splitlines()
    host = dp.allocation().hosts[0][0]
    assert out == [f"3 {host} 3 yes", f"{host}:3", "{literal}"]
    assert not list(tmp_path.glob(".hostfile.*"))  # removed after the call


@pytest.mark.parametrize("kind", list(EXECUTORS))
def test_a_timeout_ends_the_program_and_all_it_started(kind):
    mark = marker()
    node = dp.command(["sh", "-c", f"sleep {mark} & sleep {mark}"], timeout=1, retries=0)
    with EXECUTORS[kind]() as ex:
        with pytest.raises(dp.DependencyError, match="timeout"):
            dp.execute(node, ex)
        assert gone(mark)


@pytest.mark.parametrize("kind", list(EXECUTORS))
def test_a_program_left_running_by_a_command_that_ended_is_ended(kind):
    mark = marker()
    with EXECUTORS[kind]() as ex:
        assert dp.execute(dp.command(["sh", "-c", f"sleep {mark} & echo started"]), ex).stdout == "started\n"
        assert gone(mark)


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_a_failure_elsewhere_ends_the_programs_the_run_gives_up(kind):
    mark = marker()
    long = dp.command(["sh", "-c", f"sleep {mark}"])

    def fails_soon():
        time.sleep(0.5)
        raise ValueError("elsewhere")

    with EXECUTORS[kind]() as ex:
        with pytest.raises(dp.DependencyError, match="elsewhere"):
            dp.execute([long, dp.op(retries=0)(fails_soon)()], ex)
        assert gone(mark)


def test_a_stop_that_comes_while_the_program_starts_ends_it(monkeypatch):
    """The run gives a command's call up (Ctrl-C, a failure elsewhere) between the
    start of the call and the start of its program: the program is ended as soon
    as it starts, not left running after the run."""
    from dispatcher import programs

    mark = marker()
    node = dp.command(["sh", "-c", f"sleep {mark}"], retries=0, timeout=10)  # (before: TimeoutError)
    popen = subprocess.Popen

    def stopped_meanwhile(*args, **kwargs):
        proc = popen(*args, **kwargs)
        node.func.__dispatcher_stop__()  # as the run's stop, before the call knows its group
        return proc

    monkeypatch.setattr(programs.subprocess, "Popen", stopped_meanwhile)
    with pytest.raises(dp.CommandError, match="killed by signal"):
        node.func(node._args[0])
    assert gone(mark, within=5.0)


DRIVER = """
import sys, time
import dispatcher as dp
mark, kind = sys.argv[1], sys.argv[2]
ex = dp.ThreadExecutor(2) if kind == "threads" else dp.ProcessExecutor(2)
with ex:
    node = dp.command(["sh", "-c", f"sleep {mark} & sleep {mark}"])
    print("started", flush=True)
    dp.execute(node, ex)
"""


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_a_driver_stopped_by_ctrl_c_or_killed_leaves_no_program(tmp_path, kind, how):
    mark = marker()
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    proc = subprocess.Popen(
        [sys.executable, str(script), mark, kind], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline() == "started\n"
        deadline = time.monotonic() + 30
        while len(running(mark)) < 2:
            assert time.monotonic() < deadline, "the program did not start"
            time.sleep(0.05)
        proc.send_signal(getattr(signal, how))
        proc.wait(timeout=30)
        assert gone(mark), running(mark)
    finally:
        proc.kill()
        proc.wait()


def test_the_guard_ends_the_groups_of_a_process_that_died():
    mark = marker()
    code = (
        "import subprocess, sys, os; from dispatcher import guard; "
        f"p = subprocess.Popen(['sleep', '{mark}'], start_new_session=True); guard.watch(p.pid); "
        "print(p.pid, flush=True); os._exit(0)"
    )
    pid = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert gone(mark) and pid not in _live_groups()


def test_commands_are_checked_where_they_are_made():
    with pytest.raises(ValueError, match="needs a program"):
        dp.command([])
    with pytest.raises(ValueError, match="timeout of command 'x'"):
        dp.command(["x"], timeout=-1)
    with pytest.raises(ValueError, match="cores of command 'x'"):
        dp.command("x --flag", cores=0)
    with pytest.raises(TypeError, match="env must map"):
        dp.command(["x"], env={"A": 1})
    assert dp.command("prog 'a b'")._args == (["prog", "a b"],)
