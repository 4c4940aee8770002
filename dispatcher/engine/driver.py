"""The driver: one loop that runs a :class:`~dispatcher.engine.RunState` on an
executor, and its two adapters, blocking (:func:`drive`) and asyncio
(:func:`drive_async`).

Policy: the loop (:func:`_steps`, a generator) hands every ready task to the
executor, lets the executor send what it held back (``_flush``), cancels the tasks
the state revoked or timed out, and, when nothing more can start, *yields* the
clock time to wait until (None: until the next report). The adapter waits in its own
way (a queue, an asyncio queue, or a sleep for a synchronous executor, whose tasks
have reported before ``_submit`` returns), gives the state every report that
arrived, and resumes the loop. A pipelined run's outputs come back through a
:class:`Gather` request, which the adapter answers with the executor's ``_gather``
or ``_gather_async``.

When the loop ends by an exception that is not a node's failure (Ctrl-C, a
cancelled asyncio task, a failing callback), the executor is interrupted, every
running task is cancelled and then awaited, so nothing is left behind; a second
interruption while awaiting them stops the wait with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Generator
from typing import Any

import attrs

from ..results import DispatcherError, DispatchResult, format_exception
from .records import Task
from .state import RunState

__all__ = ["Gather", "drive", "drive_async"]

logger = logging.getLogger("dispatcher")


@attrs.frozen
class Gather:
    """A request of the loop to its adapter: bring back these handles' values as
    ``(ok, value or (exception, traceback))`` each."""

    handles: list


def _steps(state: RunState, executor: Any, report) -> Generator[float | Gather | None, Any, list]:
    """The one driver loop; ``report(task, ok, payload)`` is what the executor calls."""
    synchronous = executor.synchronous
    try:
        state.start()
        while True:
            _start_ready(state, executor, report)
            if state.finished:
                break
            wake = state.next_wakeup()
            if wake is None and synchronous:
                raise DispatcherError("the run stalled with nodes left to run")
            yield wake
            _cancel(executor, state.expire())
        if state.running:
            _cancel(executor, state.abort())
            while state.running:
                yield None
        if state.pipelined and state.error is None:
            nodes, handles = state.remote_outputs()
            state.localize(nodes, (yield Gather(handles)))
    except BaseException:
        executor._interrupt()
        _cancel(executor, state.abort())
        try:
            while state.running and not synchronous:
                yield None
        except BaseException:
            logger.warning("stopped waiting for %d running node(s)", len(state.running))
            raise
        finally:
            state.end()
        raise
    state.end()
    if state.error is not None:
        raise state.error
    return state.results()


def _start_ready(state: RunState, executor, report) -> None:
    """Hand every ready task to the executor, let it send what it held back, and
    cancel the tasks the state revoked."""
    task = state.next_task()
    if task is not None:
        pipelined = state.pipelined
        while task is not None:
            if _start(state, executor, task, report) and pipelined:
                state.sent(task)
            task = state.next_task()
        executor._flush()
    if state.revoked:
        _cancel(executor, state.take_revoked())


def _start(state: RunState, executor, task: Task, report) -> bool:
    """Hand ``task`` to the executor; a refusal (the pool is broken or shut down, the
    call cannot be sent) fails that node instead of leaving it running."""
    try:
        executor._submit(task, report)
    except Exception as exc:
        state.done(task, False, (exc, format_exception(exc)))
        return False
    except BaseException as exc:  # Ctrl-C in the thread that drives the run: it ends here
        state.done(task, False, (exc, format_exception(exc)))
        raise
    return True


def _cancel(executor, tasks) -> None:
    for task in tasks:
        executor._cancel(task)


def drive(state: RunState, executor: Any) -> list[DispatchResult]:
    """Run ``state`` on ``executor`` with blocking waits; returns the results."""
    if executor.synchronous:
        inbox, report = None, state.done
    else:
        inbox = queue.SimpleQueue()

        def report(task, ok, payload, _put=inbox.put):
            _put((task, ok, payload))

    steps = _steps(state, executor, report)
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value
        reply = error = None
        try:
            if type(request) is Gather:
                reply = executor._gather(request.handles)
            elif inbox is None:
                time.sleep(max(0.0, request - state.clock()))
            else:
                _take_reports(state, inbox, None if request is None else max(0.0, request - state.clock()))
        except BaseException as exc:  # Ctrl-C while waiting: the loop settles the run
            error = exc


def _take_reports(state: RunState, inbox: queue.SimpleQueue, timeout: float | None) -> None:
    """Wait up to ``timeout`` for a report; give the state it and every other one queued."""
    try:
        state.done(*inbox.get(timeout=timeout))
        while True:
            state.done(*inbox.get_nowait())
    except queue.Empty:
        pass


async def drive_async(state: RunState, executor: Any) -> list[DispatchResult]:
    """Run ``state`` on ``executor`` inside the running asyncio loop."""
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()
    if executor.synchronous:
        report = state.done
    else:
        loop_thread = threading.get_ident()

        def report(task, ok, payload):
            if threading.get_ident() == loop_thread:
                inbox.put_nowait((task, ok, payload))
            else:
                loop.call_soon_threadsafe(inbox.put_nowait, (task, ok, payload))

    steps = _steps(state, executor, report)
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value
        reply = error = None
        try:
            if type(request) is Gather:
                reply = await executor._gather_async(request.handles)
            elif executor.synchronous:
                await asyncio.sleep(max(0.0, request - state.clock()))
            else:
                await _take_reports_async(state, inbox, request)
        except BaseException as exc:  # cancelled while waiting: the loop settles the run
            error = exc


async def _take_reports_async(state: RunState, inbox: asyncio.Queue, until: float | None) -> None:
    if inbox.empty():
        if until is None:
            state.done(*await inbox.get())
        else:
            try:
                state.done(*await asyncio.wait_for(inbox.get(), max(0.0, until - state.clock())))
            except TimeoutError:
                return
    while not inbox.empty():
        state.done(*inbox.get_nowait())
