"""A trace of a run: every attempt of every node, as the Chrome trace-event
format that Perfetto (ui.perfetto.dev) and ``chrome://tracing`` open, as a text
summary, and as a self-contained HTML timeline (:mod:`dispatcher.timeline`).

``dp.run(executor, outputs, trace="run.json")`` writes the file when the run
ends; ``trace = dp.Trace()`` given as ``trace=`` (or among ``callbacks=``) keeps
the attempts for :meth:`Trace.summary`, :meth:`Trace.to_chrome`,
:meth:`Trace.write` and :meth:`Trace.to_html`.

Policy:

* **What it keeps.** The :class:`~dispatcher.Attempt` records the engine makes
  (see :mod:`dispatcher.attempts` for the clock and what each time means), never
  a value: a trace may stay on for runs of millions of nodes.
* **Lanes.** One lane (a trace "thread") per worker the attempts name (a thread,
  a process, an MPI rank, the driver); the lanes of workers are sorted by name.
* **Slices.** One slice per attempt, from where it started to where it finished,
  named by the node's label, with its times, wait and error in ``args``. A failed
  attempt is coloured as a failure and says whether the node was retried after it.
* **Dependencies.** A flow arrow goes from the end of the attempt that gave a
  node's dependency its value to the start of the node's attempts, where the
  value went from one worker to another (the edges of ``node.dependencies()``:
  the values nodes pass each other; on one worker, the order of its slices shows
  them).
* **Utilisation** is measured over the run's span, from the first node ready to
  the last attempt finished: the mean number of attempts running, and the cores
  they held over the executor's budget (an attempt without cores counts one).
* **The critical path** runs back from the attempt that finished last, each time
  through the dependency that finished last, to a node that waited for none: the
  chain of work and waits that set the run's length.
"""

from __future__ import annotations

import collections
import json
import operator
import os
import time

from .attempts import Attempt
from .engine.callbacks import Callback
from .nodes import Op

__all__ = ["Trace", "lane_of"]

_NODE, _READY, _FINISHED, _WHERE = map(operator.attrgetter, ("node", "ready", "finished", "where"))


def lane_of(attempt: Attempt) -> str:
    """The lane of an attempt: its worker (``"executor"`` where the executor does
    not say)."""
    return _lane_named(attempt.where)


def _lane_named(where: str | None) -> str:
    return where or "executor"


class Trace(Callback):
    """A :class:`~dispatcher.Callback` that keeps every attempt of a run.

    Args:
        path: a file to write the Chrome trace to when the run ends (``.json``),
            or None to keep the trace in memory only.
        cores: the budget of cores the utilisation is measured against (``dp.run``
            fills in the executor's).

    A trace given to several runs keeps the attempts of the latest.
    """

    wants_values = False

    def __init__(self, path: str | os.PathLike | None = None, *, cores: int | None = None):
        self.path = path
        self.cores = cores
        self.executor = ""  # how the executor describes itself (dp.run fills it in)
        self.attempts: list[Attempt] = []
        self.retried: set = set()  # (node id, attempt number) followed by a retry
        self.wall0 = 0.0  # the wall clock and the engine's clock at the same moment
        self.mono0 = 0.0

    # -- the callback -------------------------------------------------------------------
    def on_start(self, total: int) -> None:
        self.attempts = []
        self.retried = set()
        self.wall0, self.mono0 = time.time(), time.monotonic()

    def on_attempt(self, node, attempt: Attempt) -> None:
        self.attempts.append(attempt)

    def on_retry(self, node, error, attempt: int, delay: float) -> None:
        self.retried.add((id(node), attempt))

    def on_end(self) -> None:
        if self.path is not None:
            self.write(self.path)

    # -- the picture ----------------------------------------------------------------------
    lane_of = staticmethod(lane_of)

    def lanes(self) -> dict[str, int]:
        """The lane number of each worker the attempts name."""
        return _lane_numbers(self._workers())

    def _workers(self) -> set:
        """The ``where`` of every attempt (None among them where an executor does not say)."""
        return set(map(_WHERE, self.attempts))

    def span(self) -> tuple[float, float]:
        """From the first node ready to the last attempt finished (the engine's clock)."""
        if not self.attempts:
            return (0.0, 0.0)
        return min(map(_READY, self.attempts)), max(map(_FINISHED, self.attempts))

    def final_attempts(self) -> dict:
        """The attempt that gave each node its value: ``{node: Attempt}``."""
        final: dict = {}
        for a in self.attempts:
            if a.ok:
                final[a.node] = a
        return final

    def to_chrome(self) -> dict:
        """The trace as a Chrome trace-event document (what :meth:`write` writes)."""
        return json.loads(self.chrome_json())

    def chrome_json(self) -> str:
        """The trace as the text of a Chrome trace-event document: metadata naming the
        lanes, a complete event (``"ph": "X"``) per attempt, and a flow (``"s"`` to
        ``"f"``) per dependency whose value went from one worker to another. Times
        are µs from the start of the run's span."""
        attempts = self.attempts
        start, _ = self.span()
        workers = self._workers()
        lanes = _lane_numbers(workers)
        quote = json.dumps
        out = [_META % ("process_name", 0, "name", quote("dispatcher " + self.executor))]
        for name, tid in lanes.items():
            out.append(_META % ("thread_name", tid, "name", quote(name)))
            out.append(_META % ("thread_sort_index", tid, "sort_index", tid))
        tids = {where: lanes[_lane_named(where)] for where in workers}
        special = [a for a in attempts if a.error is not None or a.cores is not None]
        plain = [a for a in attempts if a.error is None and a.cores is None] if special else attempts
        # the hot loop: one string per attempt, formatted in one comprehension
        out.extend(
            [
                _SLICE
                % (
                    label,
                    (a.started - start) * 1e6,
                    (a.finished - a.started) * 1e6,
                    tids[a.where],
                    a.number,
                    (a.ready - start) * 1e6,
                    (a.submitted - start) * 1e6,
                    "",
                )
                for label, a in zip(_json_labels(map(_NODE, plain)), plain)
            ]
        )
        for label, a in zip(_json_labels(map(_NODE, special)), special):
            extra = "" if a.cores is None else f',"cores":{a.cores}'
            if a.error is None:
                template = _SLICE
            else:
                template = _FAILED
                retried = "true" if (id(a.node), a.number) in self.retried else "false"
                extra += f',"error":{quote(f"{type(a.error).__name__}: {a.error}")},"retried":{retried}'
            times = (a.started - start) * 1e6, (a.finished - a.started) * 1e6
            waits = (a.ready - start) * 1e6, (a.submitted - start) * 1e6
            out.append(template % (label, *times, tids[a.where], a.number, *waits, extra))
        if len(lanes) > 1:  # (on one lane, the order of the slices shows every dependency)
            out.extend(self._flows(start, tids))
        started = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.wall0 + start - self.mono0))
        other = quote({"executor": self.executor, "cores": self.cores, "started": started})
        # one join makes the document: each concatenation of a text this long would copy it again
        out[0] = '{"traceEvents":[' + out[0]
        out[-1] += '],"displayTimeUnit":"ms","otherData":' + other + "}"
        return ",\n".join(out)

    def _flows(self, start: float, tids: dict) -> list[str]:
        """A flow per dependency whose value went from one worker to another, from
        just inside the end of the attempt that made it to the start of each
        attempt of the node that took it."""
        final = self.final_attempts()
        crossings = [
            (made, a)
            for a in self.attempts
            for dep in a.node.dependencies()
            if (made := final.get(dep)) is not None and made.where != a.where
        ]
        out = []
        for flow, (made, a) in enumerate(crossings, 1):
            # the start binds to the slice that encloses it: just inside the dependency's end
            at = (made.finished - start) * 1e6 - 0.001
            began = (made.started - start) * 1e6
            if at < began:
                at = began
            out.append(_FLOW % (flow, at, tids[made.where], flow, (a.started - start) * 1e6, tids[a.where]))
        return out

    def write(self, path: str | os.PathLike) -> None:
        """Write the Chrome trace to ``path`` (written whole, then renamed into place)."""
        _write(path, self.chrome_json())

    def to_html(self, path: str | os.PathLike) -> None:
        """Write a self-contained HTML timeline (see :mod:`dispatcher.timeline`)."""
        from .timeline import page

        _write(path, page(self))

    # -- the numbers --------------------------------------------------------------------------
    def utilisation(self) -> dict:
        """Over the run's span: its ``seconds``, the mean number of attempts
        ``running``, and the fraction of the budget's ``cores`` they held (None
        without a budget)."""
        start, end = self.span()
        seconds = end - start
        if seconds <= 0:
            return {"seconds": 0.0, "running": 0.0, "cores": None}
        busy = sum(a.duration for a in self.attempts)
        core_seconds = sum(a.duration * (a.cores or 1) for a in self.attempts)
        cores = core_seconds / (self.cores * seconds) if self.cores else None
        return {"seconds": seconds, "running": busy / seconds, "cores": cores}

    def curve(self) -> list[tuple[float, int, int]]:
        """``(time, attempts running, cores held)`` after each change, from the start
        of the span (seconds): the utilisation over time."""
        start, _ = self.span()
        changes = []
        for a in self.attempts:
            cores = a.cores or 1
            changes.append((a.started - start, 1, cores))
            changes.append((a.finished - start, -1, -cores))
        changes.sort(key=lambda c: (c[0], c[1]))
        running = held = 0
        out = []
        for t, d, c in changes:
            running += d
            held += c
            if out and out[-1][0] == t:
                out[-1] = (t, running, held)
            else:
                out.append((t, running, held))
        return out

    def critical_path(self) -> list[Attempt]:
        """The attempts of the critical path, first to last (see the module docstring)."""
        final = self.final_attempts()
        last = max(self.attempts, key=lambda a: a.finished, default=None)
        path: list[Attempt] = []
        seen: set = set()
        while last is not None and last.node not in seen:
            path.append(last)
            seen.add(last.node)
            deps = [final[d] for d in last.node.dependencies() if d in final]
            last = max(deps, key=lambda a: a.finished, default=None)
        path.reverse()
        return path

    def summary(self, top: int = 5) -> str:
        """A text summary: the run's span and utilisation, the slowest functions, the
        critical path, and the time spent waiting before starting."""
        if not self.attempts:
            return "no attempt was traced"
        use = self.utilisation()
        failed = [a for a in self.attempts if a.error is not None]
        nodes = len({id(a.node) for a in self.attempts})
        lines = [
            f"{nodes} nodes, {len(self.attempts)} attempts ({len(failed)} failed) in {use['seconds']:.3f} s"
            + (f" on {self.executor}" if self.executor else ""),
            f"utilisation: {use['running']:.2f} attempts running on average"
            + (f", {use['cores']:.0%} of {self.cores} cores busy" if use["cores"] is not None else ""),
        ]
        by_label: dict = collections.defaultdict(list)
        for a in self.attempts:
            by_label[a.node.label].append(a.duration)
        slowest = sorted(by_label.items(), key=lambda kv: -sum(kv[1]))[:top]
        lines.append("slowest functions (total s, calls, mean s, max s):")
        width = max(len(label) for label, _ in slowest)
        for label, times in slowest:
            lines.append(
                f"  {label:<{width}}  {sum(times):10.6f}  {len(times):6d}  "
                f"{sum(times) / len(times):10.6f}  {max(times):10.6f}"
            )
        path = self.critical_path()
        work = sum(a.duration for a in path)
        lines.append(
            f"critical path: {len(path)} nodes, {work:.6f} s of work, {use['seconds'] - work:.6f} s of waits"
        )
        for a in path[:top] if len(path) <= 2 * top else [*path[:top], None, *path[-top:]]:
            if a is None:
                lines.append("  ...")
                continue
            lines.append(f"  {a.node.label} on {a.where}: waited {a.waited:.6f} s, ran {a.duration:.6f} s")
        queued = sum(a.submitted - a.ready for a in self.attempts)
        transit = sum(a.started - a.submitted for a in self.attempts)
        lines.append(
            f"waiting: {queued:.6f} s ready before being handed over (cores, workers), "
            f"{transit:.6f} s handed over before starting (transfer, queues of the executor)"
        )
        return "\n".join(lines)


# the events of a Chrome trace, as text (a dict per event and json.dumps would cost
# five times as much: a trace must stay cheap enough to leave on)
_META = '{"name":"%s","ph":"M","pid":1,"tid":%d,"args":{"%s":%s}}'
_ARGS = '"args":{"attempt":%d,"ready_us":%.3f,"submitted_us":%.3f%s}}'
_SLICE = '{"name":%s,"cat":"node","ph":"X","ts":%.3f,"dur":%.3f,"pid":1,"tid":%d,' + _ARGS
_FAILED = (
    '{"name":%s,"cat":"failed","cname":"terrible","ph":"X","ts":%.3f,"dur":%.3f,"pid":1,"tid":%d,' + _ARGS
)
_FLOW = (
    '{"name":"value","cat":"dependency","ph":"s","id":%d,"ts":%.3f,"pid":1,"tid":%d},'
    '{"name":"value","cat":"dependency","ph":"f","bp":"e","id":%d,"ts":%.3f,"pid":1,"tid":%d}'
)


def _json_labels(nodes) -> list[str]:
    """The label of each node as JSON text, made once per function for the nodes
    named after theirs (an :class:`~dispatcher.Op` without a label of its own)."""
    by_function: dict = {}
    labels = []
    add = labels.append
    for node in nodes:
        if node._label is None and type(node) is Op:
            key = id(node.func)  # (a callable need not be hashable)
            text = by_function.get(key)
            if text is None:
                text = by_function[key] = json.dumps(node.label)
        else:
            text = json.dumps(node.label)
        add(text)
    return labels


def _lane_numbers(workers) -> dict[str, int]:
    """The lane number of each of ``workers`` (the ``where`` of attempts), by name."""
    names = sorted({_lane_named(where) for where in workers}, key=_lane_order)
    return {name: i + 1 for i, name in enumerate(names)}


def _lane_order(name: str) -> tuple:
    return (name != "driver", name)


_WRITE_PIECE = 1 << 16  # characters written at a time


def _write(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a temporary name, then rename it into place."""
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        # in pieces: encoding a long text whole would make (and map) a copy as long
        for at in range(0, len(text), _WRITE_PIECE):
            f.write(text[at : at + _WRITE_PIECE])
    os.replace(tmp, path)
