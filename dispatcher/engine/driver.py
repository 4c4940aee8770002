"""The driver: one loop that runs a :class:`~dispatcher.engine.RunState` on an
executor, and its two adapters, blocking (:func:`drive`) and asyncio
(:func:`drive_async`).

Policy: the loop (:func:`_steps`, a generator) hands every ready task to the
executor, lets the executor send what it held back (``flush_tasks``), cancels the tasks
the state revoked or timed out, and, when nothing more can start, *yields* the
clock time to wait until (None: until the next report). The adapter waits in its own
way (a queue, an asyncio queue, or a sleep for a synchronous executor, whose tasks
have reported before ``start_task`` returns), gives the state every report that
arrived, and resumes the loop. An open run (:mod:`~dispatcher.engine.openrun`)
takes the nodes its intake has after each wait, and asks it once more before it
ends. A pipelined run's outputs come back through a
:class:`Gather` request, which the adapter answers with the executor's ``gather_values``
or ``gather_values_async``.

When the loop ends by an exception that is not a node's failure (Ctrl-C, SIGTERM, a
cancelled asyncio task, a failing callback), the executor is interrupted, every
running task is cancelled and then awaited, so nothing is left behind. The wait is
bounded: a task that has not reported :data:`SETTLE_SECONDS` after its cancellation
(a thread that cannot be stopped, a report lost to the interruption itself) is
abandoned with a warning, and so are all of them at a second interruption; the
exception that ended the run is then raised (SIGTERM excepted: it fails the nodes
left, see :mod:`~dispatcher.engine.termination`). An interrupted run never hangs.

The blocking adapter waits :data:`SIGNAL_CHECK` seconds at most at once. Python
runs a signal's handler (Ctrl-C's ``KeyboardInterrupt``, SIGTERM's) in the main
thread, but the signal itself may reach any thread, say one waiting for a node's
program; a main thread blocked in a wait that has no end would then never learn of
it, and the run would go on as if the signal had not come.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Generator
from typing import Any

import attrs

from ..results import DispatcherError, DispatchResult, Terminated, format_exception
from . import openrun, pipelining, termination
from .records import Task
from .state import RunState

__all__ = ["SETTLE_SECONDS", "SIGNAL_CHECK", "Gather", "drive", "drive_async"]

logger = logging.getLogger("dispatcher")

#: Seconds an interrupted run waits for its cancelled tasks to report before it
#: abandons them.
SETTLE_SECONDS = 10.0

#: Seconds the blocking adapter waits at most at once, so that a signal that
#: reached another thread is handled (see the module docstring).
SIGNAL_CHECK = 0.1


WAKE_UP = Task(object(), None, (), None, 1, None)
"""A report of no node's task: it wakes the driver, which looks again for work."""


@attrs.frozen
class Gather:
    """A request of the loop to its adapter: bring back these handles' values as
    ``(ok, value or (exception, traceback))`` each."""

    handles: list


def _steps(
    state: RunState, executor: Any, report, on_sigterm: bool = False
) -> Generator[float | Gather | None, Any, list]:
    """The one driver loop; ``report(task, ok, payload)`` is what the executor calls.
    With ``on_sigterm``, a :class:`~dispatcher.Terminated` that ends it fails the
    unfinished nodes instead of being raised (:mod:`~dispatcher.engine.termination`)."""
    synchronous = executor.capabilities.synchronous
    if not synchronous:  # another run that frees cores wakes this one with a report of nothing
        state.wake = functools.partial(report, WAKE_UP, True, None)
    try:
        state.start()
        intake = state.intake is not None
        while True:
            _start_ready(state, executor, report)
            if state.finished:
                if intake and state.error is None and openrun.take_more(state, final=True):
                    continue  # an open run ends only when its intake gives nothing
                break
            timers = state.timers.heap  # most runs have none: then no clock is read
            wake = state.next_wakeup() if timers else None
            if wake is None and synchronous:
                raise DispatcherError("the run stalled with nodes left to run")
            yield wake
            if intake:
                openrun.take_more(state, final=False)
            if timers:
                _cancel_all(executor, state.expire())
        if state.running:
            _cancel_all(executor, state.abort())
            while state.running:
                yield None
        if state.pipelined and state.error is None:
            nodes, handles = pipelining.remote_outputs(state)
            pipelining.localize(state, nodes, (yield Gather(handles)))
    except BaseException as exc:
        was_running = [*state.running, *([state.interrupted] if state.interrupted is not None else [])]
        terminated = on_sigterm and isinstance(exc, Terminated)
        settle = min(SETTLE_SECONDS, termination.SETTLE_SECONDS) if terminated else SETTLE_SECONDS
        try:
            _settle_quietly(executor.interrupt_run)
            _settle_quietly(_cancel_all, executor, state.abort())
            deadline = state.clock() + settle
            while state.running and not synchronous:
                if state.clock() >= deadline:
                    logger.warning(
                        "stopped waiting for %d running node(s) after %g s: %s",
                        len(state.running),
                        settle,
                        ", ".join(sorted(node.label for node in state.running)[:5]),
                    )
                    break
                yield deadline
        except BaseException as again:
            logger.warning("stopped waiting for %d running node(s)", len(state.running))
            if not (terminated and isinstance(again, Terminated)):
                raise  # (SIGTERM twice, as srun and slurmstepd both send it: the run still returns)
        finally:
            if terminated:
                first = termination.fail_unfinished(state, exc, was_running)
            state.end()
        if not terminated:
            raise
        logger.warning("%s: %d node(s) were running", termination.MESSAGE, len(was_running))
        if state.throw_error and first is not None:
            raise first from exc
        return state.results()
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
        executor.flush_tasks()
    if state.revoked:
        _cancel_all(executor, state.take_revoked())


def _start(state: RunState, executor, task: Task, report) -> bool:
    """Hand ``task`` to the executor; a refusal (the pool is broken or shut down, the
    call cannot be sent) fails that node instead of leaving it running. An exception
    raised once the task has reported (a synchronous executor's report ran a callback
    or a retry predicate that raised) is the run's, and ends it."""
    try:
        executor.start_task(task, report)
    except Exception as exc:
        if state.running.get(task.node) is not task:
            raise
        state.done(task, False, (exc, format_exception(exc)))
        return False
    except BaseException as exc:  # Ctrl-C in the thread that drives the run: it ends here
        if isinstance(exc, Terminated):  # the run fails it, saying it was running
            state.interrupted = task.node
        else:
            state.done(task, False, (exc, format_exception(exc)))
        raise
    return True


def _cancel_all(executor, tasks) -> None:
    in_process = executor.capabilities.in_process
    for task in tasks:
        executor.cancel_task(task)
        if in_process:  # a thread cannot be killed: ask the call itself to stop
            _settle_quietly(task.stop)


def _settle_quietly(step, *args) -> None:
    """A step of ending an interrupted run; if it fails, say so and go on settling,
    so that the exception that ended the run is the one raised."""
    try:
        step(*args)
    except Exception:
        logger.exception("while ending an interrupted run")


class _Answer:
    """What the adapter brings back to the loop: the reply to its request, or the
    exception met while serving it (Ctrl-C, a cancelled asyncio task)."""

    __slots__ = ("error", "reply")

    def __init__(self, reply: Any = None, error: BaseException | None = None):
        self.reply = reply
        self.error = error

    def resume(self, steps: Generator) -> Any:
        """The loop's next request, or a :class:`_Finished` with its results."""
        try:
            return steps.send(self.reply) if self.error is None else steps.throw(self.error)
        except StopIteration as stop:
            return _Finished(stop.value)


@attrs.frozen
class _Finished:
    results: list


_NOTHING = _Answer()


def drive(state: RunState, executor: Any) -> list[DispatchResult]:
    """Run ``state`` on ``executor`` with blocking waits; returns the results."""
    if executor.capabilities.synchronous:
        inbox, report = None, state.done
    else:
        inbox = queue.SimpleQueue()

        def report(task, ok, payload, _put=inbox.put):
            _put((task, ok, payload))

    with termination.on_sigterm() as on_sigterm:
        steps = _steps(state, executor, report, on_sigterm)
        answer = _NOTHING
        while True:
            try:
                while True:  # (inside the try: a signal's handler may run at the loop's jump back)
                    request = answer.resume(steps)
                    if type(request) is _Finished:
                        return request.results
                    answer = _serve(state, executor, inbox, request)
            except BaseException as exc:
                if steps.gi_frame is None:  # the loop itself ended with it
                    raise
                # a signal's exception (Ctrl-C, SIGTERM) raised here, between the
                # loop's steps: the loop settles the run as if it had met it
                answer = _Answer(error=exc)


def _serve(state: RunState, executor, inbox: queue.SimpleQueue | None, request) -> _Answer:
    """Do what the loop asked: gather values, or wait for reports (a synchronous
    executor's tasks have all reported: only sleep) until the time it gave."""
    try:
        if type(request) is Gather:
            return _Answer(executor.gather_values(request.handles))
        timeout = SIGNAL_CHECK if request is None else min(SIGNAL_CHECK, max(0.0, request - state.clock()))
        if inbox is None:
            time.sleep(timeout)
            return _NOTHING
        state.done(*inbox.get(timeout=timeout))
        while True:
            state.done(*inbox.get_nowait())
    except queue.Empty:
        return _NOTHING
    except BaseException as exc:  # Ctrl-C while waiting: the loop settles the run
        return _Answer(error=exc)


async def drive_async(state: RunState, executor: Any) -> list[DispatchResult]:
    """Run ``state`` on ``executor`` inside the running asyncio loop."""
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue | None = None
    if executor.capabilities.synchronous:
        report = state.done
    else:
        inbox = asyncio.Queue()
        loop_thread = threading.get_ident()

        def report(task, ok, payload):
            if threading.get_ident() == loop_thread:
                inbox.put_nowait((task, ok, payload))
            else:
                with contextlib.suppress(RuntimeError):  # a late report: the loop has closed
                    loop.call_soon_threadsafe(inbox.put_nowait, (task, ok, payload))

    steps = _steps(state, executor, report)
    request = _NOTHING.resume(steps)
    while type(request) is not _Finished:
        answer = await _serve_async(state, executor, inbox, request)
        request = answer.resume(steps)
    return request.results


async def _serve_async(state: RunState, executor, inbox: asyncio.Queue | None, request) -> _Answer:
    """:func:`_serve` on the event loop."""
    try:
        if type(request) is Gather:
            return _Answer(await executor.gather_values_async(request.handles))
        if inbox is None:
            await asyncio.sleep(max(0.0, request - state.clock()))
        elif inbox.empty():
            wait = inbox.get() if request is None else asyncio.wait_for(inbox.get(), request - state.clock())
            state.done(*await wait)
        while inbox is not None and not inbox.empty():
            state.done(*inbox.get_nowait())
    except TimeoutError:
        pass
    except BaseException as exc:  # cancelled while waiting: the loop settles the run
        return _Answer(error=exc)
    return _NOTHING
