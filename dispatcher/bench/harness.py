"""Measuring: the contenders (the library's executors and the baselines), timing,
memory, and the loop over suites and sizes.

Method. For each suite and size, every contender in turn builds the graph from
the same description (timed as *build*) and runs it (timed as *run*): one
warm-up run whose outputs are checked against plain Python's, then ``repeat``
timed runs (up to 25, half a second's worth, for runs of milliseconds, so that
they rise above a shared machine's noise; a run over a second is timed twice, its
warm-up and one more), each on a freshly built graph. A figure is the median
of its runs; the spread is the range of the runs around it, in percent of the
median. The driver's peak memory is the rise of its resident set above where it
stood before the run (Linux's ``VmHWM``, reset before each run), the largest of
the runs. The bytes copied between processes (messages to and from the workers, and
the large buffers written to shared-memory files; a file passed on is not copied
again) are those of the last run, for the contenders that count them. Worker
start-up is never timed: pools and clusters start before the first suite and serve
them all.

A contender whose build and run of one size took longer than ``budget`` seconds,
or are estimated to at the next size (growing as they did between the last two
sizes), skips the larger sizes of that suite; the report says so.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import logging
import math
import os
import platform
import re
import statistics
import sys
import time

import dispatcher as dp

from ..executors._launch import cpu_count
from . import suites
from .contenders import GROUPS, Shared, make_contenders
from .graphs import run_plain
from .peers import PEER_GROUPS, make_peers
from .timing import PeakMemory, calibrate, timed

__all__ = ["every_contender", "load_suites", "machine", "measure"]

logger = logging.getLogger("dispatcher.bench")

LONG_RUN = 1.0  # seconds: a run this long is timed twice (its warm-up and one more)


# -- suites -------------------------------------------------------------------------------


def load_suites(path: str | None = None):
    """The suites module: this package's :mod:`~dispatcher.bench.suites`, or the
    file ``path`` imported by its name (its folder goes on ``sys.path``, so that
    worker processes import its functions by name)."""
    if path is None:
        return suites
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no suites file {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(os.path.splitext(os.path.basename(path))[0])


# -- the machine ------------------------------------------------------------------------


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        match = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        if match:
            cpu = match.group(1).strip()
    memory = None
    with contextlib.suppress(OSError, ValueError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    versions = {
        name: _version(name) for name in ("cloudpickle", "numpy", "dask", "distributed", "mpi4py", "mpich")
    }
    versions["dispatcher"] = dp.__version__  # of the package imported, whatever its distribution's name
    versions["python"] = platform.python_version()
    return {
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu": cpu,
        "cpus_usable": cpu_count(),
        "cpus_total": os.cpu_count(),
        "memory_bytes": memory,
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# -- the loop ---------------------------------------------------------------------------


def _same(got, expected) -> bool:
    try:
        import numpy as np

        if isinstance(expected, np.ndarray) or isinstance(got, np.ndarray):
            return bool(np.array_equal(got, expected))
    except ImportError:
        pass
    return got == expected


def _one(contender, graph):
    """Build and run once: (build s, run s, memory rise, bytes copied or None, outputs)."""
    build_s, built = timed(lambda: contender.build(graph))
    copied = contender.bytes_copied()
    with PeakMemory() as peak:
        run_s, values = timed(functools.partial(contender.run, built))
    if copied is not None:
        copied = contender.bytes_copied() - copied
    return build_s, run_s, peak.rise, copied, values


def every_contender() -> dict:
    """The library's executors, the baselines and the peers, by name."""
    return {**make_contenders(), **make_peers()}


def measure(
    suites_module,
    suite_names,
    contender_names,
    *,
    quick: bool = False,
    sizes: dict | None = None,
    repeat: int = 3,
    budget: float = 10.0,
    workers: int | None = None,
    work: float = 0.05,
    progress=None,
) -> dict:
    """Run the benchmark; returns the report (machine, settings, rows, skipped)."""
    workers = workers or cpu_count()
    say = progress or (lambda text: None)
    all_contenders = every_contender()
    shared = Shared(workers)
    settings = {
        "quick": quick,
        "repeat": repeat,
        "budget_s": budget,
        "workers": workers,
        "cpu_work_s": work,
        "loops": calibrate(work) if "cpu" in suite_names else 0,
    }
    report: dict = {"machine": machine(), "settings": settings, "suites": {}, "contenders": {}, "rows": []}
    report["skipped"] = []
    for sname in suite_names:
        suite = suites_module.SUITES[sname]
        report["suites"][sname] = {"unit": suite.unit, "about": suite.about}
    chosen = [all_contenders[name] for name in contender_names]
    for c in chosen:
        report["contenders"][c.name] = {"kind": c.kind, "about": c.about}
    spent = Budget(budget)
    try:
        for group in (*GROUPS, *PEER_GROUPS):
            members = [c for c in chosen if c.group == group]
            if members:
                _measure_group(
                    members, shared, suites_module, suite_names, sizes, quick, settings, report, spent, say
                )
    except KeyboardInterrupt:
        report["interrupted"] = True  # what was measured is still reported
    order = {name: i for i, name in enumerate(contender_names)}
    report["rows"].sort(key=lambda r: (suite_names.index(r["suite"]), r["size"], order[r["contender"]]))
    for sname in suite_names:
        _relative(report["rows"], sname)
    return report


def _measure_group(
    members, shared, suites_module, suite_names, sizes, quick, settings, report, budget, say
) -> None:
    """Start a group's contenders, measure them on every case, stop them."""
    skipped, repeat = report["skipped"], settings["repeat"]
    running: list = []
    try:
        running = _start(members, shared, skipped, say)
        for sname in suite_names:
            suite = suites_module.SUITES[sname]
            for size in (sizes or {}).get(sname) or (suite.quick if quick else suite.sizes):
                try:
                    graphs = {
                        flavour: suite.build(size, {**settings, "flavour": flavour})
                        for flavour in ("sync", "async")
                        if flavour == "sync" or suite.async_flavour
                    }
                    expected = run_plain(graphs["sync"])
                except Exception as exc:  # a size the suite cannot build: say so, go on
                    say(f"{sname} {size}: cannot build ({type(exc).__name__}: {exc})")
                    reason = f"the suite cannot build size {size}: {type(exc).__name__}: {exc}"
                    skipped += [
                        {"suite": sname, "size": size, "contender": c.name, "reason": reason} for c in running
                    ]
                    continue
                nodes = len(graphs["sync"])
                say(f"{sname} {size} {suite.unit} ({nodes} nodes)")
                for c in running:
                    reason = budget.skip(sname, c.name, size)
                    if reason:
                        skipped.append({"suite": sname, "size": size, "contender": c.name, "reason": reason})
                        continue
                    row = _measure_one(c, graphs.get(c.flavour, graphs["sync"]), expected, repeat, quick)
                    row.update(
                        suite=sname, size=size, unit=suite.unit, nodes=nodes, contender=c.name, kind=c.kind
                    )
                    ideal = graphs["sync"].ideal_s
                    if ideal and "error" not in row:
                        row["x_ideal"] = row["run_s"] / ideal
                    report["rows"].append(row)
                    if "error" in row:
                        say(f"  {c.name}: {row['error']}")
                        continue
                    say(f"  {c.name}: {row['run_s'] * 1e3:.2f} ms")
                    budget.took(sname, c.name, size, row["build_s"] + row["run_s"])
                    gc.collect()
    finally:
        for c in running:
            with contextlib.suppress(Exception):
                c.close()
        shared.close()


def _start(members: list, shared: Shared, skipped: list, say) -> list:
    """Start the contenders of a group; those that cannot start here are reported."""
    running = []
    for c in members:
        try:
            c.start(shared)
        except Exception as exc:  # a backend that cannot start here is reported, the rest go on
            say(f"{c.name}: cannot run here ({type(exc).__name__}: {exc})")
            skipped.append({"contender": c.name, "reason": f"cannot start: {type(exc).__name__}: {exc}"})
            with contextlib.suppress(Exception):
                c.close()
            continue
        running.append(c)
    return running


class Budget:
    """What each contender took on each suite so far, to skip sizes that would go
    over ``seconds`` (see :func:`_too_slow`)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.slow: dict = {}  # (suite, contender) -> (size, s): the first size over the budget
        self.history: dict = {}  # (suite, contender) -> [(size, build and run s)]

    def skip(self, suite: str, contender: str, size: int) -> str | None:
        """Why ``contender`` skips ``size`` of ``suite``, or None."""
        key = (suite, contender)
        return _too_slow(self.slow.get(key), self.history.get(key), size, self.seconds)

    def took(self, suite: str, contender: str, size: int, seconds: float) -> None:
        key = (suite, contender)
        self.history.setdefault(key, []).append((size, seconds))
        if seconds > self.seconds and key not in self.slow:
            self.slow[key] = (size, seconds)


def _too_slow(slow, history, size, budget) -> str | None:
    """Why a contender skips ``size``: a smaller size went over the budget, or the
    next is estimated to (growing as it did between the last two sizes, at least in
    proportion to the size and at most with its square)."""
    if slow is not None:
        return f"took {slow[1]:.1f} s at size {slow[0]}, over the budget of {budget} s"
    if not history:
        return None
    last_size, last_s = history[-1]
    power = 1.0
    if len(history) > 1:
        prev_size, prev_s = history[-2]
        if prev_s > 0 and last_s > 0 and last_size > prev_size:
            power = min(2.0, max(1.0, math.log(last_s / prev_s) / math.log(last_size / prev_size)))
    estimate = last_s * (size / last_size) ** power
    if estimate > budget:
        return f"estimated {estimate:.0f} s (from {last_s:.2f} s at size {last_size}), over the budget"
    return None


def runs_for(first_s: float, repeat: int, quick: bool) -> int:
    """Timed runs after a warm-up whose build and run took ``first_s``: enough for
    a run of milliseconds to rise above the noise (up to 25, about half a second
    of them), ``repeat`` for longer ones, one for those over :data:`LONG_RUN` seconds."""
    if first_s > LONG_RUN:
        return 1  # and the warm-up counts as a sample
    if quick:
        return repeat
    return max(repeat, min(25, int(0.5 / max(first_s, 1e-4))))


def _measure_one(c, graph, expected, repeat: int, quick: bool) -> dict:
    try:
        build_s, first_s, first_peak, copied, values = _one(c, graph)  # warm-up
        if len(values) != len(expected) or not all(_same(v, e) for v, e in zip(values, expected)):
            return {"error": f"wrong outputs: {values!r:.60} instead of {expected!r:.60}"}
        del values
        builds, times = [], []
        peaks = [first_peak] if first_peak is not None else []
        runs = runs_for(build_s + first_s, repeat, quick)
        if build_s + first_s > LONG_RUN:  # its warm-up is a sample too: first-time costs are small beside it
            builds.append(build_s)
            times.append(first_s)
        for _ in range(runs):
            b, r, m, copied, values = _one(c, graph)
            del values
            builds.append(b)
            times.append(r)
            if m is not None:
                peaks.append(m)
    except Exception as exc:
        logger.debug("contender failed", exc_info=True)
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
    run_s = statistics.median(times)
    return {
        "build_s": statistics.median(builds),
        "run_s": run_s,
        "run_min_s": min(times),
        "run_max_s": max(times),
        "spread_pct": 100 * (max(times) - min(times)) / 2 / run_s if run_s > 0 else 0.0,
        "runs": len(times),
        "peak_bytes": max(peaks) if peaks else None,
        **({"copied_bytes": copied} if copied is not None else {}),
    }


def _relative(rows: list, suite: str) -> None:
    """Per node, overhead over plain Python, speed-up against serial."""
    by_case: dict = {}
    for row in rows:
        if row["suite"] == suite and "error" not in row:
            by_case.setdefault(row["size"], {})[row["contender"]] = row
    for case in by_case.values():
        plain = case.get("python")
        serial = case.get("serial")
        for row in case.values():
            row["us_per_node"] = row["run_s"] / row["nodes"] * 1e6
            row["build_us_per_node"] = row["build_s"] / row["nodes"] * 1e6
            if plain is not None:
                row["overhead_us_per_node"] = (row["run_s"] - plain["run_s"]) / row["nodes"] * 1e6
            if serial is not None:
                row["speedup_vs_serial"] = serial["run_s"] / row["run_s"] if row["run_s"] > 0 else None
