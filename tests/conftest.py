"""Shared fixtures: every executor, each made fresh and closed after, and state
that nodes can share even when they run in other processes."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time

import pytest

import dispatcher as dp
from dispatcher.executors import _mpisuper
from dispatcher.executors.registry import EXECUTORS

# The suite started in the background of a shell inherits Ctrl-C ignored, and so would
# every script it starts: the Ctrl-C tests need it as a terminal gives it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

EXECUTOR_NAMES = list(EXECUTORS)  # every executor of the registry runs the shared suites
LOCAL_EXECUTOR_NAMES = [name for name, entry in EXECUTORS.items() if entry.local]  # share our memory


def pause(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def start_workers(ex, workers: int = 2) -> None:
    """Start ``ex``'s workers and have each import this test package (as a call of
    a test module's function does), so that a test timing a call that follows
    counts neither: on a busy machine each takes seconds. Calls with a timeout go
    one at a time, and each sleeps, so every worker gets some."""
    dp.run(ex, [dp.op(pause, timeout=60)(0.1) for _ in range(2 * workers)])


class FileChannel:
    """A FIFO of JSON values in a file: what Dispatcher.jl's tests do with a
    ``RemoteChannel``, for nodes that may run in other processes. Pickles by path."""

    folder: str | None = None  # where the channels of this test session live (removed at its end)

    def __init__(self, path: str | None = None):
        if path is None:
            if FileChannel.folder is None:
                FileChannel.folder = tempfile.mkdtemp(prefix="dispatcher-test-")
            fd, path = tempfile.mkstemp(dir=FileChannel.folder)
            os.close(fd)
        self.path = path

    def _update(self, change):
        with open(self.path, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            items = [json.loads(line) for line in f if line.strip()]
            result = change(items)
            f.seek(0)
            f.truncate()
            f.writelines(json.dumps(item) + "\n" for item in items)
            return result

    def put(self, item) -> None:
        self._update(lambda items: items.append(item))

    append = put

    def get_nowait(self):
        return self._update(lambda items: items.pop(0))

    def items(self) -> list:
        return self._update(lambda items: list(items))

    def peek(self):
        return self.items()[0]

    def empty(self) -> bool:
        return not self.items()

    def __len__(self) -> int:
        return len(self.items())

    def __eq__(self, other):
        return isinstance(other, FileChannel) and other.path == self.path

    __hash__ = None


class DiesOnce:
    """A call whose first run kills the process that runs it (``os._exit``); the
    next ones return ``value``. It pickles by reference, so workers run it too."""

    def __init__(self, value: object = "second"):
        self.tries = FileChannel()
        self.value = value

    def __call__(self) -> object:
        self.tries.append(os.getpid())
        if len(self.tries.items()) == 1:
            os._exit(1)
        return self.value


def alive(pid: int) -> bool:
    """Is ``pid`` a live process (a zombie counts as gone)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, or going as we read
        return False


def wait_gone(pids, seconds=10.0, reaped=False) -> list:
    """Wait up to ``seconds`` for ``pids`` to end; returns those still alive (with
    ``reaped``, a zombie counts as still there: its parent has not waited for it)."""
    there = (lambda p: os.path.exists(f"/proc/{p}")) if reaped else alive
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(there(p) for p in pids):
        time.sleep(0.02)
    return [p for p in pids if there(p)]


BIN = sysconfig.get_path("scripts")  # this environment's scripts: mpiexec, dask...


def script_env(extra: dict | None = None) -> dict:
    """The environment of a script a test runs: this one's, outside any MPI job or
    Slurm allocation, with this environment's scripts first on ``PATH``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_", "HYDRA_"))}
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env.update(extra or {})
    return env


def start_script(args: list, cwd, env: dict | None = None) -> subprocess.Popen:
    """Start ``args`` in ``cwd`` in a session of its own (so that a test can kill
    all it started with ``os.killpg``), its output read as text through pipes."""
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=script_env(env),
        start_new_session=True,
    )


def run_script(
    tmp_path, code: str, *, command: list | None = None, env: dict | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run ``code`` as ``script.py`` in ``tmp_path`` in a fresh interpreter (under
    ``command``, by default ``[python]``), in a session of its own; the result has
    ``.seconds``, its running time. A script still running after ``timeout`` seconds
    is killed with its session and the test fails: a hang fails, it never blocks
    the suite, and a Python script first prints where its threads were."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    start = time.monotonic()
    env = {"PYTHONFAULTHANDLER": "1", **(env or {})}
    proc = start_script([*(command or [sys.executable]), str(script)], tmp_path, env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if command is None:  # a Python script: its faulthandler prints where its threads are
            os.kill(proc.pid, signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=5)
        with contextlib.suppress(ProcessLookupError):  # (its session may have ended with it)
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the script did not end in {timeout} s (a hang?)\n{out}\n{err}")
    finally:  # the test interrupted (its time limit, Ctrl-C): the script does not outlive it
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    done.seconds = time.monotonic() - start
    return done


_dask_client = None


def dask_client():
    """One LocalCluster of worker processes for the whole session (closed at exit)."""
    global _dask_client
    if _dask_client is None:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=2, threads_per_worker=2, dashboard_address=":0", silence_logs=logging.ERROR
        )
        _dask_client = Client(cluster, set_as_default=False)
    return _dask_client


@pytest.fixture(autouse=True)
def _no_mpi_files_left():
    """MPI jobs the tests start and kill as a user would (under ``mpiexec``, where
    the library does not own the job) leave MPICH's shared-memory files in
    /dev/shm and Hydra's topology files in /tmp; remove them, as the supervisor
    of the library's own jobs does."""
    before = _mpisuper.left_files()
    yield
    _mpisuper.remove_left_files(before)


@pytest.fixture(scope="session", autouse=True)
def _remove_channels():
    yield
    if FileChannel.folder is not None:
        shutil.rmtree(FileChannel.folder, ignore_errors=True)
        FileChannel.folder = None


@pytest.fixture(scope="session", autouse=True)
def _close_dask_client():
    yield
    global _dask_client
    if _dask_client is not None:
        cluster = _dask_client.cluster
        _dask_client.close()
        cluster.close()
        _dask_client = None


class _Resources:
    """What the registry's entries are made from in the tests (see
    :class:`dispatcher.executors.registry.Resources`): two worker processes or
    ranks, four threads, the session's dask cluster, and a fresh thread pool."""

    workers = 2
    threads = 4

    def __init__(self):
        self.pool = None

    def dask_client(self):
        return dask_client()

    def thread_pool(self):
        self.pool = cf.ThreadPoolExecutor(self.threads)
        return self.pool


def make_executor(name: str, **options) -> tuple[dp.Executor, object]:
    """A fresh executor named ``name`` in the registry, and the pool it runs on (or None)."""
    resources = _Resources()
    return EXECUTORS[name].create(resources, **options), resources.pool


@pytest.fixture(params=EXECUTOR_NAMES)
def executor_factory(request):
    """Call with executor options; every executor made is closed after the test."""
    made = []

    def factory(**options):
        ex, pool = make_executor(request.param, **options)
        made.append((ex, pool))
        return ex

    factory.name = request.param
    yield factory
    for ex, pool in made:
        ex.close()
        if pool is not None:
            pool.shutdown(wait=True)


@pytest.fixture(scope="module", params=EXECUTOR_NAMES)
def _module_executor(request):
    """One executor of each name for the tests of a module that take the plain
    ``executor``: its workers start once, not once per test. A test that closes it
    gets a fresh one the next time."""
    made = []

    def get():
        if not made or made[-1][0].closed:
            made.append(make_executor(request.param))
        return made[-1][0]

    yield get
    for ex, pool in made:
        ex.close()
        if pool is not None:
            pool.shutdown(wait=True)


@pytest.fixture
def executor(_module_executor):
    """An executor of every name in the registry, shared by the tests of a module
    (use ``executor_factory`` for one with options, or one of a test's own)."""
    return _module_executor()


@pytest.fixture(params=LOCAL_EXECUTOR_NAMES)
def local_executor(request):
    """An executor whose nodes run in this process (they can share its memory)."""
    ex, pool = make_executor(request.param)
    yield ex
    ex.close()
    if pool is not None:
        pool.shutdown(wait=True)
