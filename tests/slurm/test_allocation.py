"""What the library reads from a real allocation (``sbatch``, ``salloc``): the job
as ``scontrol`` describes it, the executors' budgets, the hosts a node is given,
and where a spawned ``MPIExecutor`` places its ranks."""

from __future__ import annotations

import pytest

from dispatcher.slurm import expand_nodelist, parse_nodelist, usable_cores

from .cluster import NODE
from .conftest import json_lines

pytestmark = pytest.mark.timeout(300)

REPORT = """\
import json
import dispatcher as dp

def given():
    return dp.allocation().hosts, dp.allocation().cores

job = dp.slurm_allocation()
with dp.ThreadExecutor() as threads, dp.ProcessExecutor() as processes:
    print(json.dumps({
        "job_id": job.job_id, "ntasks": job.ntasks, "nodes": job.nodes, "hosts": job.hosts,
        "cpus_on_node": job.cpus_on_node, "cpus_per_task": job.cpus_per_task,
        "node_name": job.node_name, "in_step": job.in_step,
        "threads": threads.cores, "processes": processes.cores,
        "given": [dp.execute(dp.Op(given), ex) for ex in (threads, processes)],
    }))
"""


def _scontrol_job(slurm, job_id: str) -> dict:
    shown = slurm.check("scontrol", "-o", "show", "job", job_id)
    return dict(field.split("=", 1) for field in shown.split() if "=" in field)


@pytest.mark.parametrize("cpus", [1, 3])
def test_a_batch_job_is_read_from_its_environment(slurm, cpus):
    slurm.write("report.py", REPORT)
    slurm.write("job.sh", "#!/bin/bash\npython report.py\n")
    job_id, out = slurm.sbatch("job.sh", "--ntasks=1", f"--cpus-per-task={cpus}")
    (report,) = json_lines(out)
    shown = _scontrol_job(slurm, job_id)
    assert report["job_id"] == job_id == shown["JobId"]
    assert report["nodes"] == expand_nodelist(shown["NodeList"]) == [NODE]
    assert report["ntasks"] == int(shown["NumTasks"]) == 1
    assert report["hosts"] == [[NODE, int(shown["NumCPUs"])]] == [[NODE, cpus]]
    assert report["cpus_on_node"] == report["cpus_per_task"] == cpus
    assert report["node_name"] == NODE and report["in_step"] is False
    # the budgets: what the job has on the node, never more than this machine's CPUs
    budget = min(cpus, usable_cores({}))
    assert report["threads"] == report["processes"] == budget
    assert report["given"] == [[[[NODE, 1]], 1], [[[NODE, 1]], 1]]  # Slurm's name of the node


def test_a_task_of_a_step_has_the_cores_of_its_task(slurm):
    slurm.write("report.py", REPORT)
    out = slurm.check("srun", "--ntasks=2", "--cpus-per-task=1", "python", "report.py")
    reports = json_lines(out)
    assert len(reports) == 2
    for report in reports:
        assert report["in_step"] is True and report["ntasks"] == 2
        assert report["cpus_per_task"] == 1 and report["threads"] == report["processes"] == 1


def test_a_spawned_mpi_executor_starts_its_ranks_through_slurm(slurm):
    slurm.write(
        "spawn.py",
        """\
import json, os, time
import dispatcher as dp

def where(i):
    time.sleep(0.2)
    return os.environ.get("SLURM_STEP_ID"), os.environ.get("SLURMD_NODENAME"), os.getpid()

with dp.MPIExecutor() as ex:
    results = dp.run(ex, [dp.Op(where, i) for i in range(8)])
    print(json.dumps({"workers": len(ex.worker_pids()), "driver_step": os.environ.get("SLURM_STEP_ID"),
                      "nodes": [r.value for r in results]}))
""",
    )
    out = slurm.check("salloc", "--ntasks=3", "python", "spawn.py")
    (report,) = json_lines(out)
    assert report["driver_step"] is None  # salloc runs the script itself, outside any step
    assert report["workers"] == 2  # SLURM_NTASKS - 1
    steps = {step for step, _, _ in report["nodes"]}
    assert len(steps) == 1 and None not in steps  # the ranks are the tasks of one step, started by srun
    assert {node for _, node, _ in report["nodes"]} == {NODE}
    assert len({pid for _, _, pid in report["nodes"]}) == 2


CASES = [
    "node[01-03,07],gpu1",
    "r[1-2]n[08-09]",
    "a[1-3,2],b",
    "x[009-011]",
    "cn1",
    "n[1-2],m[3-4]",
    "c[1-2]b[3-4]",
]


@pytest.mark.parametrize("nodelist", CASES)
def test_scontrol_and_python_hostlist_read_node_lists_alike(slurm, nodelist):
    assert parse_nodelist(nodelist) == slurm.check("scontrol", "show", "hostnames", nodelist).split()
