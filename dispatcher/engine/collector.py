"""The garbage collector during a run: the objects that exist when a run starts
are not scanned again until it ends.

Why: CPython's cyclic garbage collector walks every tracked object in each full
collection, and a run allocates enough (tasks, results, futures) to start many.
With a graph of a million nodes alive, each full collection walks them all and
costs more than the nodes' own work, so the cost per node grows with the graph.

Policy: while at least one run is going in the process, the objects tracked when
the first of them started sit in CPython's permanent generation (``gc.freeze()``);
when the last one ends they go back to the oldest generation
(``gc.unfreeze()``). Objects made during the run are collected as usual, and the
collector's settings (``gc.isenabled()``, thresholds) are never changed. The cost:
garbage left uncollected when the run started is kept until it ends. The library
leaves the collector alone when it is disabled, and when the program froze objects
itself (``gc.get_freeze_count()`` is not zero when a run starts): a program that
calls ``gc.freeze()`` while a run is going gets those objects back in the oldest
generation when the runs end. A child process forked during a run keeps the
objects frozen for good (shared with its parent until written), and so leaves the
collector alone. Set :data:`FREEZE` to False to turn this off.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator

__all__ = ["FREEZE", "objects_kept"]

FREEZE = True
"""Freeze the objects that exist when a run starts until the runs end."""

_lock = threading.Lock()
_runs = 0  # the runs going that froze, or found the objects frozen by one of them
_froze = False  # the objects in the permanent generation were put there by a run


def _after_fork_in_child() -> None:
    """A child forked during a run keeps what is frozen (shared with its parent
    until written) and starts with no run going and a lock nobody holds."""
    global _lock, _runs, _froze
    _lock, _runs, _froze = threading.Lock(), 0, False


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def objects_kept() -> Iterator[None]:
    """Around a run: the objects tracked now are not scanned until the runs end."""
    global _runs, _froze
    pid = os.getpid()
    with _lock:
        _runs += 1
        if _runs == 1 and FREEZE and gc.isenabled() and gc.get_freeze_count() == 0:
            gc.freeze()
            _froze = True
    try:
        yield
    finally:
        if os.getpid() == pid:  # (a child forked by a node and leaving here started afresh)
            with _lock:
                _runs -= 1
                if _runs == 0 and _froze:
                    _froze = False
                    gc.unfreeze()
