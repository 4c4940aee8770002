"""The MPI executors, for real: scripts run under ``mpiexec -n 3`` (each with a time
limit, so a deadlock fails the test instead of hanging the suite), and from a plain
``python`` that spawns its worker ranks. The shared engine suites run on a spawned
``MPIExecutor`` too (``"mpi"`` in conftest's executor names)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from .conftest import BIN, alive, run_script, script_env, start_script, wait_gone

MPIEXEC = os.path.join(BIN, "mpiexec")
LIMIT = 120  # seconds any one MPI job may take


def _command(how: str, n: int) -> list[str]:
    if how == "spawn":
        return [sys.executable]
    if how == "futures":
        return [MPIEXEC, "-n", str(n), sys.executable, "-m", "mpi4py.futures"]
    return [MPIEXEC, "-n", str(n), sys.executable]


def mpirun(tmp_path, code: str, how: str = "world", n: int = 3, env=None, timeout=LIMIT):
    """Run ``code`` as a script (``how``: "world" under ``mpiexec -n N python``,
    "futures" under ``mpiexec -n N python -m mpi4py.futures``, "spawn" under plain
    ``python``); its CompletedProcess. A job over its time limit is killed whole."""
    return run_script(
        tmp_path, REPORT + textwrap.dedent(code), command=_command(how, n), env=env, timeout=timeout
    )


REPORT = """
import json as _json
def report(out, rank=0):
    with open(f"report-{rank}.json", "w") as f:
        _json.dump(out, f)
"""


def reports(proc, tmp_path) -> dict:
    """What each rank of the job passed to ``report()``, by rank (the driver's is 0)."""
    if proc.returncode != 0:
        raise AssertionError(f"exit code {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in tmp_path.glob("report-*.json")}


# -- MPIExecutor ---------------------------------------------------------------------

POOL_SCRIPT = """
import json, os, pickle, sys, threading, time
import dispatcher as dp

out = {"driver": os.getpid()}
ex = dp.MPIExecutor(2, retries=2, backoff=dp.Backoff(first_delay=0.01))
out["pids"] = ex.start().worker_pids()
out["repr"] = repr(ex)

k = 10
def add_k(x):                      # a function of __main__, with a global
    return x + k
nodes = [dp.Op(add_k, i) for i in range(2000)]
out["sum"] = dp.execute(dp.Op(sum, nodes), ex)
out["lambda"] = dp.execute(dp.Op(lambda x: [x] * 2, "a"), ex)
out["batched"] = ex.stats["batches"] < ex.stats["tasks"] / 4

def boom(x):
    raise ValueError(f"bad {x}")
try:
    dp.execute(dp.Op(add_k, dp.op(boom, label="exploder")(3)), ex)
except dp.DependencyError as err:
    out["error"] = [str(err), type(err.error).__name__, err.node.label, "in boom" in err.traceback]

tries = dp.DataNode([])          # retries: the worker fails twice, then succeeds
def flaky(path):
    n = len(open(path).read())
    open(path, "a").write("x")
    if n < 2:
        raise OSError("not yet")
    return n
open("flaky.txt", "w").close()
out["retried"] = dp.execute(dp.op(flaky, retry_on=OSError)("flaky.txt"), ex)

start = time.monotonic()
try:
    dp.execute(dp.op(time.sleep, timeout=0.3)(30), ex)
except dp.DependencyError as err:
    out["timeout"] = [type(err.error).__name__, str(err.error), time.monotonic() - start < 10,
                      "_alarm.py" in err.traceback]  # a world's rank: raised there, by its alarm
out["pids_after_timeout"] = ex.start().worker_pids()  # the replacement is ready
out["after_timeout"] = dp.execute(dp.Op(add_k, 1), ex)   # the worker was freed

a = dp.Op(add_k, 1)
b = dp.Op(add_k, a)
dp.execute(b, ex)
out["inputs"] = dp.execute(b, ex, input_map={a: 100})

lock = threading.Lock()
try:
    dp.execute(dp.Op(len, [lock]), ex)
except dp.DependencyError as err:
    out["unpicklable"] = str(err)

results = dp.run(ex, [dp.Op(boom, 1), dp.Op(add_k, 5)], throw_error=False)
out["partial"] = [r.is_error() for r in results] + [results[1].value]

class Unloadable:                  # pickles on the worker, cannot be rebuilt here
    def __init__(self, a, b):
        pass
    def __reduce__(self):
        return (Unloadable, (1,))
results = dp.run(ex, [dp.Op(lambda: Unloadable(1, 2)), dp.Op(add_k, 6)], throw_error=False)
out["unloadable"] = [str(results[0].error), results[1].value]

class CtrlC:                       # KeyboardInterrupt while the call is being pickled
    def __reduce__(self):
        raise KeyboardInterrupt
try:
    dp.execute(dp.Op(len, [CtrlC()]), ex)
except KeyboardInterrupt:          # pickled where Ctrl-C arrives (the ranks of a world)
    out["interrupted"] = "raised"
except dp.DependencyError as err:  # pickled by the pool's own thread (ranks it started)
    out["interrupted"] = type(err.error.__cause__).__name__
out["after_interrupt"] = dp.execute(dp.Op(add_k, 2), ex)
ex.close()
try:
    dp.execute(dp.Op(add_k, 1), ex)
except dp.ExecutorError as err:
    out["closed"] = str(err)
report(out)
"""


@pytest.mark.parametrize("how", ["spawn", "world", "futures"])
def test_pool_executor_three_ways(tmp_path, how):
    out = reports(mpirun(tmp_path, POOL_SCRIPT, how), tmp_path)[0]
    assert len(out["pids"]) == 2 and out["driver"] not in out["pids"]
    assert ("spawned" in out["repr"]) == (how == "spawn")
    assert out["sum"] == sum(range(2000)) + 20000
    assert out["lambda"] == ["a", "a"]
    assert out["batched"]
    message, kind, label, traced = out["error"]
    assert kind == "ValueError" and label == "exploder" and traced
    assert message == "node 'exploder' failed: ValueError: bad 3"
    assert out["retried"] == 2
    kind, message, quick, on_worker = out["timeout"]
    assert kind == "TimeoutError" and quick
    assert message.startswith("node 'sleep' ran longer than its timeout of 0.3 s")
    if how == "spawn":  # a rank it started: killed and replaced
        assert "its worker rank (pid" in message and "was killed" in message and not on_worker
        assert len(out["pids_after_timeout"]) == 2 and out["pids_after_timeout"] != out["pids"]
    else:
        assert on_worker
    assert out["after_timeout"] == 11
    assert out["inputs"] == 110
    assert "node 'len'" in out["unpicklable"] and "argument 0" in out["unpicklable"]
    assert "_thread.lock" in out["unpicklable"]
    assert out["partial"] == [True, False, 15]
    assert "outcome of node '<lambda>' cannot be unpickled here" in out["unloadable"][0]
    assert out["unloadable"][1] == 16
    assert out["interrupted"] == ("KeyboardInterrupt" if how == "spawn" else "raised")
    assert out["after_interrupt"] == 12
    assert "closed" in out["closed"]
    assert wait_gone(out["pids"], 20.0) == []


def test_worker_ranks_of_a_world_leave_the_script(tmp_path):
    # under plain mpiexec every rank runs the script: the workers serve inside the
    # constructor and leave with SystemExit(0), so only the driver gets past it
    code = """
    import json, dispatcher as dp
    from mpi4py import MPI
    rank = MPI.COMM_WORLD.Get_rank()
    ex = dp.MPIExecutor(max_workers=5)
    out = {"value": dp.execute(dp.Op(sum, [1, 2]), ex), "workers": ex.max_workers}
    def poller():                      # how the ranks wait for messages (dispatcher.executors._mpipoll)
        from mpi4py.futures import _core
        return _core.Backoff.__name__
    out["polls"] = [poller(), dp.execute(dp.Op(poller), ex)]
    second = dp.MPIExecutor()          # shares the world's workers
    out["second"] = dp.execute(dp.Op(abs, -4), second)
    report(out, rank)
    """
    proc = mpirun(tmp_path, code, "world")
    assert reports(proc, tmp_path) == {
        0: {"value": 3, "workers": 2, "polls": ["QuickPoll", "QuickPoll"], "second": 4}
    }
    assert "max_workers=5 ignored" in proc.stderr


@pytest.mark.parametrize(
    "how, options, env",
    [
        ("world", "", {}),
        ("futures", "", {}),
        ("world", "use_pkl5=False", {"MPI4PY_PICKLE_PROTOCOL": "4"}),  # buffers in band, no protocol 5
    ],
)
def test_large_values_travel_both_ways_on_the_ranks_of_a_job(tmp_path, how, options, env):
    # arrays travel beside their pickle (pkl5) or in it; a rank keeps testing for its
    # large answer while it leaves (_mpipoll.sending); under python -m mpi4py.futures
    # the workers' loops wait as the driver's do
    code = f"""
    import numpy as np
    import dispatcher as dp
    def make():
        return np.arange(1 << 19, dtype=np.int64)  # 4 MiB
    def bump(a):
        a += 1                     # an argument the node may write into
        return a
    def poller():
        from mpi4py.futures import _core
        return _core.Backoff.__name__
    ex = dp.MPIExecutor({options})
    node = dp.Op(make)
    for _ in range(3):
        node = dp.Op(bump, node)
    value = dp.execute(node, ex)
    out = {{"same": bool((value == np.arange(1 << 19) + 3).all()), "writable": value.flags.writeable}}
    out["polls"] = dp.execute(dp.Op(poller), ex)
    report(out)
    """
    out = reports(mpirun(tmp_path, code, how, env=env), tmp_path)[0]
    assert out == {"same": True, "writable": True, "polls": "QuickPoll"}


def test_a_function_the_workers_cannot_import_is_named(tmp_path):
    code = """
    import json, sys
    import dispatcher as dp
    sys.path.insert(0, "private")
    import helper                       # importable here, not on the worker ranks
    ex = dp.MPIExecutor(1, path=[])     # workers get no extra path
    try:
        dp.execute(dp.Op(helper.twice, 2), ex)
    except dp.DependencyError as err:
        report({"error": str(err)})
    ex.close()
    """
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "helper.py").write_text("def twice(x):\n    return 2 * x\n")
    out = reports(mpirun(tmp_path, code, "spawn"), tmp_path)[0]
    assert "node 'twice'" in out["error"]
    assert "cannot be unpickled on the worker rank" in out["error"]
    assert "helper" in out["error"]


def test_ctrl_c_in_a_spawning_driver_leaves_no_process(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            import dispatcher as dp
            ex = dp.MPIExecutor(2).start()
            print(*ex.worker_pids(), flush=True)
            dp.execute([dp.Op(time.sleep, 60) for _ in range(4)], ex)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_env(),
    )
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err
    assert wait_gone(pids, 20.0) == []


def test_ctrl_c_under_mpiexec_ends_every_rank(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, time
            import dispatcher as dp
            ex = dp.MPIExecutor()
            print(os.getpid(), *ex.start().worker_pids(), flush=True)
            dp.execute([dp.Op(time.sleep, 60) for _ in range(4)], ex)
            """
        )
    )
    proc = start_script([*_command("world", 3), str(script)], None)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 3 and all(alive(p) for p in pids)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)  # what the terminal does to mpiexec
        proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert wait_gone(pids, 20.0) == []


# -- Slurm -------------------------------------------------------------------------


def test_spawning_in_a_slurm_allocation_sizes_itself(tmp_path):
    code = """
    import json, logging
    import dispatcher as dp
    logging.basicConfig(level=logging.INFO)
    with dp.MPIExecutor() as ex:
        ex.start()
        report({"workers": len(ex.worker_pids()), "value": dp.execute(dp.Op(abs, -2), ex)})
    """
    env = {"SLURM_JOB_ID": "777", "SLURM_NTASKS": "3", "SLURM_JOB_NODELIST": "localhost"}
    proc = mpirun(tmp_path, code, "spawn", env=env)
    assert reports(proc, tmp_path) == {0: {"workers": 2, "value": 2}}
    assert "Slurm job 777: 3 tasks on 1 node(s) (localhost); MPIExecutor spawns 2 worker ranks" in proc.stderr


# -- SerialMPIExecutor ---------------------------------------------------------------

SPMD_SCRIPT = """
import json, os, sys, time
import dispatcher as dp
from mpi4py import MPI

rank = MPI.COMM_WORLD.Get_rank()
out = {"rank": rank}
ex = dp.SerialMPIExecutor(retries=1, backoff=dp.Backoff(first_delay=0.01))

def total(x, comm):                  # every rank calls it; a collective inside
    return comm.allreduce(x + comm.Get_rank())

def my_rank(comm):
    return comm.Get_rank()

a = dp.Op(total, 1)
b = dp.Op(my_rank)
c = dp.Op(lambda x, y: [x, y], a, b)
out["value"] = dp.execute(c, ex)
out["fetch"] = c.fetch()
out["intermediate"] = a.state()       # kept on rank 0 only

def picky(comm):
    if comm.Get_rank() == 2:
        raise ValueError("rank two says no")
    return comm.Get_rank()
results = dp.run(ex, [dp.op(picky, label="picky", retries=0)(), b], throw_error=False)
out["partial"] = [str(results[0].error), results[1].value, results[0].error.node.label]
out["traceback"] = "raised on rank 2 of 3" in results[0].error.traceback

try:
    dp.execute(dp.Op(max, [1, 2], key=lambda x: x / 0), ex)
except dp.DependencyError as err:
    out["raised"] = [type(err.error).__name__, err.node.label]

def first_attempt_fails_on_rank_1(path, comm):
    # rank 1 fails the first attempt; the retry succeeds on every rank
    if comm.Get_rank() == 1 and not os.path.exists(path):
        open(path, "w").close()
        raise OSError("rank 1 is not ready")
    return "ok"
flaky = dp.op(first_attempt_fails_on_rank_1, retry_on=OSError)
out["retried"] = dp.execute(flaky("rank-1-ready"), ex)

def slow_on_rank_0(comm):
    time.sleep(30 if comm.Get_rank() == 0 else 0)
start = time.monotonic()
try:
    dp.execute(dp.op(slow_on_rank_0, timeout=0.5)(), ex)
except dp.DependencyError as err:
    out["timeout"] = [type(err.error).__name__, time.monotonic() - start < 10]

x = dp.Op(total, 0)
y = dp.Op(lambda v: v * 10, x)
dp.execute(y, ex)
out["inputs"] = dp.execute(y, ex, input_map={x: 7})

p = dp.Op(len, [1])
q = dp.Op(len, [p])
p.args = (q,)                          # a cycle: refused on every rank
try:
    dp.execute(q, ex)
except dp.ExecutorError as err:
    out["cycle"] = "cycle" in str(err)

import threading
try:                                   # an argument that cannot be pickled
    dp.execute(dp.Op(lambda h: 1, threading.Lock()), ex)
except dp.DependencyError as err:
    out["unpicklable"] = "cannot send node '<lambda>'" in str(err)

if rank == 0:                          # a module only rank 0 can import
    sys.path.insert(0, "private")
    import helper
    twice = helper.twice
else:
    def twice(x):
        return 2 * x
try:
    dp.execute(dp.Op(twice, 4), ex)
except dp.DependencyError as err:
    out["unimportable"] = str(err)

def leave(comm):                       # SystemExit on one rank fails the node
    if comm.Get_rank() == 1:
        sys.exit(3)
out["exit"] = str(dp.run(ex, [dp.Op(leave)], throw_error=False)[0].error)

class Picky(Exception):                # pickles, cannot be rebuilt
    def __init__(self, a, b):
        super().__init__(a)
def picky_error(comm):
    if comm.Get_rank() == 2:
        raise Picky("x", "y")
out["rebuilt"] = str(dp.run(ex, [dp.Op(picky_error)], throw_error=False)[0].error)

import functools
def wrapped(f):
    @functools.wraps(f)
    def inner(*args, **kwargs):
        return f(*args, **kwargs)
    return inner
@wrapped
def with_comm(comm):
    return comm.Get_size()
@wrapped
def without():
    return "none"
out["wraps"] = dp.execute([dp.Op(with_comm), dp.Op(without)], ex)
out["generator"] = [r.value for r in dp.run(ex, (dp.Op(abs, -i) for i in range(3)))]

import asyncio
async def size_later(comm):            # async def nodes are run to their end, as everywhere
    await asyncio.sleep(0.01)
    return comm.Get_size()
out["coroutine"] = dp.execute([dp.Op(size_later), dp.op(size_later, timeout=30)()], ex)

ex.close()
try:
    dp.execute(dp.Op(abs, 1), ex)
except dp.ExecutorError as err:
    out["closed"] = str(err)
report(out, rank)
"""


def test_serial_mpi_runs_every_node_on_every_rank(tmp_path):
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "helper.py").write_text("def twice(x):\n    return 2 * x\n")
    found = reports(mpirun(tmp_path, SPMD_SCRIPT, "world"), tmp_path)
    assert sorted(found) == [0, 1, 2]
    for rank, out in found.items():
        assert out["value"] == [6, 0], rank  # rank 0's values on every rank
        assert out["fetch"] == [6, 0]
        assert out["intermediate"] == ("done" if rank == 0 else "not run")
        assert out["partial"] == ["node 'picky' failed: ValueError: rank two says no", 0, "picky"]
        assert out["traceback"]
        assert out["raised"] == ["ZeroDivisionError", "max"]
        assert out["retried"] == "ok"
        assert out["timeout"] == ["TimeoutError", True]
        assert out["inputs"] == 70
        assert out["cycle"]
        assert out["unpicklable"]
        assert (
            "node 'twice' failed: ExecutorError: node 'twice' cannot be unpickled on rank 1"
            in out["unimportable"]
        )
        assert out["exit"] == "node 'leave' failed: SystemExit: 3"
        assert out["rebuilt"].startswith("node 'picky_error' failed: RemoteError: ")
        assert out["wraps"] == [3, "none"]
        assert out["generator"] == [0, 1, 2]
        assert out["coroutine"] == [3, 3]
        assert out["closed"] == "SerialMPIExecutor is closed"


def test_serial_mpi_aborts_when_a_failed_rank_leaves_others_in_a_collective(tmp_path):
    code = """
    import dispatcher as dp
    def stuck_without_rank_1(comm):
        if comm.Get_rank() == 1:
            raise RuntimeError("rank 1 gives up")
        return comm.allreduce(1)       # waits for rank 1 forever
    ex = dp.SerialMPIExecutor(grace=1.0)
    dp.execute(dp.Op(stuck_without_rank_1), ex)
    print("should not get here", flush=True)
    """
    start = time.monotonic()
    proc = mpirun(tmp_path, code, "world", timeout=90)
    assert proc.returncode != 0
    assert "should not get here" not in proc.stdout
    assert "node 'stuck_without_rank_1' failed on rank 1 of 3" in proc.stderr
    assert "RuntimeError: rank 1 gives up" in proc.stderr
    assert "aborting the MPI job" in proc.stderr
    assert time.monotonic() - start < 60


# -- SPMD nodes of MPIExecutor (cores=k on k worker ranks) ------------------------------

GANG_SCRIPT = """
import glob, json, os, time
import dispatcher as dp
from mpi4py import MPI

def record(kind, i, comm, seconds):
    alloc = dp.allocation()
    start = time.time()
    total = comm.allreduce(comm.Get_rank() + 1) if comm is not None else None
    time.sleep(seconds)
    rank = MPI.COMM_WORLD.Get_rank()
    with open(f"call-{kind}-{i}-{rank}.json", "w") as f:
        json.dump({"kind": kind, "i": i, "rank": rank, "start": start, "end": time.time(),
                   "size": None if comm is None else comm.Get_size(), "total": total,
                   "cores": alloc.cores, "hosts": [list(h) for h in alloc.hosts],
                   "same": alloc.comm is comm, "omp": os.environ.get("OMP_NUM_THREADS")}, f)
    return [kind, i, None if comm is None else comm.Get_rank()]

@dp.op(cores=2)
def spmd(i, comm):
    return record("spmd", i, comm, 1.0)

@dp.op(cores=(1, 8))
def malleable(i, comm=None):
    return record("malleable", i, comm, 0.0)

def single(i):
    return record("single", i, None, 0.2)

@dp.op(cores=2)
def fails_on_rank_1(comm):
    if comm.Get_rank() == 1:
        raise ValueError("rank 1 fails")
    return "rank 0 is fine"

@dp.op(cores=3, timeout=1.0)
def too_slow(comm):
    time.sleep(60)

@dp.op(cores=2)
def stored(comm):
    with open(f"stored-{MPI.COMM_WORLD.Get_rank()}-{time.monotonic_ns()}", "w"):
        pass
    return comm.Get_rank()

ex = dp.MPIExecutor(4, grace=5.0)
out = {"cores": ex.cores}
nodes = [spmd(0), spmd(1), dp.Op(single, 0), dp.Op(single, 1)]
out["values"] = dp.execute(nodes, ex)
out["lone"] = dp.execute(malleable(0), ex)
failing = [("failure", fails_on_rank_1()), ("timeout", too_slow()), ("too_big", dp.op(cores=5)(single)(9))]
for name, node in failing:
    try:
        dp.execute(node, ex)
    except dp.DependencyError as err:
        out[name] = [str(err), getattr(err.__cause__, "__notes__", [])]
out["after"] = dp.execute(spmd(2), ex)
out["stored"] = [dp.execute(stored(), ex, store="store") for _ in range(2)]
out["writers"] = len(glob.glob("stored-*"))
out["entries"] = len([p for p in glob.glob("store/**/*", recursive=True) if os.path.isfile(p)])
out["calls"] = [json.load(open(p)) for p in sorted(glob.glob("call-*.json"))]
report(out)
"""


# the other two ways of starting the ranks run in `make test-all` (this test takes seconds)
@pytest.mark.parametrize(
    "how",
    ["futures", pytest.param("world", marks=pytest.mark.slow), pytest.param("spawn", marks=pytest.mark.slow)],
)
def test_spmd_nodes_run_side_by_side_on_disjoint_ranks(tmp_path, how):
    out = reports(mpirun(tmp_path, GANG_SCRIPT, how, n=5), tmp_path)[0]
    assert out["cores"] == 4  # one core per worker rank
    assert out["values"] == [["spmd", 0, 0], ["spmd", 1, 0], ["single", 0, None], ["single", 1, None]]
    calls = out["calls"]
    spmd = [c for c in calls if c["kind"] == "spmd" and c["i"] in (0, 1)]
    ranks = {i: {c["rank"] for c in spmd if c["i"] == i} for i in (0, 1)}
    assert len(ranks[0]) == len(ranks[1]) == 2 and not ranks[0] & ranks[1]  # disjoint worker ranks
    if how != "spawn":  # the ranks of the user's job: the driver is rank 0
        assert 0 not in ranks[0] | ranks[1]
    assert max(c["start"] for c in spmd) < min(c["end"] for c in spmd)  # both at once
    for c in spmd:  # a communicator of the node's 2 ranks, an allreduce on it, the allocation
        assert (c["size"], c["total"], c["cores"], c["same"], c["omp"]) == (2, 3, 2, True, "1")
        assert sum(n for _, n in c["hosts"]) == 2
    singles = [c for c in calls if c["kind"] == "single"]
    assert len(singles) == 2 and all(c["size"] is None and c["cores"] == 1 for c in singles)
    # a lone malleable node gets every worker rank
    lone = [c for c in calls if c["kind"] == "malleable"]
    assert out["lone"] == ["malleable", 0, 0]
    assert len(lone) == 4 and {c["size"] for c in lone} == {4} and {c["total"] for c in lone} == {10}
    message, notes = out["failure"]
    assert message == "node 'fails_on_rank_1' failed: ValueError: rank 1 fails"
    assert notes == ["(raised on rank 1 of the 2 ranks of the node)"]
    assert "node 'too_slow' failed: TimeoutError" in out["timeout"][0]
    assert "asks for 5 cores but the executor has 4" in out["too_big"][0]
    assert out["after"] == ["spmd", 2, 0]  # the ranks serve on after a failure and a timeout
    assert out["stored"] == [0, 0]  # rank 0's value, from the store the second time
    assert out["writers"] == 2  # the second run called nobody
    assert out["entries"] >= 1


def test_a_failed_spmd_rank_aborts_the_job_when_the_others_stay_stuck(tmp_path):
    code = """
    import dispatcher as dp
    @dp.op(cores=2)
    def stuck_without_rank_1(comm):
        if comm.Get_rank() == 1:
            raise RuntimeError("rank 1 gives up")
        return comm.allreduce(1)       # waits for rank 1 forever
    ex = dp.MPIExecutor(grace=1.0)
    dp.execute(stuck_without_rank_1(), ex)
    print("should not get here", flush=True)
    """
    start = time.monotonic()
    proc = mpirun(tmp_path, code, "futures", timeout=90)
    assert proc.returncode != 0
    assert "should not get here" not in proc.stdout
    assert "node 'stuck_without_rank_1' failed on rank 1 of 2" in proc.stderr
    assert "RuntimeError: rank 1 gives up" in proc.stderr
    assert "aborting the MPI job" in proc.stderr
    assert time.monotonic() - start < 60


def test_a_spawning_executor_kills_the_rest_of_a_failed_spmd_node(tmp_path):
    code = """
    import os, signal, time
    import dispatcher as dp

    @dp.op(cores=2)
    def stuck_without_rank_1(comm):
        if comm.Get_rank() == 1:
            raise RuntimeError("rank 1 gives up")
        return comm.allreduce(1)       # waits for rank 1 forever: its rank is killed

    @dp.op(cores=2)
    def dies_once(comm):
        if comm.Get_rank() == 1 and not os.path.exists("died"):
            open("died", "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return comm.allreduce(1)

    @dp.op(cores=3)
    def three(comm):
        return comm.Get_size()

    ex = dp.MPIExecutor(3, retries=1)
    out = {"pids": ex.start().worker_pids()}
    start = time.monotonic()
    try:
        dp.execute(stuck_without_rank_1(), ex)
    except dp.DependencyError as err:
        out["stuck"] = [str(err), err.__cause__.__notes__, time.monotonic() - start]
    out["retried"] = dp.execute(dies_once(), ex)
    out["three"] = dp.execute(three(), ex)  # the ranks regrouped into one job of 3
    out["two"] = dp.execute(dp.op(cores=2)(lambda comm: comm.Get_size())(), ex)
    out["stats"] = dict(ex.stats)
    ex.close()
    report(out)
    """
    out = reports(mpirun(tmp_path, code, "spawn"), tmp_path)[0]
    message, notes, seconds = out["stuck"]
    assert message == "node 'stuck_without_rank_1' failed: RuntimeError: rank 1 gives up"
    assert notes == ["(raised on rank 1 of the 2 ranks of the node)"]
    assert seconds < 30  # the driver killed the stuck rank: no wait for a grace period
    assert out["retried"] == 2  # a rank that died: WorkerLostError, retried on other ranks
    assert out["three"] == 3
    assert out["two"] == 2
