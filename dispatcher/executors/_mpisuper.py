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
  mpich_shm_*``) that the job's processes used and that no live process maps any
  more: MPICH removes them only in ``MPI_Finalize``, which ranks that are killed,
  or that leave without it (a job with a dead rank cannot finalize), never reach.
  So with the topology files of Hydra's proxies (``/tmp/hydra_hwloc_xmlfile_*``),
  which a proxy killed with its session leaves (see :data:`LEFT_BEHIND`). Which
  files are the job's it learns by looking, while the job runs and before it
  kills it, at what the processes descended from it map and hold open: another
  job started meanwhile (a replacement) has files of its own, which it must not
  touch. Of a job killed while it started (SIGUSR1, below), whose processes may
  not have been seen with their files, it also removes the files that appeared
  between its start and its end and that nothing uses.
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
LOOK_FIRST = 0.1  # seconds between two looks at the files the job's processes use, at first
LOOK_EVERY = 1.0  # ... and after 5 s, when they have made them
LEFT_BEHIND = (("/dev/shm", "mpich_shm_"), ("/tmp", "hydra_hwloc_xmlfile_"))
"""Where an MPICH job leaves files when its processes are killed: the shared
memory of its ranks, and the topology file each Hydra proxy writes (always in
``/tmp``) and removes only when it exits by itself."""


def left_files() -> set[str]:
    """The paths of such files there are now."""
    paths: set[str] = set()
    for folder, prefix in LEFT_BEHIND:
        with contextlib.suppress(OSError):
            paths.update(os.path.join(folder, name) for name in os.listdir(folder) if name.startswith(prefix))
    return paths


def files_in_use() -> set[str]:
    """The files of :data:`LEFT_BEHIND` that some live process maps or holds open."""
    return files_of([int(pid) for pid in os.listdir("/proc") if pid.isdigit()])


def files_of(pids: list[int]) -> set[str]:
    """The files of :data:`LEFT_BEHIND` (those names in those folders, nothing else:
    the ranks' own files, an environment under ``/tmp``, are never taken for MPI's)
    that the processes ``pids`` map or hold open."""
    prefixes = tuple(os.path.join(folder, prefix) for folder, prefix in LEFT_BEHIND)
    paths: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[5].startswith(prefixes):
                    paths.add(fields[5])
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith(prefixes):
                        paths.add(target.split()[0])
    return paths


def made_before(paths: set[str], when: float) -> set[str]:
    """Those of ``paths`` made before the time ``when``."""
    made = set()
    for path in paths:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ctime <= when:
                made.add(path)
    return made


def remove_unused(paths: set[str]) -> None:
    """Remove those of ``paths`` that nothing uses."""
    if paths:
        for path in paths - files_in_use():
            with contextlib.suppress(OSError):
                os.unlink(path)


def remove_left_files(before: set[str]) -> None:
    """Remove the files of :data:`LEFT_BEHIND` that appeared since ``before`` and
    that nothing uses."""
    remove_unused(left_files() - before)


def _session() -> list[int]:
    """The other live processes of this session (the job's mpiexec, proxies and
    ranks); a zombie is dead already, whoever reaps it."""
    me = os.getpid()
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != me:
            with contextlib.suppress(OSError):
                if os.getsid(int(pid)) == me and not _is_zombie(pid):
                    pids.append(int(pid))
    return pids


def _descendants() -> list[int]:
    """The live processes descended from this one (the job's mpiexec, its proxies
    and their ranks, which Hydra puts in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
                if fields[0] != "Z":
                    children.setdefault(int(fields[1]), []).append(int(pid))
    found, todo = [], [os.getpid()]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _is_zombie(pid: str) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] == "Z"


def _kill_session(wait: float = 0.0) -> None:
    """SIGKILL every other process of this session; with ``wait``, keep at it for
    up to that many seconds until none is left (one may be starting as it is
    killed), so that what they used can be told from what they leave."""
    end = time.monotonic() + wait
    while True:
        pids = _session()
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if not pids or time.monotonic() >= end:
            return
        time.sleep(0.02)  # the killed are reaped by their parents, or by init


def main(argv: list[str]) -> int:
    os.setsid()
    alive_fd = int(argv[1])
    command = argv[argv.index("--") + 1 :]
    before = left_files()
    job = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    aborted_at = None  # when a job still starting was killed (SIGUSR1)
    used: set[str] = set()  # the files the job's processes (mpiexec's descendants) were seen to use
    began = looked = time.monotonic()
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
        young = time.monotonic() - began < 5.0
        if time.monotonic() - looked >= (LOOK_FIRST if young else LOOK_EVERY):
            used |= files_of(_descendants())
            looked = time.monotonic()
        try:
            code = job.wait(timeout=LOOK_FIRST if young else 0.2)
            break
        except subprocess.TimeoutExpired:
            if at_once.is_set():
                used |= files_of(_descendants())
                aborted_at = aborted_at or time.time()
                _kill_session()
                continue
            if not ending.is_set():
                continue
            if ending_since is None:
                ending_since = time.monotonic()
            elif time.monotonic() - ending_since > GRACE:
                used |= files_of(_descendants())
                _kill_session()
    used |= files_of(_descendants())
    _kill_session(wait=2.0)  # ranks that outlived their mpiexec
    if aborted_at is not None:  # processes killed as they started may not have been seen with theirs
        used |= made_before(left_files() - before, aborted_at)
    remove_unused(used)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
