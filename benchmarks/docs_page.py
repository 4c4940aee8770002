"""Write docs/benchmarks.md (and its plot and full tables) from a full run's JSON.

    python -m dispatcher.bench --out bench-results
    python benchmarks/docs_page.py bench-results/results.json

Every figure the page quotes is read from the JSON here, so the text and the table
cannot disagree.
"""

from __future__ import annotations

import json
import os
import sys

from dispatcher.bench import report

DASH = "\u2013"  # an en dash between the ends of a range
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def _rows(d):
    return [r for r in d["rows"] if "us_per_node" in r]


def pick(d, suite, contender, size=None):
    rows = [r for r in _rows(d) if r["suite"] == suite and r["contender"] == contender]
    if size is not None:
        rows = [r for r in rows if r["size"] == size]
    return rows


def span(values, fmt="{:.0f}") -> str:
    values = list(values)
    if not values:
        return "n/a"
    lo, hi = min(values), max(values)
    low, high = fmt.format(lo), fmt.format(hi)
    return low if low == high else f"{low}{DASH}{high}"


def one(d, suite, contender, size, key="run_s", scale=1e3, fmt="{:.0f}") -> str:
    rows = pick(d, suite, contender, size)
    return fmt.format(rows[0][key] * scale) if rows else "n/a"


def facts(d) -> dict:
    noop = ("wide", "deep", "tree", "manual")
    f = {}
    serial = [r for s in noop for r in pick(d, s, "serial")]
    plain = {(r["suite"], r["size"]): r for s in noop for r in pick(d, s, "python")}
    f["serial"] = span([r["us_per_node"] for r in serial], "{:.0f}")
    f["serial_over"] = "{:.1f}".format(
        max(0.0, *(r["us_per_node"] - plain[(r["suite"], r["size"])]["us_per_node"] for r in serial))
    )
    f["op_build"] = span([r["build_us_per_node"] for r in serial], "{:.0f}")
    delayed = [r for s in noop for c in ("delayed-sync",) for r in pick(d, s, c)]
    f["delayed_build"] = span([r["build_us_per_node"] for r in delayed], "{:.0f}")
    big = [r for s in ("wide", "tree", "manual") for r in pick(d, s, "processes") if r["nodes"] >= 1000]
    f["proc"] = span([r["us_per_node"] for r in big], "{:.0f}")
    ratios = []
    for r in big:
        for other in ("futures-processes", "delayed-processes"):
            o = pick(d, r["suite"], other, r["size"])
            if o:
                ratios.append(o[0]["us_per_node"] / r["us_per_node"])
    ratios.sort()
    f["proc_ratio"] = f"{ratios[len(ratios) // 2]:.0f} times (from {ratios[0]:.0f} to {ratios[-1]:.0f})"
    f["proc_hop"] = span([r["us_per_node"] for r in pick(d, "deep", "processes")], "{:.0f}")
    cpu_size = max(r["size"] for r in _rows(d) if r["suite"] == "cpu")
    f["cpu_n"] = cpu_size
    serial_cpu = pick(d, "cpu", "serial", cpu_size)[0]["run_s"] if pick(d, "cpu", "serial", cpu_size) else 0.0
    f["cpu_ideal"] = f"{serial_cpu / d['settings']['workers'] * 1e3:.0f}"
    f["cpu_call"] = f"{serial_cpu / cpu_size * 1e3:.0f}"
    for c in ("processes", "mpi", "dask", "threads", "serial"):
        f[f"cpu_{c}"] = one(d, "cpu", c, cpu_size)
    for c in (
        "python",
        "serial",
        "threads",
        "processes",
        "dask",
        "mpi",
        "delayed-processes",
        "futures-processes",
    ):
        for mb in (10, 50):
            f[f"arr_{c}_{mb}"] = one(d, "arrays", c, mb, scale=1e3 / 10)  # ms per hop (10 hops)
    for c in ("serial", "python", "processes"):
        f[f"mem_{c}_50"] = one(d, "arrays", c, 50, key="peak_bytes", scale=1e-6)
    for c in ("processes", "mpi", "dask", "loky", "delayed-processes", "futures-processes"):
        f[f"spread_{c}_10"] = one(d, "spread", c, 10)  # ms for the whole graph
    io = max(r["size"] for r in _rows(d) if r["suite"] == "io")
    f["io_n"] = io
    f["io_async_ms"] = one(d, "io", "async", io)
    f["io_async_us"] = one(d, "io", "async", io, key="us_per_node", scale=1)
    f["io_threads_ms"] = one(d, "io", "threads", io)
    spread_out = ("wide", "tree", "manual")
    f["dask"] = span([r["us_per_node"] / 1e3 for s in spread_out for r in pick(d, s, "dask")], "{:.1f}")
    f["ddist"] = span(
        [r["us_per_node"] / 1e3 for s in spread_out for r in pick(d, s, "delayed-distributed")], "{:.1f}"
    )
    f["dask_hop"] = span([r["us_per_node"] / 1e3 for r in pick(d, "deep", "dask")], "{:.1f}")
    mpi_big = [r for r in pick(d, "wide", "mpi") if r["nodes"] >= 1000]
    f["mpi"] = span([r["us_per_node"] for r in mpi_big], "{:.0f}")
    f["mpi_ratio"] = span(
        [o["us_per_node"] / r["us_per_node"] for r in mpi_big for o in pick(d, "wide", "mpi4py", r["size"])],
        "{:.0f}",
    )
    f["mpi4py"] = span([r["us_per_node"] for r in pick(d, "wide", "mpi4py")], "{:.0f}")
    f["mpi_hop"] = span([r["us_per_node"] / 1e3 for r in pick(d, "deep", "mpi")], "{:.1f}")
    return f


PAGE = """# Benchmarks: which executor, for my graph, on my machine?

`make bench` (or `python -m dispatcher.bench`) answers it for your machine: it
runs the graph shapes of `dispatcher/bench/suites.py`, each at two or three sizes, on every
executor of the library that can start there and on the alternatives, side by
side in one process, and writes a table, `bench-results/results.json`,
`results.md` and the plot below. `--quick` takes under a minute; `--suites`,
`--executors` and `--sizes` pick what to run (`--list` shows the choices). This
page is written from a full run's JSON by `benchmarks/docs_page.py`.

## The short answer, on this machine

For each kind of graph, the library's executor that ran it fastest at the largest
size, and the best of the other tools beside it (from the run below):

{advice}
## What is measured

| suite | graph |
|---|---|
| wide | `n - 1` independent no-op calls and one call taking all of them |
| deep | a chain of `n` no-op calls |
| tree | a binary reduction: `(n + 1) / 2` leaves summed pairwise |
| manual | Dispatcher.jl's manual example over `n` files: load, process with a reference, \
roll every three, compare random pairs, reduce to the best (about `5 n` nodes) |
| cpu | `n` calls of about 50 ms of pure-Python work (the GIL held; calibrated at the start), one reduce |
| arrays | 10 hops passing an `n` MB numpy array, each making a new one |
| spread | one `n` MB numpy array read by 20 calls, one reduce |
| io | `n` waits of 5 ms (`async def` on AsyncExecutor, `time.sleep` elsewhere), one reduce |
| mixed | a tool of simulated fits on a budget of `c` cores (the pools' workers), a unit of work of `n` \
ms: `3c` fits of 1 unit, then `max(1, c / 4)` refits of `c` units that scale to `c` cores, then `3c / 2` \
fits of 1 unit, each round after the one before; every fit asks for `cores=(1, c)`, which the library's \
executors grant (the others run every fit on one core, `serial` one fit at a time with all cores). \
"x ideal" is the run's time over the total work divided by `c` |

Contenders: `python` (plain calls in topological order, each value dropped after
its last use: the floor), the library's `serial`, `async`, `threads`,
`processes`, `dask` (DaskExecutor on an embedded `LocalCluster`) and `mpi`
(spawned worker ranks), run with their defaults (every node keeps its value), and
the baselines `dask.delayed` on the `sync`, `threads` and `processes` schedulers
and on the same `LocalCluster` (`delayed-distributed`), and raw pools used as a
user writes it, each call submitted in topological order once the futures it
needs are done (`futures-threads`, `futures-processes`, `mpi4py`). Every pool
has as many workers as the machine has usable CPUs, and each of the library's
executors a budget of as many cores. `make bench-peers` (`--peers`) adds other
tools: `joblib` (`Parallel` on loky, the graph level by level, since joblib has
no graph), `ray` (Ray tasks taking the `ObjectRef`s of the calls they need) and
`parsl` (Parsl `python_app`s on a `HighThroughputExecutor` with as many workers,
taking the `AppFuture`s of the calls they need, also inside lists).

Method: a warm-up run whose outputs are checked against plain Python's, then the
median of at least 3 timed runs (up to 25 for runs of milliseconds; a run over a
second is timed twice, its warm-up included), each on a freshly built graph;
building the graph (`Op`s, `dask.delayed` objects) is timed apart from running it.
Worker start-up is not timed. A contender whose build and run would take more
than the budget (3 s) skips a suite's larger sizes. In each case the contenders
run one after another; those that need a cluster or MPI ranks run as groups, with
their workers alive only then, because the threads of an idle dask scheduler or
MPI pool in the driver would slow every other contender. Peak memory is the rise
of the driver's resident set during a run.

## The latest full run

{header}
- wall time: {wall:.0f} s

One table per suite: µs per node (run time over the graph's nodes) for each
contender, the library's executors first (in `code`), then the baselines; the
fastest of the library's executors at each size in bold; `-` where the budget
skipped it. Every case, with build
times, spread, overhead over plain Python, speed against serial and peak memory,
is in [benchmark-results.md](benchmark-results.md) (and
[benchmark-results.json](benchmark-results.json)).

{summary}
![µs per node against graph size, one panel per suite](benchmarks.png)

## What it means for choosing an executor

These figures are from a 2-core machine shared with other work, so single cells
are noisy (compare neighbours, not digits); on yours, run `make bench`.

- **Small, quick nodes, or debugging: `SerialExecutor`.** It costs {serial} µs
  per node on the no-op graphs, at most {serial_over} µs more than calling the
  functions by hand, and `pdb` and `cProfile` work inside nodes. Building a graph
  costs {op_build} µs per `Op`, against {delayed_build} µs per `dask.delayed` object.
- **Many quick pure-Python nodes in parallel: `ProcessExecutor`.** Batching
  brings its cost to {proc} µs per node on wide graphs, trees and the manual graph
  of 1,000 nodes and more, typically {proc_ratio} below raw
  `ProcessPoolExecutor.submit` and dask's process scheduler. A chain is
  latency-bound: each hop is a round trip to a worker ({proc_hop} µs here); keep
  chains of tiny functions on `serial` or `threads`.
- **CPU-bound Python: `ProcessExecutor` (or MPI, or dask).** {cpu_n} calls of
  {cpu_call} ms each (serial's time over the calls) on 2 workers ran in
  {cpu_processes} ms on processes, {cpu_mpi} ms on MPI ranks
  and {cpu_dask} ms on dask, against an ideal of {cpu_ideal} ms (serial's time over
  the workers); threads took {cpu_threads} ms and serial {cpu_serial} ms, since the
  GIL lets one thread run Python at a time.
- **Large arrays: in-process executors pass them by reference.** Serial and
  threads run the 10 MB chain at {arr_serial_10} and {arr_threads_10} ms per hop
  (plain Python: {arr_python_10} ms). They keep every node's value, as
  Dispatcher.jl does, so a chain of large arrays holds them all: at 50 MB the
  driver's memory rose by {mem_serial_50} MB during a serial run against
  {mem_python_50} MB for plain Python, which drops each array after use;
  `release=True` frees intermediate values as soon as nothing needs them.
  `ProcessExecutor` sends a large array on as the shared-memory file it came
  back in: one copy per hop (the worker writing its result), which the driver
  relays without reading, {arr_processes_10} ms per hop at 10 MB
  ({arr_processes_50} ms at 50 MB, the driver's memory up by {mem_processes_50} MB),
  against {arr_delayed-processes_10} ms for dask's process scheduler and
  {arr_futures-processes_10} ms for a raw process pool, which send the array to a
  worker and back. One 10 MB array read by 20 calls takes
  {spread_processes_10} ms in all on `ProcessExecutor`, {spread_loky_10} ms on loky,
  {spread_delayed_processes_10} ms on dask's process scheduler and
  {spread_futures_processes_10} ms on a raw process pool. `DaskExecutor` keeps
  the values on its workers and moves them worker to worker: {arr_dask_10} ms per
  hop at 10 MB, {arr_dask_50} ms at 50 MB, and the driver never holds them.
  `MPIExecutor`'s spawned ranks on this machine are served as `ProcessExecutor`'s
  workers are: {arr_mpi_10} ms per hop at 10 MB, and the 10 MB array read by 20
  calls in {spread_mpi_10} ms.
- **I/O-bound `async def` code: `AsyncExecutor`.** {io_n} waits of 5 ms overlap on
  one event loop: the whole graph in {io_async_ms} ms ({io_async_us} µs per node);
  a pool of 2 threads takes {io_threads_ms} ms (more threads overlap more waits:
  `ThreadExecutor()` defaults to the CPUs + 4).
- **dask.distributed** costs {dask} ms per node on the wide graphs, trees and
  the manual graph on this 2-core machine (the scheduler shares the cores with
  the workers), and `dask.delayed` on the same cluster {ddist} ms; a chain takes
  {dask_hop} ms per hop. It pays off for data that should stay on the workers,
  for clusters (dask-jobqueue) and for its dashboard, not for graphs of
  microsecond nodes on a laptop.
- **MPI** (`MPIExecutor`) costs {mpi} µs per node on wide graphs of 1,000 nodes
  and more, {mpi_ratio} times below raw `mpi4py.futures` ({mpi4py} µs per call),
  and a chain's hop takes {mpi_hop} ms on the ranks it spawns, which it serves
  over sockets as `ProcessExecutor` serves its workers. The ranks of an `mpiexec`
  job you start yourself are driven through `mpi4py.futures`, whose waits the
  executor keeps short after each message: there a hop takes 0.4 to 0.7 ms. Use it
  where the ranks span the nodes of a cluster (`srun`, `mpiexec`); use `SerialMPIExecutor` for
  functions that are MPI programs themselves.
"""


def main(path: str, docs: str = DOCS) -> None:
    with open(path) as f:
        d = json.load(f)
    header = "\n".join(f"- {line}" for line in report._header(d))
    f = {k.replace("-", "_"): v for k, v in facts(d).items()}
    page = PAGE.replace("{arr_delayed-processes_10}", "{arr_delayed_processes_10}")
    page = page.replace("{arr_futures-processes_10}", "{arr_futures_processes_10}")
    text = page.format(
        header=header, wall=d["settings"]["wall_s"], summary=report.summary(d), advice=report.advice(d), **f
    )
    with open(os.path.join(docs, "benchmarks.md"), "w") as out:
        out.write(text)
    with open(os.path.join(docs, "benchmark-results.md"), "w") as out:
        out.write(
            "# Benchmark results: every case\n\nThe full tables of the run shown in "
            "[benchmarks.md](benchmarks.md). Columns: build and run time (the median; ±% is half "
            "the range of the runs), µs per node, the run's excess over plain Python calls per node, "
            "speed against SerialExecutor, and the rise of the driver's resident memory during a run.\n\n"
        )
        out.write(report.table(d, markdown=True))
    with open(os.path.join(docs, "benchmark-results.json"), "w") as out:
        json.dump(d, out, indent=1)
    report.plot(d, os.path.join(docs, "benchmarks.png"))


if __name__ == "__main__":
    main(sys.argv[1])
