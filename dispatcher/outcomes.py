"""What a node keeps of its latest run: its value, or one of these outcomes.

A node's ``_outcome`` is :data:`NEVER` before it runs, its value once it has, a
:class:`Failure` holding its error if it failed, :data:`RELEASED` if a run dropped
its value once no other node needed it, :class:`Remote` if the value stayed
where it was computed (on a dask worker), :class:`Stored` if its worker wrote it
to the run's store and sent only its key, or a value of one of the :data:`UNREAD`
types, kept as its worker pickled it. :meth:`DispatchNode.fetch
<dispatcher.DispatchNode.fetch>` reads it. The two markers survive pickling as
themselves, so a node sent to a worker and back keeps its state.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from .results import DependencyError, DispatcherError, ExecutorError, format_exception

__all__ = ["NEVER", "RELEASED", "UNREAD", "Failure", "Remote", "Stored", "here", "read_here", "value_here"]


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


UNREAD: set = set()
"""The types of the values a run keeps as they were pickled where they were made,
unread (:class:`~dispatcher.executors._wire.Held`, which the worker pool registers:
:mod:`dispatcher.executors._held`); ``value.load()`` reads one."""


def here(value: Any, node=None) -> Any:
    """``value``, read here if it was kept unread (an :data:`UNREAD` type: read once,
    then kept beside its bytes); ``ExecutorError`` if this process cannot unpickle it."""
    if type(value) not in UNREAD:
        return value
    try:
        return value.load()
    except Exception as exc:
        of = "" if node is None else f" of node {node.label!r}"
        raise ExecutorError(f"the outcome{of} cannot be unpickled here: {type(exc).__name__}: {exc}") from exc


def value_here(values: dict, node) -> Any:
    """``values[node]``, read here (see :func:`here`)."""
    return here(values[node], node)


def read_here(node, value: Any) -> tuple:
    """``(ok, payload)`` of a task whose ``value`` was kept unread and is needed
    here: ``value``, read (see :func:`here`), or ``(error, traceback)``."""
    try:
        here(value, node)
    except ExecutorError as exc:
        return False, (exc, format_exception(exc.__cause__))
    return True, value


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

    def fetch(self, node) -> Any:
        return self.owner.fetch_value(node, self.handle)


PROCESS = uuid.uuid4().hex
"""Names this process among all the processes of a run, on any host (a pid does not)."""


def _new_process() -> None:
    global PROCESS
    PROCESS = uuid.uuid4().hex


os.register_at_fork(after_in_child=_new_process)


class Stored:
    """The value of a node that its worker wrote to the run's store and did not
    send: the driver holds this reference, with the store and the key.

    Pickled in the process that made it, it travels as itself (the worker's report
    carries the key only); pickled anywhere else (the driver sending it to a worker
    as a dependant's argument), it is read from the store on arrival, so that the
    value goes from the worker that made it to the one that needs it through the
    store (large arrays mapped from the file), never through the driver.
    :meth:`load` reads it here (``node.fetch()`` does).
    """

    __slots__ = ("key", "label", "origin", "store")

    def __init__(self, store: Any, key: str, label: str, origin: str):
        self.store = store
        self.key = key
        self.label = label
        self.origin = origin  # the process that made it (its PROCESS)

    def load(self) -> Any:
        return load_stored(self.store, self.key, self.label)

    def fetch(self, node) -> Any:
        return self.load()

    def __reduce__(self):
        if self.origin == PROCESS:
            return (Stored, (self.store, self.key, self.label, self.origin))
        return (load_stored, (self.store, self.key, self.label))

    def __repr__(self) -> str:
        return f"<Stored value of {self.label!r} ({self.key})>"


def load_stored(store: Any, key: str, label: str) -> Any:
    """The value of node ``label`` under ``key`` in ``store``; a clear error if it
    cannot be read (pruned or damaged since it was written)."""
    try:
        return store.load(key)
    except Exception as exc:
        raise DispatcherError(
            f"the value of node {label!r}, kept in {store!r} under {key}, cannot be read: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
