"""Timing and memory: the measuring instruments of the harness and of the focused
benchmark scripts.

A figure is a median of several runs (:func:`sample` also gives the range around
it); :func:`alternate` times several candidates in turn, so that a shared
machine's drift falls on all of them alike. :class:`PeakMemory` gives the rise of
this process's resident set during a block (Linux's ``VmHWM``, reset on entry).
"""

from __future__ import annotations

import gc
import re
import statistics
import time
from typing import Any


def timed(fn) -> tuple[float, Any]:
    """``(seconds, result)`` of calling ``fn()``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def seconds(fn, *args, **kwargs) -> float:
    """The seconds ``fn(*args, **kwargs)`` takes."""
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def median_time(fn, repeat: int) -> float:
    """The median seconds of ``repeat`` calls of ``fn()``."""
    return statistics.median(seconds(fn) for _ in range(repeat))


def sample(fn, repeat: int) -> tuple[float, float, float]:
    """``(median, min, max)`` seconds of ``repeat`` calls of ``fn()`` after one
    warm-up call, with a garbage collection before each."""
    fn()
    times = []
    for _ in range(repeat):
        gc.collect()
        times.append(seconds(fn))
    return statistics.median(times), min(times), max(times)


def alternate(contenders: dict, repeat: int, before=None) -> dict:
    """``{name: median seconds}`` of ``repeat`` rounds in which each ``fn()`` of
    ``contenders`` runs once, in turn: the machine's noise falls on all alike.
    ``before()``, if given, is called before each, untimed (to clear what the last
    one left)."""
    times: dict = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            if before is not None:
                before()
            times[name].append(seconds(fn))
    return {name: statistics.median(t) for name, t in times.items()}


def spin(loops: int) -> int:
    """Pure-Python work: a loop :func:`calibrate` sizes to the wanted seconds."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


def calibrate(target: float, work=spin) -> int:
    """How many loops of ``work`` take about ``target`` seconds here."""
    n = 200_000
    while True:
        took = seconds(work, n)
        if took > 0.05:
            return max(1, int(n * target / took))
        n *= 4


# -- memory ---------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """The rise of this process's resident set during a block (Linux), in bytes."""

    def __init__(self):
        self.rise: int | None = None

    def __enter__(self):
        gc.collect(1)  # the young generations: cheap (a full collection ends each case)
        _trim()  # give freed memory back, so that it does not hide this block's rise
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current resident set
            self.before = _status_kb("VmRSS")
        except OSError:
            self.before = None
        return self

    def __exit__(self, *exc):
        peak = _status_kb("VmHWM")
        if self.before is not None and peak is not None:
            self.rise = max(0, peak - self.before) * 1024
