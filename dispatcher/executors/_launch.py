"""Launchers: how the workers of a job pool are started and stopped.

A launcher starts ``count`` workers for a :class:`~dispatcher.executors._pool.Pool`
(``start``), kills one (``kill``), says how one ended (``exit_text``), and stops
those left when the pool stops (``stop``, after a grace period in which idle
workers exit by themselves). :class:`LocalLauncher` starts subprocesses of this
process; :class:`~dispatcher.executors._mpilaunch.MPILauncher` starts ``mpiexec``
jobs whose ranks connect back.

Policy: every worker watches a pipe whose only write end this process holds
(:attr:`Launcher.alive_w`), so that workers exit as soon as this process does, even
when it is killed; a worker that does not stop within its time is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from multiprocessing import spawn

from . import _procworker

__all__ = ["Launcher", "LocalLauncher", "Worker", "cpu_count", "exit_text", "wait_or_kill"]


class Worker:
    """One worker process as the pool sees it."""

    __slots__ = ("batch", "holds", "host", "launch", "pid", "proc", "rank", "ready", "sock")

    def __init__(self, sock, pid: int, host: str, proc=None, rank: int | None = None, launch=None):
        self.sock = sock
        self.pid = pid
        self.host = host
        self.proc = proc  # the Popen of a local worker, else None
        self.rank = rank  # its MPI rank in the job that started it, if any
        self.launch = launch  # the launcher's record of how it was started
        self.ready = False
        self.batch: list | None = None
        self.holds = None  # the pool's record of the values it keeps (executors._held)

    def describe(self) -> str:
        where = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"pid {self.pid}{where}"


def cpu_count() -> int:
    """The CPUs this process may use (its affinity mask, e.g. a Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def exit_text(code: int | None) -> str:
    if code is None:
        return "its exit status is unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        hint = " (as the out-of-memory killer does)" if -code == signal.SIGKILL else ""
        return f"it was killed by signal {name}{hint}"
    return f"it exited with code {code}"


def wait_or_kill(proc: subprocess.Popen, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for ``proc`` to end, then kill it."""
    try:
        proc.wait(timeout=max(0.0, timeout))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Launcher:
    """What every launcher shares: the pipe that tells its workers this process lives."""

    def __init__(self):
        self.alive_r, self.alive_w = os.pipe()

    def close(self) -> None:
        for fd in (self.alive_w, self.alive_r):
            with contextlib.suppress(OSError):
                os.close(fd)


class LocalLauncher(Launcher):
    """Starts each worker as a subprocess of this process, connected by a socket pair."""

    connects = False  # workers arrive at once, not by connecting back
    spmd = False  # a node of several cores runs in one worker (with that many threads)
    what = "worker process"
    whats = "worker processes"

    def __init__(self):
        super().__init__()
        self.executable = spawn.get_executable()

    def start(self, pool, count: int) -> None:
        for _ in range(count):
            parent, child = socket.socketpair()
            try:
                proc = subprocess.Popen(
                    [self.executable, _procworker.__file__, str(child.fileno()), str(self.alive_r)],
                    pass_fds=(child.fileno(), self.alive_r),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            except OSError:
                parent.close()
                raise
            finally:
                child.close()
            pool.output.add(proc.stdout, 1)
            pool.output.add(proc.stderr, 2)
            pool.attach(Worker(parent, proc.pid, socket.gethostname(), proc=proc))

    def kill(self, worker: Worker) -> None:
        with contextlib.suppress(OSError):
            worker.proc.kill()

    def reap(self, worker: Worker) -> None:
        wait_or_kill(worker.proc, 5)

    def exit_text(self, worker: Worker) -> str:
        return exit_text(worker.proc.returncode)

    def stop(self, workers: list, grace: float) -> None:
        deadline = time.monotonic() + grace
        for worker in workers:
            wait_or_kill(worker.proc, deadline - time.monotonic())
