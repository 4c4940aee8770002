"""What a worker process does with a run's store: it stores the values it makes.

An executor whose workers are other processes (``Capabilities.store_on_worker``)
gets, for each node the run computes and stores in a ``shared`` store, the node's
function wrapped in a :class:`StoredCall`: the worker calls the function and
writes the value to the store itself, so that the driver never writes it.

**Only the key travels** where the driver has no use for the value (the node is
not an output, no node that runs in the driver and no callback needs it: the
engine says so with ``report_key``): a value of :data:`REPORT_MIN` bytes or more
is then reported as a :class:`~dispatcher.outcomes.Stored` reference, and the
workers that run its dependants read it from the store (mapped, for large
arrays). Smaller values, and every value the driver needs, are reported as usual.

A value that does not hold the node's declared ``nout`` values is not stored (the
engine fails the node), nor is one whose call took longer than the node's timeout
(the engine failed it meanwhile, but a worker that cannot be stopped, such as
dask's, runs the call to its end); a write that fails (a full disk) is logged
where it ran and the value is reported all the same: the run loses nothing but
the entry.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .. import outcomes
from ..checks import nout_error
from ..coroutines import finish
from ..outcomes import Stored

__all__ = ["REPORT_MIN", "StoredCall"]

REPORT_MIN = 1 << 16
"""Bytes from which a stored value the driver does not need is reported by its key:
a smaller one costs less to send with the report than to read again from the store."""

logger = logging.getLogger("dispatcher")


class StoredCall:
    """``func`` that also stores its value under ``key`` in ``store`` (unless the
    call took longer than ``timeout`` seconds). With ``report_key``, a value of
    :data:`REPORT_MIN` bytes or more that was stored is reported as a
    :class:`~dispatcher.outcomes.Stored` reference instead of itself, when the call
    runs in another process than the driver's."""

    __slots__ = ("__wrapped__", "driver", "key", "label", "nout", "report_key", "store", "timeout")

    reports_itself = True  # its value goes as itself or as its key, never held (executors._held)

    def __init__(
        self,
        func,
        store,
        key: str,
        label: str,
        nout: int | None,
        timeout: float | None = None,
        report_key: bool = False,
        driver: str | None = None,
    ):
        self.__wrapped__ = func  # what the job queue's estimates are kept under
        self.store = store
        self.key = key
        self.label = label
        self.nout = nout
        self.timeout = timeout
        self.report_key = report_key
        self.driver = outcomes.PROCESS if driver is None else driver

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        value = finish(self.__wrapped__(*args, **kwargs))
        if self.timeout is not None and time.monotonic() - began > self.timeout:
            return value  # timed out: the run has failed the node, its value is not kept
        if self.nout is not None and nout_error(self.label, self.nout, value) is not None:
            return value  # the run fails the node
        try:
            size = self.store.save(self.key, value, self.label)
        except Exception as exc:
            logger.warning(
                "node %r: its value could not be stored in %r: %s: %s",
                self.label,
                self.store,
                type(exc).__name__,
                exc,
            )
            return value
        if self.report_key and size is not None and size >= REPORT_MIN:
            here = outcomes.PROCESS  # read now: a forked worker has its own
            if here != self.driver:
                return Stored(self.store, self.key, self.label, here)
        return value

    def __reduce__(self):
        return (
            StoredCall,
            (
                self.__wrapped__,
                self.store,
                self.key,
                self.label,
                self.nout,
                self.timeout,
                self.report_key,
                self.driver,
            ),
        )

    def __repr__(self) -> str:
        return f"<StoredCall {self.label!r}>"
