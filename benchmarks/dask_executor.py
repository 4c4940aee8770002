"""DaskExecutor beside dask.delayed, on the same embedded LocalCluster, in one run.

Both run on one ``distributed.LocalCluster`` of ``--workers`` single-threaded
worker processes started once (its start-up is not timed); each figure is the
median of ``--repeat`` timings, the two (or three) contenders taking turns in every
round so that the machine's noise falls on all alike.

overhead
    ``--nodes`` no-op nodes in three shapes: ``wide`` (``nodes - 1`` roots and one
    node taking all of them), ``deep`` (a chain) and ``tree`` (a binary reduction
    tree). µs per node for ``DaskExecutor`` with its default ``release=False``
    (every node keeps its value on the cluster), with ``release=True`` (dask frees
    intermediate values as dask.delayed does), and for the same graph as
    ``dask.delayed`` objects computed on the same client. The one output comes
    back in every case.
arrays
    a chain of ``--hops`` nodes after one that makes a ``--mb`` MB float64 array on
    a worker, each adding 1 in place and returning it; the last value comes back
    to the client. Seconds for the chain on ``DaskExecutor`` and as dask.delayed.

    python benchmarks/dask_executor.py
    python benchmarks/dask_executor.py --json results.json
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys

import dask
import numpy as np
from distributed import Client, LocalCluster

import dispatcher as dp
from dispatcher.bench.report import write_json
from dispatcher.bench.timing import seconds


def noop(*args):
    return None


def bump(a):
    a += 1
    return a


def _graphs(shape: str, n: int):
    """The same graph as dispatcher nodes and as dask.delayed objects."""
    dnoop = dask.delayed(noop, pure=False)
    if shape == "wide":
        return dp.Op(noop, *[dp.Op(noop) for _ in range(n - 1)]), dnoop(*[dnoop() for _ in range(n - 1)])
    if shape == "deep":
        node, dnode = dp.Op(noop), dnoop()
        for _ in range(n - 1):
            node, dnode = dp.Op(noop, node), dnoop(dnode)
        return node, dnode
    layer = [(dp.Op(noop), dnoop()) for _ in range((n + 1) // 2)]
    while len(layer) > 1:
        pairs = [layer[i : i + 2] for i in range(0, len(layer), 2)]
        layer = [(dp.Op(noop, *[p[0] for p in pair]), dnoop(*[p[1] for p in pair])) for pair in pairs]
    return layer[0]


def _count(node) -> int:
    return len(dp.DispatchGraph([node]))


SHAPES = ("wide", "deep", "tree")


def bench_overhead(ex, client, n: int, repeat: int, shapes=SHAPES) -> dict:
    out = {}
    for shape in shapes:
        times = {"dask_executor": [], "dask_executor_release": [], "dask_delayed": []}
        nodes = None
        for _ in range(repeat):
            node, dnode = _graphs(shape, n)
            nodes = _count(node)
            times["dask_executor"].append(seconds(dp.execute, node, ex))
            node, _ = _graphs(shape, n)
            times["dask_executor_release"].append(seconds(dp.execute, node, ex, release=True))
            times["dask_delayed"].append(seconds(dask.compute, dnode, scheduler=client))
            del node, dnode
        r = {k + "_us": statistics.median(v) / nodes * 1e6 for k, v in times.items()}
        r["nodes"] = nodes
        r["ratio"] = r["dask_executor_us"] / r["dask_delayed_us"]
        r["ratio_release"] = r["dask_executor_release_us"] / r["dask_delayed_us"]
        out[shape] = r
    return out


def bench_arrays(ex, client, mb: int, hops: int, repeat: int) -> dict:
    size = mb * 1024 * 1024 // 8

    def chain():
        node = dp.Op(np.zeros, size)
        for _ in range(hops):
            node = dp.Op(bump, node)
        return node

    def dchain():
        node = dask.delayed(np.zeros, pure=False)(size)
        for _ in range(hops):
            node = dask.delayed(bump, pure=False)(node)
        return node

    ours, theirs = [], []
    for _ in range(repeat):
        ours.append(seconds(lambda g: _check(dp.execute(g, ex, release=True), hops), chain()))
        theirs.append(seconds(lambda g: _check(dask.compute(g, scheduler=client)[0], hops), dchain()))
    return {
        "mb": mb,
        "hops": hops,
        "dask_executor_s": statistics.median(ours),
        "dask_delayed_s": statistics.median(theirs),
        "ratio": statistics.median(ours) / statistics.median(theirs),
    }


def _check(array, hops: int) -> None:
    assert array[0] == hops and array[-1] == hops


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--hops", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["overhead", "arrays"], action="append")
    parser.add_argument("--shape", choices=SHAPES, action="append", help="overhead shapes (default: all)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    only = set(args.only or ["overhead", "arrays"])
    report = {
        "python": platform.python_version(),
        "dask": dask.__version__,
        "workers": args.workers,
    }
    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.ERROR
        ) as cluster,
        Client(cluster) as client,
    ):
        ex = dp.DaskExecutor(client)
        dp.execute([dp.Op(noop) for _ in range(100)], ex)  # warm: the workers unpickle noop
        dask.compute(*[dask.delayed(noop, pure=False)() for _ in range(100)], scheduler=client)
        if "overhead" in only:
            report["overhead"] = bench_overhead(ex, client, args.nodes, args.repeat, args.shape or SHAPES)
            for shape, r in report["overhead"].items():
                print(
                    f"overhead {shape}: {r['nodes']} no-op nodes, µs/node: "
                    f"DaskExecutor {r['dask_executor_us']:.0f} ({r['ratio']:.2f} x delayed), "
                    f"with release=True {r['dask_executor_release_us']:.0f} ({r['ratio_release']:.2f} x), "
                    f"dask.delayed {r['dask_delayed_us']:.0f}"
                )
        if "arrays" in only:
            r = report["arrays"] = bench_arrays(ex, client, args.mb, args.hops, args.repeat)
            print(
                f"arrays: {r['mb']} MB chain of {r['hops']} hops: DaskExecutor {r['dask_executor_s']:.3f} s, "
                f"dask.delayed {r['dask_delayed_s']:.3f} s ({r['ratio']:.2f} x)"
            )
    if args.json:
        write_json(report, args.json)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
