"""When a failed node runs again, and how long it waits first.

Policy: a failure is retried when the node's ``retries`` (or the run's) are not used
up and one of its ``retry_on`` predicates (or the run's), or one of the executor's
``always_retry_on`` (a lost worker), accepts the exception. The retry waits an
exponential, jittered delay (:class:`Backoff`). A predicate that raises ends the run
with a :class:`~dispatcher.DispatcherError` naming it and the node. Options set by
hand on a node after it was made are checked here, when they are first used, and a
wrong one fails that node with an error naming the option.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

from ..checks import check_retries, retry_predicates
from ..nodes import _func_name
from ..results import DispatcherError

__all__ = ["Backoff", "checked_node_options", "should_retry"]


@attrs.frozen
class Backoff:
    """Exponential, jittered delays between the attempts of a failed node.

    Attempt ``k`` (1 for the first retry) waits
    ``min(max_delay, first_delay * factor ** (k - 1))``, scaled by a random factor
    in ``[1 - jitter, 1 + jitter]``.
    """

    first_delay: float = 0.05
    factor: float = 2.0
    max_delay: float = 10.0
    jitter: float = 0.1

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        base = min(self.max_delay, self.first_delay * self.factor ** (attempt - 1))
        return max(0.0, base * (1.0 + self.jitter * (2.0 * rand() - 1.0)))


def checked_node_options(node) -> None:
    """Check the ``retries`` and ``retry_on`` set by hand on ``node`` (raises
    TypeError or ValueError naming the node), normalising them in place."""
    if node.retries is not None:
        node.retries = check_retries(node.retries, f"the retries of node {node.label!r}")
    if node.retry_on is not None:
        node.retry_on = retry_predicates(node.retry_on, f"the retry_on of node {node.label!r}")


def should_retry(node, exc, attempt: int, retries: int, retry_on: tuple, always: tuple) -> bool:
    """Does attempt ``attempt`` of ``node``, which failed with ``exc``, run again?"""
    if attempt > retries:
        return False
    return bool(retry_on and _accepts(node, exc, retry_on)) or bool(always and _accepts(node, exc, always))


def _accepts(node, exc, predicates) -> bool:
    for pred in predicates:
        try:
            if pred(exc):
                return True
        except Exception as err:
            raise DispatcherError(
                f"retry_on predicate {_func_name(pred)!r} raised for node {node.label!r}: "
                f"{type(err).__name__}: {err}"
            ) from err
    return False
