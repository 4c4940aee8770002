"""Timings, traces and pictures of runs: the attempts every result carries, the
Chrome trace of a run on every executor, its summary, the HTML timeline in a real
headless browser (marked ``browser``: ``make test-browser`` installs Chromium and
runs it) and the graph drawn by Graphviz's ``dot`` (which ``make test`` installs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time

import pytest

import dispatcher as dp
from dispatcher.attempts import Attempt

from .conftest import FileChannel

FAST = dp.Backoff(first_delay=0.001, max_delay=0.01)


def whoami(seconds):
    """Sleeps, then says where it ran: (pid, thread, dask worker or None)."""
    time.sleep(seconds)
    try:
        from distributed import get_worker

        address = get_worker().address
    except (ImportError, ValueError):
        address = None
    return os.getpid(), threading.current_thread().name, address


def fails_once(channel):
    channel.append(1)
    if len(channel) == 1:
        raise RuntimeError("first attempt fails")
    return 1


def boom(x):
    raise ValueError(f"no good: {x}")


def expected_worker(executor_name, pid, thread, address) -> str:
    if address is not None:
        return address  # a dask worker
    if pid != os.getpid():
        return f"pid {pid}"  # a worker process or MPI rank
    if thread != threading.main_thread().name:
        return thread  # a worker thread
    return "event loop" if executor_name == "async" else "driver"


def test_a_trace_has_one_slice_per_attempt_on_every_executor(executor_factory, tmp_path):
    ex = executor_factory(retry_on=lambda e: isinstance(e, RuntimeError), backoff=FAST)
    slow = dp.Op(whoami, 0.05)
    flaky = dp.Op(fails_once, FileChannel())
    total = dp.Op(lambda who, one: who, slow, flaky)
    bad = dp.Op(boom, flaky)
    path = tmp_path / "run.json"
    trace = dp.Trace(path)
    results = dp.run(ex, [total, bad], trace=trace, throw_error=False)
    assert results[1].is_error()

    # every attempt: a possible order of times, on the worker that ran it
    counts = {}
    for a in trace.attempts:
        counts[a.node] = counts.get(a.node, 0) + 1
        assert a.ready <= a.submitted <= a.started <= a.finished, a
    assert counts == {slow: 1, flaky: 2, total: 1, bad: 1}
    assert trace.attempts[[a.node for a in trace.attempts].index(slow)].duration >= 0.045
    pid, thread, address = results[0].value
    (made,) = [a for a in trace.attempts if a.node is slow]
    assert made.where == expected_worker(executor_factory.name, pid, thread, address)
    assert all(a.where is not None for a in trace.attempts)

    # the results carry their nodes' attempts
    assert [a.number for a in results[0].attempts] == [1]
    assert results[0].attempts[0].node is total
    assert [(a.number, a.ok) for a in results[1].attempts] == [(1, False)]
    assert isinstance(results[1].attempts[0].error, ValueError)

    # the file: Chrome's trace-event format
    doc = json.loads(path.read_text())
    events = doc["traceEvents"]
    for e in events:
        assert {"name", "ph", "pid"} <= e.keys(), e
        if e["ph"] == "X":
            assert {"ts", "dur", "tid", "cat", "args"} <= e.keys()
            assert e["dur"] >= 0 and e["ts"] >= 0
        elif e["ph"] in ("s", "f"):
            assert {"ts", "id", "tid"} <= e.keys()
        else:
            assert e["ph"] == "M" and "args" in e
    slices = [e for e in events if e["ph"] == "X"]
    assert sorted(e["name"] for e in slices) == sorted(a.node.label for a in trace.attempts)
    flaky_slices = sorted(
        (e for e in slices if e["name"] == "fails_once"), key=lambda e: e["args"]["attempt"]
    )
    assert [e["args"]["attempt"] for e in flaky_slices] == [1, 2]
    assert flaky_slices[0]["cat"] == "failed" and flaky_slices[0]["args"]["retried"] is True
    assert flaky_slices[0]["args"]["error"] == "RuntimeError: first attempt fails"
    (boom_slice,) = [e for e in slices if e["name"] == "boom"]
    assert boom_slice["args"]["retried"] is False and boom_slice["cname"] == "terrible"
    lanes = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert made.where in lanes
    # a flow for each value that went from one worker to another
    final = trace.final_attempts()
    moved = [(d, a) for a in trace.attempts for d in a.node.dependencies() if final[d].where != a.where]
    flows = [e for e in events if e["ph"] in ("s", "f")]
    assert len(flows) == 2 * len(moved)
    for (dep, _), (s, f) in zip(moved, zip(flows[::2], flows[1::2])):
        assert (s["ph"], f["ph"], s["id"]) == ("s", "f", f["id"])
        assert s["tid"] in {e["tid"] for e in slices if e["name"] == dep.label}


def test_retries_give_numbered_attempts_and_timeouts_are_attempts_too():
    channel = FileChannel()

    def slow_first():
        channel.append(1)
        if len(channel) == 1:
            time.sleep(1.0)
        return "ok"

    node = dp.Op(slow_first)
    node.timeout = 0.2
    with dp.ThreadExecutor(2, retry_on=lambda e: isinstance(e, TimeoutError), backoff=FAST) as ex:
        (result,) = dp.run(ex, [node])
    first, second = result.attempts
    assert (first.number, type(first.error), second.number, second.ok) == (1, TimeoutError, 2, True)
    assert first.finished <= second.ready  # given up at its deadline, then retried
    assert 0.15 <= first.duration < 0.9


def test_callbacks_receive_each_attempt_before_what_comes_of_it():
    seen = []

    class Recorder(dp.Callback):
        def on_attempt(self, node, attempt):
            seen.append(("attempt", node.label, attempt.number, attempt.ok))

        def on_finish(self, node, value):
            seen.append(("finish", node.label))

        def on_fail(self, node, error):
            seen.append(("fail", node.label))

    a = dp.Op(abs, -1)
    dp.run(dp.SerialExecutor(), [dp.Op(boom, a)], callbacks=[Recorder()], throw_error=False)
    assert seen == [
        ("attempt", "abs", 1, True),
        ("finish", "abs"),
        ("attempt", "boom", 1, False),
        ("fail", "boom"),
    ]


class _Node:
    def __init__(self, label, *deps):
        self.label = label
        self.deps = deps

    def dependencies(self):
        return self.deps


def made_up_trace() -> dp.Trace:
    """Two workers: a (0-1 s) and b (0-3 s) in parallel, c after both (3-4 s)."""
    a, b = _Node("a"), _Node("b")
    c = _Node("c", a, b)
    trace = dp.Trace(cores=2)
    trace.attempts = [
        Attempt(a, 1, 0.0, 0.0, 0.0, 1.0, "w1"),
        Attempt(b, 1, 0.0, 0.0, 0.0, 3.0, "w2"),
        Attempt(c, 1, 3.0, 3.0, 3.0, 4.0, "w1"),
    ]
    return trace


def test_utilisation_and_the_critical_path():
    trace = made_up_trace()
    use = trace.utilisation()
    assert use == {"seconds": 4.0, "running": 5.0 / 4.0, "cores": 5.0 / 8.0}
    assert [a.node.label for a in trace.critical_path()] == ["b", "c"]
    assert trace.curve() == [(0.0, 2, 2), (1.0, 1, 1), (3.0, 1, 1), (4.0, 0, 0)]
    text = trace.summary()
    assert "3 nodes, 3 attempts (0 failed) in 4.000 s" in text
    assert "62% of 2 cores busy" in text
    assert "critical path: 2 nodes, 4.000000 s of work, 0.000000 s of waits" in text


def test_trace_is_a_path_or_a_trace():
    with pytest.raises(TypeError, match=r"trace must be a path or a dispatcher\.Trace"):
        dp.run(dp.SerialExecutor(), [dp.Op(abs, 1)], trace=3)


def test_each_slice_is_named_by_its_own_node():
    """Labels are made once per function for the nodes named after it; a node with a
    label of its own, another function, a node that is not an Op, a failed attempt
    and one granted cores keep theirs, each on its own slice."""

    class Callable:
        __eq__ = object.__eq__  # (and so no __hash__: a callable need not be hashable)

        def __call__(self, x):
            return x

    def boom(x):
        raise ValueError(x)

    leaves = [dp.Op(abs, -i) for i in range(3)]
    mine = dp.Op(abs, -5)
    mine.label = 'say "mine"'
    other = dp.Op(Callable(), mine)
    cored = dp.op(abs, cores=1)(-2)
    data = dp.DataNode(7)
    total = dp.Op(lambda *xs: sum(xs), *leaves, other, cored, dp.Op(abs, data))
    bad = dp.op(boom, retries=0)(mine)
    trace = dp.Trace()
    dp.run(dp.SerialExecutor(), [total, bad], trace=trace, throw_error=False)
    start, _ = trace.span()
    slices = [e for e in trace.to_chrome()["traceEvents"] if e["ph"] == "X"]
    got = sorted((e["ts"], e["args"]["attempt"], e["name"]) for e in slices)
    want = sorted((round((a.started - start) * 1e6, 3), a.number, a.node.label) for a in trace.attempts)
    assert got == want
    names = [name for _, _, name in got]
    assert names.count("abs") == 5 and 'say "mine"' in names and "boom" in names
    assert {e["name"]: e.get("cname") for e in slices}["boom"] == "terrible"
    assert {e["name"]: e["args"].get("cores") for e in slices if e["args"].get("cores")} == {"abs": 1}


def test_a_trace_longer_than_a_written_piece_is_written_whole(tmp_path, monkeypatch):
    """The file is written a piece at a time: every piece arrives, in order, and the
    file is the trace's own text."""
    monkeypatch.setattr(dp.trace, "_WRITE_PIECE", 1000)
    path = tmp_path / "run.json"
    trace = dp.Trace(path)
    dp.run(dp.SerialExecutor(), [dp.Op(sum, [dp.Op(abs, -i) for i in range(300)])], trace=trace)
    text = path.read_text(encoding="utf-8")
    assert len(text) > 20 * 1000
    assert text == trace.chrome_json()
    assert json.loads(text) == trace.to_chrome()
    assert sum(e["ph"] == "X" for e in json.loads(text)["traceEvents"]) == 301


# -- in a real browser, and with Graphviz ----------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("this test needs Chromium: apt-get install chromium (make test-browser installs it)")


@pytest.mark.browser
def test_the_html_timeline_opens_in_a_headless_browser(tmp_path):
    from PIL import Image

    channel = FileChannel()
    with dp.ThreadExecutor(2, cores=2, retry_on=lambda e: isinstance(e, RuntimeError), backoff=FAST) as ex:
        trace = dp.Trace()
        leaves = [dp.Op(whoami, 0.02) for _ in range(4)]
        dp.run(ex, [dp.Op(len, leaves), dp.Op(fails_once, channel)], trace=trace)
    page = tmp_path / "run.html"
    trace.to_html(page)
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    assert "https://" not in text
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    shot = tmp_path / "shot.png"
    ran = subprocess.run(
        [*command, f"--screenshot={shot}", "--window-size=1200,800", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    console = [line for line in ran.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, "\n".join(console)
    dom = subprocess.run(
        [*command, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert dom.count('class="bar"') == 6 and dom.count('class="bar failed"') == 1  # drawn by its script
    assert 'class="cores"' in dom and 'class="running"' in dom
    image = Image.open(shot).convert("L")
    low, high = image.getextrema()
    assert high - low > 100  # not blank
    colours = len(Image.open(shot).convert("RGB").getcolors(1 << 20))
    assert colours > 20


def test_visualize_writes_an_svg_with_one_element_per_node_and_a_png(tmp_path):
    import xml.etree.ElementTree as ET

    a = dp.Op(int, "3")
    b = dp.Op(boom, a)
    c = dp.Op(abs, a)
    graph = dp.DispatchGraph([b, c])
    trace = dp.Trace()
    dp.run(dp.SerialExecutor(), graph, throw_error=False, trace=trace)
    svg = graph.visualize(tmp_path / "graph.svg", trace=trace)
    root = ET.parse(svg).getroot()
    groups = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "node"]
    assert len(groups) == 3
    text = svg.read_text()
    assert "ValueError: no good: 3" in text
    assert text.count('fill="#fb9a99"') == 1 and text.count('fill="#b2df8a"') == 2  # failed, done
    png = graph.visualize(tmp_path / "graph.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_visualize_names_what_to_install_without_dot(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot here
    with pytest.raises(dp.DispatcherError, match="apt-get install graphviz"):
        dp.DispatchGraph(dp.Op(abs, 1)).visualize(tmp_path / "g.svg")


def test_a_value_without_its_nout_values_is_a_failed_attempt():
    @dp.op(nout=2)
    def three():
        return 1, 2, 3

    for ex in (dp.SerialExecutor(), dp.ThreadExecutor(2)):
        with ex:
            (result,) = dp.run(ex, [three()], throw_error=False)
        (attempt,) = result.attempts
        assert result.is_error() and isinstance(attempt.error, ValueError), attempt


def test_a_trace_given_twice_keeps_each_attempt_once_and_callbacks_may_listen_by_attribute():
    trace = dp.Trace()
    seen = []
    listener = dp.Callback()
    listener.on_finish = lambda node, value: seen.append(value)  # set on the object, not its class
    dp.run(dp.SerialExecutor(), [dp.Op(abs, -2)], trace=trace, callbacks=[trace, listener])
    assert len(trace.attempts) == 1 and seen == [2]
