"""The checks of the options that nodes and executors take.

Policy: a wrong option fails where it is given (``@op(...)``, ``Op``, an
executor's constructor), with a message that names the option, the value it got
and what it takes, never later inside a run. The same function checks an option
wherever it is accepted, so that the rules and messages are written once.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = [
    "check_budget",
    "check_cores",
    "check_nout",
    "check_retries",
    "check_timeout",
    "nout_error",
    "retry_predicates",
]


def check_timeout(timeout: Any, where: str = "timeout") -> float | None:
    """``timeout``: None, or a positive, finite number of seconds."""
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, numbers.Real)
        or not timeout > 0
        or math.isinf(timeout)
    ):
        raise ValueError(
            f"{where} must be a positive number of seconds (an int or a float), got "
            f"{type(timeout).__name__}: {timeout!r:.80}"
        )
    return float(timeout) if not isinstance(timeout, int) else timeout


def check_retries(retries: Any, where: str = "retries") -> int:
    """``retries``: a non-negative int."""
    if isinstance(retries, bool) or not isinstance(retries, numbers.Integral) or retries < 0:
        raise ValueError(f"{where} must be a non-negative int, got {type(retries).__name__}: {retries!r:.80}")
    return int(retries)


def check_nout(nout: Any, where: str = "nout") -> int:
    """``nout``: the number of values a node's function returns, a non-negative int."""
    if isinstance(nout, bool) or not isinstance(nout, numbers.Integral) or nout < 0:
        raise ValueError(f"{where} must be a non-negative int, got {type(nout).__name__}: {nout!r:.80}")
    return int(nout)


def _count(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= 1


def check_cores(cores: Any, where: str = "cores") -> tuple[int, int | None] | None:
    """A node's ``cores``: None (it asks for none), ``k`` (exactly k, a positive
    int) or ``(lo, hi)`` (from lo to hi; hi None: as many as are free), as
    ``(lo, hi)``."""
    if cores is None:
        return None
    if _count(cores):
        return (int(cores), int(cores))
    if type(cores) in (tuple, list) and len(cores) == 2:
        lo, hi = cores
        if _count(lo) and (hi is None or (_count(hi) and hi >= lo)):
            return (int(lo), None if hi is None else int(hi))
    raise ValueError(
        f"{where} must be a positive int (exactly that many cores) or a pair (lo, hi) "
        f"with 1 <= lo <= hi (hi None: as many as are free), got {type(cores).__name__}: {cores!r:.80}"
    )


def check_budget(cores: Any, where: str = "cores") -> int | None:
    """An executor's ``cores``: None (what the machine or the allocation gives) or
    a positive int."""
    if cores is None or _count(cores):
        return None if cores is None else int(cores)
    raise ValueError(f"{where} must be a positive int, got {type(cores).__name__}: {cores!r:.80}")


def nout_error(label: str, nout: int, value: Any) -> ValueError | None:
    """The error of a node declared ``nout=k`` whose function returned ``value``
    (None when ``value`` holds exactly ``nout`` values). A ``nout`` set by hand
    on the node that is not a count is the error."""
    if type(nout) is not int:
        try:
            nout = check_nout(nout, f"the nout of node {label!r}")
        except ValueError as exc:
            return exc
    try:
        count = len(value)
    except TypeError:
        return ValueError(
            f"node {label!r} was declared with nout={nout} but its function returned a "
            f"{type(value).__name__}, which has no length"
        )
    if count == nout:
        return None
    return ValueError(
        f"node {label!r} was declared with nout={nout} but its function returned {count} values"
    )


def _is_instance_of(kind: type) -> Any:
    def predicate(error: BaseException) -> bool:
        return isinstance(error, kind)

    predicate.__name__ = predicate.__qualname__ = f"is_{kind.__name__}"
    return predicate


def retry_predicates(retry_on: Any, where: str = "retry_on") -> tuple:
    """``retry_on`` as a tuple of predicates ``exception -> bool``.

    It takes one predicate or an iterable of them. An exception class stands for
    "an instance of this class" (``retry_on=OSError``), as a predicate would be
    called with the exception and any exception instance is true.
    """
    if callable(retry_on) or isinstance(retry_on, type):
        items = (retry_on,)
    else:
        try:
            items = tuple(retry_on)
        except TypeError:
            raise TypeError(
                f"{where} takes a predicate (exception -> bool), an exception class, or a list "
                f"of them, got {type(retry_on).__name__}: {retry_on!r:.80}"
            ) from None
    predicates = []
    for item in items:
        if isinstance(item, type) and issubclass(item, BaseException):
            predicates.append(_is_instance_of(item))
        elif callable(item):
            predicates.append(item)
        else:
            raise TypeError(
                f"{where} takes predicates (exception -> bool) or exception classes, got "
                f"{type(item).__name__}: {item!r:.80}"
            )
    return tuple(predicates)
