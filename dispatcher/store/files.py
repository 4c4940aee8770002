"""FileStore: a store in a directory, safe to share between processes and hosts.

Layout::

    PATH/entries/abcdef...         one file per key (:mod:`~dispatcher.store.entries`)
    PATH/claims/abcdef...          a symbolic link to the run that computes the key
    PATH/runs/HOST.PID.TOKEN       one lease per live run, renewed while it runs
    PATH/runs/.clock               touched to read the file system's clock

Policy
------
* **Nothing is half-written.** An entry is written to a temporary name in its
  directory and renamed into place: a reader sees the whole entry or none. Entries
  are not synced to disk: after a crash of the machine itself an entry may be cut
  short, which its length and checksum reveal; it is then logged, removed and
  computed again. The modification time of an entry is when it was last used.
* **Claims with leases.** Before a run computes a node it claims the key by making
  ``claims/KEY`` a symbolic link to its run (atomic, also on network file
  systems); another run that finds the claim waits for the entry. Each run renews
  the modification time of its lease file every quarter of :attr:`lease` seconds
  from a thread; a claim lapses when its run's lease is older than ``lease``
  seconds (its own lease, which its run file records) by the file system's clock
  (a file touched to read it: the hosts' clocks need not agree), or, for a run on
  this host, as soon as its process has gone (a crashed or killed driver never
  blocks the others for long). A lapsed claim is
  taken over. Two runs may then, rarely, compute the same node (both store the
  same value); they never store a wrong one.
* **One run at a time, or many.** Any number of drivers, on any hosts that see the
  directory at the same path, may share a store; the workers of a run write to it
  directly (so it must be on a file system they all reach, at the same path).
* A store whose directory cannot be written is read: its entries are used and
  nothing is added (the run says so once).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from .base import Entry, Store, StoreError
from .entries import CorruptEntry, decode, encode, read_file, read_header

__all__ = ["FileStore"]

logger = logging.getLogger("dispatcher")

_HOST = socket.gethostname()
_TEMP = ".tmp."
_writes = itertools.count()  # names the temporary files of this process's writes
_IOV_MAX = 1024
_DIRENT_BYTES = 20  # the fewest bytes a name adds to the size of a directory
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL
_PID = os.getpid()  # of this process: a fork gets its own (see _after_fork)


def _after_fork() -> None:
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


class FileStore(Store):
    """A store of node values in the directory ``path`` (made on first use).

    Args:
        path: the directory; share it between runs, scripts and batch jobs.
        lease: seconds after which a run that stopped renewing its claims (its host
            or its process died) loses them to other runs.

    >>> import dispatcher as dp, tempfile
    >>> store = dp.FileStore(tempfile.mkdtemp())
    >>> node = dp.Op(pow, 2, 10)
    >>> dp.run(dp.SerialExecutor(), [node], store=store)[0].value
    1024
    >>> [e.function for e in store.entries()]
    ['pow']
    """

    shared = True  # workers write to the directory themselves

    def __init__(self, path: str | os.PathLike, *, lease: float = 60.0):
        if not lease > 0:
            raise ValueError(f"lease must be a positive number of seconds, got {lease!r}")
        self.path = os.path.abspath(os.fspath(path))
        self.lease = float(lease)
        self._entries = os.path.join(self.path, "entries")
        self._claims = os.path.join(self.path, "claims")
        self._runs = os.path.join(self.path, "runs")
        self._heartbeats: dict = {}  # run -> the Event that stops its lease's renewal

    def __reduce__(self):
        return (FileStore, (self.path,), {"lease": self.lease})

    def __setstate__(self, state: dict) -> None:
        self.__init__(self.path, **state)

    def __repr__(self) -> str:
        return f"FileStore({self.path!r})"

    # -- entries -------------------------------------------------------------------
    def _entry(self, key: str) -> str:
        return f"{self._entries}/{key}"

    def contains(self, key: str) -> bool:
        return os.path.exists(self._entry(key))

    def present_keys(self, lookups: int) -> set | None:
        # a name costs about a tenth of a look-up to list; a directory's size grows
        # by some 20 bytes (tmpfs) to 45 (ext4) per name: estimate high
        try:
            size = os.stat(self._entries).st_size
        except FileNotFoundError:
            return set()
        if size > _DIRENT_BYTES * 10 * lookups:
            return None
        return {name for name in os.listdir(self._entries) if not name.startswith(_TEMP)}

    def load(self, key: str) -> Any:
        path = self._entry(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise KeyError(key) from None
        try:
            value = decode(read_file(fd, os.fstat(fd).st_size))
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):  # a store read-only to this user: no last use
            os.utime(path)
        return value

    def save(self, key: str, value: Any, function: str) -> int:
        chunks = encode(value, function)
        entries = self._entries
        temp = f"{entries}/{_TEMP}{key}.{_PID}.{next(_writes)}"
        try:
            fd = os.open(temp, _CREATE, 0o644)
        except FileNotFoundError:
            os.makedirs(entries, exist_ok=True)
            fd = os.open(temp, _CREATE, 0o644)
        try:
            try:
                size = _write_all(fd, chunks)
            finally:
                os.close(fd)
            os.rename(temp, f"{entries}/{key}")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return size

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._entry(key))

    def entries(self) -> Iterator[Entry]:
        if not os.path.isdir(self.path):
            raise StoreError(f"{self.path} is not a directory")
        if not os.path.isdir(self._entries):
            if os.listdir(self.path):
                raise StoreError(f"{self.path} is not a dispatcher store (it has no entries/ directory)")
            return
        for item in os.scandir(self._entries):
            if item.name.startswith(_TEMP) or not item.is_file(follow_symlinks=False):
                continue  # a write under way, or something else put there: not an entry
            try:
                stat = item.stat()
            except FileNotFoundError:  # removed meanwhile
                continue
            try:
                with open(item.path, "rb") as f:
                    header, _ = read_header(f.read(65536))
            except (OSError, CorruptEntry):
                yield Entry(item.name, "(unreadable)", stat.st_size, stat.st_mtime, stat.st_mtime)
                continue
            yield Entry(item.name, header["function"], stat.st_size, header["created"], stat.st_mtime)

    def temporary_files(self) -> Iterator[tuple[str, float]]:
        """``(path, modification time)`` of the files of writes that never ended
        (their writer was killed)."""
        if not os.path.isdir(self._entries):
            return
        for item in os.scandir(self._entries):
            if item.name.startswith(_TEMP) and item.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    yield item.path, item.stat().st_mtime

    # -- runs and claims -----------------------------------------------------------
    def begin_run(self) -> str:
        run = f"{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:12]}"
        try:
            for folder in (self._entries, self._claims, self._runs):
                os.makedirs(folder, exist_ok=True)
            with open(os.path.join(self._runs, run), "x") as f:
                json.dump({"host": _HOST, "pid": os.getpid(), "started": time.time(), "lease": self.lease}, f)
        except OSError as exc:
            raise StoreError(f"the store {self.path} cannot be written: {exc.strerror or exc}") from exc
        stop = threading.Event()
        self._heartbeats[run] = stop
        threading.Thread(
            target=self._renew, args=(run, stop), name="dispatcher-store-lease", daemon=True
        ).start()
        return run

    def _renew(self, run: str, stop: threading.Event) -> None:
        lease = os.path.join(self._runs, run)
        while not stop.wait(self.lease / 4):
            with contextlib.suppress(OSError):
                os.utime(lease)

    def end_run(self, run: str) -> None:
        stop = self._heartbeats.pop(run, None)
        if stop is not None:
            stop.set()
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(self._runs, run))

    def claim(self, key: str, run: str) -> bool:
        link = os.path.join(self._claims, key)
        for _ in range(3):
            try:
                os.symlink(run, link)
                return True
            except FileExistsError:
                pass
            try:
                holder = os.readlink(link)
            except FileNotFoundError:
                continue  # released meanwhile: try again
            if holder == run:
                return True
            if self.run_alive(holder):
                return False
            with contextlib.suppress(FileNotFoundError):
                if os.readlink(link) == holder:  # still the lapsed claim: take it over
                    logger.info("took over the lapsed claim of run %s on %s", holder, key)
                    os.unlink(link)
        return False

    def release(self, key: str, run: str) -> None:
        link = os.path.join(self._claims, key)
        with contextlib.suppress(FileNotFoundError):
            if os.readlink(link) == run:
                os.unlink(link)

    def run_alive(self, run: str) -> bool:
        """Whether the run ``run`` still holds its claims (see the module docstring)."""
        path = os.path.join(self._runs, run)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return False
        host, pid, _ = run.rsplit(".", 2)
        if host == _HOST and pid.isdigit() and not _process_alive(int(pid)):
            return False
        lease = self.lease  # the holder's own, which its run file records
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError), open(path) as f:
            lease = float(json.load(f)["lease"])
        return self._now() - stat.st_mtime <= lease

    def _now(self) -> float:
        """The time by the file system's clock, which stamps the leases (on a network
        file system, the server's, whatever the clocks of the hosts say)."""
        probe = os.path.join(self._runs, ".clock")
        try:
            try:
                os.utime(probe)
            except FileNotFoundError:
                with open(probe, "a"):
                    pass
            return os.stat(probe).st_mtime
        except OSError:
            return time.time()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_all(fd: int, chunks: list) -> int:
    """Write every chunk (bytes or buffers) to ``fd``; a short write goes on. The
    number of bytes written."""
    if len(chunks) == 1:  # no out-of-band buffer: one write
        data = chunks[0]
        n = os.write(fd, data)
        if n == len(data):
            return n
        chunks = [memoryview(data)[n:]]
        size = len(data)
    else:
        size = sum(memoryview(c).nbytes for c in chunks)
    views = [v for v in (memoryview(c).cast("B") for c in chunks) if v.nbytes]
    while views:
        n = os.writev(fd, views[:_IOV_MAX])
        if n == 0:
            raise OSError(errno.ENOSPC, "no space left on the device")
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views.pop(0)
        if n:
            views[0] = views[0][n:]
    return size
