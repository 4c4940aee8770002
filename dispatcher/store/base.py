"""The store interface: what a run asks of a persistent store of node values.

A store maps a node's key (32 hex digits, :mod:`dispatcher.store.keys`) to the
value the node had. A run with a store (``dp.run(..., store=...)``) asks it:

``load(key)``
    the value (raises ``KeyError`` if absent, :class:`~dispatcher.store.entries.
    CorruptEntry` if the entry cannot be read back: the run then recomputes it);
``save(key, value, function)``
    keep ``value`` (``function`` names what made it, for listings); never leave a
    half-written entry: a reader sees the whole entry or none. It may be called by
    several processes at once, for the same key too. It returns the entry's size
    in bytes, or None (a worker then always sends the value back with its report);
``shared``
    True if a copy of the store pickled to another process reads and writes the same
    entries (a directory, a database server): the workers of process, MPI and dask
    executors then write the values they make themselves. False (the default, right
    for a store held in the driver's memory) keeps every write in the driver;
``contains(key)``
    whether an entry is there, without reading it; ``present_keys(lookups)``
    optionally gives every key at once where that costs less than ``lookups``
    calls of ``contains`` (a run about to look for many);
``begin_run()`` / ``claim(key, run)`` / ``release(key, run)`` / ``end_run(run)``
    the coordination of several runs sharing the store: a run claims a node before
    computing it, and ``claim`` is False while another live run holds it (the run
    then waits for the entry, or for the claim to lapse). The defaults do no
    coordination (every claim succeeds), which is right for a store that one run
    uses at a time;
``entries()`` / ``delete(key)``
    what ``python -m dispatcher.store`` lists and prunes.

Writing a store of another kind (a key-value database, an object store through
fsspec) takes a subclass with ``load``, ``save``, ``contains``, ``entries`` and
``delete``; :func:`~dispatcher.store.entries.encode` and
:func:`~dispatcher.store.entries.decode` give the bytes of an entry and check them.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any

import attrs

__all__ = ["Entry", "Store", "StoreError"]


class StoreError(Exception):
    """A store cannot be used as asked (its path is not a store, it cannot be read)."""


@attrs.frozen
class Entry:
    """One entry of a store, as listings show it."""

    key: str
    function: str
    nbytes: int
    created: float
    last_used: float


class Store(abc.ABC):
    """Base of persistent stores of node values (see the module docstring)."""

    shared: bool = False
    """Whether a copy pickled to a worker process reaches the same entries."""

    @abc.abstractmethod
    def load(self, key: str) -> Any:
        """The value stored under ``key``."""

    @abc.abstractmethod
    def save(self, key: str, value: Any, function: str) -> int | None:
        """Store ``value`` under ``key``, whole or not at all; its size in bytes."""

    @abc.abstractmethod
    def contains(self, key: str) -> bool:
        """Whether ``key`` has an entry."""

    def present_keys(self, lookups: int) -> set | None:
        """The keys of all entries, if reading them at once costs less than
        ``lookups`` calls of :meth:`contains`; None (the default) otherwise."""
        return None

    @abc.abstractmethod
    def entries(self) -> Iterator[Entry]:
        """Every entry."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the entry of ``key`` (none: nothing happens)."""

    def discard(self, key: str) -> None:
        """An entry could not be read back: remove it so that it is written anew."""
        self.delete(key)

    def begin_run(self) -> Any:
        """A run starts using the store: its token for ``claim`` and ``release``."""
        return None

    def claim(self, key: str, run: Any) -> bool:
        """``run`` is about to compute ``key``: False if another live run is."""
        return True

    def release(self, key: str, run: Any) -> None:  # noqa: B027 - optional: no coordination
        """``run`` no longer computes ``key`` (it stored it, or gave up)."""

    def end_run(self, run: Any) -> None:  # noqa: B027 - optional: no coordination
        """``run`` is over: its claims lapse."""
