"""Large values between processes: a value made on one worker and read on others is
copied once, the driver relays it without touching its memory, a node writing
into its argument changes only its own copy, and what the program writes into an
output is what a later run's node receives."""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket

import numpy as np
import pytest

import dispatcher as dp
from dispatcher.executors import _wire as wire

from .conftest import run_script

MB = 1 << 20


@pytest.fixture
def wire_files(monkeypatch):
    """The files the wire makes (one copy of a buffer each), and the inode of each
    file a receiver maps."""
    made, mapped = [], []
    make, map_ = wire._shared_file, wire._map

    def counting_make(buf):
        made.append(buf.nbytes)
        return make(buf)

    def recording_map(fd, size, keep):
        mapped.append(os.fstat(fd).st_ino)
        return map_(fd, size, keep)

    monkeypatch.setattr(wire, "_shared_file", counting_make)
    monkeypatch.setattr(wire, "_map", recording_map)
    return made, mapped


def hop(value, keep: bool):
    """``value`` sent through a socket and received (as a worker, or ``keep``: as the pool)."""
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b, concurrent.futures.ThreadPoolExecutor(1) as sender:
        sent = sender.submit(wire.send, a, ("value", value))
        got = wire.recv(b, keep=keep)[1]
        sent.result()
        return got


def test_a_value_the_pool_received_is_sent_on_as_the_same_file(wire_files):
    made, mapped = wire_files
    x = np.arange(MB // 4, dtype=np.float64).reshape(512, 512)  # 2 MiB
    relayed = hop(x, keep=True)  # a worker's result, at the pool
    readers = [hop({"a": relayed}, keep=False)["a"] for _ in range(3)]  # to three workers
    assert made == [x.nbytes]  # one copy in all
    assert len(set(mapped)) == 1 and len(mapped) == 4  # every reader mapped that file
    for got in (relayed, *readers):
        np.testing.assert_array_equal(got, x)
    # a part of it, or a copy, is not the file: it travels as a file of its own
    hop(relayed[:300], keep=False)
    hop(relayed.copy(), keep=False)
    assert made == [x.nbytes, 300 * 512 * 8, x.nbytes]


def test_what_a_reader_writes_stays_its_own_and_the_pool_mapping_is_the_file(wire_files):
    x = np.zeros(MB, dtype=np.uint8)
    relayed = hop(x, keep=True)
    first = hop(relayed, keep=False)
    first[:] = 1  # copy-on-write: neither the file nor the pool's mapping changes
    assert not relayed.any() and not hop(relayed, keep=False).any()
    relayed[:10] = 7  # the pool's mapping is the file: the next reader sees it
    assert hop(relayed, keep=False)[:10].tolist() == [7] * 10


def test_the_pool_keeps_at_most_kept_files_max_files_open(wire_files, monkeypatch):
    made, _ = wire_files
    monkeypatch.setattr(wire, "KEPT_FILES_MAX", wire._kept + 1)
    x = np.ones(MB, dtype=np.uint8)
    kept, copied = hop(x, keep=True), hop(x, keep=True)
    assert kept.base.base.obj.fd is not None and copied.base.base.obj.fd is None
    del made[:]
    hop(kept, keep=False)
    hop(copied, keep=False)  # not kept open: copied into a file of its own
    assert made == [x.nbytes]
    before = wire._kept
    del kept
    assert wire._kept == before - 1  # the file closes with its last array


def bump(a):
    a += 1  # copy-on-write: the parent's file, and other workers, still see the original
    return int(a.sum())


def total(a, *after):
    return int(a.sum())


def test_a_node_writing_into_its_argument_changes_only_its_workers_copy():
    # calls on one worker share what they read, as calls in one process do: the
    # second writer on a worker sees the first's change; the parent's value, never
    with dp.ProcessExecutor(2, batch_size=1) as ex:
        made = dp.Op(np.zeros, 4 * MB, dtype=np.uint8)
        bumped = [dp.Op(bump, made) for _ in range(4)]
        *sums, value = dp.execute([*bumped, made], ex)
    # (four writers on two workers: one worker ran two or more, each seeing the ones before)
    assert (
        all(s % (4 * MB) == 0 for s in sums) and min(sums) == 4 * MB and 2 * 4 * MB <= max(sums) <= 4 * 4 * MB
    )
    assert not value.any()


def test_the_executor_counts_the_bytes_copied_and_those_passed_on():
    with dp.ProcessExecutor(2, batch_size=1) as ex:
        dp.execute(dp.Op(abs, 1), ex)  # the workers are up
        before = dict(ex.stats)
        made = dp.Op(np.ones, 4 * MB, dtype=np.uint8)
        assert dp.execute(dp.Op(sum, [dp.Op(total, made) for _ in range(6)]), ex) == 6 * 4 * MB
        copied = ex.stats["bytes_copied"] - before["bytes_copied"]
        shared = ex.stats["bytes_shared"] - before.get("bytes_shared", 0)
    assert 4 * MB < copied < 4 * MB + 100_000  # the array once, as its worker wrote it
    # then passed on as that file, once to each worker (each keeps it for its next readers)
    assert shared in (4 * MB, 2 * 4 * MB)


def test_what_the_program_writes_into_an_output_is_what_a_later_node_receives():
    with dp.ProcessExecutor(2) as ex:
        out = dp.execute(dp.Op(np.zeros, 2 * MB, dtype=np.uint8), ex)
        out[:] = 3
        assert dp.execute(dp.Op(total, out), ex) == 6 * MB


CHAIN_SCRIPT = """
import json, resource
import numpy as np
import dispatcher as dp

def start(n):
    return np.ones(n, dtype=np.uint8)

def step(a):
    return a + 1

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

if __name__ == "__main__":
    with dp.ProcessExecutor(2) as ex:
        dp.execute(dp.Op(step, dp.Op(start, 10)), ex)  # the workers are up
        before = peak()
        node = dp.Op(start, 64 << 20)
        for _ in range(5):
            node = dp.Op(step, node)
        assert dp.execute(dp.Op(lambda a: int(a[0]), node), ex) == 6
        print(json.dumps([before, peak()]))
"""


def test_the_driver_relays_large_values_without_holding_them(tmp_path):
    # a chain of six 64 MiB arrays: the driver's peak memory grows by far less than one
    proc = run_script(tmp_path, CHAIN_SCRIPT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    before, after = json.loads(proc.stdout.splitlines()[-1])
    assert after - before < 16, (before, after)


def test_a_buffer_that_cannot_be_taken_leaves_the_connection_in_step(monkeypatch):
    big, small = (
        np.ones(2 * MB, dtype=np.uint8),
        np.full(100_000, 2, dtype=np.uint8),
    )  # a file, then in the stream
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b, concurrent.futures.ThreadPoolExecutor(1) as sender:
        sent = sender.submit(lambda: [wire.send(a, ("first", big, small)), wire.send(a, ("second", small))])

        def no_memory(fd, size, keep):
            raise OSError(12, "Cannot allocate memory")

        with monkeypatch.context() as patch:
            patch.setattr(wire, "_map", no_memory)
            with pytest.raises(wire.Unreceivable, match="Cannot allocate memory"):
                wire.recv(b)
        kind, got = wire.recv(b)  # the next message, whole
        sent.result()
    assert kind == "second" and got.tolist() == small.tolist()


def test_a_worker_refused_a_private_mapping_reads_the_file_in_place(monkeypatch):
    monkeypatch.setattr(wire, "_COPY_ON_WRITE", 0)  # neither shared nor private: the system refuses it
    got = hop(np.arange(MB, dtype=np.int32), keep=False)
    assert not got.flags.writeable and got[-1] == MB - 1


def test_the_pool_keeps_an_eighth_of_the_descriptors_it_may_open(monkeypatch):
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda which: (400, 4096))
    assert wire._room() == 50
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1 << 20, 1 << 20))
    assert wire._room() == wire.KEPT_FILES_MAX


def test_a_result_the_driver_cannot_take_fails_its_node_and_the_pool_goes_on(monkeypatch):
    with dp.ProcessExecutor(1) as ex:
        real = wire._map

        def driver_out_of_memory(fd, size, keep):
            if keep:
                raise OSError(12, "Cannot allocate memory")
            return real(fd, size, keep)

        monkeypatch.setattr(wire, "_map", driver_out_of_memory)
        with pytest.raises(dp.DependencyError, match=r"cannot be received here.*Cannot allocate memory"):
            dp.execute(dp.Op(np.zeros, 2 * MB), ex)
        monkeypatch.setattr(wire, "_map", real)
        assert dp.execute(dp.Op(np.ones, 2 * MB), ex).sum() == 2 * MB
        assert ex.stats.get("lost", 0) == 0
