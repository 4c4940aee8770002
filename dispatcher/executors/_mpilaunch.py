"""Starting MPI worker ranks with ``mpiexec``, for a spawning ``MPIExecutor``.

Policy: a script started as a world of one (plain ``python script.py``) gets its
worker ranks from an ``mpiexec`` job that this process starts
(:class:`MPILauncher`), not from ``MPI_Comm_spawn``. Each rank starts MPI (so a
node can use ``mpi4py``: the job's ranks share a ``COMM_WORLD``) and connects back
to the executor's job pool (:mod:`dispatcher.executors._pool`) over TCP, with a
random token that the pool checks before it reads anything else. The pool then
treats the ranks as it treats worker processes: a rank that dies is noticed at
once (its connection closes), its node fails with ``WorkerLostError`` and is
retried, and a new job of one rank replaces it. With ``MPI_Comm_spawn`` none of
that is possible: MPICH ends the whole spawned job when one rank dies, and the
driver can neither spawn again nor leave without hanging.

The jobs run ``mpiexec -disable-auto-cleanup`` (MPICH's Hydra: the other ranks of
a job live on when one dies) under a supervisor (:mod:`_mpisuper`) in a session of
its own, which ends the job when the driver goes and removes the shared-memory
files the job leaves behind. The ``mpiexec`` is the one beside this Python (the
``mpich`` wheel's), else the first on ``PATH``.

Ranks on this host connect over a Unix socket, which can pass the descriptors of
shared-memory buffers as :class:`~dispatcher.ProcessExecutor`'s do. In a Slurm
allocation of several nodes, or with hosts given, ``mpiexec`` may place ranks on
other hosts: the pool then listens over TCP too, on every interface of this host.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid

from ..results import ExecutorError
from . import _mpisuper, _procworker
from ._launch import Launcher, wait_or_kill

__all__ = [
    "START_TIMEOUT",
    "MPILauncher",
    "find_mpiexec",
    "import_mpi",
    "in_mpi_job",
    "mpiexec_in_own_session",
    "require_mpi4py",
]

_JOB_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
"""Variables through which MPI launchers (Hydra, Slurm's PMI, Open MPI, PMIx)
tell a process that it is one of several ranks of a job."""

START_TIMEOUT = 120.0  # seconds for the ranks of a job to start and connect


def _missing_mpi(why) -> ExecutorError:
    return ExecutorError(
        "the MPI executors need mpi4py and an MPI library: pip install 'dispatcher-graph[mpi]' "
        f"(mpi4py and the mpich wheels), or mpi4py built against your MPI ({why})"
    )


def import_mpi():
    """``mpi4py.MPI`` (which starts MPI), or an :class:`ExecutorError` saying what to install."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise _missing_mpi(exc) from exc
    return MPI


def require_mpi4py() -> None:
    """Check that ``mpi4py`` can be imported, without starting MPI here."""
    if importlib.util.find_spec("mpi4py") is None:
        raise _missing_mpi("no module named 'mpi4py'")


def in_mpi_job() -> bool:
    """Is this process a rank of an MPI job of several ranks? Read from the launcher's
    environment, or from MPI itself when ``mpi4py.MPI`` is already loaded, so that a
    script started as a world of one does not start MPI for nothing (a process that
    started MPI and is killed leaves MPICH's shared-memory files behind)."""
    if "mpi4py.MPI" in sys.modules:
        return sys.modules["mpi4py.MPI"].COMM_WORLD.Get_size() > 1
    for name in _JOB_SIZE:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 1:
            return True
    return "PMIX_RANK" in os.environ and "PMIX_SIZE" not in os.environ


def find_mpiexec() -> str:
    """The ``mpiexec`` of the MPI beside this Python (the ``mpich`` wheel), else
    the first on ``PATH``; an :class:`ExecutorError` saying what to install if none."""
    for where in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        found = where and shutil.which("mpiexec", path=where)
        if found:
            return found
    found = shutil.which("mpiexec")
    if found is None:
        raise ExecutorError(
            "MPIExecutor cannot start worker ranks: no mpiexec on PATH (install the mpich "
            "wheel with pip install 'dispatcher-graph[mpi]', or start the script with "
            "mpiexec -n N python -m mpi4py.futures script.py)"
        )
    return found


@functools.cache  # asked once per mpiexec, not again for each pool (a pool is remade after Ctrl-C)
def _is_hydra(mpiexec: str) -> bool:
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "HYDRA" in out.upper()


class _Launch:
    """One ``mpiexec`` job of worker ranks."""

    __slots__ = ("alive", "arrived", "count", "deadline", "proc")

    def __init__(self, proc: subprocess.Popen, count: int):
        self.proc = proc
        self.count = count
        self.arrived = 0
        self.alive = 0
        self.deadline = time.monotonic() + START_TIMEOUT


class MPILauncher(Launcher):
    """Starts worker ranks as ``mpiexec`` jobs whose ranks connect back to the pool.

    Args:
        python_exe: the Python the ranks run (default: this one).
        python_args: options for it.
        env: environment variables to set for the ranks.
        wdir: their working directory (default: this process's).
        mpiexec_args: more arguments for ``mpiexec`` (``["-hosts", "a,b"]``...).
        spread: the ranks may run on other hosts: listen on every interface.
    """

    connects = True
    spmd = True  # a node of k cores runs on k ranks of one job (see _pool)
    what = "worker rank"
    whats = "worker ranks"

    def __init__(
        self,
        *,
        python_exe: str | None = None,
        python_args=(),
        env: dict | None = None,
        wdir: str | None = None,
        mpiexec_args=(),
        spread: bool = False,
    ):
        self.mpiexec = find_mpiexec()
        self.flags = ["-disable-auto-cleanup"] if _is_hydra(self.mpiexec) else []
        self.python = python_exe or sys.executable
        self.python_args = list(python_args)
        self.env = dict(env or {})
        self.wdir = wdir
        self.mpiexec_args = list(mpiexec_args)
        self.spread = spread
        self.launches: dict[str, _Launch] = {}
        super().__init__()  # the supervisors end their jobs when alive_w closes
        os.set_inheritable(self.alive_r, True)
        self.here = socket.gethostname()

    def start(self, pool, count: int) -> None:
        self._reap_ended()
        launch_id = uuid.uuid4().hex
        env = {
            **os.environ,
            **self.env,
            "DISPATCHER_WORKER_TOKEN": pool.listener.token.hex(),
            "DISPATCHER_WORKER_LAUNCH": launch_id,
            "DISPATCHER_WORKER_MPI": "1",
        }
        command = [
            sys.executable,
            "-I",
            _mpisuper.__file__,
            str(self.alive_r),
            "--",
            self.mpiexec,
            *self.flags,
            *self.mpiexec_args,
            "-n",
            str(count),
            self.python,
            *self.python_args,
            _procworker.__file__,
            "--connect",
            ",".join(pool.listener.addresses),
        ]
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=self.wdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(self.alive_r,),
        )
        pool.output.add(proc.stdout, 1)
        pool.output.add(proc.stderr, 2)
        self.launches[launch_id] = _Launch(proc, count)
        pool.expect(count)

    def arrived(self, launch_id: str) -> _Launch | None:
        """A rank of ``launch_id`` connected; its launch, or None if unknown."""
        launch = self.launches.get(launch_id)
        if launch is None or launch.arrived >= launch.count:
            return None
        launch.arrived += 1
        launch.alive += 1
        return launch

    def failed_launches(self):
        """``(why, how many ranks)`` for each launch whose missing ranks will not come."""
        now = time.monotonic()
        for launch in list(self.launches.values()):
            missing = launch.count - launch.arrived
            if missing <= 0:
                continue
            code = launch.proc.poll()
            if code is not None:
                launch.count = launch.arrived
                why = f"mpiexec ended ({_code_text(code)}) before {missing} of its worker ranks started"
                yield why, missing
            elif now > launch.deadline:
                launch.count = launch.arrived
                self._end(launch, at_once=True)
                yield f"{missing} worker ranks did not start in {START_TIMEOUT} s", missing

    def kill(self, worker) -> None:
        if worker.host == self.here:
            with contextlib.suppress(OSError):
                os.kill(worker.pid, signal.SIGKILL)
        # a rank elsewhere exits when its connection closes, which the pool does next

    def reap(self, worker) -> None:
        launch = worker.launch
        if launch is not None:
            launch.alive -= 1
        self._reap_ended()

    def exit_text(self, worker) -> str:
        if worker.host == self.here and not os.path.exists(f"/proc/{worker.pid}"):
            return "the process ended"
        return "its connection to the driver closed"

    def stop(self, workers: list, grace: float) -> None:
        for launch in self.launches.values():
            if launch.arrived < launch.count:  # still starting: nothing to finish
                self._end(launch, at_once=True)
        deadline = time.monotonic() + grace
        for launch in self.launches.values():
            try:
                launch.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._end(launch)
        for launch in self.launches.values():
            wait_or_kill(launch.proc, _mpisuper.GRACE + 5)
        self.launches.clear()

    def _end(self, launch: _Launch, at_once: bool = False) -> None:
        """Ask a launch's supervisor to end its job: with SIGTERM passed on to
        ``mpiexec`` (it kills what does not stop), or ``at_once``."""
        with contextlib.suppress(OSError):
            launch.proc.send_signal(signal.SIGUSR1 if at_once else signal.SIGTERM)

    def _reap_ended(self) -> None:
        for launch_id, launch in list(self.launches.items()):
            if launch.alive <= 0 and launch.arrived >= launch.count and launch.proc.poll() is not None:
                del self.launches[launch_id]


def _code_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


@contextlib.contextmanager
def mpiexec_in_own_session(MPI):
    """For ``MPI_Comm_spawn`` from a world of one (the bench's raw ``mpi4py.futures``
    baseline): MPICH starts ``mpiexec`` (found on ``PATH``) to manage the spawned
    ranks, in the script's process group, and that ``mpiexec`` kills its whole
    process group when the script dies by a signal, the shell pipeline or test
    runner included. Within this block ``PATH`` leads to a wrapper that starts the
    real ``mpiexec`` in a session of its own."""
    if "MPICH" not in MPI.Get_library_version():
        yield
        return
    real = find_mpiexec()
    with tempfile.TemporaryDirectory(prefix="dispatcher-mpi-") as folder:
        wrapper = os.path.join(folder, "mpiexec")
        with open(wrapper, "w") as f:
            f.write(
                "#!/bin/sh\n"
                f"exec {shlex.quote(sys.executable)} -I -c "
                "'import os, sys; os.setsid(); os.execv(sys.argv[1], sys.argv[1:])' "
                f'{shlex.quote(os.path.realpath(real))} "$@"\n'
            )
        os.chmod(wrapper, 0o755)
        path = os.environ.get("PATH")
        os.environ["PATH"] = folder + os.pathsep + (path or "")
        try:
            yield
        finally:
            if path is None:
                os.environ.pop("PATH", None)
            else:
                os.environ["PATH"] = path
