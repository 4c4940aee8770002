"""The tests of ``tests/slurm`` run inside the one-node Slurm cluster that
``make test-slurm`` starts (``tests/slurm/cluster.py``); each submits work through
the real Slurm commands (``srun``, ``sbatch``, ``salloc``, ``scancel``).

Every test gets a :class:`SlurmJobs` in a directory of its own: the environment
its jobs inherit (this interpreter's ``bin`` first on ``PATH``, and a mark of the
test, by which the test finds the processes its jobs left), and helpers that run
the commands with a time limit. After each test, no job of the cluster may be
left and no process carrying the test's mark may be running.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid

import pytest

from .cluster import MARK, marked_processes

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEST_MARK = "DISPATCHER_SLURM_TEST"
"""The environment variable marking the processes started by one test (its value: a fresh id)."""


@pytest.fixture(scope="session", autouse=True)
def _inside_the_cluster():
    if not os.environ.get("SLURM_CONF") or not os.environ.get(MARK):
        pytest.fail(
            "tests/slurm run inside the test Slurm cluster: use `make test-slurm` "
            "(or python tests/slurm/cluster.py -- python -m pytest tests/slurm)",
            pytrace=False,
        )


class SlurmJobs:
    """Slurm's commands run from ``folder``, each with a time limit."""

    def __init__(self, folder: pathlib.Path):
        self.folder = folder
        self.mark = uuid.uuid4().hex
        bin_dir = os.path.dirname(sys.executable)
        self.env = {
            **os.environ,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            TEST_MARK: self.mark,
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("PYTEST_CURRENT_TEST", None)
        # the batch scripts of the docs start with `source .venv/bin/activate`
        (folder / ".venv").symlink_to(pathlib.Path(sys.prefix))

    def write(self, name: str, text: str) -> pathlib.Path:
        path = self.folder / name
        path.write_text(text)
        return path

    def run(self, *command: str, timeout: float = 180) -> subprocess.CompletedProcess:
        """Run ``command`` in the folder; its output is in ``.stdout``/``.stderr``."""
        return subprocess.run(
            command, cwd=self.folder, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def check(self, *command: str, timeout: float = 180) -> str:
        """Run ``command``; fail the test, showing its output, unless it exits 0."""
        done = self.run(*command, timeout=timeout)
        assert done.returncode == 0, (
            f"{' '.join(command)} exited {done.returncode}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
        return done.stdout

    def sbatch(self, script: str, *options: str, timeout: float = 240) -> tuple[str, str]:
        """Submit ``script``, wait for the job to end, and return its id and output
        (its exit code must be 0)."""
        out = "job-%j.out"
        done = self.run(
            "sbatch", "--parsable", "--wait", f"--output={out}", *options, script, timeout=timeout
        )
        job_id = done.stdout.strip().split(";")[0]
        output = self.output(job_id)
        assert done.returncode == 0, (
            f"job {job_id} of {script} exited {done.returncode}\n{output}\n{done.stderr}"
        )
        return job_id, output

    def output(self, job_id: str) -> str:
        path = self.folder / f"job-{job_id}.out"
        return path.read_text() if path.exists() else ""

    def job_state(self, job_id: str) -> str:
        """The job's state as ``scontrol`` says it (``RUNNING``, ``CANCELLED``, ...)."""
        shown = self.run("scontrol", "-o", "show", "job", job_id, timeout=30).stdout
        for field in shown.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return ""

    def queue(self) -> list[str]:
        """The ids of the cluster's jobs not yet ended."""
        return self.run("squeue", "-h", "-o", "%i", timeout=30).stdout.split()

    def jobs_left(self, grace: float = 30) -> list[str]:
        """The jobs still in the queue after ``grace`` seconds (a job whose command
        has returned may stay a moment, completing)."""
        return _left_after(grace, self.queue)

    def wait_until(self, condition, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
            time.sleep(0.2)

    def processes_left(self, grace: float = 30) -> list[int]:
        """The processes of this test still running after ``grace`` seconds."""
        return _left_after(grace, lambda: marked_processes(self.mark, TEST_MARK))


def _left_after(grace: float, look) -> list:
    """What ``look()`` still finds after at most ``grace`` seconds of looking again."""
    deadline = time.monotonic() + grace
    while (left := look()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def json_lines(output: str) -> list:
    """The JSON objects a job printed, a line each, among its other lines."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _describe(pids: list[int]) -> str:
    lines = []
    for pid in pids:
        with contextlib.suppress(OSError):
            command = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            lines.append(f"{pid}: {command}")
    return "\n".join(lines)


@pytest.fixture
def slurm(tmp_path):
    jobs = SlurmJobs(tmp_path)
    yield jobs
    ids = jobs.jobs_left()
    if ids:
        jobs.run("scancel", *ids)
        jobs.wait_until(lambda: not jobs.queue(), "the jobs left by the test to end", timeout=60)
    left = jobs.processes_left()
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not ids, f"the test left Slurm jobs {ids}"
    assert not left, f"the test left processes running:\n{_describe(left)}"
