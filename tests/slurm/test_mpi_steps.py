"""The MPI executors in job steps started by ``srun`` with Slurm's PMI-2: every
way of starting ``MPIExecutor`` that the docs name, and ``SerialMPIExecutor``."""

from __future__ import annotations

import pytest

from .cluster import NODE
from .conftest import json_lines

pytestmark = pytest.mark.timeout(300)

WHERE = """\
import json, os, time
import dispatcher as dp

def where(i):
    time.sleep(0.3)                      # long enough for every worker to get some
    return {"rank": os.environ["SLURM_PROCID"], "node": os.environ.get("SLURMD_NODENAME"),
            "hosts": dp.allocation().hosts, "step": os.environ.get("SLURM_STEP_ID")}

with dp.MPIExecutor() as ex:
    results = dp.run(ex, [dp.Op(where, i) for i in range(12)])
    print(json.dumps({"driver": os.environ["SLURM_PROCID"], "workers": len(ex.worker_pids()),
                      "nodes": [r.value for r in results]}))
"""


def _report(stdout: str) -> dict:
    reports = json_lines(stdout)
    assert len(reports) == 1, f"expected one report (from the driver), got:\n{stdout}"
    return reports[0]


def _check_spread(report: dict) -> None:
    assert report["driver"] == "0" and report["workers"] == 2
    nodes = report["nodes"]
    assert len(nodes) == 12
    assert {n["rank"] for n in nodes} == {"1", "2"}  # the two worker tasks of the step, never the driver
    assert {n["node"] for n in nodes} == {NODE}
    assert {tuple(map(tuple, n["hosts"])) for n in nodes} == {((NODE, 1),)}  # Slurm's name, not the host's


def test_mpi_executor_under_srun_with_mpi4py_futures(slurm):
    slurm.write("script.py", WHERE)
    out = slurm.check("srun", "-n", "3", "--mpi=pmi2", "python", "-m", "mpi4py.futures", "script.py")
    _check_spread(_report(out))


def test_mpi_executor_under_srun_every_rank_running_the_script(slurm):
    slurm.write("script.py", WHERE)
    out = slurm.check("srun", "-n", "3", "--mpi=pmi2", "python", "script.py")
    _check_spread(_report(out))


def test_serial_mpi_executor_under_srun(slurm):
    slurm.write(
        "spmd.py",
        """\
import json, os
import dispatcher as dp

def fit(scale, comm):
    return comm.allreduce(scale * comm.Get_rank()), os.environ["SLURM_PROCID"]

with dp.SerialMPIExecutor() as ex:
    results = dp.run(ex, [dp.Op(fit, s) for s in (1, 10)])
    print(json.dumps({"rank": ex.comm.Get_rank(), "size": ex.comm.Get_size(),
                      "values": [r.value for r in results]}))
""",
    )
    out = slurm.check("srun", "-n", "3", "--mpi=pmi2", "python", "spmd.py")
    reports = sorted(json_lines(out), key=lambda r: r["rank"])
    assert [r["rank"] for r in reports] == [0, 1, 2] and {r["size"] for r in reports} == {3}
    for report in reports:  # every rank has rank 0's results: the sums over the three ranks
        assert report["values"] == [[3, "0"], [30, "0"]]
