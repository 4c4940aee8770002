"""A job cancelled with ``scancel`` while its run is going: the driver says which
nodes were lost and why, and nothing of the job is left running."""

from __future__ import annotations

import pytest

from dispatcher.slurm import usable_cores

pytestmark = pytest.mark.timeout(300)

SCRIPT = """\
import os, pathlib, sys, time
import dispatcher as dp

def long_fit(i):
    pathlib.Path(f"started-{i}").write_text(str(os.getpid()))
    time.sleep(600)
    return i

def done():
    return "quick"

with dp.{executor}() as ex:
    results = dp.run(ex, [dp.Op(done)] + [dp.Op(long_fit, i) for i in range(4)], throw_error=False)
for r in results:
    print("NODE", r.node.label, type(r.error).__name__ if r.error else "ok",
          str(r.error) if r.error else r.value)
print("DRIVER ENDED", flush=True)
"""


@pytest.mark.parametrize(
    "executor, command",
    [
        ("ProcessExecutor", "python script.py"),
        ("ThreadExecutor", "python script.py"),
        ("MPIExecutor", "python script.py"),  # spawned ranks, through srun
        ("MPIExecutor", "srun --mpi=pmi2 python -m mpi4py.futures script.py"),  # the docs' MPI job
    ],
)
def test_a_cancelled_job_fails_its_nodes_naming_the_cause_and_leaves_nothing(slurm, executor, command):
    # MPIExecutor: SLURM_NTASKS - 1 worker ranks; the pools: the job's 3 CPUs, no more than the machine's
    started = 2 if executor == "MPIExecutor" else min(2, usable_cores({}))
    slurm.write("script.py", SCRIPT.replace("{executor}", executor))
    slurm.write("job.sh", f"#!/bin/bash\nexec {command}\n")
    job_id = slurm.check("sbatch", "--parsable", "--ntasks=3", "--output=job-%j.out", "job.sh").strip()
    slurm.wait_until(
        lambda: len(list(slurm.folder.glob("started-*"))) >= started, "the long nodes to start", timeout=120
    )
    slurm.check("scancel", job_id)
    slurm.wait_until(lambda: job_id not in slurm.queue(), "the cancelled job to end", timeout=90)
    out = slurm.output(job_id)
    assert "DRIVER ENDED" in out, out
    nodes = [line.split(" ", 3)[1:] for line in out.splitlines() if line.startswith("NODE ")]
    assert len(nodes) == 5, out
    assert nodes[0] == ["done", "ok", "quick"]  # what was done is kept
    running = [n for n in nodes[1:] if "while the node was running" in n[2]]
    waiting = [n for n in nodes[1:] if "before the node started" in n[2]]
    assert len(running) >= started and len(running) + len(waiting) == 4, out
    for _, kind, message in nodes[1:]:
        assert kind == "DependencyError" and "stopped by SIGTERM" in message, out
    assert slurm.job_state(job_id) == "CANCELLED"
