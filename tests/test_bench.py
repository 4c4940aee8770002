"""The benchmark harness itself: a tiny run gives a well-formed table, JSON, Markdown
and plot; the suites give the same values on every way of running them. The figures
are not asserted."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from dispatcher.bench import _sizes, contenders, graphs, harness, report, timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
suites = harness.load_suites()
SETTINGS = {"loops": 1000, "flavour": "sync", "workers": 2}


def test_a_tiny_run_writes_table_json_markdown_and_plot(tmp_path):
    names = "python,serial,async,threads,processes,delayed-sync,futures-threads"
    proc = subprocess.run(
        [sys.executable, "-m", "dispatcher.bench", "--quick", "--suites", "wide,arrays,io,cpu",
         "--executors", names, "--sizes", "wide=10,30", "--sizes", "cpu=1", "--out", str(tmp_path),
         "--budget", "120"],  # (a busy machine's slowness skips no size)
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("machine: ")
    assert "wide (fan-out of no-op calls, one reduce): 30 nodes" in out
    assert "arrays (10 hops passing a numpy array): 1 MB, 12 nodes" in out
    for name in names.split(","):
        assert f"\n{name} " in out

    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data) >= {"machine", "settings", "suites", "contenders", "rows", "skipped"}
    assert data["machine"]["versions"]["dispatcher"]
    assert data["machine"]["cpus_usable"] >= 1
    rows = data["rows"]
    assert data["skipped"] == []
    assert len(rows) == (2 + 1 + 1 + 1) * 7  # wide at two sizes, the others at one, 7 contenders
    for row in rows:
        assert "error" not in row, row
        assert row["run_s"] > 0 and row["build_s"] >= 0 and row["us_per_node"] > 0
        assert row["run_min_s"] <= row["run_s"] <= row["run_max_s"]
        assert "speedup_vs_serial" in row and "overhead_us_per_node" in row
    assert {r["suite"] for r in rows} == {"wide", "arrays", "io", "cpu"}
    assert data["settings"]["loops"] > 0  # the CPU work was calibrated
    assert data["contenders"]["serial"]["kind"] == "executor"
    assert data["contenders"]["delayed-sync"]["kind"] == "baseline"

    md = (tmp_path / "results.md").read_text()
    assert "| contender | build µs/node |" in md and "| python |" in md
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_options_say_what_is_known(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dispatcher.bench",
            "--executors",
            "serial,warp-drive",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "unknown executor: warp-drive (known: python, serial," in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "dispatcher.bench", "--list"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    assert "manual" in proc.stdout and "mpi4py" in proc.stdout


def test_the_harness_runs_from_an_installed_package_and_takes_a_suites_file(tmp_path):
    # a copy of the package alone, as a wheel installs it: no checkout around it
    site = tmp_path / "site"
    shutil.copytree(os.path.join(ROOT, "dispatcher"), site / "dispatcher")
    (tmp_path / "mine.py").write_text(
        textwrap.dedent(
            """
            from dispatcher.bench.suites import Graph, Suite, one, add

            def pair(size, settings):
                g = Graph()
                g.outputs = [g.add(add, g.add(one), g.add(one)).index]
                return g

            SUITES = {"pair": Suite("pair", pair, (3,), (3,), about="two ones summed")}
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    for extra, expected in (([], "wide"), (["--suites-file", str(tmp_path / "mine.py")], "two ones summed")):
        proc = subprocess.run(
            [sys.executable, "-m", "dispatcher.bench", "--quick", "--executors", "python,serial",
             "--out", str(tmp_path / "out"), "--no-plot", "--suites", expected.split()[0]
             if expected == "wide" else "pair", *extra],
            capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert expected in proc.stdout
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["suite"] for row in data["rows"]] == ["pair", "pair"]


def test_sizes_option():
    names = ["wide", "deep"]
    assert _sizes(["wide=1,20"], names) == {"wide": (1, 20)}
    assert _sizes(["5,6"], names) == {"wide": (5, 6), "deep": (5, 6)}
    for bad in (["wide=x"], ["nope=3"], ["wide=0"]):
        with pytest.raises(SystemExit):
            _sizes(bad, names)


@pytest.mark.parametrize("name", list(suites.SUITES))
def test_every_way_of_running_a_suite_gives_the_same_values(name):
    import dask

    suite = suites.SUITES[name]
    size = suite.quick[0]
    graph = suite.build(size, SETTINGS)
    expected = graphs.run_plain(graph)
    import dispatcher as dp

    assert [r.value for r in dp.run(dp.SerialExecutor(), graphs.to_ops(graph))] == expected
    assert list(dask.compute(*graphs.to_delayed(graph), scheduler="sync")) == expected
    with cf.ThreadPoolExecutor(2) as pool:
        assert graphs.run_futures(pool, graph) == expected
    if suite.async_flavour:
        coros = suite.build(size, {**SETTINGS, "flavour": "async"})
        assert [r.value for r in dp.run(dp.AsyncExecutor(), graphs.to_ops(coros))] == expected


def test_the_mixed_suite_asks_for_cores_and_is_measured_against_its_ideal():
    graph = suites.SUITES["mixed"].build(10, {**SETTINGS, "workers": 4})
    # 12 fits of 1 unit, 1 refit of 4 units, 6 fits of 1 unit, the sum of the last round
    assert len(graph) == 12 + 1 + 6 + 1
    assert graphs.run_plain(graph) == [pytest.approx(0.01 * 6)]
    assert graph.ideal_s == pytest.approx(0.01 * (12 + 4 + 6) / 4)
    fits = graphs.to_ops(graph)[0].args
    assert {node.cores for node in fits} == {(1, 4)}
    result = harness.measure(
        suites, ["mixed", "wide"], ["serial"], sizes={"mixed": (1,), "wide": (10,)}, repeat=1
    )
    mixed, wide = result["rows"]
    assert mixed["x_ideal"] == pytest.approx(mixed["run_s"] / mixed_ideal(result), rel=1e-6)
    assert "x_ideal" not in wide
    text = report.table(result)
    assert text.count("x ideal") == 1  # a column only where the suite knows the ideal


def test_the_report_says_how_many_bytes_went_between_processes():
    # one 2 MB array read by 20 calls on two worker processes: copied once, as the
    # worker made it (with the messages: under a megabyte more), never once per reader
    result = harness.measure(
        suites, ["spread", "wide"], ["serial", "processes"], sizes={"spread": (2,), "wide": (10,)}, repeat=1
    )
    rows = {(r["suite"], r["contender"]): r for r in result["rows"]}
    size = 2 * 2**20  # (the suite's sizes are in MiB)
    assert size <= rows["spread", "processes"]["copied_bytes"] < size + 2**20
    assert 0 < rows["wide", "processes"]["copied_bytes"] < 2**20
    assert "copied_bytes" not in rows["spread", "serial"]  # it does not count them
    text = report.table(result)
    assert text.count("copied MB") == 2 and "  2.1" in text


def mixed_ideal(result) -> float:
    return suites.SUITES["mixed"].build(1, result["settings"]).ideal_s


def test_a_contender_that_cannot_start_is_reported_and_the_rest_run(monkeypatch):
    class Broken(contenders.Contender):
        def start(self, shared):
            raise RuntimeError("no such backend here")

    known = contenders.make_contenders()
    monkeypatch.setattr(
        harness, "make_contenders", lambda: {**known, "broken": Broken("broken", "never starts")}
    )
    result = harness.measure(
        suites, ["wide"], ["python", "serial", "broken"], sizes={"wide": (10,)}, repeat=1
    )
    assert result["skipped"] == [
        {"contender": "broken", "reason": "cannot start: RuntimeError: no such backend here"}
    ]
    assert [r["contender"] for r in result["rows"]] == ["python", "serial"]
    text = report.table(result)
    assert "broken: cannot start: RuntimeError: no such backend here" in text


def test_budget_skips_larger_sizes():
    assert harness._too_slow(None, [], 100, 5.0) is None
    assert harness._too_slow(None, [(10, 0.1)], 100, 5.0) is None  # estimated 1 s
    assert "estimated 10 s" in harness._too_slow(None, [(10, 1.0)], 100, 5.0)
    assert "took 6.0 s at size 10" in harness._too_slow((10, 6.0), [(10, 6.0)], 100, 5.0)
    # growing with the square of the size between the last two: 0.4 s at 20 gives 10 s at 100
    assert "estimated 10 s" in harness._too_slow(None, [(10, 0.1), (20, 0.4)], 100, 5.0)
    assert harness._too_slow(None, [(10, 0.1), (20, 0.1)], 100, 5.0) is None  # flat: in proportion


def test_peak_memory_sees_an_allocation():
    with timing.PeakMemory() as peak:
        block = bytearray(64 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page
        del block
    assert peak.rise is None or peak.rise >= 60 * 2**20


def test_a_wrong_answer_is_reported_not_timed():
    class Wrong(contenders.Contender):
        def run(self, built):
            return [None]

    graph = suites.SUITES["wide"].build(10, SETTINGS)
    row = harness._measure_one(Wrong("wrong", ""), graph, graphs.run_plain(graph), 1, True)
    assert row == {"error": "wrong outputs: [None] instead of [9]"}


def test_contenders_with_workers_of_their_own_run_as_groups():
    groups = {name: c.group for name, c in contenders.make_contenders().items()}
    assert groups["dask"] == groups["delayed-distributed"] == "dask"  # one cluster, alive only then
    assert groups["mpi"] == "mpi" and groups["mpi4py"] == "mpi4py"
    assert {g for n, g in groups.items() if n not in ("dask", "delayed-distributed", "mpi", "mpi4py")} == {
        "local"
    }
    assert set(groups.values()) == set(contenders.GROUPS)


class Counting(contenders.Contender):
    def __init__(self, outputs=None, fail_at=None):
        super().__init__("counting", "")
        self.calls = 0
        self.outputs = outputs
        self.fail_at = fail_at

    def run(self, built):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("broke on its third run")
        return graphs.run_plain(built) if self.outputs is None else self.outputs


def test_a_quick_run_times_only_warm_runs():
    graph = suites.SUITES["wide"].build(10, SETTINGS)
    c = Counting()
    row = harness._measure_one(c, graph, graphs.run_plain(graph), 1, True)
    assert c.calls == 2 and row["runs"] == 1  # the warm-up is not a sample


def test_outputs_must_match_in_number_too():
    graph = suites.SUITES["wide"].build(10, SETTINGS)
    row = harness._measure_one(Counting(outputs=[]), graph, graphs.run_plain(graph), 1, True)
    assert row["error"].startswith("wrong outputs: []")


def test_a_contender_failing_mid_run_is_reported_and_the_rest_run(monkeypatch):
    known = contenders.make_contenders()
    monkeypatch.setattr(harness, "make_contenders", lambda: {**known, "counting": Counting(fail_at=3)})
    result = harness.measure(
        suites, ["wide"], ["python", "counting", "serial"], sizes={"wide": (10,)}, repeat=3
    )
    by = {r["contender"]: r for r in result["rows"]}
    assert by["counting"]["error"] == "RuntimeError: broke on its third run"
    assert "error" not in by["python"] and "error" not in by["serial"]
    text = report.table(result)
    assert "\ncounting " in text and "failed" in text  # its row says so
    assert "  counting: RuntimeError: broke on its third run" in text


def test_plain_python_drops_each_value_after_its_last_use():
    graph = suites.SUITES["deep"].build(4, SETTINGS)
    assert graphs._last_uses(graph) == [[], [0], [1], [2]]  # the output, call 3, is kept
    for size in (1, 2, 3):  # the manual graph at sizes too small to roll
        assert graphs.run_plain(suites.SUITES["manual"].build(size, SETTINGS))


def test_the_docs_page_is_written_from_the_json(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import docs_page
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))
    docs_page.main(os.path.join(ROOT, "docs", "benchmark-results.json"), str(tmp_path))
    page = (tmp_path / "benchmarks.md").read_text()
    assert "{" not in page.replace("{n}", "")  # every figure filled in
    assert "| contender | 100 nodes | 1,000 nodes | 10,000 nodes |" in page and "![µs per node" in page
    assert "- **wide** (fan-out of no-op calls, one reduce): `serial`," in page  # the short answer
    assert (tmp_path / "benchmarks.png").read_bytes()[:4] == b"\x89PNG"
    assert "| contender |" in (tmp_path / "benchmark-results.md").read_text()


def run_peers(tmp_path, *choice: str) -> dict:
    """A quick run (``choice``: the bench's options choosing the contenders) on
    every suite whose graph does not depend on the machine (mixed and cpu do): its JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", "dispatcher.bench", "--quick",
         "--suites", "wide,deep,tree,manual,arrays,spread,io", *choice,
         "--out", str(tmp_path), "--budget", "120", "--no-plot"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp_path / "results.json").read_text())


def ran_everywhere(data: dict, name: str) -> None:
    """``name`` ran every suite with the right outputs (the harness compares them
    with plain Python's: a wrong one is an ``error``)."""
    mine = [r for r in data["rows"] if r["contender"] == name]
    assert [r for r in data["skipped"] if r["contender"] == name] == []
    assert len(mine) == 7 and all("error" not in r for r in mine), mine
    assert data["contenders"][name]["kind"] == "baseline"


def test_joblib_runs_every_graph_level_by_level(tmp_path):
    ran_everywhere(run_peers(tmp_path, "--executors", "python,joblib"), "joblib")


def test_joblib_levels_and_drops():
    from dispatcher.bench.peers import Joblib

    g = suites.Graph()
    a = g.add(abs, -1)
    b = g.add(abs, a)  # level 1
    c = g.add(max, b, a)  # level 2: a is last used here, not at b
    g.outputs = [c.index]
    _, levels, drops, outputs = Joblib().build(g)
    assert levels == [[0], [1], [2]] and drops == [[], [], [0, 1]] and outputs == [2]
