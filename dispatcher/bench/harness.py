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
the runs. Worker start-up is never timed: pools and clusters start before the
first suite and serve them all.

A contender whose build and run of one size took longer than ``budget`` seconds,
or are estimated to at the next size (growing as they did between the last two
sizes), skips the larger sizes of that suite; the report says so.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import gc
import logging
import math
import os
import platform
import re
import statistics
import sys
import time
from typing import Any

import dispatcher as dp

from ..executors.process import cpu_count

__all__ = [
    "CONTENDERS",
    "Contender",
    "alternate",
    "calibrate",
    "load_suites",
    "machine",
    "measure",
    "median_time",
    "sample",
    "seconds",
    "spin",
    "timed",
]

logger = logging.getLogger("dispatcher.bench")

LONG_RUN = 1.0  # seconds: a run this long is timed twice (its warm-up and one more)


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


def alternate(contenders: dict, repeat: int) -> dict:
    """``{name: median seconds}`` of ``repeat`` rounds in which each ``fn()`` of
    ``contenders`` runs once, in turn: the machine's noise falls on all alike."""
    times: dict = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
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


# -- graphs in each framework's terms -----------------------------------------------------


def _subst(value, get):
    """``value`` with every Ref replaced by ``get(ref)`` (inside lists and tuples too)."""
    if type(value).__name__ == "Ref":
        return get(value)
    if isinstance(value, list):
        return [_subst(v, get) for v in value]
    if isinstance(value, tuple):
        return tuple(_subst(v, get) for v in value)
    return value


def to_ops(graph) -> list:
    """The graph as ``Op`` nodes; returns the output nodes."""
    nodes: list = []
    get = lambda ref: nodes[ref.index]  # noqa: E731
    for func, args in graph.calls:
        nodes.append(dp.Op(func, *_subst(args, get)))
    return [nodes[i] for i in graph.outputs]


def _last_uses(graph) -> list:
    """For each call, the indices of the values it is the last call to use."""
    last: dict = {}
    for i, (_, args) in enumerate(graph.calls):
        _subst(args, lambda ref, i=i: last.__setitem__(ref.index, i))
    keep = set(graph.outputs)
    drops: list = [[] for _ in graph.calls]
    for index, user in last.items():
        if index not in keep:
            drops[user].append(index)
    return drops


def compile_plain(graph) -> tuple:
    """The graph as a flat program for :func:`run_program`: each call with its
    argument template, where each dependency's value goes, and the values it is
    the last to use (dropped after it)."""
    program = []
    for (func, args), drop in zip(graph.calls, _last_uses(graph)):
        if any(isinstance(a, (list, tuple)) for a in args):  # nested: substitute at run time
            program.append((func, None, args, tuple(drop)))
            continue
        refs = tuple((p, a.index) for p, a in enumerate(args) if type(a).__name__ == "Ref")
        program.append((func, list(args), refs, tuple(drop)))
    return program, list(graph.outputs)


def run_program(compiled) -> list:
    """Plain calls in topological order, each value dropped after its last use."""
    program, outputs = compiled
    values: list = []
    append = values.append
    get = lambda ref: values[ref.index]  # noqa: E731
    for func, template, refs, drop in program:
        if template is None:
            append(func(*_subst(refs, get)))
        elif refs:
            args = template[:]
            for p, i in refs:
                args[p] = values[i]
            append(func(*args))
        else:
            append(func(*template))
        for i in drop:
            values[i] = None
    return [values[i] for i in outputs]


def run_plain(graph) -> list:
    """The graph as plain calls in topological order: the floor."""
    return run_program(compile_plain(graph))


def to_delayed(graph) -> list:
    import dask

    nodes: list = []
    get = lambda ref: nodes[ref.index]  # noqa: E731
    for func, args in graph.calls:
        nodes.append(dask.delayed(func, pure=False)(*_subst(args, get)))
    return [nodes[i] for i in graph.outputs]


def run_futures(pool, graph) -> list:
    """The graph on a raw ``concurrent.futures``-style pool, as a user writes it:
    in topological order, each call submitted once the futures it needs are done."""
    futures: list = []
    get = lambda ref: futures[ref.index].result()  # noqa: E731
    submit = pool.submit
    for (func, args), drop in zip(graph.calls, _last_uses(graph)):
        futures.append(submit(func, *_subst(args, get)))
        for index in drop:
            futures[index] = None
    return [futures[i].result() for i in graph.outputs]


# -- contenders ---------------------------------------------------------------------------


GROUPS = ("local", "dask", "mpi", "mpi4py")
"""Contenders are measured a group at a time, and a group's clusters and pools run
only while it is measured: the threads of an idle dask scheduler or MPI pool in this
process (an MPI pool's manager thread polls every millisecond) would otherwise slow
every other contender (the two MPI contenders, each with its own ranks, are two
groups). Within a group, the contenders of each case run one after another."""


class Contender:
    """One way of running a graph. ``kind`` is ``"executor"`` (this library) or
    ``"baseline"``; ``flavour`` the version of a suite's functions it takes;
    ``group`` the backend whose workers it needs (see :data:`GROUPS`)."""

    kind = "baseline"
    flavour = "sync"
    group = "local"

    def __init__(self, name: str, about: str):
        self.name = name
        self.about = about

    def start(self, shared: Shared) -> None:
        """Start pools or clusters (not timed); raise to say it cannot run here."""

    def build(self, graph) -> Any:
        return graph

    def run(self, built) -> list:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Plain(Contender):
    def build(self, graph) -> tuple:
        return compile_plain(graph)

    def run(self, built) -> list:
        return run_program(built)


class Library(Contender):
    kind = "executor"

    def __init__(self, name: str, about: str, make, flavour: str = "sync", group: str = "local"):
        super().__init__(name, about)
        self.make = make
        self.flavour = flavour
        self.group = group
        self.ex = None

    def start(self, shared: Shared) -> None:
        self.ex = self.make(shared)
        if hasattr(self.ex, "start"):
            self.ex.start()

    def build(self, graph) -> list:
        return to_ops(graph)

    def run(self, built) -> list:
        return [r.value for r in dp.run(self.ex, built)]

    def close(self) -> None:
        if self.ex is not None:
            self.ex.close()


class Delayed(Contender):
    def __init__(self, name: str, about: str, scheduler):
        super().__init__(name, about)
        self.scheduler = scheduler
        self.options: dict = {}
        if scheduler == "distributed":
            self.group = "dask"

    def start(self, shared: Shared) -> None:
        import dask  # noqa: F401

        if self.scheduler == "processes":
            self.options = {"scheduler": "processes", "pool": shared.process_pool()}
        elif self.scheduler == "threads":
            self.options = {"scheduler": "threads", "num_workers": shared.workers}
        elif self.scheduler == "distributed":
            self.options = {"scheduler": shared.dask_client().get}
        else:
            self.options = {"scheduler": "sync"}

    def build(self, graph) -> list:
        return to_delayed(graph)

    def run(self, built) -> list:
        import dask

        return list(dask.compute(*built, **self.options))


class Futures(Contender):
    def __init__(self, name: str, about: str, pool):
        super().__init__(name, about)
        self.pool_name = pool
        self.pool = None
        if pool == "mpi4py":
            self.group = "mpi4py"

    def start(self, shared: Shared) -> None:
        self.pool = getattr(shared, f"{self.pool_name}_pool")()

    def run(self, built) -> list:
        return run_futures(self.pool, built)


class Shared:
    """Pools and clusters that several contenders use, started once, closed at the end."""

    def __init__(self, workers: int):
        self.workers = workers
        self._made: dict = {}

    def _get(self, key, make, close):
        if key not in self._made:
            self._made[key] = (make(), close)
        return self._made[key][0]

    def thread_pool(self):
        return self._get("threads", lambda: cf.ThreadPoolExecutor(self.workers), lambda p: p.shutdown())

    def process_pool(self):
        def make():
            pool = cf.ProcessPoolExecutor(self.workers)
            list(pool.map(abs, range(self.workers * 4)))  # start the workers now
            return pool

        return self._get("processes", make, lambda p: p.shutdown())

    def dask_client(self):
        def make():
            from distributed import Client, LocalCluster

            cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            return Client(cluster, set_as_default=False)

        def close(client):
            cluster = client.cluster
            client.close()
            cluster.close()

        return self._get("dask", make, close)

    def mpi4py_pool(self):
        def make():
            from mpi4py.futures import MPIPoolExecutor

            from ..executors._mpilaunch import import_mpi, mpiexec_in_own_session

            with mpiexec_in_own_session(import_mpi()):
                pool = MPIPoolExecutor(self.workers, main=False, path=list(sys.path))
                pool.bootup()
            list(pool.map(abs, range(self.workers * 4)))
            return pool

        return self._get("mpi4py", make, lambda p: p.shutdown())

    def close(self) -> None:
        for thing, close in reversed(list(self._made.values())):
            with contextlib.suppress(Exception):
                close(thing)
        self._made.clear()


def _contenders() -> dict:
    items = [
        Plain("python", "plain Python calls in topological order (the floor)"),
        Library("serial", "SerialExecutor", lambda s: dp.SerialExecutor()),
        Library(
            "async",
            "AsyncExecutor (async def nodes where a suite has them)",
            lambda s: dp.AsyncExecutor(),
            "async",
        ),
        Library("threads", "ThreadExecutor(workers)", lambda s: dp.ThreadExecutor(s.workers)),
        Library("processes", "ProcessExecutor(workers)", lambda s: dp.ProcessExecutor(s.workers)),
        Library(
            "dask",
            "DaskExecutor on an embedded LocalCluster",
            lambda s: dp.DaskExecutor(s.dask_client()),
            group="dask",
        ),
        Library(
            "mpi",
            "MPIExecutor(workers), spawned worker ranks",
            lambda s: dp.MPIExecutor(s.workers),
            group="mpi",
        ),
        Delayed("delayed-sync", "dask.delayed, scheduler='sync'", "sync"),
        Delayed("delayed-threads", "dask.delayed, scheduler='threads'", "threads"),
        Delayed("delayed-processes", "dask.delayed, scheduler='processes' on a warm pool", "processes"),
        Delayed("delayed-distributed", "dask.delayed on the same LocalCluster", "distributed"),
        Futures("futures-threads", "raw concurrent.futures ThreadPoolExecutor.submit", "thread"),
        Futures("futures-processes", "raw concurrent.futures ProcessPoolExecutor.submit", "process"),
        Futures("mpi4py", "raw mpi4py.futures MPIPoolExecutor.submit", "mpi4py"),
    ]
    return {c.name: c for c in items}


CONTENDERS = tuple(_contenders())


# -- suites -------------------------------------------------------------------------------


def find_suites(path: str | None = None) -> str:
    """The ``suites.py`` of the source tree's ``benchmarks/`` folder."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    candidates = (
        [path] if path else [os.path.join(os.getcwd(), "benchmarks"), os.path.join(here, "benchmarks")]
    )
    for c in candidates:
        file = c if c.endswith(".py") else os.path.join(c, "suites.py")
        if os.path.isfile(file):
            return file
    raise FileNotFoundError(
        "cannot find the benchmark suites (benchmarks/suites.py of the source tree): run from a "
        "checkout of the project, or pass --suites-file"
    )


def load_suites(path: str | None = None):
    """Import ``suites.py`` as the module ``suites`` (its folder goes on ``sys.path``,
    so that worker processes import its functions by name)."""
    file = find_suites(path)
    folder = os.path.dirname(os.path.abspath(file))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import importlib

    module = importlib.import_module(os.path.splitext(os.path.basename(file))[0])
    return module


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
    """Build and run once: (build s, run s, memory rise, outputs)."""
    build_s, built = timed(lambda: contender.build(graph))
    with PeakMemory() as peak:
        run_s, values = timed(functools.partial(contender.run, built))
    return build_s, run_s, peak.rise, values


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
    all_contenders = _contenders()
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
    try:
        for group in GROUPS:
            members = [c for c in chosen if c.group == group]
            if members:
                _measure_group(
                    members, shared, suites_module, suite_names, sizes, quick, settings, report, say
                )
    except KeyboardInterrupt:
        report["interrupted"] = True  # what was measured is still reported
    order = {name: i for i, name in enumerate(contender_names)}
    report["rows"].sort(key=lambda r: (suite_names.index(r["suite"]), r["size"], order[r["contender"]]))
    for sname in suite_names:
        _relative(report["rows"], sname)
    report.pop("_slow", None)
    report.pop("_last", None)
    return report


def _measure_group(members, shared, suites_module, suite_names, sizes, quick, settings, report, say) -> None:
    """Start a group's contenders, measure them on every case, stop them."""
    skipped, budget, repeat = report["skipped"], settings["budget_s"], settings["repeat"]
    slow = report.setdefault("_slow", {})  # (suite, contender) -> (size, s) over the budget
    last = report.setdefault("_last", {})  # (suite, contender) -> [(size, build and run s)]
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
                    key = (sname, c.name)
                    reason = _too_slow(slow.get(key), last.get(key), size, budget)
                    if reason:
                        skipped.append({"suite": sname, "size": size, "contender": c.name, "reason": reason})
                        continue
                    row = _measure_one(c, graphs.get(c.flavour, graphs["sync"]), expected, repeat, quick)
                    row.update(
                        suite=sname, size=size, unit=suite.unit, nodes=nodes, contender=c.name, kind=c.kind
                    )
                    report["rows"].append(row)
                    if "error" in row:
                        say(f"  {c.name}: {row['error']}")
                        continue
                    say(f"  {c.name}: {row['run_s'] * 1e3:.2f} ms")
                    total = row["build_s"] + row["run_s"]
                    last.setdefault(key, []).append((size, total))
                    if total > budget:
                        slow[key] = (size, total)
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
        build_s, first_s, first_peak, values = _one(c, graph)  # warm-up
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
            b, r, m, values = _one(c, graph)
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
