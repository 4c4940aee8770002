"""Runs with a store, on every executor: what is skipped, what is read, what is kept
(the engine's policy, :mod:`dispatcher.engine.caching`)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import dispatcher as dp
from dispatcher.engine.caching import RunCache
from dispatcher.outcomes import RELEASED, Stored
from dispatcher.store import FileStore

from .conftest import FileChannel


def record(calls, x):
    calls.append(x)
    return x * 10


def total(calls, *xs):
    calls.append("total")
    return sum(xs)


def fails(calls, x):
    calls.append(f"fails {x}")
    raise ValueError(f"bad {x}")


def big(calls, i):
    calls.append(i)
    return np.full(100_000, i * 10)


def first(calls, x, other):
    calls.append(x)
    return x


def graph(calls, n=6):
    parts = [dp.Op(record, calls, i) for i in range(n)]
    return dp.Op(total, calls, *parts), parts


class CountingStore(FileStore):
    """A FileStore that counts what this process loads."""

    def __init__(self, path):
        super().__init__(path)
        self.loads: list = []

    def load(self, key):
        value = super().load(key)
        self.loads.append(key)
        return value


def drained(calls: FileChannel) -> list:
    """The calls recorded so far, as strings, sorted; the channel is emptied (it is
    an argument of the nodes: the same channel keeps their keys)."""
    return sorted(map(str, calls._update(lambda items: [items.pop() for _ in list(items)])))


def test_a_second_run_computes_nothing_and_gives_the_same_values(executor, tmp_path):
    calls = FileChannel()
    out, _ = graph(calls)
    first = dp.run(executor, [out], store=tmp_path)[0].value
    assert drained(calls) == sorted([*map(str, range(6)), "total"])
    out2, parts2 = graph(calls)  # the same calls, new nodes
    again = dp.run(executor, [out2, parts2[3]], store=tmp_path)
    assert [r.value for r in again] == [first, 30] == [150, 30]
    assert drained(calls) == []
    assert out2.fetch() == 150


def test_only_what_is_missing_runs(executor, tmp_path):
    calls = FileChannel()
    dp.run(executor, [dp.Op(record, calls, i) for i in range(3)], store=tmp_path)
    drained(calls)
    out, _ = graph(calls)  # record(0..2) are stored, 3..5 and total are not
    assert dp.run(executor, [out], store=tmp_path)[0].value == 150
    assert drained(calls) == ["3", "4", "5", "total"]


def test_a_fully_stored_graph_reads_only_its_outputs(tmp_path):
    calls = FileChannel()
    chain = dp.Op(record, calls, 1)
    for _ in range(50):
        chain = dp.Op(record, calls, chain)
    dp.execute(chain, store=tmp_path)
    store = CountingStore(tmp_path)
    again = dp.Op(record, calls, 1)
    for _ in range(50):
        again = dp.Op(record, calls, again)
    drained(calls)
    assert dp.execute(again, store=store) == chain.fetch()
    assert drained(calls) == [] and len(store.loads) == 1


def test_cache_false_and_version(tmp_path):
    calls = FileChannel()
    impure = dp.op(cache=False)(record)
    dp.execute([impure(calls, 1), dp.op(version=1)(record)(calls, 2)], store=tmp_path)
    drained(calls)
    dp.execute([impure(calls, 1), dp.op(version=1)(record)(calls, 2)], store=tmp_path)
    assert drained(calls) == ["1"]  # the impure node runs every time; version 1 is stored
    dp.execute([dp.Op(total, calls, impure(calls, 1)), dp.op(version=2)(record)(calls, 2)], store=tmp_path)
    assert drained(calls) == ["1", "2", "total"]  # downstream of an impure node: no key


def test_failures_are_not_stored(executor, tmp_path):
    calls = FileChannel()
    bad = dp.Op(fails, calls, 1)
    for _ in range(2):
        (result,) = dp.run(executor, [bad], store=tmp_path, throw_error=False)
        assert isinstance(result.error.error, ValueError)
    assert calls.items() == ["fails 1", "fails 1"]
    assert list(FileStore(tmp_path).entries()) == []


def test_an_argument_that_cannot_be_hashed_is_run_with_one_warning(tmp_path, caplog):
    lock = threading.Lock()
    calls = FileChannel()
    nodes = [dp.Op(first, calls, i, lock) for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="dispatcher"):
        assert dp.execute(nodes, store=tmp_path) == list(range(5))
    warnings = [r.getMessage() for r in caplog.records if "is not stored" in r.getMessage()]
    assert len(warnings) == 1
    assert (
        "(and 4 more of its nodes)" in warnings[0] and "argument 2" in warnings[0] and "lock" in warnings[0]
    )


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_entry_is_computed_again(tmp_path, caplog, damage):
    calls = FileChannel()
    node = dp.Op(big, calls, 7)
    dp.execute(node, store=tmp_path)
    (entry,) = FileStore(tmp_path).entries()
    path = FileStore(tmp_path)._entry(entry.key)
    with open(path, "r+b") as f:
        if damage == "truncate":
            f.truncate(entry.nbytes // 2)
        else:
            f.write(b"garbage")
    drained(calls)
    with caplog.at_level(logging.WARNING, logger="dispatcher"):
        again = dp.execute(dp.Op(big, calls, 7), store=tmp_path)
    np.testing.assert_array_equal(again, np.full(100_000, 70))
    assert drained(calls) == ["7"] and "is computed again" in caplog.text
    assert FileStore(tmp_path).load(entry.key).shape == (100_000,)  # written anew, whole


class DeletionsStore(FileStore):
    """A FileStore that counts the entries this process removes."""

    def __init__(self, path):
        super().__init__(path)
        self.deleted: list = []

    def delete(self, key):
        self.deleted.append(key)
        super().delete(key)


def test_a_sound_entry_this_process_cannot_unpickle_is_computed_again_not_removed(tmp_path, caplog):
    # another environment stored a value of a class this process cannot import
    calls = FileChannel()
    node = dp.Op(record, calls, 3)
    store = DeletionsStore(tmp_path / "store")
    (tmp_path / "elsewhere.py").write_text("class Thing:\n    pass\n")
    dp.run(dp.SerialExecutor(), [node], store=store)
    (entry,) = store.entries()
    script = (
        "import sys; sys.path.insert(0, sys.argv[2]); import elsewhere, dispatcher as dp; "
        "dp.FileStore(sys.argv[1]).save(sys.argv[3], elsewhere.Thing(), 'record')"
    )
    subprocess.run([sys.executable, "-c", script, store.path, str(tmp_path), entry.key], check=True)
    drained(calls)
    with caplog.at_level(logging.WARNING, logger="dispatcher"):
        (result,) = dp.run(dp.SerialExecutor(), [dp.Op(record, calls, 3)], store=store)
    assert result.value == 30 and drained(calls) == ["3"]
    assert "cannot be unpickled here" in caplog.text and "ModuleNotFoundError" in caplog.text
    assert store.deleted == []  # sound: left for those who can read it, then written over
    assert store.load(entry.key) == 30


def test_inputs_and_input_map_are_keyed_by_their_values(tmp_path):
    calls = FileChannel()
    a = dp.Op(record, calls, 1)
    b = dp.Op(record, calls, a)
    assert dp.execute(b, store=tmp_path, input_map={a: 5}) == 50
    assert dp.execute(b, store=tmp_path, input_map={a: 5}) == 50
    assert dp.execute(b, store=tmp_path, input_map={a: 6}) == 60
    assert drained(calls) == ["5", "6"]


@contextlib.contextmanager
def mounted_tmpfs(path, size: str, read_only: bool = False):
    """A small tmpfs at ``path`` (root only: CI runs as root), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    path.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        if read_only:
            yield lambda: subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        else:
            yield None
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_read_only_store_is_read_and_the_run_says_it_stores_nothing(tmp_path, caplog):
    calls = FileChannel()
    with mounted_tmpfs(tmp_path / "ro", "4m", read_only=True) as make_read_only:
        dp.execute([dp.Op(record, calls, 1)], store=tmp_path / "ro")
        make_read_only()
        drained(calls)
        with caplog.at_level(logging.WARNING, logger="dispatcher"):
            assert dp.execute([dp.Op(record, calls, 1), dp.Op(record, calls, 2)], store=tmp_path / "ro") == [
                10,
                20,
            ]
        assert drained(calls) == ["2"]  # 1 was read
        assert "cannot be written" in caplog.text and "nothing new is stored" in caplog.text


def test_a_full_disk_loses_entries_not_results(executor, tmp_path, caplog):
    calls = FileChannel()
    with mounted_tmpfs(tmp_path / "full", "512k"):
        nodes = [dp.Op(big, calls, i) for i in range(6)]  # 800 kB each
        with caplog.at_level(logging.WARNING, logger="dispatcher"):
            results = dp.run(executor, nodes, store=tmp_path / "full")
        for i, r in enumerate(results):
            np.testing.assert_array_equal(r.value, np.full(100_000, i * 10))
        assert not any(p.name.startswith(".tmp") for p in (tmp_path / "full").rglob("*"))


def inc(x):
    return x + 1


@pytest.mark.timeout(60)
def test_a_cycle_with_a_store_is_refused_naming_its_nodes(tmp_path):
    a = dp.op(label="a")(inc)(1)
    b = dp.op(label="b")(inc)(a)
    graph = dp.DispatchGraph([dp.op(label="c")(inc)(b)])
    graph.add_edge(b, a)  # a waits for b, which waits for a
    with pytest.raises(dp.ExecutorError, match=r"cycle: .*'a'.*'b'"):
        dp.run(dp.SerialExecutor(), graph, store=tmp_path)


def test_values_read_from_the_store_are_released_once_no_node_needs_them(tmp_path):
    calls = FileChannel()
    parts = [dp.Op(big, calls, i) for i in range(3)]
    dp.run(dp.SerialExecutor(), parts, store=tmp_path)  # the parts are stored, their total not
    total_node = dp.Op(total, calls, *[dp.Op(np.sum, p) for p in parts])
    (result,) = dp.run(dp.SerialExecutor(), [total_node], store=tmp_path, release=True)
    assert result.value == sum(i * 10 * 100_000 for i in range(3))
    assert all(p._outcome is RELEASED for p in parts)  # read, used, let go


@pytest.mark.timeout(60)
def test_a_node_claimed_elsewhere_takes_the_entry_its_claimant_wrote(tmp_path):
    """The claimant stored the value but still holds the claim (it died after its
    worker wrote, on another host): the waiting run takes the entry at its next look."""
    calls = FileChannel()
    node = dp.Op(record, calls, 4)
    other = FileStore(tmp_path)
    key = {}
    caching = RunCache(other, store_on_worker=False)
    caching.plan([node], lambda n: n.dependencies(), key, {})
    (stored_key,) = caching.claimable.values()
    run = other.begin_run()
    try:
        assert other.claim(stored_key, run)
        other.save(stored_key, 40, "record")
        (result,) = dp.run(dp.SerialExecutor(), [dp.Op(record, calls, 4)], store=FileStore(tmp_path))
    finally:
        other.end_run(run)
    assert result.value == 40 and drained(calls) == []


def slow_square(x):
    import time

    time.sleep(0.3)
    return x * x


def test_a_call_that_outlived_its_timeout_is_not_stored_by_its_worker(tmp_path):
    from dispatcher.store.worker import StoredCall

    store = FileStore(tmp_path)
    assert StoredCall(slow_square, store, "ab" * 16, "slow", None, timeout=0.05)(3) == 9
    assert not store.contains("ab" * 16)
    assert StoredCall(slow_square, store, "cd" * 16, "slow", None, timeout=30)(3) == 9
    assert store.load("cd" * 16) == 9


class DictStore(dp.Store):
    """Entries in the driver's memory: a copy pickled to a worker reaches none of them."""

    def __init__(self):
        self.data: dict = {}

    def load(self, key):
        return self.data[key]

    def save(self, key, value, function):
        self.data[key] = value

    def contains(self, key):
        return key in self.data

    def entries(self):
        return iter(())

    def delete(self, key):
        self.data.pop(key, None)


def test_a_store_that_is_not_shared_is_written_by_the_driver(executor, tmp_path):
    calls = FileChannel()
    store = DictStore()
    dp.run(executor, graph(calls, 3)[0], store=store)
    assert len(store.data) == 4  # three parts and their total, whatever the executor
    drained(calls)
    (again,) = dp.run(executor, graph(calls, 3)[0], store=store)
    assert again.value == 30 and drained(calls) == []


class Traced:
    """A large value that records, in a channel, each process that unpickles it."""

    def __init__(self, data, seen):
        self.data = data
        self.seen = seen

    def __reduce__(self):
        return (_unpickled_traced, (self.data, self.seen))


def _unpickled_traced(data, seen):
    seen.put(os.getpid())
    return Traced(data, seen)


def make_traced(seen, i):
    return Traced(np.full(100_000, i), seen)  # 800 kB


def add_traced(seen, a, b):
    return Traced(a.data + b.data, seen)


def traced_sum(t):
    return int(t.data.sum())


def test_a_large_value_the_driver_does_not_need_stays_in_the_store(executor, tmp_path):
    """Workers in other processes write it and report its key; the workers of its
    dependants read it from the store; it never reaches the driver."""
    seen = FileChannel()
    a, b = dp.Op(make_traced, seen, 1), dp.Op(make_traced, seen, 2)
    both = dp.Op(add_traced, seen, a, b)
    small = dp.Op(record, FileChannel(), 5)
    out = dp.Op(traced_sum, both)
    (result, other) = dp.run(executor, [out, dp.Op(total, FileChannel(), small)], store=tmp_path)
    assert result.value == 300_000 and other.value == 50
    caps = executor.capabilities
    if caps.store_on_worker and not caps.pipelines and not caps.in_process:
        assert os.getpid() not in seen.items()  # neither a, b nor both came to the driver
        assert all(type(n._outcome) is Stored for n in (a, b, both))
        assert small._outcome == 50  # small: sent back with the report
    assert int(both.fetch().data.sum()) == 300_000  # read from the store when asked for


def test_a_value_the_driver_needs_is_sent_back(executor_factory, tmp_path):
    ex = executor_factory()
    seen = FileChannel()
    pair = dp.op(nout=2)(lambda s: (make_traced(s, 1), make_traced(s, 2)))(seen)
    first, _ = pair  # indexing runs in the driver where the executor inlines light nodes
    watched = dp.Op(make_traced, seen, 3)

    class Values(dp.Callback):
        def __init__(self):
            self.got = []

        def on_finish(self, node, value):
            self.got.append(type(value).__name__)

    values = Values()
    (a, b) = dp.run(
        ex, [dp.Op(traced_sum, first), dp.Op(traced_sum, watched)], store=tmp_path, callbacks=[values]
    )
    assert (a.value, b.value) == (100_000, 300_000)
    if not ex.capabilities.pipelines:  # (dask keeps every value on its workers)
        assert "Stored" not in values.got and type(watched._outcome) is Traced
        assert type(pair._outcome) is tuple
