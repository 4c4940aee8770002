"""The test cluster itself (``tests/slurm/cluster.py``): whatever the command it
runs does (fails, leaves a job running, hangs past the time limit), it stops
every daemon and every process of its jobs. A second cluster runs beside the
one of ``make test-slurm``, on ports of its own."""

from __future__ import annotations

import pathlib
import sys

import pytest

CLUSTER = pathlib.Path(__file__).resolve().parent / "cluster.py"

pytestmark = pytest.mark.timeout(240)


def _cluster(slurm, *command: str, timeout: float) -> tuple[int, str]:
    done = slurm.run(
        sys.executable, str(CLUSTER), "--cpus", "2", "--timeout", str(timeout), "--", *command, timeout=180
    )
    return done.returncode, done.stdout + done.stderr


def test_a_failing_command_leaves_no_job_and_no_daemon(slurm):
    # a job still running when the command fails: the cluster cancels it
    code, out = _cluster(
        slurm, "bash", "-c", "sbatch --wrap 'sleep 300' && squeue -h -o %T && exit 3", timeout=120
    )
    assert code == 3, out
    assert "Slurm cluster of one node" in out and ("RUNNING" in out or "PENDING" in out), out
    # the slurm fixture checks that no process of the test is left: the daemons
    # and the job carry the test's mark in their environment


def test_a_command_past_its_time_limit_is_stopped_with_the_cluster(slurm):
    code, out = _cluster(slurm, "srun", "sleep", "300", timeout=10)
    assert code == 124, out
    assert "took over 10 s" in out
