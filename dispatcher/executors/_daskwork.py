"""What runs on a dask worker for each node: its call inside a small guard.

Policy: an exception that is not an ``Exception`` (``SystemExit``,
``KeyboardInterrupt``) fails the node as on every executor instead of taking the
worker down: it travels as the bytes of its outcome inside a :class:`NodeExit`,
which the client unwraps. A coroutine an ``async def`` node returns is run to its
end; a node declared ``nout=k`` is checked. When the call began and ended, and on
which worker, goes to the client as an event of the :data:`ATTEMPTS` topic (the
value itself stays as dask keeps it). A function dask would pickle by value
travels as bytes that keep the file name of its code, so a traceback from a worker
names the real file and line.
"""

from __future__ import annotations

import pickle
import time
import types

from ..checks import nout_error
from ..coroutines import finish
from ._daskcompat import log_with_result
from ._procworker import failure
from ._wire import pickle_dumps

__all__ = ["ATTEMPTS", "CORES", "NodeExit", "by_value", "call_node", "declare_cores"]

CORES = "cores"
"""The dask worker resource that counts a worker's cores, for the nodes that ask for cores."""
ATTEMPTS = "dispatcher-attempts"
"""The event topic of ``[key, start, end, worker address]`` for each call (wall clock)."""


class NodeExit(Exception):
    """Carries an exception that is not an ``Exception`` (``SystemExit``...) out of
    a dask worker, which would otherwise shut down, as the bytes of its outcome
    (:func:`~dispatcher.executors._procworker.failure`); the client unwraps it."""


def call_node(func, nout, label, args, kwargs, *after):
    """A node's call on a dask worker, run once the ``after`` values exist (graph
    edges that pass no value); see the module docstring. ``func`` may come as the
    bytes :func:`by_value` made of it."""
    if type(func) is bytes:
        func = pickle.loads(func)
    start = time.time()
    try:
        value = finish(func(*args, **kwargs))
    except Exception:
        raise
    except BaseException as exc:  # it travels in our own encoding: dask's loses SystemExit.code
        raise NodeExit(pickle_dumps(failure(exc))) from None
    finally:
        _tell_attempt(start)
    if nout is not None:
        error = nout_error(label, nout, value)
        if error is not None:
            raise error
    return value


def _tell_attempt(start: float) -> None:
    from distributed import get_worker

    try:
        worker = get_worker()
        log_with_result(worker, ATTEMPTS, [worker.get_current_task(), start, time.time(), worker.address])
    except Exception:  # not on a dask worker (a local scheduler), or none to tell: the call's outcome stands
        return


def by_value(func):
    """``func`` as bytes if dask would pickle it by value (it comes from ``__main__``
    or is local to another function), pickled with the file name of its code kept,
    so that a traceback from a worker names the real file and line (see
    :class:`~dispatcher.executors._wire.Pickler`); bytes, because the
    scheduler unpickles a graph and pickles each task again for its worker."""
    if isinstance(func, types.FunctionType) and (func.__module__ == "__main__" or "<" in func.__qualname__):
        return pickle_dumps(func)
    return func


async def declare_cores(dask_worker) -> None:
    """Run on each worker of the embedded cluster: its threads are its cores, a
    resource the nodes that ask for cores take."""
    await dask_worker.set_resources(**{CORES: dask_worker.state.nthreads})
