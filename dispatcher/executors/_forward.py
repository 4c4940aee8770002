"""Copying the workers' output to this process's own standard output and error.

Policy: a worker's standard output and error are pipes that this process reads
(never descriptors it inherits), copied in one thread of their own to this
process's file descriptors 1 and 2. A process that a node leaves running therefore
holds only a pipe of the pool, and a caller reading this process's output sees its
end when this process exits, not when that grandchild does. When the pool stops,
what the pipes hold is still copied for :data:`STOP_COPYING` seconds; what is left
open after that belongs to processes that outlive the pool.

Lines are copied whole: what a worker writes after its last end of line (``\n``
or ``\r``) is held until the rest of the line comes, for at most
:data:`HOLD_SECONDS`, so that two workers printing at once (unbuffered, say, as
``print`` writes a value and its end of line apart) never interleave inside a line.
"""

from __future__ import annotations

import contextlib
import math
import os
import selectors
import threading
import time

__all__ = ["HOLD_SECONDS", "STOP_COPYING", "Forwarder"]

STOP_COPYING = 0.5  # seconds the output of stopped workers is still copied
HOLD_SECONDS = 0.1  # seconds the start of a line waits for its end before it is copied as it is
_HOLD_MAX = 1 << 16  # bytes of a line held at most


class Forwarder:
    """Copies what workers write to their pipes to this process's own standard
    output and error, in a thread of its own (see the module docstring)."""

    def __init__(self):
        self._selector: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._wake_r, self._wake_w = None, None

    def add(self, pipe, target_fd: int) -> None:
        """Copy what arrives on ``pipe`` (a binary file) to ``target_fd``."""
        with self._lock:
            if self._selector is None:
                self._selector = selectors.DefaultSelector()
                self._wake_r, self._wake_w = os.pipe()
                self._selector.register(self._wake_r, selectors.EVENT_READ, None)
                self._thread = threading.Thread(target=self._copy, name="dispatcher-output", daemon=True)
                self._thread.start()
            os.set_blocking(pipe.fileno(), False)
            self._selector.register(pipe, selectors.EVENT_READ, target_fd)
        os.write(self._wake_w, b"\0")

    def _copy(self) -> None:
        selector = self._selector
        held: dict = {}  # pipe -> (the start of a line, when it was first held)
        stop_by = None
        while True:
            if self._stopping and stop_by is None:
                stop_by = time.monotonic() + STOP_COPYING
            if stop_by is not None and (len(selector.get_map()) <= 1 or time.monotonic() > stop_by):
                _write_held(held, selector, math.inf)
                return  # what is left open belongs to processes that outlive the pool
            wait = None if stop_by is None else 0.05
            if held:
                first = min(since for _, since in held.values()) + HOLD_SECONDS - time.monotonic()
                wait = max(0.0, first if wait is None else min(wait, first))
            events = selector.select(wait)
            for key, _ in events:
                if key.data is None:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 4096)
                    continue
                try:
                    data = os.read(key.fileobj.fileno(), 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                start, since = held.pop(key.fileobj, (b"", None))
                if not data:
                    with self._lock:
                        selector.unregister(key.fileobj)
                    key.fileobj.close()
                    _write_quietly(key.data, start)
                    continue
                data = start + data
                cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
                if cut < len(data) and len(data) - cut < _HOLD_MAX:  # hold the start of a line
                    held[key.fileobj] = (data[cut:], since or time.monotonic())
                    data = data[:cut]
                _write_quietly(key.data, data)
            if held:  # the starts of lines that waited long enough go as they are
                _write_held(held, selector, time.monotonic() - HOLD_SECONDS)

    def stop(self) -> None:
        """Copy what the pipes hold now, then close them and end the thread."""
        with self._lock:
            if self._selector is None or self._stopping:
                return
            self._stopping = True
        os.write(self._wake_w, b"\0")
        self._thread.join()
        for key in list(self._selector.get_map().values()):
            if key.data is not None:
                key.fileobj.close()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _write_held(held: dict, selector, before: float) -> None:
    """Copy the starts of lines held since ``before`` or earlier, as they are."""
    for pipe, (start, since) in list(held.items()):
        if since <= before:
            del held[pipe]
            _write_quietly(selector.get_key(pipe).data, start)


def _write_quietly(fd: int, data: bytes) -> None:
    """``data`` to ``fd``, all of it; an error (the reader has gone) drops it."""
    view = memoryview(data)
    with contextlib.suppress(OSError):
        while view:
            n = os.write(fd, view)
            view = view[n:]
