"""Persistent results: runs that resume after a crash and skip what is already known.

``dp.run(executor, outputs, store="runs/fits")`` (a path, or a :class:`Store`)
keeps the value of every node it computes under the node's *key*, a hash of its
function's code, its arguments' contents and its dependencies' keys
(:mod:`~dispatcher.store.keys`). A later run, on any executor, skips every node
whose key is present: a crashed, interrupted or failed run goes on where it
stopped, and after editing one function only that function's nodes and those
downstream run again. What the run does with the store, node by node, is the
engine's policy (:mod:`dispatcher.engine.caching`).

:class:`FileStore` keeps entries in a directory that any number of runs may share
at once, on one machine or across the hosts of a batch system
(:mod:`~dispatcher.store.files`); :class:`Store` is the interface for stores of
other kinds (:mod:`~dispatcher.store.base`); ``python -m dispatcher.store PATH``
lists and prunes a store.
"""

from __future__ import annotations

import os
from typing import Any

from .base import Entry, Store, StoreError
from .entries import CorruptEntry, UnreadableValue
from .files import FileStore

__all__ = ["CorruptEntry", "Entry", "FileStore", "Store", "StoreError", "UnreadableValue", "open_store"]


def open_store(store: Any) -> Store:
    """``store`` as a :class:`Store`: a path gives a :class:`FileStore`."""
    if isinstance(store, Store):
        return store
    if isinstance(store, (str, os.PathLike)):
        return FileStore(store)
    raise TypeError(f"store must be a path or a dispatcher.Store, got {type(store).__name__}: {store!r:.80}")
