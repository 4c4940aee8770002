"""What a worker process does with a run's store: it stores the values it makes.

An executor whose workers are other processes (``Capabilities.store_on_worker``)
gets, for each node the run computes and stores, the node's function wrapped in a
:class:`StoredCall`: the worker calls the function, writes the value to the store
itself, then reports it as usual, so that the driver never writes it (and, where
the value stays on the worker, as on dask, it never travels for the store). A
value that does not hold the node's declared ``nout`` values is not stored (the
engine fails the node); a write that fails (a full disk) is logged where it ran
and the value is reported all the same: the run loses nothing but the entry.
"""

from __future__ import annotations

import logging
from typing import Any

from ..checks import nout_error
from ..coroutines import finish

__all__ = ["StoredCall"]

logger = logging.getLogger("dispatcher")


class StoredCall:
    """``func`` that also stores its value under ``key`` in ``store``."""

    __slots__ = ("__wrapped__", "key", "label", "nout", "store")

    def __init__(self, func, store, key: str, label: str, nout: int | None):
        self.__wrapped__ = func  # what the job queue's estimates are kept under
        self.store = store
        self.key = key
        self.label = label
        self.nout = nout

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        value = finish(self.__wrapped__(*args, **kwargs))
        if self.nout is None or nout_error(self.label, self.nout, value) is None:
            try:
                self.store.save(self.key, value, self.label)
            except Exception as exc:
                logger.warning(
                    "node %r: its value could not be stored in %r: %s: %s",
                    self.label,
                    self.store,
                    type(exc).__name__,
                    exc,
                )
        return value

    def __reduce__(self):
        return (StoredCall, (self.__wrapped__, self.store, self.key, self.label, self.nout))

    def __repr__(self) -> str:
        return f"<StoredCall {self.label!r}>"
