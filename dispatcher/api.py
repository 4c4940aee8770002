"""``run``, ``execute`` and ``run_async``: the entry points of a run.

They build the engine's run state from the arguments and hand it to the blocking
or the asyncio driver. ``execute`` without an executor uses a fresh
:class:`SerialExecutor`: the same values as every other executor, in the calling
thread, where a debugger and a profiler can follow each node.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable
from typing import Any

from .coroutines import run_to_end
from .engine import Callback, RunOptions, RunState, drive, drive_async
from .graph import DispatchGraph
from .nodes import DispatchNode
from .results import DispatchResult

__all__ = ["ProgressBar", "execute", "run", "run_async"]


class ProgressBar(Callback):
    """A tqdm progress bar on stderr, one step per finished or failed node."""

    def __init__(self, **tqdm_options: Any):
        self.options = {"file": sys.stderr, "unit": "node", "desc": "dispatcher", **tqdm_options}
        self.bar = None

    def on_start(self, total: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, **self.options)

    def on_finish(self, node, value) -> None:
        self.bar.update(1)

    def on_fail(self, node, error) -> None:
        self.bar.update(1)

    def on_end(self) -> None:
        if self.bar is not None:  # None when an earlier callback's on_start failed
            self.bar.close()
            self.bar = None


def _check_executor(executor) -> None:
    from .executors.base import Executor

    if not isinstance(executor, Executor):
        raise TypeError(f"expected an executor, got {type(executor).__name__}: {executor!r:.80}")


def _state(
    executor,
    outputs,
    inputs,
    *,
    input_map: dict | None = None,
    throw_error: bool = True,
    progress: bool = False,
    callbacks: Iterable[Callback] = (),
    release: bool = False,
) -> RunState:
    _check_executor(executor)
    callbacks = list(callbacks)
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be dispatcher.Callback objects, got {type(cb).__name__}")
    if progress:
        callbacks.append(ProgressBar())
    options = RunOptions(
        throw_error=throw_error,
        retries=executor.retries,
        retry_on=executor.retry_on,
        always_retry_on=executor.default_retry_on,
        backoff=executor.backoff,
        timeout=executor.timeout,
        release=release,
        callbacks=tuple(callbacks),
        inline_light=executor.inline_light,
        inline_all=executor.runs_inline,
        track_deadlines=not executor.enforces_timeouts,
        pipelined=executor.pipelines,
    )
    state = RunState(outputs, inputs, input_map=input_map, options=options, owner=executor)
    executor._open()  # after the graph is checked: a mistake in it starts no workers
    return state


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

    A cycle raises :class:`ExecutorError` before anything runs.

    >>> import dispatcher as dp
    >>> a = dp.Op(sum, [1, 2])
    >>> [r.value for r in dp.run(dp.ThreadExecutor(), [a, dp.Op(abs, -5)])]
    [3, 5]
    """
    _check_executor(executor)
    outputs = _materialize(outputs)
    options = dict(
        input_map=input_map, throw_error=throw_error, progress=progress, callbacks=callbacks, release=release
    )
    return executor._run_spmd(outputs, functools.partial(_run, executor, outputs, inputs, options))


def _materialize(outputs):
    """Outputs given as a generator become a list: they are read more than once."""
    if isinstance(outputs, (DispatchNode, DispatchGraph, list, tuple)):
        return outputs
    try:
        return list(outputs)
    except TypeError:
        return outputs  # the run state says what is wrong with it


def _run(executor, outputs, inputs, options) -> list[DispatchResult]:
    state = _state(executor, outputs, inputs, **options)
    with executor._nested_wait():
        if executor.needs_loop:
            return run_to_end(drive_async(state, executor))
        return drive(state, executor)


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
    outputs = _materialize(outputs)

    async def run():
        state = _state(executor, outputs, inputs, **options)
        async with executor._nested_wait_async():
            return await drive_async(state, executor)

    return await executor._run_spmd_async(outputs, run)


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
        from .executors.serial import SerialExecutor

        with SerialExecutor() as executor:
            results = run(executor, outputs, **run_options)
    else:
        results = run(executor, outputs, **run_options)
    values = [r.unwrap() for r in results]
    return values[0] if single else values
