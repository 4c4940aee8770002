"""ProcessExecutor against the ideal, raw concurrent.futures and dask's process scheduler.

Three measurements, each side by side in one process and one run, each the median
of ``--repeat`` timings on warm pools (worker start-up is not timed):

cpu
    ``2 x workers`` nodes of about ``--work`` seconds of pure-Python work each.
    ``serial`` runs them one after another in this process; ``ideal`` is serial
    time divided by the workers; the ratio ``process / ideal`` is the figure of
    merit (1.0 is perfect).
overhead
    a wide graph of ``--nodes`` no-op nodes (``--nodes - 1`` roots and one node
    taking all of them): µs per node for ``ProcessExecutor``, for raw
    ``concurrent.futures.ProcessPoolExecutor.submit`` of the same calls (roots
    submitted, awaited, then the sink), and for the same graph as ``dask.delayed``
    objects computed with ``scheduler="processes"``, once on a warm pool of the same
    size handed to dask and once as dask runs it by default (a pool per compute).
arrays
    a chain of ``--hops`` nodes, each taking a ``--mb`` MB float64 array, adding 1
    in place and returning it: seconds per hop on ``ProcessExecutor`` (each hop
    sends the array to a worker and back) beside one plain in-process copy of the
    array (``numpy.copy``) and the same chain on ``SerialExecutor``.

    python benchmarks/process_executor.py
    python benchmarks/process_executor.py --json results.json
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gc
import platform
import statistics
import sys
import time

import numpy as np

import dispatcher as dp
from dispatcher.bench.report import write_json
from dispatcher.bench.timing import calibrate, median_time, seconds, spin
from dispatcher.executors._launch import cpu_count


def noop(*args):
    return None


def bump(a):
    a += 1
    return a


def bench_cpu(ex, workers: int, work: float, repeat: int) -> dict:
    """Serial, ProcessExecutor and raw ``ProcessPoolExecutor.map`` timed in turn,
    ``repeat`` rounds, so that the machine's noise falls on all three alike."""
    loops = calibrate(work)
    nodes = [dp.Op(spin, loops) for _ in range(2 * workers)]
    serial, wall, raw = [], [], []
    with cf.ProcessPoolExecutor(workers) as pool:
        list(pool.map(noop, range(workers)))
        dp.execute(nodes, ex)  # warm-up: the workers unpickle spin and time it once
        for _ in range(repeat):
            serial.append(seconds(lambda: dp.execute(nodes, dp.SerialExecutor())))
            wall.append(seconds(lambda: dp.execute(nodes, ex)))
            raw.append(seconds(lambda: list(pool.map(spin, [loops] * len(nodes)))))
    ideal = statistics.median(serial) / workers
    return {
        "nodes": len(nodes),
        "serial_s": statistics.median(serial),
        "ideal_s": ideal,
        "process_s": statistics.median(wall),
        "ratio": statistics.median(wall) / ideal,
        "raw_pool_s": statistics.median(raw),
        "raw_ratio": statistics.median(raw) / ideal,
    }


def bench_overhead(ex, workers: int, n: int, repeat: int, dask_default: bool) -> dict:
    roots = [dp.Op(noop) for _ in range(n - 1)]
    sink = dp.Op(noop, *roots)
    out = {"nodes": n}
    out["process_us"] = median_time(lambda: dp.execute(sink, ex), repeat) / n * 1e6

    with cf.ProcessPoolExecutor(workers) as pool:
        list(pool.map(noop, range(workers * 4)))

        def raw():
            futures = [pool.submit(noop) for _ in range(n - 1)]
            pool.submit(noop, *[f.result() for f in futures]).result()

        out["raw_submit_us"] = median_time(raw, repeat) / n * 1e6

        try:
            import dask
        except ImportError:
            return out
        droots = [dask.delayed(noop, pure=False)() for _ in range(n - 1)]
        dsink = dask.delayed(noop, pure=False)(*droots)
        out["dask_processes_warm_us"] = (
            median_time(lambda: dask.compute(dsink, scheduler="processes", pool=pool), repeat) / n * 1e6
        )
        if dask_default:
            out["dask_processes_us"] = (
                median_time(lambda: dask.compute(dsink, scheduler="processes", num_workers=workers), repeat)
                / n
                * 1e6
            )
    return out


def bench_arrays(ex, mb: int, hops: int, repeat: int) -> dict:
    data = np.zeros(mb * 1024 * 1024 // 8)

    def chain():
        node = dp.DataNode(data.copy())
        for _ in range(hops):
            node = dp.Op(bump, node)
        return node

    copy = median_time(lambda: np.copy(data), repeat)
    serial, process = [], []
    for _ in range(repeat):  # build each chain just before its run, and drop it after
        for executor, times in ((dp.SerialExecutor(), serial), (ex, process)):
            g = chain()
            start = time.perf_counter()
            result = dp.execute(g, executor)
            times.append(time.perf_counter() - start)
            assert result[0] == hops  # every hop added one
            del g, result
            gc.collect()
    serial, process = statistics.median(serial), statistics.median(process)
    return {
        "mb": mb,
        "hops": hops,
        "numpy_copy_s": copy,
        "serial_hop_s": serial / hops,
        "process_hop_s": process / hops,
        "hop_over_copy": process / hops / copy,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=cpu_count())
    parser.add_argument("--work", type=float, default=0.5, help="seconds of work per cpu node")
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--hops", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=["cpu", "overhead", "arrays"], action="append")
    parser.add_argument("--no-dask-default", action="store_true", help="skip dask's pool-per-compute run")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    only = set(args.only or ["cpu", "overhead", "arrays"])
    report = {"python": platform.python_version(), "cpus": cpu_count(), "workers": args.workers}
    with dp.ProcessExecutor(args.workers) as ex:
        ex.start()
        dp.execute([dp.Op(noop) for _ in range(100)], ex)  # warm: the pool learns noop is quick
        if "cpu" in only:
            r = report["cpu"] = bench_cpu(ex, args.workers, args.work, args.repeat)
            print(
                f"cpu: {r['nodes']} nodes of {args.work} s on {args.workers} workers: "
                f"serial {r['serial_s']:.3f} s, ideal {r['ideal_s']:.3f} s, "
                f"ProcessExecutor {r['process_s']:.3f} s = {r['ratio']:.3f} x ideal "
                f"(raw ProcessPoolExecutor.map {r['raw_pool_s']:.3f} s = {r['raw_ratio']:.3f} x ideal)"
            )
        if "overhead" in only:
            r = report["overhead"] = bench_overhead(
                ex, args.workers, args.nodes, args.repeat, not args.no_dask_default
            )
            line = f"overhead: {r['nodes']} no-op nodes, µs/node: ProcessExecutor {r['process_us']:.1f}"
            raw = r["raw_submit_us"]
            line += f", raw ProcessPoolExecutor.submit {raw:.1f} ({raw / r['process_us']:.1f}x)"
            for key, name in (
                ("dask_processes_warm_us", "dask processes, warm pool"),
                ("dask_processes_us", "dask processes"),
            ):
                if key in r:
                    line += f", {name} {r[key]:.1f} ({r[key] / r['process_us']:.1f}x)"
            print(line)
        if "arrays" in only:
            r = report["arrays"] = bench_arrays(ex, args.mb, args.hops, max(3, args.repeat // 2))
            print(
                f"arrays: {r['mb']} MB chain of {r['hops']} hops, s/hop: "
                f"ProcessExecutor {r['process_hop_s']:.4f}, SerialExecutor {r['serial_hop_s']:.4f}, "
                f"numpy.copy {r['numpy_copy_s']:.4f} (hop = {r['hop_over_copy']:.2f} x copy)"
            )
    if args.json:
        write_json(report, args.json)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
