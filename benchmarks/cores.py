"""Cores per node on a tool that switches between many small and few large calls.

A Pharmpy-like tool of simulated fits, whose time is ``unit * work / min(cores,
limit)``: 24 fits of 1 unit that do not scale (limit 1), then 2 refits of 8 units
that scale to 8 cores, then 12 fits of 1 unit; each round waits for the one
before. On a budget of ``--cores`` cores (virtual: a fit sleeps, so the budget
need not be the machine's), three ways to run it, side by side (each in turn, the
median of ``--repeat`` rounds), as makespan over the ideal (total work / cores):

every node on 1 core
    ``ThreadExecutor(cores)``, nodes asking for no cores (Pharmpy's dask
    dispatcher: the refits run on one core each while the others idle);
one node at a time with all cores
    ``SerialExecutor(cores=cores)``, nodes asking for ``(1, cores)`` (its serial
    dispatcher, each fit parallelised over the allocation);
malleable cores
    ``ThreadExecutor(cores, cores=cores)``, nodes asking for ``(1, cores)``: the
    engine shares the free cores among the waiting nodes.

    python benchmarks/cores.py
    python benchmarks/cores.py --cores 16 --unit 0.05 --json cores.json
"""

from __future__ import annotations

import argparse
import platform
import time

import dispatcher as dp
from dispatcher.bench.report import write_json
from dispatcher.bench.timing import alternate

ROUNDS = ((24, 1, 1), (2, 8, 8), (12, 1, 1))  # (fits, work units each, speedup limit)


def fit(unit: float, work: float, limit: int, *previous) -> float:
    """A simulated fit: it takes ``unit * work / min(cores, limit)`` seconds."""
    cores = dp.allocation().cores
    time.sleep(unit * work / min(cores, limit))
    return work


def tool(unit: float, cores: tuple | None) -> list:
    """The three rounds, each after the one before; ``cores`` is what each fit asks."""
    ask = dp.op(cores=cores)(fit) if cores is not None else dp.op(fit)
    previous: list = []
    for count, work, limit in ROUNDS:
        previous = [ask(unit, work, limit, *previous) for _ in range(count)]
    return previous


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cores", type=int, default=8, help="the budget (virtual cores)")
    parser.add_argument("--unit", type=float, default=0.1, help="seconds of one unit of work on one core")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    n, unit = args.cores, args.unit
    ideal = unit * sum(count * work for count, work, _ in ROUNDS) / n
    with (
        dp.ThreadExecutor(n) as one_core,
        dp.SerialExecutor(cores=n) as serial,
        dp.ThreadExecutor(n, cores=n) as malleable,
    ):
        contenders = {
            "every node on 1 core": lambda: dp.execute(tool(unit, None), one_core),
            "one node at a time with all cores": lambda: dp.execute(tool(unit, (1, n)), serial),
            "malleable cores": lambda: dp.execute(tool(unit, (1, n)), malleable),
        }
        times = alternate(contenders, args.repeat)
    results = {
        "machine": platform.platform(),
        "cores (budget)": n,
        "unit, s": unit,
        "ideal, s": ideal,
        "makespan, s": times,
        "makespan / ideal": {name: t / ideal for name, t in times.items()},
    }
    print(f"budget {n} cores, unit {unit} s, ideal makespan {ideal:.2f} s")
    for name, t in times.items():
        print(f"  {name:<36} {t:8.2f} s   {t / ideal:5.2f} x ideal")
    if args.json:
        write_json(results, args.json)


if __name__ == "__main__":
    main()
