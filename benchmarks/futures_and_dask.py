"""The executors as ``concurrent.futures`` executors and as dask schedulers, beside
the raw pools and dask's own schedulers.

Two measurements, each side by side in one process and one run: every round runs
each contender once, in turn, so that the machine's noise falls on all alike, and
each figure is the median of ``--repeat`` rounds on warm pools (worker start-up
is not timed).

submit
    ``--calls`` submits of a no-op, then ``result()`` on every future: µs per call
    on ``ThreadExecutor`` and ``ProcessExecutor`` beside raw
    ``ThreadPoolExecutor``/``ProcessPoolExecutor`` of the same size and loky's
    reusable executor.
get
    dask's own graphs computed with ``scheduler=ex.get`` beside dask's scheduler of
    the same kind: ``SerialExecutor`` against ``"sync"``, ``ThreadExecutor`` against
    ``"threads"``, ``ProcessExecutor`` against ``"processes"`` (given a warm pool of
    the same size): a chain of ``--chain`` delayed calls, ``--wide`` independent
    delayed calls, a reduction of a 64-chunk array, a 16-partition bag.

    python benchmarks/futures_and_dask.py
    python benchmarks/futures_and_dask.py --only get --json results.json
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import platform
import sys

import dask
import dask.array as da
import dask.bag as db

import dispatcher as dp
from dispatcher.bench.report import write_json
from dispatcher.bench.timing import alternate
from dispatcher.executors._launch import cpu_count


def noop():
    return None


def inc(x):
    return x + 1


def square(x):
    return x * x


def submit_all(pool, calls: int) -> None:
    futures = [pool.submit(noop) for _ in range(calls)]
    for f in futures:
        f.result()


def bench_submit(workers: int, calls: int, repeat: int) -> dict:
    import loky

    with (
        dp.ThreadExecutor(workers) as threads,
        cf.ThreadPoolExecutor(workers) as raw_threads,
        dp.ProcessExecutor(workers) as processes,
        cf.ProcessPoolExecutor(workers) as raw_processes,
    ):
        reusable = loky.get_reusable_executor(max_workers=workers)
        contenders = {
            "ThreadExecutor": threads,
            "raw ThreadPoolExecutor": raw_threads,
            "ProcessExecutor": processes,
            "raw ProcessPoolExecutor": raw_processes,
            "loky": reusable,
        }
        for pool in contenders.values():  # warm: workers started, imports done
            submit_all(pool, 200)
        medians = alternate({k: (lambda p=p: submit_all(p, calls)) for k, p in contenders.items()}, repeat)
    us = {k: v / calls * 1e6 for k, v in medians.items()}
    return {
        "us_per_call": us,
        "ratios": {
            "ThreadExecutor / raw ThreadPoolExecutor": us["ThreadExecutor"] / us["raw ThreadPoolExecutor"],
            "ProcessExecutor / raw ProcessPoolExecutor": us["ProcessExecutor"]
            / us["raw ProcessPoolExecutor"],
            "ProcessExecutor / loky": us["ProcessExecutor"] / us["loky"],
        },
    }


def graphs(chain: int, wide: int) -> dict:
    """dask collections to compute, by name."""
    link = dask.delayed(inc)(0)
    for _ in range(chain - 1):
        link = dask.delayed(inc)(link)
    independent = [dask.delayed(inc)(i) for i in range(wide)]
    return {
        f"chain of {chain}": link,
        f"{wide} independent": independent,
        "64-chunk array sum": (da.arange(64 * 10_000, chunks=10_000) * 2).sum(),
        "16-partition bag": db.from_sequence(range(100_000), npartitions=16).map(square).sum(),
    }


def bench_get(workers: int, chain: int, wide: int, repeat: int) -> dict:
    out: dict = {}
    with (
        dp.SerialExecutor() as serial,
        dp.ThreadExecutor(workers) as threads,
        dp.ProcessExecutor(workers) as processes,
        cf.ProcessPoolExecutor(workers) as pool,
    ):
        kinds = {
            "sync": (serial, {"scheduler": "sync"}),
            "threads": (threads, {"scheduler": "threads", "num_workers": workers}),
            "processes": (processes, {"scheduler": "processes", "pool": pool}),
        }
        for name, collection in graphs(chain, wide).items():
            expected = dask.compute(collection, scheduler="sync")
            row = {}
            for kind, (ex, options) in kinds.items():
                assert dask.compute(collection, scheduler=ex.get) == expected  # and warm
                dask.compute(collection, **options)
                medians = alternate(
                    {
                        "dask": lambda c=collection, o=options: dask.compute(c, **o),
                        "dispatcher": lambda c=collection, e=ex: dask.compute(c, scheduler=e.get),
                    },
                    repeat,
                )
                row[kind] = {**medians, "ratio": medians["dispatcher"] / medians["dask"]}
            out[name] = row
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=cpu_count())
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--chain", type=int, default=5_000)
    parser.add_argument("--wide", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=["submit", "get"], action="append")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    only = set(args.only or ["submit", "get"])
    report: dict = {"python": sys.version.split()[0], "machine": platform.machine(), "workers": args.workers}
    if "submit" in only:
        report["submit"] = bench_submit(args.workers, args.calls, args.repeat)
        print(f"{args.calls} no-op submits, then result() on each: µs per call (median of {args.repeat})")
        for name, us in report["submit"]["us_per_call"].items():
            print(f"  {name:<26} {us:8.1f}")
        for name, ratio in report["submit"]["ratios"].items():
            print(f"  {name:<44} {ratio:6.2f}")
    if "get" in only:
        report["get"] = bench_get(args.workers, args.chain, args.wide, args.repeat)
        print(f"dask graphs: seconds, dask's scheduler and ex.get of the same kind (median of {args.repeat})")
        print(f"  {'graph':<22} {'kind':<10} {'dask':>8} {'ex.get':>8} {'ratio':>6}")
        for graph, row in report["get"].items():
            for kind, m in row.items():
                print(f"  {graph:<22} {kind:<10} {m['dask']:8.3f} {m['dispatcher']:8.3f} {m['ratio']:6.2f}")
    if args.json:
        write_json(report, args.json)
    return report


if __name__ == "__main__":
    main()
