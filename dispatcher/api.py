"""``run``, ``execute`` and ``run_async``: the entry points of a run.

They check their arguments and hand the run to :mod:`dispatcher.running`, which
builds the run's options and state and drives it. ``execute`` without an executor
uses a fresh :class:`SerialExecutor`: the same values as every other executor, in
the calling thread, where a debugger and a profiler can follow each node.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .engine import Callback
from .executors.base import Executor
from .executors.serial import SerialExecutor
from .graph import DispatchGraph
from .nodes import DispatchNode
from .results import DispatchResult
from .running import run_graph, run_graph_async

__all__ = ["execute", "run", "run_async"]


def _check_executor(executor) -> None:
    if not isinstance(executor, Executor):
        raise TypeError(f"expected an executor, got {type(executor).__name__}: {executor!r:.80}")


def run(
    executor,
    outputs: DispatchNode | Iterable[DispatchNode] | DispatchGraph,
    inputs: Iterable[DispatchNode] = (),
    *,
    input_map: dict | None = None,
    throw_error: bool = True,
    progress: bool = False,
    callbacks: Iterable[Callback] = (),
    release: bool = False,
    store: Any = None,
    trace: Any = None,
) -> list[DispatchResult]:
    """Run the graph that ends in ``outputs`` on ``executor``; one result per output.

    Args:
        executor: any dispatcher executor.
        outputs: a node, a list of nodes, or a :class:`DispatchGraph` (whose leaf
            nodes are the outputs).
        inputs: nodes whose latest value (``fetch()``) is used instead of running
            them; their ancestors are not run.
        input_map: ``{node: value}`` to use instead of running those nodes.
        throw_error: raise the first failure's :class:`DependencyError` (True), or
            run everything that does not depend on a failure and return the failed
            outputs as error results (False).
        progress: show a tqdm progress bar on stderr.
        callbacks: :class:`Callback` objects told about each node.
        release: drop each intermediate value once no remaining node needs it
            (outputs are kept; a released node's ``fetch()`` says so).
        store: a directory (a path) or a :class:`~dispatcher.Store`: nodes whose
            key (their function's code, their arguments' contents, their
            dependencies' keys) is stored there are not run again, and the values
            of the nodes that run are stored (see :mod:`dispatcher.store`).
        trace: a file to write the run's trace to (the Chrome trace-event format),
            or a :class:`~dispatcher.Trace` to keep it in (see :mod:`dispatcher.trace`).

    Each result carries its node's attempts (:class:`~dispatcher.Attempt`: when it
    was ready, handed over, started and finished, and on which worker).

    A cycle raises :class:`ExecutorError` before anything runs.

    >>> import dispatcher as dp
    >>> a = dp.Op(sum, [1, 2])
    >>> [r.value for r in dp.run(dp.ThreadExecutor(), [a, dp.Op(abs, -5)])]
    [3, 5]
    """
    _check_executor(executor)
    return run_graph(
        executor,
        outputs,
        inputs,
        input_map=input_map,
        throw_error=throw_error,
        progress=progress,
        callbacks=callbacks,
        release=release,
        store=store,
        trace=trace,
    )


async def run_async(
    executor,
    outputs: DispatchNode | Iterable[DispatchNode] | DispatchGraph,
    inputs: Iterable[DispatchNode] = (),
    **options: Any,
) -> list[DispatchResult]:
    """:func:`run` inside a running event loop: ``await dp.run_async(executor, outputs)``.

    The loop keeps serving other work while nodes run, except for a synchronous
    executor (:class:`SerialExecutor`), whose nodes run on the loop one by one.
    """
    _check_executor(executor)
    return await run_graph_async(executor, outputs, inputs, **options)


def execute(graph_or_nodes: Any, executor=None, **run_options: Any) -> Any:
    """Run and return values: a node gives its value, a list of nodes a list of
    values, a :class:`DispatchGraph` the list of its leaf nodes' values.

    A failure raises its :class:`DependencyError`. Without an executor a fresh
    :class:`SerialExecutor` runs the graph.

    >>> import dispatcher as dp
    >>> dp.execute(dp.Op(len, "four"))
    4
    """
    if run_options.get("throw_error") is False:
        raise ValueError("execute always raises on failure; use run(..., throw_error=False)")
    single = isinstance(graph_or_nodes, DispatchNode)
    outputs = [graph_or_nodes] if single else graph_or_nodes
    if executor is None:
        with SerialExecutor() as executor:
            results = run(executor, outputs, **run_options)
    else:
        results = run(executor, outputs, **run_options)
    values = [r.unwrap() for r in results]
    return values[0] if single else values
