"""MPIExecutor against raw ``mpi4py.futures``; SerialMPIExecutor's cost per node.

Side by side in one process and one run, each figure the median of ``--repeat``
timings on warm pools (spawning the worker ranks is not timed), the executors
taking turns in each round so that the machine's noise falls on all alike:

overhead
    a wide graph of ``--nodes`` no-op nodes (``--nodes - 1`` roots and one node
    taking all of them): µs per node for ``MPIExecutor`` (batching on), for
    ``MPIExecutor(batch_size=1)`` (every node its own ``mpi4py`` task), and for raw
    ``MPIPoolExecutor.submit`` of the same calls (roots submitted, awaited, then
    the sink) on a pool of as many spawned workers.
cpu
    ``2 x workers`` nodes of about ``--work`` seconds of pure-Python work each:
    ``serial`` in this process, ``ideal`` = serial / workers, ``MPIExecutor`` and
    raw ``MPIPoolExecutor.map``; the ratio to ideal is the figure of merit.

Run it from a plain ``python`` (it spawns ``--workers`` ranks twice: the
executor's and the raw pool's)::

    python benchmarks/mpi_executor.py
    python benchmarks/mpi_executor.py --json results.json

Under ``mpiexec -n N python benchmarks/mpi_executor.py --spmd`` it times
``SerialMPIExecutor`` instead: µs per no-op node over the N ranks, beside
``SerialExecutor`` on rank 0 alone.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys

import dispatcher as dp
from dispatcher.bench.report import write_json
from dispatcher.bench.timing import alternate, calibrate, seconds, spin


def noop(*args):
    return None


def bench_overhead(ex, ex1, pool, n: int, repeat: int) -> dict:
    roots = [dp.Op(noop) for _ in range(n - 1)]
    sink = dp.Op(noop, *roots)

    def raw():
        futures = [pool.submit(noop) for _ in range(n - 1)]
        pool.submit(noop, *[f.result() for f in futures]).result()

    medians = alternate(
        {"mpi": lambda: dp.execute(sink, ex), "mpi_batch1": lambda: dp.execute(sink, ex1), "raw": raw},
        repeat,
    )
    out = {"nodes": n}
    for name, median in medians.items():
        out[f"{name}_us"] = median / n * 1e6
    out["mpi_over_raw"] = out["mpi_us"] / out["raw_us"]
    out["batch1_over_raw"] = out["mpi_batch1_us"] / out["raw_us"]
    return out


def bench_cpu(ex, pool, workers: int, work: float, repeat: int) -> dict:
    loops = calibrate(work)
    nodes = [dp.Op(spin, loops) for _ in range(2 * workers)]
    dp.execute(nodes, ex)  # warm-up
    list(pool.map(spin, [loops] * workers))
    medians = alternate(
        {
            "serial": lambda: dp.execute(nodes, dp.SerialExecutor()),
            "mpi": lambda: dp.execute(nodes, ex),
            "raw": lambda: list(pool.map(spin, [loops] * len(nodes))),
        },
        repeat,
    )
    ideal = medians["serial"] / workers
    return {
        "nodes": len(nodes),
        "serial_s": medians["serial"],
        "ideal_s": ideal,
        "mpi_s": medians["mpi"],
        "ratio": medians["mpi"] / ideal,
        "speedup": medians["serial"] / medians["mpi"],
        "raw_s": medians["raw"],
        "raw_ratio": medians["raw"] / ideal,
    }


def spmd(n: int, repeat: int) -> dict | None:
    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    ex = dp.SerialMPIExecutor()
    roots = [dp.Op(noop) for _ in range(n - 1)]
    sink = dp.Op(noop, *roots)
    dp.execute(sink, ex)  # warm-up
    times = [seconds(lambda: dp.execute(sink, ex)) for _ in range(repeat)]
    ex.close()
    if rank != 0:
        return None
    serial = [seconds(lambda: dp.execute(sink, dp.SerialExecutor())) for _ in range(repeat)]
    return {
        "ranks": MPI.COMM_WORLD.Get_size(),
        "nodes": n,
        "serial_mpi_us": statistics.median(times) / n * 1e6,
        "serial_us": statistics.median(serial) / n * 1e6,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=float, default=0.5, help="seconds of work per cpu node")
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=["overhead", "cpu"], action="append")
    parser.add_argument("--spmd", action="store_true", help="time SerialMPIExecutor (run under mpiexec)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    import mpi4py
    from mpi4py.futures import MPIPoolExecutor

    report = {"python": platform.python_version(), "mpi4py": mpi4py.__version__}
    if args.spmd:
        r = spmd(min(args.nodes, 2000), args.repeat)
        if r is None:
            return {}
        report["spmd"] = r
        print(
            f"spmd: {r['nodes']} no-op nodes on {r['ranks']} ranks, µs/node: SerialMPIExecutor "
            f"{r['serial_mpi_us']:.1f}, SerialExecutor on one rank {r['serial_us']:.1f}"
        )
    else:
        only = set(args.only or ["overhead", "cpu"])
        report["workers"] = args.workers
        with (
            dp.MPIExecutor(args.workers) as ex,
            dp.MPIExecutor(args.workers, batch_size=1) as ex1,
            MPIPoolExecutor(args.workers) as pool,
        ):
            ex.start()
            ex1.start()
            pool.bootup()
            for e in (ex, ex1):
                dp.execute([dp.Op(noop) for _ in range(200)], e)  # warm: noop is known quick
            list(pool.map(noop, range(200)))
            if "overhead" in only:
                r = report["overhead"] = bench_overhead(ex, ex1, pool, args.nodes, args.repeat)
                print(
                    f"overhead: {r['nodes']} no-op nodes, µs/node: MPIExecutor {r['mpi_us']:.1f}, "
                    f"MPIExecutor(batch_size=1) {r['mpi_batch1_us']:.1f}, "
                    f"raw MPIPoolExecutor.submit {r['raw_us']:.1f} "
                    f"(MPIExecutor = {r['mpi_over_raw']:.2f} x raw, batch_size=1 = "
                    f"{r['batch1_over_raw']:.2f} x raw)"
                )
            if "cpu" in only:
                r = report["cpu"] = bench_cpu(ex, pool, args.workers, args.work, args.repeat)
                print(
                    f"cpu: {r['nodes']} nodes of {args.work} s on {args.workers} worker ranks: "
                    f"serial {r['serial_s']:.3f} s, ideal {r['ideal_s']:.3f} s, MPIExecutor "
                    f"{r['mpi_s']:.3f} s = {r['ratio']:.3f} x ideal, speedup {r['speedup']:.2f} "
                    f"(raw MPIPoolExecutor.map {r['raw_s']:.3f} s = {r['raw_ratio']:.3f} x ideal)"
                )
    if args.json:
        write_json(report, args.json)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
