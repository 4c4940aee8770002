"""A run stopped by SIGTERM, the way batch systems end a job.

Slurm's ``scancel`` and a job's time limit send SIGTERM to every process of the
job, then SIGKILL some seconds later (``KillWait``, 30 s by default). Python's
default for SIGTERM is to die at once, saying nothing: the script's nodes would
simply vanish with it.

Policy: while a blocking run is driven from the main thread, and SIGTERM has no
handler of the script's own (its handler is the default), :func:`on_sigterm`
makes SIGTERM raise :class:`~dispatcher.Terminated` in the driver. The run stops
as it does after Ctrl-C (nothing new starts, running nodes are cancelled and
their worker processes or ranks stopped), then :func:`fail_unfinished` fails
every node it had not finished with that error, each saying whether it was
running or had not started; the run returns those results (or, with
``throw_error``, raises the error of a node that was running), so the script can
say what was lost, and it ends before the SIGKILL. The previous handler is put
back when the run ends. Only the outermost run (the one that set the handler)
turns the signal into results; a run nested inside a node passes it on.
A script that sets its own SIGTERM handler keeps it, and asyncio runs
(``run_async``) leave the signal to the event loop's owner.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from ..outcomes import Failure
from ..results import DependencyError, Terminated, format_exception
from .records import NodeState

__all__ = ["fail_unfinished", "on_sigterm"]

SETTLE_SECONDS = 3.0
"""Seconds a run stopped by SIGTERM waits for its cancelled tasks to report before
it abandons them (at most the driver's own wait): the job has Slurm's
``KillWait`` (30 s by default) before SIGKILL, to fail its nodes and say so."""

MESSAGE = "the run was stopped by SIGTERM (a batch system cancelled the job, scancel, or its time limit came)"


def _raise_terminated(signum, frame) -> None:
    raise Terminated(MESSAGE)


@contextlib.contextmanager
def on_sigterm() -> Iterator[bool]:
    """Within the block, SIGTERM raises :class:`~dispatcher.Terminated` in the main
    thread, if it would otherwise kill the process; yields whether it does."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):
        previous = None
    if previous is not signal.SIG_DFL:
        yield False
        return
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield True
    finally:
        signal.signal(signal.SIGTERM, previous)


def fail_unfinished(run: Any, exc: Terminated, running: list) -> DependencyError | None:
    """A transition of :class:`~dispatcher.engine.RunState` after the run was stopped
    by ``exc``: every node that neither finished nor failed -> FAILED with it;
    ``running`` are the nodes that were running then. Returns the error of the
    first of those (else of the first node failed), for ``throw_error``."""
    tb = format_exception(exc)
    first = None
    was_running = set(running)
    values, errors, state = run.values, run.errors, run.state
    for node in run.waiting:
        if node in values or node in errors:
            continue
        when = "while the node was running" if node in was_running else "before the node started"
        reason = Terminated(f"{MESSAGE} {when}")
        error = DependencyError(reason, tb, node, run._attempt(node))
        error.__cause__ = exc
        errors[node] = error
        state[node] = NodeState.FAILED
        node._outcome = Failure(error)
        if first is None or (node in was_running and first.node not in was_running):
            first = error
    return first
