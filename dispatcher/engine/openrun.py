"""An open run: a run that takes more nodes while it runs, and forgets each node it
is done with.

This is what serves an executor's ``submit``: one run per executor takes every call
submitted while it lasts, as dask's scheduler takes each ``client.submit``, so that
a stream of calls is one graph, run by one driver, rather than a run (and a driver
thread) per burst of calls.

Policy:

* **Intake.** The run is made with an *intake*, an object whose ``take(run,
  final)`` its driver calls between its steps, in its own thread (the only one that
  advances the state): it gives the nodes to add and ``outcome_of`` for their
  dependencies (below), and :func:`extend` adds them. With ``final`` the run has
  nothing left to do and ends unless the intake gives nodes; an intake that gives
  none then must take no more for this run (its next call starts another run).
  Whoever feeds the intake wakes the driver with the run's ``wake`` (see
  :mod:`~dispatcher.engine.driver`; a synchronous executor's driver takes more
  only once what it has is done).
* **Dependencies.** A node added may depend on a node of the run (running or
  finished and still held), on a node the caller knows the outcome of
  (``outcome_of(dep)`` gives ``(True, value)`` or ``(False, DependencyError)``,
  for instance a call of an earlier run), or on a node never seen, which joins the
  run with it. Nodes are made after their dependencies, so no cycle can form.
* **Order.** The nodes added that are ready at once queue *behind* the nodes
  already ready, in the order given (first submitted, first started); nodes that
  become ready as their dependencies finish go first, as in every run (depth
  first), so that a chain of calls is finished before new calls start.
* **Forgetting.** The run keeps nothing for the caller: its callbacks
  (``on_finish``/``on_fail``) are how it tells each node's outcome, and it has no
  outputs to return. A node is forgotten (its value, error, state and counts
  dropped) once it has finished and no node of the run still waiting needs it;
  an outcome given by ``outcome_of`` is forgotten once its takers have finished.
  So a run fed calls for hours holds only what its unfinished nodes need.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

__all__ = ["after", "extend", "open_state", "take_more"]


def open_state(run: Any) -> None:
    """Make a just-planned run open: ready nodes in a deque (new ones queue behind),
    each value counted by its takers, nothing kept for outputs."""
    if run.pipelined:
        raise ValueError("an open run cannot be pipelined: its values would stay on the workers")
    run.ready = collections.deque(run.ready)
    run.needed = {}
    run.keep = set()
    run.outputs = []


def take_more(run: Any, final: bool) -> bool:
    """Add the nodes the run's intake gives; True if it gave some."""
    nodes, outcome_of = run.intake.take(run, final)
    if nodes:
        extend(run, nodes, outcome_of)
    return bool(nodes)


def extend(run: Any, nodes: list, outcome_of: Callable[[Any], tuple | None]) -> None:
    """Add ``nodes`` (and the nodes never seen that they depend on) to the open run
    ``run``; ``outcome_of(dep)`` gives the outcome of a dependency that is not a node
    of the run, or None for a node to run."""
    waiting, children, values, errors = run.waiting, run.children, run.values, run.errors
    needed, poison, deps_of = run.needed, run.poison, run.deps_of
    ready_now: list = []
    stack = [n for n in reversed(nodes) if n not in waiting]
    while stack:
        node = stack.pop()
        if node in waiting:
            continue
        count = 0
        for dep in deps_of(node):
            needed[dep] = needed.get(dep, 0) + 1  # one more taker: it is held until it finishes
            if dep in values:
                continue
            if dep in errors:
                poison.setdefault(node, errors[dep])
                continue
            if dep not in waiting:
                outcome = outcome_of(dep)
                if outcome is not None:
                    ok, value = outcome
                    if ok:
                        values[dep] = value
                    else:
                        errors[dep] = value
                        poison.setdefault(node, value)
                    continue
                stack.append(dep)  # a node never seen: it runs in this run
            count += 1
            entry = children.get(dep)
            if entry is None:
                children[dep] = node
            elif type(entry) is list:
                entry.append(node)
            else:
                children[dep] = [entry, node]
        waiting[node] = count
        run.total += 1
        run.remaining += 1
        if count == 0:
            ready_now.append(node)
    if ready_now:
        now = run.clock()
        for node in ready_now:
            run.ready_at[node] = now
        run.ready.extendleft(ready_now)  # behind those ready before, first given first


def after(run: Any, node) -> None:
    """``node`` of the open run ``run`` finished or failed (its callbacks were told):
    forget what no waiting node needs any more, itself included. (A node finishes
    only once its dependencies have: each is finished, or was given.)"""
    needed = run.needed
    for dep in run.deps_of(node):
        n = needed.get(dep)
        if n is None:
            continue
        if n > 1:
            needed[dep] = n - 1
        else:
            _forget(run, dep)
    if not needed.get(node):
        _forget(run, node)


def _forget(run: Any, node) -> None:
    for held in (run.needed, run.values, run.errors, run.waiting, run.state, run.children, run.attempts):
        held.pop(node, None)
    run.ready_at.pop(node, None)
