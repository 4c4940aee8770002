"""The report of a benchmark run: a table for the terminal (and as Markdown), the
JSON file, and the plot of time per node against graph size."""

from __future__ import annotations

import json

__all__ = ["plot", "summary", "table", "write_json"]

COLUMNS = (
    ("contender", "contender", "{}"),
    ("build µs/node", "build_us_per_node", "{:.1f}"),
    ("run ms", "run_s", "{:.2f}"),
    ("±% (half range)", "spread_pct", "{:.0f}"),
    ("µs/node", "us_per_node", "{:.1f}"),
    ("over plain µs/node", "overhead_us_per_node", "{:.1f}"),
    ("x serial", "speedup_vs_serial", "{:.2f}"),
    ("x ideal", "x_ideal", "{:.2f}"),
    ("peak MB", "peak_bytes", "{:.1f}"),
)
OPTIONAL = {"x_ideal"}  # columns shown only where a row has them


def _cell(row: dict, key: str, fmt: str) -> str:
    if "error" in row and key not in ("contender",):
        return "failed" if key == "build_us_per_node" else ""
    value = row.get(key)
    if value is None:
        return "-"
    if key == "run_s":
        value *= 1e3
    elif key == "peak_bytes":
        value /= 1e6
    return fmt.format(value)


def _cases(report: dict):
    for suite, info in report["suites"].items():
        sizes = []
        for row in report["rows"]:
            if row["suite"] == suite and row["size"] not in sizes:
                sizes.append(row["size"])
        for size in sizes:
            rows = [r for r in report["rows"] if r["suite"] == suite and r["size"] == size]
            yield suite, info, size, rows


def _header(report: dict) -> list[str]:
    m = report["machine"]
    v = ", ".join(f"{k} {x}" for k, x in m["versions"].items() if x)
    s = report["settings"]
    return [
        f"machine: {m['cpu']}, {m['cpus_usable']} usable CPUs, "
        f"{(m['memory_bytes'] or 0) / 2**30:.0f} GiB, {m['platform']}",
        f"versions: {v}",
        f"settings: {s['workers']} workers per pool; the median of >= {s['repeat']} runs "
        f"(2, the warm-up included, for runs over a second); budget {s['budget_s']} s"
        + (", quick" if s["quick"] else "")
        + (", INTERRUPTED" if report.get("interrupted") else ""),
    ]


def table(report: dict, markdown: bool = False) -> str:
    """The results, one block per suite and size."""
    lines = [] if markdown else _header(report)
    if markdown:
        lines += [f"- {line}" for line in _header(report)]
    for suite, info, size, rows in _cases(report):
        nodes = rows[0]["nodes"]
        what = f"{nodes} nodes" if info["unit"] == "nodes" else f"{size} {info['unit']}, {nodes} nodes"
        title = f"{suite} ({info['about']}): {what}"
        # a column only where the case has it ("x ideal" where the suite knows the ideal)
        columns = [c for c in COLUMNS if c[1] not in OPTIONAL or any(c[1] in r for r in rows)]
        cells = [[_cell(r, key, fmt) for _, key, fmt in columns] for r in rows]
        errors = [f"{r['contender']}: {r['error']}" for r in rows if "error" in r]
        heads = [h for h, _, _ in columns]
        if markdown:
            lines += ["", f"**{title}**", ""]
            lines.append("| " + " | ".join(heads) + " |")
            lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(heads))) + "|")
            lines += ["| " + " | ".join(c) + " |" for c in cells]
        else:
            widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
            lines += ["", title]
            lines.append(
                "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(heads, widths)))
            )
            for c in cells:
                lines.append(
                    "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(c, widths)))
                )
        lines += [f"  {e}" for e in errors]
    if report.get("skipped"):
        lines += ["", "skipped:" if not markdown else "**skipped**", ""]
        for s in report["skipped"]:
            where = f"{s['suite']} {s['size']}: " if "suite" in s else ""
            lines.append(f"- {where}{s['contender']}: {s['reason']}")
    return "\n".join(lines) + "\n"


def summary(report: dict) -> str:
    """One Markdown table: µs per node of every contender (columns) in every case
    (rows); the fastest of the library's executors in bold, "-" where skipped."""
    names = [n for n in report["contenders"] if any(r["contender"] == n for r in report["rows"])]
    lines = ["| case | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for suite, info, size, rows in _cases(report):
        by = {r["contender"]: r for r in rows if "us_per_node" in r}
        ours = [by[n]["us_per_node"] for n in by if report["contenders"][n]["kind"] == "executor"]
        best = min(ours) if ours else None
        cells = []
        for n in names:
            if n not in by:
                cells.append("-")
                continue
            v = by[n]["us_per_node"]
            text = f"{v:,.0f}" if v >= 100 else f"{v:.1f}"
            cells.append(f"**{text}**" if v == best else text)
        lines.append(f"| {suite} {size} {info['unit']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _narrow(ax) -> bool:
    """A log axis spanning less than a decade, where only minor ticks have labels."""
    low, high = ax.get_ylim()
    return low > 0 and high / low < 10


def write_json(report: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=str)


def plot(report: dict, path: str) -> None:
    """Time per node (log) against graph size (log), one panel per suite, a line per
    contender (the library's executors solid, baselines dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = list(report["suites"])
    cols = min(4, max(1, len(suites)))
    rows_n = -(-len(suites) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.4 * rows_n), squeeze=False)
    from matplotlib.ticker import ScalarFormatter

    names = list(report["contenders"])
    ours = [n for n in names if report["contenders"][n]["kind"] == "executor"]
    theirs = [n for n in names if n not in ours]
    colours = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(ours)}
    colours.update({n: plt.get_cmap("Dark2")(i % 8) for i, n in enumerate(theirs)})
    colours["python"] = "black"  # the floor
    for ax, suite in zip(axes.flat, suites):
        info = report["suites"][suite]
        for name in names:
            pts = sorted(
                (r["size"], r["us_per_node"])
                for r in report["rows"]
                if r["suite"] == suite and r["contender"] == name and "us_per_node" in r
            )
            if not pts:
                continue
            kind = report["contenders"][name]["kind"]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o" if kind == "executor" else "x",
                markersize=3.5,
                linestyle="-" if kind == "executor" else "--",
                color=colours[name],
                label=name,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        sizes = sorted({r["size"] for r in report["rows"] if r["suite"] == suite})
        ax.set_xticks(sizes, [f"{x:,}" for x in sizes])
        ax.xaxis.set_minor_formatter("")
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter() if _narrow(ax) else "")
        ax.set_title(f"{suite}: {info['about']}", fontsize=8)
        ax.set_xlabel(info["unit"], fontsize=8)
        ax.set_ylabel("µs per node", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", alpha=0.3)
    for ax in list(axes.flat)[len(suites) :]:
        ax.axis("off")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(7, len(labels)), fontsize=7, frameon=False)
    m = report["machine"]
    fig.suptitle(f"dispatcher benchmarks: {m['cpus_usable']} CPUs, {m['cpu']}", fontsize=9)
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(labels) // 7), 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
