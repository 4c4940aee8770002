"""The record of one attempt at running a node: when it became ready, was handed
to the executor, started and finished where it ran, where that was, and how it
ended.

Policy:

* **One clock.** Times are seconds of the engine's clock, ``time.monotonic()`` of
  the driver's host. A worker thread reads it itself; a worker process, MPI rank
  or dask worker (of this host or another) gives its wall-clock times
  (``time.time()``), which its executor reads on the engine's clock with the
  driver's offset between the two (:func:`wall_offset`).
* **Measured where it ran.** An executor that knows when a call began and ended
  where it ran sets ``task.started`` and ``task.finished`` (and ``task.where``,
  the worker: a thread, a process, a rank, a dask worker); one that does not
  leaves them, and the attempt started when it was handed over and finished when
  its report arrived.
* **A possible order.** ``ready <= submitted <= started <= finished`` always holds:
  a time measured on another clock is brought inside what the driver saw (a call
  cannot start before it was sent, nor end after its report arrived). A pipelined
  node (``DaskExecutor``) is ready when its dependencies have been sent.
* **Always on, kept where asked.** Every attempt is stamped; the record is made
  for the callbacks (:meth:`~dispatcher.Callback.on_attempt`, which a
  :class:`~dispatcher.Trace` keeps) and for the run's outputs, whose
  :class:`~dispatcher.DispatchResult` carries its node's attempts. Nodes that are
  neither pay for a few clock readings only.
"""

from __future__ import annotations

import time

__all__ = ["Attempt", "wall_offset"]


class Attempt:
    """One attempt at a node.

    Attributes:
        node: the node.
        number: 1 for the first attempt, 2 for the first retry, ...
        ready: when its dependencies had finished (or its retry was due).
        submitted: when the engine handed it to the executor (or called it).
        started: when its call began where it ran.
        finished: when its call ended where it ran (for a timeout: when the
            engine gave it up).
        where: the worker it ran on (``"driver"`` for a call the engine made
            itself; None where the executor does not say).
        error: the exception it failed with, or None.
        cores: the cores it was granted, or None.
    """

    __slots__ = ("cores", "error", "finished", "node", "number", "ready", "started", "submitted", "where")

    def __init__(self, node, number, ready, submitted, started, finished, where, error=None, cores=None):
        self.node = node
        self.number = number
        self.ready = ready
        self.submitted = submitted
        self.started = started
        self.finished = finished
        self.where = where
        self.error = error
        self.cores = cores

    @property
    def ok(self) -> bool:
        """True when the attempt gave a value."""
        return self.error is None

    @property
    def duration(self) -> float:
        """Seconds from start to finish where it ran."""
        return self.finished - self.started

    @property
    def waited(self) -> float:
        """Seconds from ready to started: queued for cores, workers, a transfer."""
        return self.started - self.ready

    def __repr__(self) -> str:
        how = "ok" if self.error is None else f"{type(self.error).__name__}"
        return (
            f"<Attempt {self.node.label!r} #{self.number} {how} on {self.where}: "
            f"waited {self.waited:.6f} s, ran {self.duration:.6f} s>"
        )


def wall_offset() -> float:
    """What to add to a wall-clock time (``time.time()``, of any host) to read it on
    the engine's clock, now."""
    return time.monotonic() - time.time()


def record(task, error, now: float) -> Attempt:
    """The attempt of ``task`` that ended (its report arrived) at ``now``."""
    submitted = task.submitted
    started = task.started
    finished = task.finished
    if started is None or started < submitted:
        started = submitted
    elif started > now:  # another host's clock, ahead of this one
        started = now
    if finished is None or finished > now:
        finished = now
    if finished < started:
        finished = started
    return Attempt(
        task.node, task.attempt, task.ready, submitted, started, finished, task.where, error, task.cores
    )
