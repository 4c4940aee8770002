"""Pipelining: the rules of a run whose nodes are sent before their dependencies finish.

For an executor whose tasks take the *handles* of other tasks (dask futures) as
arguments and resolve them where the work runs (``RunOptions.pipelined``), a node
is sent as soon as each of its dependencies is *sent*, so the whole graph reaches
the backend at once and intermediate values move between workers without coming
back. Every value a task reports is a handle; only the outputs' values are brought
back at the end (:func:`remote_outputs`, :func:`localize`), and a finished node
keeps a :class:`~dispatcher.outcomes.Remote` outcome whose ``fetch()`` asks the
executor.

The semantics stay those of :mod:`dispatcher.engine.state`; what sending early
changes is handled here, with two more states (SENT and PARKED) and two counts
(``unsent`` beside ``waiting``):

* A report is taken only once every dependency has finished in the state's eyes;
  an earlier one (the backend may report a node before its dependency) is
  *parked* until then, so a node failing because a dependency failed is never
  blamed for it.
* A node retried, or failed, *withdraws* the nodes sent on its handle: their tasks
  are revoked (the driver cancels them) and they are sent again with the new
  handle, or fail with the dependency's error.
* A node's ``timeout`` counts from the moment its dependencies have finished,
  when the backend can start it.

These functions are transitions of :class:`~dispatcher.engine.state.RunState`,
kept apart because only a pipelined run takes them.
"""

from __future__ import annotations

from typing import Any

from ..outcomes import Failure, Remote
from ..results import DependencyError
from .plan import kids
from .records import NodeState, Task

__all__ = [
    "given_late",
    "given_value",
    "localize",
    "remote_outputs",
    "resolve",
    "sent",
    "withdraw",
    "withdraw_dependants",
]

WAITING, READY, SENT, RUNNING, PARKED = (
    NodeState.WAITING,
    NodeState.READY,
    NodeState.SENT,
    NodeState.RUNNING,
    NodeState.PARKED,
)
DONE, FAILED = NodeState.DONE, NodeState.FAILED
_NONE = object()


def given_value(run: Any, node, outcome) -> Any:
    """The value an input node gives a run: one still on this pipelined run's
    executor is used there, by its handle."""
    if run.pipelined and type(outcome) is Remote and outcome.owner is run.owner:
        return outcome.handle
    return node.fetch()


def sent(run: Any, task: Task) -> None:
    """The executor accepted ``task``: its handle stands for the node's value, and
    the nodes waiting only for it to be sent are READY."""
    node = task.node
    if run.running.get(node) is not task:
        return  # refused at once: its failure is already recorded
    run.values[node] = task.handle
    _unblock_dependants(run, node)


def given_late(run: Any, node, value) -> None:
    """``node`` gets its value without a task (another run stored it): the nodes
    waiting for it to be sent take the value instead."""
    run.values[node] = value
    _unblock_dependants(run, node)


def _unblock_dependants(run: Any, node) -> None:
    entry = run.children.get(node)
    if entry is not None:
        unsent, state, ready = run.unsent, run.state, run.ready  # (state: what moved)
        for kid in kids(entry):
            n = unsent[kid] - 1
            unsent[kid] = n
            if n == 0 and run.state_of(kid) is WAITING:
                state[kid] = READY
                ready.append(kid)
                run.ready_at[kid] = run.clock()  # ready to be sent: its attempt's ready time


def resolve(run: Any, node) -> None:
    """Every dependency of ``node`` has finished: take its parked report, start its
    clock, or fail it with a dependency's error."""
    state = run.state_of(node)
    if state is FAILED or state is DONE:
        return  # failed at once (a malformed node), before its dependencies finished
    if node in run.poison:
        withdraw(run, node)
        run._finish_error(node, run.poison.pop(node))
    elif state is PARKED:
        run.state[node] = RUNNING
        run._take(*run.parked.pop(node))
    elif state is SENT:
        run.state[node] = RUNNING
        task = run.running[node]
        if task.timeout is not None:
            run.timers.watch(task)


def withdraw(run: Any, node) -> None:
    """``node``'s handle is void: undo sending it and every node sent on it."""
    state, running, values, unsent, stack = run.state, run.running, run.values, run.unsent, [node]
    while stack:
        n = stack.pop()
        task = running.pop(n, None)
        if task is not None:
            run.revoked.append(task)
            run._cores_back(task.cores)
        run.parked.pop(n, None)
        if values.pop(n, _NONE) is _NONE:
            continue  # never sent: no node was sent on it
        if run.state_of(n) not in (FAILED, DONE):
            state[n] = WAITING
        entry = run.children.get(n)
        for kid in kids(entry) if entry is not None else ():
            unsent[kid] += 1
            kid_state = run.state_of(kid)
            if kid_state is READY:
                state[kid] = WAITING
            elif kid_state is SENT or kid_state is PARKED:
                stack.append(kid)


def withdraw_dependants(run: Any, node) -> None:
    """``node`` failed: its handle is void, and the nodes sent on it are doomed, so
    their work stops now."""
    run.values.pop(node, None)
    entry = run.children.get(node)
    for kid in kids(entry) if entry is not None else ():
        if run.state_of(kid) is SENT or run.state_of(kid) is PARKED:
            withdraw(run, kid)


def remote_outputs(run: Any) -> tuple[list, list]:
    """The outputs that finished in this run with their values still handles (not
    those taken from a store)."""
    values, waiting = run.values, run.waiting
    nodes = [n for n in dict.fromkeys(run.outputs) if n in waiting and type(n._outcome) is Remote]
    return nodes, [values[n] for n in nodes]


def localize(run: Any, nodes: list, outcomes: list) -> None:
    """Store the values brought back for ``nodes``: ``(True, value)`` or
    ``(False, (exception, traceback))`` each; a value that cannot come back fails
    its node."""
    for node, (ok, payload) in zip(nodes, outcomes):
        if ok:
            run.values[node] = payload
            node._outcome = payload
            continue
        exc, tb = payload
        del run.values[node]
        error = DependencyError(exc, tb, node)
        error.__cause__ = exc
        run.errors[node] = error
        run.state[node] = FAILED
        node._outcome = Failure(error)
        if run.throw_error and run.error is None:
            run.error = error
