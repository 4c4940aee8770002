"""``python -m dispatcher.bench``: which executor, for my graph, on my machine?

Runs the suites of :mod:`dispatcher.bench.suites` (graph shapes at several
sizes; from an installed package as from a checkout) on every executor of the
library that can start here and on the baselines (plain Python calls, ``dask.delayed`` on its schedulers, raw
``concurrent.futures`` and ``mpi4py.futures`` pools), side by side in one process;
prints a table and writes a JSON file, a Markdown table and a plot. See
:mod:`dispatcher.bench.harness` for the method.

    python -m dispatcher.bench                      # the full run (under 10 minutes on 2 cores)
    python -m dispatcher.bench --quick              # a first look (under a minute)
    python -m dispatcher.bench --suites wide,deep --executors python,serial,threads,delayed-sync
    python -m dispatcher.bench --sizes wide=10,100000 --out results/
    python -m dispatcher.bench --peers              # with joblib, Ray and Parsl (pip install '.[peers]')
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

__all__ = ["main"]


def _parser(contenders, suites) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dispatcher.bench",
        description="Compare the executors of dispatcher and the alternatives on standard graph shapes.",
    )
    p.add_argument("--quick", action="store_true", help="the smallest size of each suite, fewest runs")
    p.add_argument("--suites", help=f"comma-separated, of: {', '.join(suites)} (default: all)")
    p.add_argument(
        "--executors",
        help=f"comma-separated, of: {', '.join(contenders)} (default: all but the peers)",
    )
    p.add_argument(
        "--peers",
        action="store_true",
        help="add the contenders of other tools (joblib, Ray, Parsl: the peers extra) to those chosen",
    )
    p.add_argument(
        "--sizes",
        action="append",
        default=[],
        metavar="SUITE=N,N",
        help="sizes of a suite (or N,N for every suite chosen); may be repeated",
    )
    p.add_argument("--repeat", type=int, default=None, help="timed runs per case (default 3, quick 1)")
    p.add_argument(
        "--budget", type=float, default=None, help="seconds a run may take before larger sizes are skipped"
    )
    p.add_argument("--workers", type=int, default=None, help="workers of each pool (default: usable CPUs)")
    p.add_argument(
        "--out", default="bench-results", help="folder for results.json/.md/.png (default bench-results)"
    )
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG")
    p.add_argument(
        "--suites-file", help="a suites module of your own (default: the package's dispatcher.bench.suites)"
    )
    p.add_argument("--list", action="store_true", help="list the suites and contenders, and exit")
    return p


def _choose(text, known, what) -> list:
    if not text:
        return list(known)
    chosen = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in chosen if x not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


def _sizes(items, suites) -> dict:
    sizes: dict = {}
    for item in items:
        name, _, values = item.rpartition("=")
        try:
            numbers = tuple(int(v) for v in values.split(",") if v.strip())
        except ValueError:
            raise SystemExit(f"--sizes {item!r}: sizes must be integers") from None
        if not numbers or min(numbers) < 1:
            raise SystemExit(f"--sizes {item!r}: give positive integers")
        for suite in [name] if name else suites:
            if suite not in suites:
                raise SystemExit(f"--sizes {item!r}: unknown suite {suite!r}")
            sizes[suite] = numbers
    return sizes


def main(argv=None) -> dict:
    from . import contenders as contending
    from . import harness, peers, report

    try:
        module = harness.load_suites(_suites_file(argv))
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None
    known = (*contending.CONTENDERS, *peers.PEERS)
    args = _parser(known, module.SUITES).parse_args(argv)
    if args.list:
        contenders = harness.every_contender()
        print("suites:")
        for s in module.SUITES.values():
            print(f"  {s.name:8} {s.about}; sizes {s.sizes} {s.unit} (quick {s.quick})")
        print("contenders:")
        for c in contenders.values():
            print(f"  {c.name:20} {c.kind:9} {c.about}")
        return {}
    suites = _choose(args.suites, list(module.SUITES), "suite")
    contenders = _choose(args.executors, known, "executor") if args.executors else list(contending.CONTENDERS)
    if args.peers:
        contenders += [name for name in peers.PEERS if name not in contenders]
    sizes = _sizes(args.sizes, suites)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    budget = args.budget if args.budget is not None else (2.0 if args.quick else 3.0)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    start = time.monotonic()
    result = harness.measure(
        module,
        suites,
        contenders,
        quick=args.quick,
        sizes=sizes,
        repeat=repeat,
        budget=budget,
        workers=args.workers,
        progress=lambda text: print(text, file=sys.stderr, flush=True),
    )
    result["settings"]["wall_s"] = time.monotonic() - start
    text = report.table(result)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    paths = {"json": os.path.join(args.out, "results.json"), "md": os.path.join(args.out, "results.md")}
    report.write_json(result, paths["json"])
    with open(paths["md"], "w") as f:
        f.write("For each kind of graph, the fastest of the library's executors at its largest size:\n\n")
        f.write(report.advice(result))
        f.write("\nµs per node (run time over nodes), a table per suite:\n\n")
        f.write(report.summary(result))
        f.write("\n" + report.table(result, markdown=True))
    if not args.no_plot:
        paths["png"] = os.path.join(args.out, "results.png")
        report.plot(result, paths["png"])
    print(f"took {result['settings']['wall_s']:.0f} s; wrote " + ", ".join(paths.values()))
    if result.get("interrupted"):
        print("interrupted: the report holds what was measured before Ctrl-C", file=sys.stderr)
        raise SystemExit(130)
    return result


def _suites_file(argv) -> str | None:
    argv = sys.argv[1:] if argv is None else list(argv)
    for i, a in enumerate(argv):
        if a == "--suites-file" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--suites-file="):
            return a.split("=", 1)[1]
    return None
