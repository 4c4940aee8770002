"""Values stay where they are made (dispatcher.executors._held): on ProcessExecutor
and on the ranks MPIExecutor spawns, a value the driver has no use for is never
unpickled there, a value read by many calls reaches each worker once, each worker
forgets it once the run has, and a worker lost while it kept values costs the run
nothing but its calls."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

import dispatcher as dp

from .test_mpi import mpirun, reports


class Logged:
    """A value that writes the pid of every process that unpickles it to ``path``."""

    def __init__(self, path: str, data: bytearray):
        self.path = path
        self.data = data

    def __reduce__(self):
        return (_unpickled, (self.path, self.data))


def _unpickled(path: str, data: bytearray) -> Logged:
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return Logged(path, data)


def made(path: str, size: int) -> Logged:
    return Logged(path, bytearray(size))


def size_of(value: Logged, *_) -> int:
    return len(value.data)


def kept_here() -> int:
    """(In a worker) how many values it keeps for the pool."""
    return len(sys.modules["_dispatcher_wire"]._cache)


def read_or_die(value: Logged, flag: str) -> int:
    """The first call to get here kills its worker (the values it keeps go with it)."""
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return len(value.data)
    os._exit(3)


def told_to_forget(ex, within: float = 30.0) -> bool:
    """Every worker of ``ex``'s pool was sent what it may forget (waiting for the
    pool's thread, which does it)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        holds = [w.holds for w in ex._workers.pool.workers.values()]
        if not any(h.forget for h in holds):
            return True
        time.sleep(0.01)
    return False


def nested(size: int) -> tuple:
    """A node that runs a process pool of its own, on a worker of another."""
    with dp.ProcessExecutor(1) as inner:
        got = dp.execute(dp.Op(list, range(size)), inner)
        length = dp.execute(dp.Op(len, dp.Op(list, range(size))), inner)
    return type(got).__name__, len(got), length


def append_one(values: list) -> int:
    values.append(-1)
    return len(values)


class Noted(Logged):
    """A logged value that notes, as it goes, the thread it goes in."""

    def __reduce__(self):
        return (_noted, (self.path, self.data))

    def __del__(self):
        with open(f"{self.path}.gone", "a") as f:
            f.write(f"{threading.current_thread().name}\n")


def _noted(path: str, data: bytearray) -> Noted:
    return Noted(path, _unpickled(path, data).data)


def made_noted(path: str, size: int) -> Noted:
    return Noted(path, bytearray(size))


def unpicklings(path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_a_value_the_driver_does_not_need_is_never_unpickled_there_and_reaches_each_worker_once(tmp_path):
    log = tmp_path / "unpickled"
    with dp.ProcessExecutor(2, batch_size=1) as ex:
        value = dp.Op(made, str(log), 5000)
        readers = [dp.Op(size_of, value) for _ in range(12)]  # one message each
        assert dp.execute(dp.Op(sum, readers), ex) == 12 * 5000
        workers = set(ex.worker_pids())
        pids = unpicklings(log)
        assert os.getpid() not in pids  # the intermediate never reached the driver
        assert set(pids) <= workers and len(pids) == len(set(pids))  # each worker once at most
        # an output is the value itself, read in the driver
        assert isinstance(dp.execute(value, ex), Logged)
        assert os.getpid() in unpicklings(log)
        # the node that keeps its value (release=False) is gone: each worker is told
        # to forget it at once, idle as it is (a message of its own)
        del value, readers
        assert told_to_forget(ex)
        assert dp.execute([dp.Op(kept_here) for _ in range(4)], ex) == [0] * 4
        # with release=True, once no node needs it
        value = dp.Op(made, str(log), 5000)
        dp.run(ex, [dp.Op(sum, [dp.Op(size_of, value) for _ in range(4)])], release=True)
        assert dp.execute([dp.Op(kept_here) for _ in range(4)], ex) == [0] * 4


def test_a_value_read_by_many_calls_of_one_batch_and_of_later_ones_is_sent_once_per_worker(tmp_path):
    log = tmp_path / "unpickled"
    with dp.ProcessExecutor(2) as ex:  # batched: several readers per message
        value = dp.Op(made, str(log), 2_000_000)  # out of band, 2 MB
        first = [dp.Op(size_of, value) for _ in range(40)]
        later = [dp.Op(size_of, value, dp.Op(sum, first)) for _ in range(40)]
        before = dict(ex.stats)
        assert dp.execute(dp.Op(sum, later), ex) == 40 * 2_000_000
        pids = unpicklings(log)
        assert len(pids) == len(set(pids)) <= 2 and os.getpid() not in pids
        shared = ex.stats.get("bytes_shared", 0) - before.get("bytes_shared", 0)
        assert shared <= 2 * 2_000_000  # the file, once to each worker


def test_a_worker_lost_while_it_kept_values_costs_the_run_nothing_but_its_call(tmp_path):
    log = tmp_path / "unpickled"
    with dp.ProcessExecutor(2, batch_size=1) as ex:
        value = dp.Op(made, str(log), 5000)
        readers = [dp.Op(read_or_die, value, str(tmp_path / "died")) for _ in range(6)]
        assert dp.execute(dp.Op(sum, readers), ex) == 6 * 5000  # the killed call retried
        assert ex.stats["lost"] == 1
        assert os.getpid() not in unpicklings(log)


@pytest.mark.timeout(200)
def test_on_the_ranks_mpi_executor_spawns_values_stay_where_they_are_made(tmp_path):
    code = f"""
    import os, sys
    sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})
    import dispatcher as dp
    from tests.test_locality import made, size_of, unpicklings
    from pathlib import Path
    log = Path("unpickled")
    with dp.MPIExecutor(2, batch_size=1) as ex:
        value = dp.Op(made, str(log.resolve()), 5000)
        total = dp.execute(dp.Op(sum, [dp.Op(size_of, value) for _ in range(8)]), ex)
        workers = ex.worker_pids()
    report({{"total": total, "pids": unpicklings(log), "me": os.getpid(), "workers": workers}})
    """
    out = reports(mpirun(tmp_path, code, how="spawn", timeout=180), tmp_path)[0]
    assert out["total"] == 8 * 5000
    assert out["me"] not in out["pids"]
    assert set(out["pids"]) <= set(out["workers"]) and len(out["pids"]) == len(set(out["pids"]))


def test_a_small_value_comes_back_as_itself():
    with dp.ProcessExecutor(1) as ex:
        small = dp.Op(list, range(10))
        assert dp.execute(dp.Op(len, small), ex) == 10
        assert ex.stats.get("bytes_shared", 0) == 0 and type(small._outcome) is list
        big = dp.Op(list, range(1000))  # over 1 KiB pickled: held
        assert dp.execute(dp.Op(len, big), ex) == 1000
        assert type(big._outcome).__name__ == "Held" and big.fetch() == list(range(1000))


def test_a_node_running_a_process_pool_of_its_own_gets_values_not_held_bytes():
    with dp.ProcessExecutor(1) as ex:
        assert dp.execute(dp.Op(nested, 2000), ex) == ("list", 2000, 2000)


def test_calls_on_one_worker_share_what_it_keeps_whether_or_not_the_driver_read_it_too():
    with dp.ProcessExecutor(1, batch_size=1) as ex:
        for also_an_output in (False, True):
            values = dp.Op(list, range(2000))
            appends = [dp.Op(append_one, values) for _ in range(3)]
            got = dp.execute([*appends, values] if also_an_output else appends, ex)
            assert sorted(got[:3]) == [2001, 2002, 2003]  # one copy on the worker, shared
            if also_an_output:
                assert got[3] == list(range(2000))  # the driver's value, never changed by them
                assert values.fetch() is values.fetch() is got[3]  # read once, then kept


def test_a_forgotten_value_goes_in_the_workers_main_thread(tmp_path):
    # (its finalizer runs where the calls run, never beside them; a large array's
    # file alone is unmapped in a thread of its own)
    log = tmp_path / "unpickled"
    with dp.ProcessExecutor(2, batch_size=1) as ex:
        value = dp.Op(made_noted, str(log), 2_000_000)
        assert dp.execute(dp.Op(sum, [dp.Op(size_of, value) for _ in range(4)]), ex) == 8_000_000
        del value
        assert told_to_forget(ex)
        assert dp.execute([dp.Op(kept_here) for _ in range(4)], ex) == [0] * 4
    gone = (tmp_path / "unpickled.gone").read_text().split()
    assert gone and set(gone) == {"MainThread"}
