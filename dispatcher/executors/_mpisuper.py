"""The supervisor of an ``mpiexec`` job of worker ranks; run as a script.

``python -I _mpisuper.py ALIVE_FD -- mpiexec ARGS...`` (this file imports nothing
but the standard library) starts ``mpiexec`` and stays with it:

* It runs in a session of its own, with ``mpiexec`` in it: a Ctrl-C in the
  driver's terminal does not reach the ranks directly (the driver decides what it
  stops), and ``mpiexec``, which kills its whole process group when it is killed,
  takes only this session down, never the driver's shell pipeline or test runner.
* It ends the job when the driver goes, however the driver goes (SIGKILL
  included): it watches a pipe whose only write end the driver holds. The job's
  ranks exit on their own when their connection to the driver closes; this is for
  a rank that cannot notice.
* When ``mpiexec`` has ended, it removes the shared-memory files (``/dev/shm/
  mpich_shm_*``) that the job created and that no live process maps any more:
  MPICH removes them only in ``MPI_Finalize``, which ranks that are killed, or
  that leave without it (a job with a dead rank cannot finalize), never reach.
* SIGTERM, SIGINT and SIGHUP are passed on to ``mpiexec``; one that is still
  running :data:`GRACE` seconds later is killed with its session. SIGUSR1 kills
  the session at once, quietly: the driver sends it for a job whose ranks have not
  all started (an executor closed during its start-up), which has no work to lose
  and would only print ``mpiexec``'s complaints while it waits.

It exits with ``mpiexec``'s exit code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

GRACE = 5.0  # seconds mpiexec has to end after a signal before the session is killed
SHM = "/dev/shm"
PREFIX = "mpich_shm_"


def shared_files() -> set[str]:
    """The MPICH shared-memory files there are now."""
    try:
        return {name for name in os.listdir(SHM) if name.startswith(PREFIX)}
    except OSError:
        return set()


def mapped_files() -> set[str]:
    """The names of the files in ``/dev/shm`` that some live process maps or holds open."""
    names: set[str] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as f:
            for line in f:
                if SHM in line:
                    names.add(os.path.basename(line.split(SHM, 1)[1].split()[0]))
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith(SHM + "/"):
                        names.add(os.path.basename(target.split()[0]))
    return names


def remove_left_files(before: set[str]) -> None:
    """Remove the MPICH files that appeared since ``before`` and that nothing uses."""
    new = shared_files() - before
    if not new:
        return
    for name in new - mapped_files():
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(SHM, name))


def _kill_session() -> None:
    """SIGKILL every other process of this session (the job's mpiexec and ranks)."""
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        with contextlib.suppress(OSError):
            if os.getsid(int(pid)) == me:
                os.kill(int(pid), signal.SIGKILL)


def main(argv: list[str]) -> int:
    os.setsid()
    alive_fd = int(argv[1])
    command = argv[argv.index("--") + 1 :]
    before = shared_files()
    job = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    ending = threading.Event()
    at_once = threading.Event()

    def end(signum=signal.SIGTERM, frame=None) -> None:
        if job.poll() is None:
            with contextlib.suppress(OSError):
                job.send_signal(signum)
        ending.set()

    def end_at_once(signum=None, frame=None) -> None:
        at_once.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, end)
    signal.signal(signal.SIGUSR1, end_at_once)

    def watch_driver() -> None:
        with contextlib.suppress(OSError):
            while os.read(alive_fd, 1):
                pass
        end()

    threading.Thread(target=watch_driver, daemon=True).start()
    ending_since = None
    while True:
        try:
            code = job.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            if at_once.is_set():
                _kill_session()
                continue
            if not ending.is_set():
                continue
            if ending_since is None:
                ending_since = time.monotonic()
            elif time.monotonic() - ending_since > GRACE:
                _kill_session()
    _kill_session()  # ranks that outlived their mpiexec
    remove_left_files(before)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
