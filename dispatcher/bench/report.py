"""The report of a benchmark run: a table for the terminal (and as Markdown), the
JSON file, and the plot of time per node against graph size."""

from __future__ import annotations

import json

__all__ = ["advice", "plot", "styles", "summary", "table", "write_json"]

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
    ("copied MB", "copied_bytes", "{:.1f}"),
)
OPTIONAL = {"x_ideal", "copied_bytes"}  # columns shown only where a row has them


def _cell(row: dict, key: str, fmt: str) -> str:
    if "error" in row and key not in ("contender",):
        return "failed" if key == "build_us_per_node" else ""
    value = row.get(key)
    if value is None:
        return "-"
    if key == "run_s":
        value *= 1e3
    elif key in ("peak_bytes", "copied_bytes"):
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


def _metric(rows: list) -> tuple[str, str, str]:
    """What a suite's tables compare: ``(key, heading, format)``: the run over the
    ideal where the suite knows it, else µs per node."""
    if any("x_ideal" in r for r in rows):
        return "x_ideal", "x ideal", "{:.2f}"
    return "us_per_node", "µs per node", ""


def _number(value: float, fmt: str) -> str:
    if fmt:
        return fmt.format(value)
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _ours(report: dict, name: str) -> bool:
    return report["contenders"][name]["kind"] == "executor"


def summary(report: dict) -> str:
    """Markdown: a table per suite, a row per contender (the library's executors
    first, then the baselines) and a column per size, of µs per node (or, where
    the suite knows its ideal, the run's time over it); the best of the library's
    executors in each column in bold, "-" where skipped."""
    out = []
    for suite, info in report["suites"].items():
        rows = [r for r in report["rows"] if r["suite"] == suite and "us_per_node" in r]
        if not rows:
            continue
        key, heading, fmt = _metric(rows)
        sizes = sorted({r["size"] for r in rows})
        by = {(r["contender"], r["size"]): r[key] for r in rows if key in r}
        names = [n for n in report["contenders"] if any((n, s) in by for s in sizes)]
        names.sort(key=lambda n: not _ours(report, n))  # stable: the library's first
        best = {
            s: min((by[n, s] for n in names if _ours(report, n) and (n, s) in by), default=None)
            for s in sizes
        }
        out += [f"**{suite}**: {info['about']} ({heading})", ""]
        out.append("| contender | " + " | ".join(f"{s:,} {info['unit']}" for s in sizes) + " |")
        out.append("|---|" + "---:|" * len(sizes))
        for n in names:
            cells = []
            for s in sizes:
                if (n, s) not in by:
                    cells.append("-")
                    continue
                text = _number(by[n, s], fmt)
                cells.append(f"**{text}**" if by[n, s] == best[s] else text)
            shown = f"`{n}`" if _ours(report, n) else n
            out.append(f"| {shown} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def advice(report: dict) -> str:
    """Markdown: for each suite, the library's executor to use on this machine (the
    best at the largest size it ran), and how the best baseline compares."""
    out = []
    for suite, info in report["suites"].items():
        rows = [r for r in report["rows"] if r["suite"] == suite and "us_per_node" in r]
        key, heading, fmt = _metric(rows)
        ours = [r for r in rows if _ours(report, r["contender"]) and key in r]
        if not ours:
            continue
        size = max(r["size"] for r in ours)
        at = [r for r in rows if r["size"] == size and key in r]
        mine = min((r for r in at if _ours(report, r["contender"])), key=lambda r: r[key])
        others = [r for r in at if not _ours(report, r["contender"]) and r["contender"] != "python"]
        line = (
            f"- **{suite}** ({info['about']}): `{mine['contender']}`, "
            f"{_number(mine[key], fmt)} {heading} at {size:,} {info['unit']}"
        )
        if others:
            theirs = min(others, key=lambda r: r[key])
            ratio = theirs[key] / mine[key] if mine[key] > 0 else float("inf")
            shown = _number(theirs[key], fmt)
            line += f"; the best other tool, {theirs['contender']}: {shown} ({ratio:.1f} times as much)"
        out.append(line)
    return "\n".join(out) + "\n"


def _narrow(ax) -> bool:
    """A log axis spanning less than a decade, where only minor ticks have labels."""
    low, high = ax.get_ylim()
    return low > 0 and high / low < 10


def write_json(report: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=str)


# colours and markers that stay apart: each contender has a pair of its own
_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#1b9e77", "#e6ab02", "#7570b3", "#a6761d", "#e7298a", "#66a61e",
)  # fmt: skip
_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">", "h", "p")


def styles(report: dict) -> dict:
    """``{contender: matplotlib keywords}``: a colour and a marker of its own; the
    library's executors solid with filled markers, the baselines dashed with hollow
    ones, plain Python black."""
    out = {}
    for i, name in enumerate(report["contenders"]):
        ours = report["contenders"][name]["kind"] == "executor"
        colour = "black" if name == "python" else _COLOURS[i % len(_COLOURS)]
        out[name] = {
            "color": colour,
            "marker": _MARKERS[i % len(_MARKERS)],
            "markersize": 4.5,
            "linestyle": "-" if ours else "--",
            "linewidth": 1.6 if ours else 1.0,
            "markerfacecolor": colour if ours else "none",
        }
    return out


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
    style = styles(report)
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
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, **style[name])
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
    seen: dict = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    labels = list(seen)
    # two legends: the library's executors, and what they are measured against
    for title, group, where in (
        ("dispatcher's executors (solid)", [n for n in labels if _ours(report, n)], (0.02, 0.0)),
        ("baselines (dashed)", [n for n in labels if not _ours(report, n)], (0.52, 0.0)),
    ):
        if group:
            fig.legend(
                [seen[n] for n in group], group, loc="lower left", bbox_to_anchor=where, ncol=4,
                fontsize=7, title=title, title_fontsize=7, frameon=False,
            )  # fmt: skip
    m = report["machine"]
    fig.suptitle(f"dispatcher benchmarks: {m['cpus_usable']} CPUs, {m['cpu']}", fontsize=9)
    fig.tight_layout(rect=(0, 0.04 + 0.025 * (-(-len(labels) // 4) + 1), 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
