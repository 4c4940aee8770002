"""A failed attempt: the node runs again after a delay, or fails for good.

Transitions of :class:`~dispatcher.engine.RunState`, kept apart as the
pipelining ones are: :func:`failed_attempt` decides by the rules of
:mod:`~dispatcher.engine.retries` (and fails a node whose options set by hand are
wrong), :func:`back_off` puts a node to wait for its next attempt (BACKING_OFF),
telling the log and the callbacks; :func:`fail` fails a node for good, and with
it every node downstream; :func:`wrong_nout` and :func:`checked_timeout` fail a
node whose value or hand-set timeout is not what it must be. A ``retry_on``
predicate that raises ends a run; in an open run (the calls of ``submit``, each
independent of the others) it fails only the call it was asked about.
"""

from __future__ import annotations

import logging
from typing import Any

from ..attempts import record
from ..checks import check_timeout, nout_error
from ..outcomes import Failure, Stored
from ..results import DependencyError, DispatcherError, format_exception
from . import pipelining, release
from .callbacks import notify
from .plan import kids
from .records import NodeState, Task, timeout_error
from .retries import retry_limits, should_retry

__all__ = ["attempt_error", "back_off", "checked_timeout", "expire", "fail", "failed_attempt", "wrong_nout"]

logger = logging.getLogger("dispatcher")


def back_off(run: Any, node, exc, attempt: int, retries: int) -> None:
    """A transition of :class:`~dispatcher.engine.RunState`: ``node`` failed and is
    retried: -> BACKING_OFF, due after the backoff delay."""
    if run.pipelined:
        pipelining.withdraw(run, node)
    run.state[node] = NodeState.BACKING_OFF
    delay = run.options.backoff.delay(attempt, run.rand)
    run.attempts[node] = attempt + 1
    run.timers.retry_after(delay, node)
    logger.warning(
        "node %r failed (attempt %d of %d), retrying in %.3g s: %s: %s",
        node.label,
        attempt,
        retries + 1,
        delay,
        type(exc).__name__,
        exc,
    )
    if run.callbacks:
        notify(run.callbacks, "on_retry", node, node, exc, attempt, delay)


def failed_attempt(run: Any, node, exc, tb, attempt: int) -> None:
    """A transition of :class:`~dispatcher.engine.RunState`: attempt ``attempt`` of
    ``node`` failed with ``exc`` (its traceback ``tb``): retry it, or fail it."""
    try:
        limit, retry_on = retry_limits(node, run.options)
    except (TypeError, ValueError) as bad:  # set by hand on the node, wrongly
        bad.__context__ = exc
        fail(run, node, DependencyError(bad, format_exception(bad), node, attempt))
        return
    try:
        again = run.error is None and should_retry(node, exc, attempt, limit, retry_on, run.options)
    except DispatcherError as broken:  # a retry_on predicate raised
        if run.intake is None:
            raise  # it ends the run
        # an open run serves independent calls: only this one fails, with the predicate's error
        broken.__context__ = exc
        fail(run, node, DependencyError(broken, format_exception(broken), node, attempt))
        return
    if again:
        back_off(run, node, exc, attempt, limit)
        return
    error = DependencyError(exc, tb, node, attempt)
    error.__cause__ = exc
    logger.info("node %r failed: %s: %s", node.label, type(exc).__name__, exc)
    fail(run, node, error)


def fail(run: Any, node, error: DependencyError) -> None:
    """A transition of :class:`~dispatcher.engine.RunState`: ``node`` -> FAILED, and
    every node downstream fails with the same error (once its other dependencies
    have finished); with ``throw_error`` the run ends."""
    if run.pipelined:
        pipelining.withdraw_dependants(run, node)
    if run.cache is not None:
        run.cache.failed(node)
    run.errors[node] = error
    run.state[node] = NodeState.FAILED
    run.remaining -= 1
    node._outcome = Failure(error)
    if run.callbacks:
        notify(run.callbacks, "on_fail", node, node, error)
    if run.throw_error and run.error is None:
        run.error = error
    entry = run.children.get(node)
    if entry is not None:
        poison = run.poison
        for kid in kids(entry):
            if kid not in poison:
                poison[kid] = error
            run._dependency_finished(kid)
    if run.needed is not None:
        release.after(run, node)


def attempt_error(run: Any, node, ok: bool, payload) -> BaseException | None:
    """The error an attempt that reported ``ok, payload`` ends with: its exception, or
    the error of a value that does not hold the node's ``nout`` values (which fails
    it), or None."""
    if not ok:
        return payload[0]
    if node.nout is None or run.pipelined or type(payload) is Stored:
        return None  # (a Stored value was checked by the worker that stored it)
    return nout_error(node.label, node.nout, payload)


def wrong_nout(run: Any, node, value, attempt: int) -> bool:
    """Fail ``node`` if ``value`` does not hold its declared ``nout`` values."""
    wrong = nout_error(node.label, node.nout, value)
    if wrong is not None:
        failed_attempt(run, node, wrong, format_exception(wrong), attempt)
    return wrong is not None


def checked_timeout(run: Any, node, value) -> float | None:
    """The ``timeout`` set by hand on ``node``, as a number of seconds; None when
    it is wrong, and the node failed with an error naming it (READY -> FAILED)."""
    try:
        return check_timeout(value, f"the timeout of node {node.label!r}")
    except (TypeError, ValueError) as exc:
        fail(run, node, DependencyError(exc, format_exception(exc), node))
        return None


def expire(run: Any) -> list[Task]:
    """:meth:`RunState.expire <dispatcher.engine.RunState.expire>`: fail the tasks past
    their deadline (RUNNING -> BACKING_OFF or FAILED) and ready the nodes whose delay
    is over; the timed-out tasks, whose work the driver asks the executor to cancel."""
    expired = []
    for what in run.timers.due(run.running):
        if type(what) is Task:
            node = what.node
            del run.running[node]
            run._cores_back(what.cores)
            what.expired = True
            expired.append(what)
            why = run.options.on_timeout.format(where=what.where)
            exc = timeout_error(node.label, what.timeout, why)
            if run.on_attempt or node in run.keep:
                run._attempt_ended(record(what, exc, run.clock()))
            failed_attempt(run, node, exc, format_exception(exc), what.attempt)
        elif run.error is None and run.state.get(what) in (NodeState.BACKING_OFF, NodeState.CLAIMED):
            run._due(what)
    return expired
