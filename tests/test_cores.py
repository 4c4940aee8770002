"""Cores per node: an executor's budget, fixed and malleable nodes, what a node is
told it got (:mod:`dispatcher.engine.cores`, :mod:`dispatcher.node_allocation`)."""

from __future__ import annotations

import os
import threading
import time

import pytest

import dispatcher as dp
from dispatcher.node_allocation import THREAD_VARIABLES
from dispatcher.slurm import usable_cores

from .conftest import FileChannel


def busy(log, i, seconds=0.05):
    """Record what the node got and when it ran."""
    alloc = dp.allocation()
    start = time.monotonic()
    time.sleep(seconds)
    end = time.monotonic()
    threads = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    log.put([i, alloc.cores, start, end, os.getpid(), threads, [list(h) for h in alloc.hosts]])
    return alloc.cores


def most_at_once(records) -> int:
    """The most cores the recorded calls held at one instant."""
    events = sorted([(r[2], r[1]) for r in records] + [(r[3], -r[1]) for r in records])
    held = peak = 0
    for _, change in events:  # at equal times an end (negative) comes first
        held += change
        peak = max(peak, held)
    return peak


POOLS = {
    "threads": lambda cores: dp.ThreadExecutor(8, cores=cores),
    "processes": lambda cores: dp.ProcessExecutor(3, cores=cores),
}


@pytest.mark.parametrize("kind", list(POOLS))
def test_the_running_nodes_never_hold_more_cores_than_the_budget(kind):
    log = FileChannel()
    sizes = [1, 2, 3, 1, 4, 2, 1, 1, 3, 2]
    nodes = [dp.op(cores=k)(busy)(log, i) for i, k in enumerate(sizes)]
    with POOLS[kind](4) as ex:
        assert dp.execute(nodes, ex) == sizes
    records = log.items()
    assert len(records) == len(sizes)
    assert most_at_once(records) <= 4
    here = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    for i, cores, *_, threads, hosts in records:
        assert cores == sizes[i] and hosts == [[hosts[0][0], cores]]
        # in a process of its own, the thread variables say the node's cores; in the
        # driver's, which every node shares, they are left as they are
        assert threads == (here if kind == "threads" else dict.fromkeys(THREAD_VARIABLES, str(cores)))


@pytest.mark.parametrize("kind", list(POOLS))
def test_a_node_asking_for_more_than_the_budget_fails_at_once(kind):
    with POOLS[kind](4) as ex:
        started = time.monotonic()
        with pytest.raises(dp.DependencyError, match=r"asks for 5 cores but the executor has 4") as info:
            dp.execute(dp.op(cores=5)(busy)(FileChannel(), 0, 30), ex)
        assert time.monotonic() - started < 20  # never started: not the node's 30 s
        assert info.value.node.label == "busy"
        assert dp.execute(dp.op(cores=(4, 8))(busy)(FileChannel(), 0), ex) == 4  # lo fits: allowed


@pytest.mark.parametrize("kind", list(POOLS))
def test_a_lone_malleable_node_gets_the_whole_budget_and_a_round_gets_its_low_end(kind):
    log = FileChannel()
    fit = dp.op(cores=(1, 4))(busy)
    with POOLS[kind](4) as ex:
        assert dp.execute(fit(log, 0), ex) == 4
        assert dp.execute([fit(log, i) for i in range(8)], ex) == [1] * 8
        assert dp.execute([fit(log, i) for i in range(2)], ex) == [2, 2]  # an even share
        assert dp.execute(dp.op(cores=(1, None))(busy)(log, 0), ex) == 4  # no upper end
    assert most_at_once(log.items()) <= 4


def test_nodes_that_ask_for_no_cores_are_not_held_back():
    """dask's rule: a task that names no resource is not held back by them."""
    barrier = threading.Barrier(3, timeout=30)
    plain = [dp.Op(barrier.wait) for _ in range(3)]  # all three must run at once
    with dp.ThreadExecutor(4, cores=1) as ex:
        dp.execute(plain, ex)


def test_cores_options_are_checked_where_they_are_given():
    for bad in (0, -1, (0, 2), (3, 2), "4", (1, 2, 3), 1.5, True):
        with pytest.raises(ValueError, match="cores of op 'busy' must be"):
            dp.op(cores=bad)(busy)
    for bad in (0, "8", 2.0):
        with pytest.raises(ValueError, match="cores must be a positive int"):
            dp.ThreadExecutor(cores=bad)
    assert dp.ThreadExecutor().cores == usable_cores()
    assert dp.ThreadExecutor(cores=16).cores == 16


def test_a_node_waiting_for_a_nested_run_lends_its_cores():
    """Without the loan, the nested node would wait for the cores its caller holds."""

    def inner(log):
        return dp.allocation().cores

    def outer(ex, log):
        return dp.execute(dp.op(cores=2)(inner)(log), ex) + dp.allocation().cores

    with dp.ThreadExecutor(4, cores=2) as ex:
        assert dp.execute(dp.op(cores=2)(outer)(ex, None), ex) == 4
        assert ex.core_budget().free == 2


def test_runs_sharing_an_executor_share_its_budget():
    log = FileChannel()
    fit = dp.op(cores=2)(busy)
    results: list = []
    with dp.ThreadExecutor(8, cores=3) as ex:

        def one_run(first):
            results.append(dp.execute([fit(log, first + i, 0.1) for i in range(4)], ex))

        runs = [threading.Thread(target=one_run, args=(10 * k,)) for k in range(3)]
        for t in runs:
            t.start()
        for t in runs:
            t.join(60)
        assert ex.core_budget().free == 3
    assert results == [[2] * 4] * 3
    assert most_at_once(log.items()) <= 3  # never two of the runs' 2-core nodes at once


def test_cores_come_back_after_failures_timeouts_and_interruptions():
    def boom():
        raise ValueError("no")

    with dp.ThreadExecutor(4, cores=4, retries=0) as ex:
        with pytest.raises(dp.DependencyError):
            dp.execute(dp.op(cores=3)(boom)(), ex)
        assert ex.core_budget().free == 4
        with pytest.raises(dp.DependencyError, match="timeout"):
            dp.execute(dp.op(cores=4, timeout=0.2)(time.sleep)(1), ex)
        assert ex.core_budget().free == 4
        nodes = [dp.op(cores=2)(boom)(), dp.op(cores=2)(busy)(FileChannel(), 1)]
        results = dp.run(ex, nodes, throw_error=False)
        assert results[1].value == 2 and ex.core_budget().free == 4


def test_a_serial_executor_gives_a_node_its_cores_in_turn():
    log = FileChannel()
    ex = dp.SerialExecutor(cores=3)
    assert dp.execute([dp.op(cores=(1, 8))(busy)(log, i, 0) for i in range(2)], ex) == [3, 3]
    assert ex.core_budget().free == 3


def test_async_nodes_see_their_allocation_while_they_run():
    import asyncio

    async def fit():
        await asyncio.sleep(0.01)
        return dp.allocation().cores

    with dp.AsyncExecutor(cores=4) as ex:
        assert dp.execute([dp.op(cores=(1, 4))(fit)()], ex) == [4]


def test_the_budget_and_hosts_come_from_a_slurm_allocation(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "1")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "cn[07-08]")
    monkeypatch.setenv("SLURM_JOB_CPUS_PER_NODE", "1(x2)")
    monkeypatch.setenv("SLURMD_NODENAME", "cn07")
    log = FileChannel()
    with dp.ThreadExecutor(4) as ex:
        assert ex.cores == 1
        assert dp.execute(dp.op(cores=(1, 4))(busy)(log, 0, 0), ex) == 1
    assert log.items()[0][6] == [["cn07", 1]]
    assert dp.slurm.slurm_allocation().hosts == (("cn07", 1), ("cn08", 1))
    monkeypatch.setenv("SLURM_STEP_ID", "0")  # a task of a job step: its own CPUs
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "8")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert usable_cores() == 1


def on_worker(log, i, seconds=0.2):
    from distributed import get_worker

    cores = busy(log, i, seconds)
    log.put(["worker", i, get_worker().address])
    return cores


def test_dask_places_nodes_by_the_cores_its_workers_declare():
    log = FileChannel()
    with dp.DaskExecutor(n_workers=2, threads_per_worker=2) as ex:
        assert ex.cores == 4 and ex.core_budget().most == 2
        assert dp.execute([dp.op(cores=2)(on_worker)(log, i) for i in range(6)], ex) == [2] * 6
        assert dp.execute(dp.op(cores=(1, 8))(on_worker)(log, 9), ex) == 2  # at most one worker's
        with pytest.raises(dp.DependencyError, match="asks for 3 cores but its largest worker has 2"):
            dp.execute(dp.op(cores=3)(busy)(log, 0), ex)
    items = log.items()
    where = {item[1]: item[2] for item in items if item[0] == "worker"}
    calls = [item for item in items if item[0] != "worker"]
    for address in set(where.values()):  # never more cores at once on a worker than it has
        assert most_at_once([c for c in calls if where[c[0]] == address]) <= 2
    for *_, threads, _hosts in calls:
        assert threads == dict.fromkeys(THREAD_VARIABLES, "2")


def test_an_mpi_executor_counts_one_core_per_worker_rank():
    with dp.MPIExecutor(2) as ex:
        assert ex.cores == 2
        assert dp.execute([dp.op(cores=(1, 8))(busy)(FileChannel(), i, 0) for i in range(2)], ex) == [1, 1]
        assert dp.execute(dp.op(cores=(1, 8))(busy)(FileChannel(), 0, 0), ex) == 2


def test_runs_that_start_together_get_one_budget(monkeypatch):
    ex = dp.ThreadExecutor(2)
    reachable = ex.reachable_cores

    def slowly():  # (finding the cores may take a while: a cluster, a Slurm job)
        time.sleep(0.1)
        return reachable()

    monkeypatch.setattr(ex, "reachable_cores", slowly)
    budgets: list = []
    threads = [threading.Thread(target=lambda: budgets.append(ex.core_budget())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(budgets) == 4 and all(b is budgets[0] for b in budgets)
