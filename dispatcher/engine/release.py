"""Release: a run with ``release=True`` lets go of each value once no remaining
node needs it.

Policy: every value a node of the run takes counts its takers (its dependants in
the run); each taker that finishes, or fails, counts down; at zero the value is
dropped from the run and the node's outcome becomes ``RELEASED``, unless the node
is an output. Values read from the run's store count as computed ones do; values
given to the run (``inputs``, ``input_map``) are the caller's and are kept.
"""

from __future__ import annotations

from typing import Any

from ..outcomes import RELEASED
from . import openrun
from .plan import kids
from .records import NodeState

__all__ = ["after", "needed"]

DONE, RELEASED_ = NodeState.DONE, NodeState.RELEASED


def needed(run: Any) -> dict:
    """How many of the run's nodes take each value (computed or read from the store)."""
    counts = {n: len(kids(k)) for n, k in run.children.items()}
    stored, deps_of = run.stored, run.deps_of
    if stored:
        for node in run.waiting:
            for dep in deps_of(node):
                if dep in stored:
                    counts[dep] = counts.get(dep, 0) + 1
    return counts


def after(run: Any, node) -> None:
    """``node`` finished or failed: the values it took are needed once less."""
    if run.intake is not None:  # an open run forgets whole nodes
        openrun.after(run, node)
        return
    counts, state, keep, stored = run.needed, run.state, run.keep, run.stored
    for dep in run.deps_of(node):
        n = counts.get(dep)
        if n is None:
            continue
        counts[dep] = n = n - 1
        if n == 0 and dep not in keep and (state.get(dep) is DONE or dep in stored):
            run.values.pop(dep, None)
            state[dep] = RELEASED_
            dep._outcome = RELEASED
