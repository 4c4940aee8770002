"""The nodes the engine calls itself, in the thread that drives the run: light
nodes (indexing, collecting), and every node without a timeout on an executor
that runs nodes inline (:class:`~dispatcher.SerialExecutor`).

Policy: the call is a transition of :class:`~dispatcher.engine.RunState`, READY to
DONE, BACKING_OFF or FAILED, made at once; an ``async def`` node's coroutine is run
to its end here; any exception but ``KeyboardInterrupt`` (which ends the run)
fails the attempt, ``SystemExit`` too, as on every executor. Its attempt ran on
the ``"driver"``, from just before the call to just after (see
:mod:`dispatcher.attempts`).
"""

from __future__ import annotations

from typing import Any

from ..attempts import Attempt
from ..checks import nout_error
from ..coroutines import COROUTINE, finish
from ..results import format_exception
from . import failures

__all__ = ["call_here"]


def call_here(run: Any, node, func, args, kwargs, grant) -> None:
    """Call ``node``'s prepared ``func`` here and take its outcome."""
    if run.hooks:
        run._submitted(node)
    begun = run.clock()
    try:
        value = func(*args, **kwargs) if kwargs else func(*args)
        if type(value) is COROUTINE:  # no call for a plain value
            value = finish(value)
    except KeyboardInterrupt:
        run.interrupted = node  # (what a run stopped by SIGTERM says was running)
        raise  # Ctrl-C, here in the thread that drives the run: the run ends
    except BaseException as exc:  # SystemExit too: it fails the node
        run._cores_back(grant)
        if run.on_attempt or node in run.keep:
            _attempt(run, node, begun, exc, grant)
        failures.failed_attempt(run, node, exc, format_exception(exc), run._attempt(node))
        return
    if grant is not None:
        run._cores_back(grant)
    wrong = None if node.nout is None else nout_error(node.label, node.nout, value)
    if run.on_attempt or node in run.keep:
        _attempt(run, node, begun, wrong, grant)
    else:
        run.ready_at.pop(node, None)
    if wrong is not None:
        failures.failed_attempt(run, node, wrong, format_exception(wrong), run._attempt(node))
        return
    run._finish_ok(node, value)


def _attempt(run: Any, node, begun: float, error, grant) -> None:
    ready = run.ready_at.pop(node, run.t_start)
    number = run.attempts.get(node, 1) if run.attempts else 1  # (run._attempt, a call less)
    attempt = Attempt(node, number, ready, begun, begun, run.clock(), "driver", error, grant)
    run._attempt_ended(attempt)
