"""The guard of a process's programs: it kills them if that process dies.

A node that runs a program (:func:`dispatcher.command`) starts it in a process
group of its own, so that the program and everything it starts can be killed at
once. If the process that started it is killed (a worker past its timeout, a
driver stopped with SIGKILL), nothing in that process can do it; so each process
that starts programs has one guard, started before its first program: a small
process in a session of its own that reads, on a pipe from its owner, ``+PGID``
when a group starts and ``-PGID`` when it has ended. When the pipe closes (the
owner exited or was killed) the guard ends every group it still holds: SIGTERM,
then SIGKILL to what is left after :data:`GRACE` seconds.

Started as a script by :func:`start_guard` before a program starts (it needs
only the standard library), so that :func:`watch` is one write to the pipe and a
group is watched the moment its program has started; not meant to be started by
hand.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

__all__ = ["GRACE", "kill_group", "kill_groups", "start_guard", "unwatch", "watch"]

GRACE = 2.0  # seconds between SIGTERM and SIGKILL

_lock = threading.Lock()
_guard: dict = {}  # "proc", "pid": this process's guard, and the pid that started it


def kill_group(pgid: int, grace: float = GRACE, reap=None) -> None:
    """End the process group ``pgid``: SIGTERM, then SIGKILL if it is still there
    after ``grace`` seconds (see :func:`kill_groups`)."""
    kill_groups([pgid], grace, reap)


def _send(line: str) -> None:
    with _lock:
        proc = _guard.get("proc")
        if proc is None or _guard.get("pid") != os.getpid() or proc.poll() is not None:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", __file__],  # the standard library is all it needs
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C or a kill of the owner's group spares it
                close_fds=True,
            )
            _guard.update(proc=proc, pid=os.getpid())
        proc.stdin.write(f"{line}\n".encode())
        proc.stdin.flush()


def start_guard() -> None:
    """Start this process's guard, if it is not running (an empty line, which it
    ignores)."""
    _send("")


def watch(pgid: int) -> None:
    """The guard ends group ``pgid`` if this process dies before :func:`unwatch`."""
    _send(f"+{pgid}")


def unwatch(pgid: int) -> None:
    """Group ``pgid`` has ended: the guard forgets it (its number may be reused)."""
    with contextlib.suppress(OSError, ValueError):
        _send(f"-{pgid}")


def _serve() -> None:
    groups: set = set()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for line in sys.stdin.buffer:
        text = line.decode().strip()
        if text[:1] == "+":
            groups.add(int(text[1:]))
        elif text[:1] == "-":
            groups.discard(int(text[1:]))
    kill_groups(groups)  # the owner is gone: so must its programs be


def kill_groups(groups, grace: float = GRACE, reap=None) -> None:
    """End several process groups at once: SIGTERM to all, then SIGKILL to what is
    left after ``grace`` seconds. ``reap()``, if given, collects the caller's own
    child among them as it ends (a child not yet waited for still counts)."""
    alive = set()
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
            alive.add(pgid)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        if reap is not None:
            reap()
        alive &= _live_groups()
        if alive:
            time.sleep(0.02)
    for pgid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def _live_groups() -> set:
    """The process groups that hold a process still running (not a zombie that
    its parent has yet to collect)."""
    groups = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z":
            groups.add(int(fields[2]))
    return groups


if __name__ == "__main__":
    _serve()
