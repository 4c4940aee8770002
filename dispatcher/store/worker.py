"""What a worker process does with a run's store: it stores the values it makes.

An executor whose workers are other processes (``Capabilities.store_on_worker``)
gets, for each node the run computes and stores, the node's function wrapped in a
:class:`StoredCall`: the worker calls the function, writes the value to the store
itself, then reports it as usual, so that the driver never writes it (and, where
the value stays on the worker, as on dask, it never travels for the store). A
value that does not hold the node's declared ``nout`` values is not stored (the
engine fails the node), nor is one whose call took longer than the node's timeout
(the engine failed it meanwhile, but a worker that cannot be stopped, such as
dask's, runs the call to its end); a write that fails (a full disk) is logged where it ran
and the value is reported all the same: the run loses nothing but the entry.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..checks import nout_error
from ..coroutines import finish

__all__ = ["StoredCall"]

logger = logging.getLogger("dispatcher")


class StoredCall:
    """``func`` that also stores its value under ``key`` in ``store`` (unless the
    call took longer than ``timeout`` seconds)."""

    __slots__ = ("__wrapped__", "key", "label", "nout", "store", "timeout")

    def __init__(self, func, store, key: str, label: str, nout: int | None, timeout: float | None = None):
        self.__wrapped__ = func  # what the job queue's estimates are kept under
        self.store = store
        self.key = key
        self.label = label
        self.nout = nout
        self.timeout = timeout

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        value = finish(self.__wrapped__(*args, **kwargs))
        if self.timeout is not None and time.monotonic() - began > self.timeout:
            return value  # timed out: the run has failed the node, its value is not kept
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
        return (StoredCall, (self.__wrapped__, self.store, self.key, self.label, self.nout, self.timeout))

    def __repr__(self) -> str:
        return f"<StoredCall {self.label!r}>"
