"""Reading a Slurm allocation from the environment (``dispatcher/slurm.py``) and
the worker counts the MPI executors take from it."""

from __future__ import annotations

import os

from dispatcher import slurm as _slurm
from dispatcher.executors.mpi import _default_workers


def test_slurm_environment_is_read():
    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "12",
        "SLURM_JOB_NODELIST": "node[01-03,07],gpu1",
        "SLURM_CPUS_PER_TASK": "2",
    }
    alloc = _slurm.slurm_allocation(env)
    assert alloc.job_id == "4242" and alloc.ntasks == 12 and alloc.cpus_per_task == 2
    assert alloc.nodes == ("node01", "node02", "node03", "node07", "gpu1")
    assert "Slurm job 4242: 12 tasks on 5 node(s)" in alloc.describe()
    assert _slurm.slurm_allocation({}) is None
    # without SLURM_NTASKS: the older name, then the tasks per node
    assert _slurm.slurm_allocation({"SLURM_JOB_ID": "1", "SLURM_NPROCS": "3"}).ntasks == 3
    per_node = {"SLURM_JOB_ID": "1", "SLURM_TASKS_PER_NODE": "2(x3),1", "SLURM_NODELIST": "a,b"}
    assert _slurm.slurm_allocation(per_node).ntasks == 7
    assert _slurm.slurm_allocation(per_node).nodes == ("a", "b")
    assert _slurm.expand_nodelist("r[1-2]n[08-09]") == ["r1n08", "r1n09", "r2n08", "r2n09"]
    assert _default_workers(alloc) == 11  # the driver is one of the tasks


def test_default_workers_outside_slurm(monkeypatch):
    monkeypatch.setenv("MPI4PY_FUTURES_MAX_WORKERS", "3")
    assert _default_workers(None) == 3
    monkeypatch.delenv("MPI4PY_FUTURES_MAX_WORKERS")
    assert _default_workers(None) == len(os.sched_getaffinity(0))
    one_task = _slurm.slurm_allocation({"SLURM_JOB_ID": "9", "SLURM_NTASKS": "1"})
    assert _default_workers(one_task) == len(os.sched_getaffinity(0))
