"""Running a graph on an executor: the run's options, its state, and its driver.

Policy: the run's options are fixed once, in one frozen
:class:`~dispatcher.engine.RunOptions` built from the caller's arguments, the
executor's settings and its :class:`~dispatcher.executors.base.Capabilities`. The
graph is planned and checked before the executor is opened, so a mistake in the
graph starts no workers. A blocking run of an executor whose tasks need an event
loop runs the asyncio driver to its end here; every run waits inside the
executor's ``lend_worker`` so that a node may start a nested run on the executor
that runs it, and lends that node's cores meanwhile (:func:`~dispatcher.engine.cores.lend_cores`).
The objects that exist when a run starts are not scanned by the garbage collector
until it ends (:mod:`~dispatcher.engine.collector`).

This module does not check that ``executor`` is one: :mod:`dispatcher.api` does,
and :meth:`Executor.run <dispatcher.executors.base.Executor.run>` is one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from typing import Any

from .coroutines import run_to_end
from .engine import Callback, ProgressBar, RunOptions, RunState, drive, drive_async
from .engine.caching import RunCache
from .engine.collector import objects_kept
from .engine.cores import lend_cores
from .graph import DispatchGraph
from .nodes import DispatchNode
from .results import DispatchResult
from .trace import Trace

__all__ = ["run_graph", "run_graph_async"]


def run_graph(executor: Any, outputs: Any, inputs: Iterable = (), **options: Any) -> list[DispatchResult]:
    """Run the graph that ends in ``outputs`` on ``executor`` (see :func:`dispatcher.run`)."""
    outputs = _materialize(outputs)
    return executor.wrap_run(outputs, functools.partial(_run, executor, outputs, inputs, options))


async def run_graph_async(executor: Any, outputs: Any, inputs: Iterable = (), **options: Any) -> list:
    """:func:`run_graph` inside a running event loop (see :func:`dispatcher.run_async`)."""
    outputs = _materialize(outputs)

    async def run():
        with objects_kept():
            state = _state(executor, outputs, inputs, **options)
            async with executor.lend_worker_async():
                with lend_cores(executor._budget):
                    return await drive_async(state, executor)

    return await executor.wrap_run_async(outputs, run)


def _run(executor, outputs, inputs, options) -> list[DispatchResult]:
    with objects_kept():
        state = _state(executor, outputs, inputs, **options)
        with executor.lend_worker(), lend_cores(executor._budget):
            if executor.capabilities.needs_loop:
                return run_to_end(drive_async(state, executor))
            return drive(state, executor)


def _task_window(executor, intake) -> int | None:
    """The run's :attr:`~dispatcher.engine.RunOptions.task_window`: the executor's,
    but none for a pipelined run (its scheduler takes the whole graph) or an open run
    (calls that keep coming, on top of the ready nodes, must not hold back the calls
    waiting since before)."""
    if executor.capabilities.pipelines or intake is not None:
        return None
    window = executor.task_window()
    if window is not None and (not isinstance(window, int) or window < 1):
        raise ValueError(f"{type(executor).__name__}.task_window() must be None or >= 1, got {window!r}")
    return window


def _trace(trace: Any, executor) -> Trace:
    """The :class:`Trace` of ``trace=`` (a path to write, or a Trace), told the
    executor it traces."""
    if not isinstance(trace, Trace):
        if not isinstance(trace, (str, os.PathLike)):
            raise TypeError(f"trace must be a path or a dispatcher.Trace, got {type(trace).__name__}")
        trace = Trace(trace)
    trace.executor = repr(executor)
    if trace.cores is None:
        trace.cores = executor.cores
    return trace


def _materialize(outputs):
    """Outputs given as a generator become a list: they are read more than once."""
    if isinstance(outputs, (DispatchNode, DispatchGraph, list, tuple)):
        return outputs
    try:
        return list(outputs)
    except TypeError:
        return outputs  # the run state says what is wrong with it


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
    store: Any = None,
    trace: Any = None,
    intake: Any = None,
) -> RunState:
    callbacks = list(callbacks)
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be dispatcher.Callback objects, got {type(cb).__name__}")
    if progress:
        callbacks.append(ProgressBar())
    if trace is not None:
        trace = _trace(trace, executor)
        if trace not in callbacks:  # given twice, it would keep each attempt twice
            callbacks.append(trace)
    capabilities = executor.capabilities
    options = RunOptions(
        throw_error=throw_error,
        retries=executor.retries,
        retry_on=executor.retry_on,
        always_retry_on=executor.default_retry_on,
        backoff=executor.backoff,
        timeout=executor.timeout,
        release=release,
        callbacks=tuple(callbacks),
        inline_light=capabilities.inline_light,
        inline_all=capabilities.runs_inline,
        starts_reported=capabilities.reports_start,
        on_timeout=capabilities.on_timeout,
        timeout_grace=capabilities.timeout_grace,
        pipelined=capabilities.pipelines,
        in_process=capabilities.in_process,
        task_window=_task_window(executor, intake),
    )
    cache = None
    if store is not None:
        # a pipelined run holds handles: a value the driver stores is fetched first
        fetch = executor.fetch_value if capabilities.pipelines else None
        cache = RunCache(store, store_on_worker=capabilities.store_on_worker, fetch=fetch)
    state = RunState(
        outputs,
        inputs,
        input_map=input_map,
        options=options,
        owner=executor,
        cache=cache,
        budget=executor.core_budget,
        intake=intake,
    )
    executor.open()  # after the graph is checked: a mistake in it starts no workers
    return state
