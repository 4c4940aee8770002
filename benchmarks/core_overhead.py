"""Per-node cost of building and running graphs of no-op functions.

Three shapes (wide fan-in, deep chain, binary tree) at several sizes. For each, in
one process and one run:

- build: µs per node to make the ``Op`` nodes;
- plain: µs per node for plain Python calling the same functions in topological
  order (the floor);
- each in-process executor: run time per node, and its overhead over plain;
- with ``--trace``, each executor again with a :class:`dispatcher.Trace` kept in
  memory and with one written to a file (``trace=path``): what a trace costs per
  node over the same executor's run without one (the three runs in turn, round
  after round, so that the machine's noise falls on each alike);
- dask, twice: ``dask.delayed`` objects of the same calls computed with
  ``scheduler="sync"`` (``dask_delayed``), and the same calls as a plain dask task
  graph (a dict of task tuples) given to dask's synchronous scheduler,
  ``dask.local.get_sync`` (``dask_sync``): the second leaves out dask.delayed's
  graph handling and optimisation, so it is dask's scheduling cost alone. Building
  either is not timed.

``dask.delayed`` copies every ancestor's graph layers into each new object, so a
deep chain of delayed objects takes memory quadratic in its length (a 100,000-node
chain does not fit in 24 GiB); delayed chains longer than ``--delayed-chain-max``
are not measured, and any dask measurement expected to take longer than
``--dask-budget`` seconds is skipped and its estimate shown.

Every figure is the median of ``max(--repeat, 100000 // nodes)`` timings after one
warm-up, so that small graphs, which run in a millisecond, are timed often enough
to rise above the noise of a shared machine.

    python benchmarks/core_overhead.py                 # 1e3, 1e4, 1e5 nodes
    python benchmarks/core_overhead.py --sizes 1000000 --no-dask
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import sys
import tempfile
import time

import dispatcher as dp
from dispatcher.bench.report import write_json
from dispatcher.bench.timing import alternate, sample


def noop(*args):
    return None


def build_wide(n):
    roots = [dp.Op(noop) for _ in range(n - 1)]
    return dp.Op(noop, *roots)


def build_chain(n):
    node = dp.Op(noop)
    for _ in range(n - 1):
        node = dp.Op(noop, node)
    return node


def build_tree(n):
    level = [dp.Op(noop) for _ in range((n + 1) // 2)]
    while len(level) > 1:
        nxt = [dp.Op(noop, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


SHAPES = {"wide": build_wide, "chain": build_chain, "tree": build_tree}


def plain_program(output):
    """The graph as a flat program: (func, argument slots) in topological order."""
    order = dp.DispatchGraph(output).topological_order()
    slot = {n: i for i, n in enumerate(order)}
    return [(n.func, [slot[a] for a in n.args]) for n in order]


def run_plain(program):
    values = [None] * len(program)
    for i, (func, slots) in enumerate(program):
        values[i] = func(*[values[s] for s in slots])
    return values[-1]


def dask_delayed(output):
    import dask

    made = {}
    for n in dp.DispatchGraph(output).topological_order():
        made[n] = dask.delayed(n.func, pure=False)(*[made[a] for a in n.args])
    return made[output]


def dask_task_graph(output):
    """The same calls as a dask task graph: {key: (func, *argument keys)}."""
    order = dp.DispatchGraph(output).topological_order()
    key = {n: f"n{i}" for i, n in enumerate(order)}
    return {key[n]: (n.func, *[key[a] for a in n.args]) for n in order}, key[output]


EXECUTORS = {
    "serial": dp.SerialExecutor,
    "threads": dp.ThreadExecutor,
    "async": dp.AsyncExecutor,
}


def measure(
    shape,
    n,
    repeat,
    executors,
    with_dask,
    dask_history,
    delayed_history,
    dask_budget,
    delayed_chain_max,
    with_trace=False,
):
    build = SHAPES[shape]
    gc.collect()
    start = time.perf_counter()
    output = build(n)
    build_s = time.perf_counter() - start
    n = len(dp.DispatchGraph(output))
    row = {"shape": shape, "nodes": n, "build_us": build_s / n * 1e6}
    repeat = max(repeat, 100_000 // n)
    program = plain_program(output)
    plain = sample(lambda: run_plain(program), repeat)[0]
    row["plain_us"] = plain / n * 1e6
    for name in executors:
        with EXECUTORS[name]() as ex:
            if with_trace:  # the runs with and without a trace in turn, so that noise falls on all
                with tempfile.TemporaryDirectory() as folder:
                    path = os.path.join(folder, "run.json")
                    runs = {
                        "plain": lambda ex=ex: dp.run(ex, [output]),
                        "kept": lambda ex=ex: dp.run(ex, [output], trace=dp.Trace()),
                        "written": lambda ex=ex, path=path: dp.run(ex, [output], trace=path),
                    }
                    for warm_up in runs.values():
                        warm_up()
                    times = alternate(runs, repeat, before=gc.collect)
                t = times["plain"]
                row[f"{name}_trace_us"] = (times["kept"] - t) / n * 1e6
                row[f"{name}_trace_file_us"] = (times["written"] - t) / n * 1e6
            else:
                t = sample(lambda ex=ex: dp.run(ex, [output]), repeat)[0]
        row[f"{name}_us"] = t / n * 1e6
        row[f"{name}_overhead_us"] = (t - plain) / n * 1e6
    if with_dask:
        import dask
        import dask.local

        dsk, key = dask_task_graph(output)
        _dask_column(
            row,
            "dask_sync",
            n,
            plain,
            repeat,
            dask_history,
            dask_budget,
            lambda: dask.local.get_sync(dsk, key),
        )
        if shape == "chain" and n > delayed_chain_max:
            row["dask_delayed_skipped"] = "chain too long for dask.delayed's memory"
        else:
            d = dask_delayed(output)
            _dask_column(
                row,
                "dask_delayed",
                n,
                plain,
                repeat,
                delayed_history,
                dask_budget,
                lambda: dask.compute(d, scheduler="sync"),
            )
    return row


def _dask_column(row, name, n, plain, repeat, history, budget, fn):
    estimate = _estimate(history, n)
    if estimate > budget:
        row[f"{name}_skipped_estimate_s"] = estimate
        return
    t = sample(fn, repeat)[0]
    history.append((n, t))
    row[f"{name}_us"] = t / n * 1e6
    row[f"{name}_overhead_us"] = (t - plain) / n * 1e6
    if "serial_overhead_us" in row:
        row[f"{name}_over_serial"] = row[f"{name}_overhead_us"] / row["serial_overhead_us"]


def _estimate(history, n):
    """Seconds one dask run at ``n`` nodes will take, extrapolated from smaller sizes
    with the growth exponent seen between the last two (dask's cost per node grows
    with the size on some shapes)."""
    if not history:
        return 0.0
    n1, t1 = history[-1]
    k = 1.0
    if len(history) > 1:
        n0, t0 = history[-2]
        k = max(1.0, math.log(t1 / t0) / math.log(n1 / n0))
    return t1 * (n / n1) ** k * 2  # a warm-up and at least one timed run


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--executors", nargs="+", default=list(EXECUTORS), choices=list(EXECUTORS))
    parser.add_argument("--no-dask", action="store_true", help="skip the dask.delayed baseline")
    parser.add_argument(
        "--dask-budget",
        type=float,
        default=120.0,
        help="skip a dask measurement expected to take longer than this many seconds",
    )
    parser.add_argument(
        "--delayed-chain-max",
        type=int,
        default=20_000,
        help="longest chain measured with dask.delayed (its memory is quadratic)",
    )
    parser.add_argument("--trace", action="store_true", help="also measure what a trace costs per node")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    cols = ["shape", "nodes", "build_us", "plain_us"] + [f"{e}_overhead_us" for e in args.executors]
    if args.trace:
        cols += [f"{e}_trace{kind}_us" for e in args.executors for kind in ("", "_file")]
    if not args.no_dask:
        cols += ["dask_sync_overhead_us", "dask_delayed_overhead_us"]
        if "serial" in args.executors:
            cols += ["dask_sync_over_serial", "dask_delayed_over_serial"]
    print(f"# python {platform.python_version()}, {platform.machine()}, dispatcher {dp.__version__}")
    print(
        f"# µs per node, median of max({args.repeat}, 100000 // nodes) runs; overhead = run time - plain time"
    )
    print(" ".join(f"{c:>{_width(c)}}" for c in cols))
    rows = []
    for shape in args.shapes:
        dask_history: list = []
        delayed_history: list = []
        for n in args.sizes:
            row = measure(
                shape,
                n,
                args.repeat,
                args.executors,
                not args.no_dask,
                dask_history,
                delayed_history,
                args.dask_budget,
                args.delayed_chain_max,
                args.trace,
            )
            rows.append(row)
            print(" ".join(_cell(row, c) for c in cols), flush=True)
    if args.json:
        write_json({"python": platform.python_version(), "rows": rows}, args.json)


def _cell(row, col):
    value = row.get(col)
    if value is None:
        prefix = "dask_delayed" if col.startswith("dask_delayed") else "dask_sync"
        est = row.get(f"{prefix}_skipped_estimate_s")
        text = f"skip~{est:.0f}s" if est is not None and col.startswith("dask") else "-"
        return f"{text:>{_width(col)}}"
    return f"{value:>{_width(col)}.2f}" if isinstance(value, float) else f"{value:>{_width(col)}}"


def _width(col):
    return max(10, len(col))


if __name__ == "__main__":
    main()
