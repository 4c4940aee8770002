"""What a store costs, and what it saves: runs with ``store=`` beside runs without,
and beside ``joblib.Memory`` around the same functions.

Every round runs each contender once, in turn (side by side: the machine's noise
falls on all alike); each figure is the median of ``--repeat`` rounds.

overhead
    ``--nodes`` no-op nodes and one node that takes them all, on SerialExecutor:
    without a store; with a new, empty store (every value written); rerun on a
    full store (only the output is read); rerun asking for every node (every
    value read). µs per node.
joblib
    the same rerun beside ``joblib.Memory`` caching the same two functions (the
    no-op's calls, then the total), on its own directory.
large
    values that stay where they are made: a chain of ``--hops`` steps over an
    array of ``--megabytes`` MB, and a fan-out of it to ``--readers`` nodes, on
    ``ProcessExecutor(2)``: without a store; with an empty store where the driver
    wants every value (a callback that takes values: each travels back to it);
    with an empty store where it does not (each worker reports only the key, the
    next reads the value from the store). Seconds, and the driver's peak memory.
resume
    the pharmacometrics-style case: ``--fits`` fits of ``--fit-seconds`` each on
    ``ProcessExecutor(2)``, then a model selection over them; the driver is killed
    (SIGKILL) once half the fits are stored, and run again: the rerun's time beside
    the ideal of the remaining work (the fits not stored, two at a time).

    python benchmarks/store.py
    python benchmarks/store.py --nodes 2000 --repeat 3 --json store.json
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import dispatcher as dp
from dispatcher.bench.report import write_json
from dispatcher.bench.timing import PeakMemory, alternate


def noop(i):
    return i


def count(*values):
    return len(values)


def graph(n: int):
    parts = [dp.Op(noop, i) for i in range(n)]
    return dp.Op(count, *parts), parts


def _remove(folder: str, prefix: str) -> None:
    """Remove the stores of ``folder`` whose names start with ``prefix``."""
    for name in os.listdir(folder):
        if name.startswith(prefix):
            shutil.rmtree(os.path.join(folder, name))


def bench_overhead(n: int, repeat: int, folder: str) -> dict:
    full = os.path.join(folder, "full")
    dp.execute(graph(n)[0], store=full)
    rounds = iter(range(10**9))
    ex = dp.SerialExecutor()

    def fresh():  # a new store each time, removed before the next run, untimed
        dp.run(ex, [graph(n)[0]], store=os.path.join(folder, f"fresh-{next(rounds)}"))

    contenders = {
        "no store": lambda: dp.run(ex, [graph(n)[0]]),
        "empty store (all written)": fresh,
        "full store, output read": lambda: dp.run(ex, [graph(n)[0]], store=full),
        "full store, every node read": lambda: dp.run(ex, graph(n)[1], store=full),
    }
    times = alternate(contenders, repeat, before=lambda: _remove(folder, "fresh-"))
    return {name: t / n * 1e6 for name, t in times.items()}


def bench_joblib(n: int, repeat: int, folder: str) -> dict:
    import joblib

    memory = joblib.Memory(os.path.join(folder, "joblib"), verbose=0)
    cached_noop, cached_count = memory.cache(noop), memory.cache(count)

    def joblib_run():
        return cached_count(*[cached_noop(i) for i in range(n)])

    joblib_run()
    full = os.path.join(folder, "full")
    ex = dp.SerialExecutor()
    contenders = {
        "dispatcher, full store": lambda: dp.run(ex, [graph(n)[0]], store=full),
        "dispatcher, full store, every node read": lambda: dp.run(ex, graph(n)[1], store=full),
        "joblib.Memory, every call cached": joblib_run,
    }
    return {name: t / n * 1e6 for name, t in alternate(contenders, repeat).items()}


def make_array(megabytes: int, seed: int):
    import numpy as np

    return np.full(megabytes * 131072, float(seed))  # 8-byte floats


def step(a):
    return a + 1.0


def first_value(a):
    return float(a[0])


def total(*values):
    return sum(values)


class WantsValues(dp.Callback):
    """A callback that takes each value: the driver needs them all."""

    def on_finish(self, node, value):
        pass


def bench_large(megabytes: int, hops: int, readers: int, repeat: int, folder: str) -> dict:
    rounds = iter(range(10**9))

    def chain():
        node = dp.Op(make_array, megabytes, 0)
        for _ in range(hops):
            node = dp.Op(step, node)
        return [dp.Op(first_value, node)]

    def fan_out():
        source = dp.Op(make_array, megabytes, 1)
        return [dp.Op(total, *[dp.Op(first_value, dp.Op(step, source)) for _ in range(readers)])]

    results = {}
    with dp.ProcessExecutor(2) as ex:
        ex.start()
        for name, make in (("chain", chain), ("fan-out", fan_out)):

            def run(store=False, callbacks=(), make=make):
                path = os.path.join(folder, f"large-{next(rounds)}") if store else None
                with PeakMemory() as peak:
                    dp.run(ex, make(), store=path, callbacks=list(callbacks))
                return peak.rise

            peaks: dict = {}

            def contender(label, peaks=peaks, **options):
                def go():
                    peaks.setdefault(label, []).append(run(**options))

                return go

            contenders = {
                "no store": contender("no store"),
                "store, values sent back": contender(
                    "store, values sent back", store=True, callbacks=[WantsValues()]
                ),
                "store, keys only": contender("store, keys only", store=True),
            }
            times = alternate(contenders, repeat, before=lambda: _remove(folder, "large-"))
            for label, t in times.items():
                results[f"{name}: {label}, s"] = t
                results[f"{name}: {label}, driver MB"] = statistics.median(peaks[label]) / 1e6
    return results


FITS = """
import os, sys, time
import dispatcher as dp

def fit(model, seconds):
    time.sleep(seconds)  # a model fit
    return {"model": model, "ofv": (model - 7) ** 2}

def select(*fits):
    return min(fits, key=lambda f: f["ofv"])["model"]

if __name__ == "__main__":
    n, seconds, store = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    with dp.ProcessExecutor(2) as ex:
        ex.start()
        start = time.perf_counter()
        best = dp.run(ex, [dp.Op(select, *[dp.Op(fit, m, seconds) for m in range(n)])], store=store)[0].value
        print(best, time.perf_counter() - start, flush=True)
"""


def _stored(store: str) -> int:
    if not os.path.isdir(os.path.join(store, "entries")):
        return 0
    return sum(e.function == "fit" for e in dp.FileStore(store).entries())


def bench_resume(fits: int, fit_seconds: float, folder: str) -> dict:
    script = os.path.join(folder, "fits.py")
    with open(script, "w") as f:
        f.write(textwrap.dedent(FITS))
    store = os.path.join(folder, "fits-store")
    args = [sys.executable, script, str(fits), str(fit_seconds), store]
    whole = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    shutil.rmtree(store)
    first = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, start_new_session=True)
    while _stored(store) < fits // 2:
        time.sleep(0.01)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    stored = _stored(store)
    again = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    remaining = fits - stored
    ideal = -(-remaining // 2) * fit_seconds
    return {
        "fits": fits,
        "fit seconds": fit_seconds,
        "stored when killed": stored,
        "whole run, s": float(whole[1]),
        "rerun, s": float(again[1]),
        "ideal of the remaining work, s": ideal,
        "rerun / ideal": float(again[1]) / ideal,
        "same selection": whole[0] == again[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--fits", type=int, default=20)
    parser.add_argument("--fit-seconds", type=float, default=0.5)
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--hops", type=int, default=5)
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--only", choices=["overhead", "joblib", "large", "resume"])
    parser.add_argument(
        "--dir", default=".", help="where the stores go (default: here; a store's cost is its file system's)"
    )
    parser.add_argument("--json")
    args = parser.parse_args()
    results: dict = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "nodes": args.nodes,
        "directory": os.path.abspath(args.dir),
    }
    folder = tempfile.mkdtemp(prefix="dispatcher-bench-store-", dir=args.dir)
    try:
        if args.only in (None, "overhead"):
            results["overhead, µs per node"] = bench_overhead(args.nodes, args.repeat, folder)
        if args.only in (None, "joblib"):
            results["cached rerun, µs per node"] = bench_joblib(args.nodes, args.repeat, folder)
        if args.only in (None, "large"):
            results["large values"] = bench_large(
                args.megabytes, args.hops, args.readers, args.repeat, folder
            )
        if args.only in (None, "resume"):
            results["resume"] = bench_resume(args.fits, args.fit_seconds, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for section, figures in results.items():
        if not isinstance(figures, dict):
            print(f"{section}: {figures}")
            continue
        print(f"\n{section}")
        for name, value in figures.items():
            shown = f"{value:10.2f}" if isinstance(value, float) else f"{value!s:>10}"
            print(f"  {name:<45} {shown}")
    if args.json:
        write_json(results, args.json)


if __name__ == "__main__":
    main()
