"""The graph shapes of ``python -m dispatcher.bench``, each at several sizes.

A suite builds a :class:`Graph`: a list of calls in topological order whose
arguments may hold :class:`Ref` (the value of an earlier call, also inside lists),
and the calls whose values are the outputs. The harness turns the same graph into
``Op`` nodes, ``dask.delayed`` objects, futures of a raw pool, or plain calls, so
that every executor and baseline runs exactly the same work.

The functions live here, at module level, so that worker processes import them by
name (``dispatcher.bench.suites``, wherever the package is installed). A suites
module of your own (``--suites-file``) builds its graphs with this module's
:class:`Graph`, :class:`Ref` and :class:`Suite` and defines ``SUITES`` as this one
does.
"""

from __future__ import annotations

import asyncio
import time

import attrs

__all__ = ["SUITES", "Graph", "Ref", "Suite"]


@attrs.frozen
class Ref:
    """The value of call ``index`` of the same graph."""

    index: int


class Graph:
    """Calls ``(func, args)`` in topological order; ``outputs`` are indices.

    ``cores`` maps the index of a call to the cores it asks for (``dp.op(cores=...)``
    on the library's executors; the others run every call on one core).
    ``ideal_s``, where a suite knows it, is the least time the machine allows for
    the graph: the report then gives each run as a multiple of it.
    """

    def __init__(self):
        self.calls: list[tuple] = []
        self.outputs: list[int] = []
        self.cores: dict[int, object] = {}
        self.ideal_s: float | None = None

    def add(self, func, *args, cores=None) -> Ref:
        if cores is not None:
            self.cores[len(self.calls)] = cores
        self.calls.append((func, args))
        return Ref(len(self.calls) - 1)

    def __len__(self) -> int:
        return len(self.calls)


class Suite:
    """A graph shape: ``build(size, settings)`` gives a :class:`Graph`.

    ``sizes`` are those of a full run, ``quick`` those of ``--quick``; ``unit``
    names what a size counts. ``async_flavour``: the graph has an ``async def``
    version for executors that await coroutines.
    """

    def __init__(self, name, build, sizes, quick, unit="nodes", about="", async_flavour=False):
        self.name = name
        self.build = build
        self.sizes = tuple(sizes)
        self.quick = tuple(quick)
        self.unit = unit
        self.about = about
        self.async_flavour = async_flavour


# -- the functions the nodes call -----------------------------------------------------


def noop(*args):
    return None


def one(*args):
    return 1


def add(*args):
    return sum(args)


def spin(loops: int) -> int:
    """Pure-Python CPU work (the GIL held throughout)."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


def load(name: str) -> int:
    return len(name)


def load_reference(address: str) -> int:
    return 1


def process(data: int, reference: int) -> int:
    return data + reference


def roll(a: int, b: int, c: int) -> int:
    return a + b + c


def compare(a: int, b: int) -> int:
    return a - b


def best(values: list) -> int:
    return max(values)


def make_array(megabytes: int):
    import numpy as np

    return np.zeros(megabytes * 1024 * 1024 // 8)


def bump(a):
    """A new array one larger than ``a`` (a fresh array each hop, as a pipeline step makes)."""
    return a + 1


def checksum(a) -> float:
    return float(a[0] + a[-1])


def wait_io(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def wait_io_async(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


def fit(seconds: float, limit: int, *previous) -> float:
    """A simulated model fit: ``seconds`` of work on one core, done faster on up to
    ``limit`` cores, as many as the node was given (``dp.allocation().cores``: one
    where the node asked for none, or ran elsewhere). It sleeps, so that it takes
    its time whatever else the machine runs."""
    from ..node_allocation import allocation

    time.sleep(seconds / min(allocation().cores, limit))
    return seconds


# -- the shapes -----------------------------------------------------------------------


def wide(size: int, settings: dict) -> Graph:
    """``size - 1`` independent no-op calls and one that takes them all."""
    g = Graph()
    roots = [g.add(one) for _ in range(size - 1)]
    g.outputs = [g.add(add, *roots).index]
    return g


def deep(size: int, settings: dict) -> Graph:
    """A chain of ``size`` calls, each taking the previous one's value."""
    g = Graph()
    node = g.add(one)
    for _ in range(size - 1):
        node = g.add(add, node)
    g.outputs = [node.index]
    return g


def tree(size: int, settings: dict) -> Graph:
    """A binary reduction: ``(size + 1) // 2`` leaves summed pairwise."""
    g = Graph()
    level = [g.add(one) for _ in range((size + 1) // 2)]
    while len(level) > 1:
        nxt = [g.add(add, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    g.outputs = [level[0].index]
    return g


def manual(size: int, settings: dict) -> Graph:
    """Dispatcher.jl's manual example over ``size`` files: load each, process each
    with a reference, roll every three, compare random pairs, reduce to the best."""
    import random

    rng = random.Random(0)
    g = Graph()
    data = [g.add(load, f"mydata-{d}.dat") for d in range(size)]
    reference = g.add(load_reference, "sql://mytable")
    processed = [g.add(process, d, reference) for d in data]
    rolled = [g.add(roll, *processed[i : i + 3]) for i in range(len(processed) - 2)] or processed
    compared = [g.add(compare, rng.choice(rolled), rng.choice(rolled)) for _ in range(2 * size)]
    g.outputs = [g.add(best, list(compared)).index]
    return g


def cpu(size: int, settings: dict) -> Graph:
    """``size`` independent calls of pure-Python work of ``settings["work"]`` seconds each."""
    g = Graph()
    roots = [g.add(spin, settings["loops"]) for _ in range(size)]
    g.outputs = [g.add(add, *roots).index]
    return g


def arrays(size: int, settings: dict) -> Graph:
    """A chain of 10 hops passing a ``size`` MB float64 array, each hop making a new one."""
    g = Graph()
    node = g.add(make_array, size)
    for _ in range(10):
        node = g.add(bump, node)
    g.outputs = [g.add(checksum, node).index]
    return g


def spread(size: int, settings: dict) -> Graph:
    """One ``size`` MB float64 array read by 20 calls, then one that sums what they read."""
    g = Graph()
    made = g.add(make_array, size)
    readers = [g.add(checksum, made) for _ in range(20)]
    g.outputs = [g.add(add, *readers).index]
    return g


def io(size: int, settings: dict) -> Graph:
    """``size`` calls that each wait 5 ms for I/O (``async def`` on executors that
    await coroutines, ``time.sleep`` elsewhere), then one that sums them."""
    g = Graph()
    func = wait_io_async if settings.get("flavour") == "async" else wait_io
    roots = [g.add(func, 0.005) for _ in range(size)]
    g.outputs = [g.add(add, *roots).index]
    return g


def mixed(size: int, settings: dict) -> Graph:
    """A tool that switches between many small and few large calls, on a budget of
    ``c = settings["workers"]`` cores, with a unit of work of ``size`` ms: ``3c``
    fits of 1 unit that do not scale, then ``max(1, c // 4)`` refits of ``c`` units
    that scale to ``c`` cores, then ``3c // 2`` fits of 1 unit, each round waiting
    for the one before (on 8 cores: 24 fits, 2 refits of 8 units, 12 fits). Every
    fit asks for ``(1, c)`` cores; ``ideal_s`` is the total work over ``c``."""
    c = settings["workers"]
    unit = size / 1000
    rounds = ((3 * c, 1, 1), (max(1, c // 4), c, c), (max(1, 3 * c // 2), 1, 1))
    g = Graph()
    previous: list = []
    for count, work, limit in rounds:
        previous = [g.add(fit, unit * work, limit, *previous, cores=(1, c)) for _ in range(count)]
    g.outputs = [g.add(add, *previous).index]
    g.ideal_s = unit * sum(count * work for count, work, _ in rounds) / c
    return g


_MANUAL = "Dispatcher.jl's load/process/roll/compare/reduce graph"
_IO = "fan-out of 5 ms I/O waits"
_MIXED = "rounds of many 1-core fits and few fits that scale: makespan over the ideal"
_CPU = "fan-out of pure-Python CPU work, 50 ms a call"

SUITES = {
    s.name: s
    for s in (
        Suite("wide", wide, (100, 1_000, 10_000), (100,), about="fan-out of no-op calls, one reduce"),
        Suite("deep", deep, (100, 1_000, 3_000), (100,), about="a chain of no-op calls"),
        Suite("tree", tree, (127, 1_023, 8_191), (127,), about="a binary reduction of no-op calls"),
        Suite("manual", manual, (10, 100, 1_000), (10,), unit="files", about=_MANUAL),
        Suite("cpu", cpu, (2, 4, 8), (2,), unit="calls", about=_CPU),
        Suite("arrays", arrays, (1, 10, 50), (1,), unit="MB", about="10 hops passing a numpy array"),
        Suite("spread", spread, (1, 10, 50), (1,), unit="MB", about="one numpy array read by 20 calls"),
        Suite("io", io, (10, 50, 200), (10,), unit="waits", about=_IO, async_flavour=True),
        Suite("mixed", mixed, (20, 100), (20,), unit="ms of work", about=_MIXED),
    )
}
