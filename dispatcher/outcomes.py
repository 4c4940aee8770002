"""What a node keeps of its latest run: its value, or one of these outcomes.

A node's ``_outcome`` is :data:`NEVER` before it runs, its value once it has, a
:class:`Failure` holding its error if it failed, :data:`RELEASED` if a run dropped
its value once no other node needed it, or :class:`Remote` if the value stayed
where it was computed (on a dask worker). :meth:`DispatchNode.fetch
<dispatcher.DispatchNode.fetch>` reads it. The two markers survive pickling as
themselves, so a node sent to a worker and back keeps its state.
"""

from __future__ import annotations

from typing import Any

from .results import DependencyError

__all__ = ["NEVER", "RELEASED", "Failure", "Remote"]


class _Marker:
    """A named outcome, unpickled as the one object of its name."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self):
        return (_marker, (self.name,))


def _marker(name: str) -> _Marker:
    return _MARKERS[name]


NEVER = _Marker("NEVER")
"""Outcome of a node that has not run."""
RELEASED = _Marker("RELEASED")
"""Outcome of a node whose value a run released once no other node needed it."""
_MARKERS = {"NEVER": NEVER, "RELEASED": RELEASED}


class Failure:
    """Outcome of a node that failed: holds its :class:`DependencyError`."""

    __slots__ = ("error",)

    def __init__(self, error: DependencyError):
        self.error = error


class Remote:
    """Outcome of a node whose value stayed where it was computed (on a dask
    worker): ``owner.fetch_value(node, handle)`` brings it back on ``fetch()``."""

    __slots__ = ("handle", "owner")

    def __init__(self, handle: Any, owner: Any):
        self.handle = handle
        self.owner = owner
