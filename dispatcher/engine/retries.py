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

__all__ = ["JITTER", "Backoff", "retry_limits", "should_retry"]

JITTER = random.Random()
"""The random numbers of the backoffs' jitter: a generator of the library's own, so
that retries leave the program's ``random`` module, and its seed, as they were."""


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

    def delay(self, attempt: int, rand: Callable[[], float] = JITTER.random) -> float:
        base = min(self.max_delay, self.first_delay * self.factor ** (attempt - 1))
        return max(0.0, base * (1.0 + self.jitter * (2.0 * rand() - 1.0)))


def retry_limits(node, options) -> tuple[int, tuple]:
    """``node``'s ``retries`` and ``retry_on``, or the run's ``options``' where the node
    has none. Options set by hand on the node are checked and normalised in place
    (TypeError or ValueError naming the node)."""
    retries, retry_on = node.retries, node.retry_on
    if retries is not None and type(retries) is not int:
        retries = node.retries = check_retries(retries, f"the retries of node {node.label!r}")
    if retry_on is not None and type(retry_on) is not tuple:
        retry_on = node.retry_on = retry_predicates(retry_on, f"the retry_on of node {node.label!r}")
    if retries is None:
        retries = options.retries
    return retries, (options.retry_on if retry_on is None else retry_on)


def should_retry(node, exc, attempt: int, retries: int, retry_on: tuple, options) -> bool:
    """Does attempt ``attempt`` of ``node``, which failed with ``exc``, run again?
    ``options.always_retry_on`` apply to every node besides its ``retry_on``."""
    if attempt > retries:
        return False
    always = options.always_retry_on
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
