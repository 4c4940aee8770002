"""The run's one clock: when a running task's time is up, and when a retry is due.

Policy: a task with a timeout is looked at ``timeout`` seconds after it is handed
to the executor (plus the executor's ``timeout_grace``, when the executor stops late
work where it runs and reports it itself). For an executor that says when a task's
work begins where it runs (``RunOptions.starts_reported``), the deadline counts
from ``task.started``: a task still queued there cannot be late, and is looked at
again a whole timeout later. A retried node is due after its backoff delay. Entries
of tasks that have ended are dropped as they come up, and all at once when they
outnumber the others (a long deadline must not keep a run's ended tasks, and the
nodes and arguments they hold, until it passes). Nothing here reads a clock
but the one the run was given, so tests drive it with a fake one.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

from .records import RunOptions, Task

__all__ = ["Timers"]


class Timers:
    """A heap of ``(time, seq, what)``: ``what`` is a RUNNING task to check, or a
    BACKING_OFF node to make ready."""

    def __init__(self, clock: Callable[[], float], options: RunOptions):
        self.clock = clock
        self.grace = options.timeout_grace
        self.starts_reported = options.starts_reported
        self.heap: list = []
        self._seq = 0
        self._prune_at = 64  # the heap's size at which ended tasks' entries are dropped

    def _push(self, when: float, what: Any) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (when, self._seq, what))

    def watch(self, task: Task) -> None:
        """``task`` (with a timeout) was handed over: look at it when its time may be up."""
        self._push(self.clock() + task.timeout + self.grace, task)

    def retry_after(self, delay: float, node) -> None:
        self._push(self.clock() + delay, node)

    def next_wakeup(self, running: dict) -> float | None:
        """The time of the next entry that still matters, or None."""
        heap = self.heap
        if len(heap) > self._prune_at:
            heap[:] = [e for e in heap if type(e[2]) is not Task or running.get(e[2].node) is e[2]]
            heapq.heapify(heap)
            self._prune_at = 2 * len(heap) + 64
        while heap:
            what = heap[0][2]
            if type(what) is not Task or running.get(what.node) is what:
                return heap[0][0]
            heapq.heappop(heap)  # the deadline of a task that has ended
        return None

    def due(self, running: dict) -> Iterator[Any]:
        """The running tasks now past their deadline and the nodes now due."""
        heap = self.heap
        now = self.clock()
        while heap and heap[0][0] <= now:
            what = heapq.heappop(heap)[2]
            if type(what) is not Task:
                yield what
            elif running.get(what.node) is what:  # else it ended in time
                later = self._not_yet(what, now)
                if later is None:
                    yield what
                else:
                    self._push(later, what)

    def _not_yet(self, task: Task, now: float) -> float | None:
        """When to look again at a task whose time is not up after all, or None."""
        if not self.starts_reported:
            return None
        started = task.started
        if started is None:
            return now + task.timeout  # still queued where it runs: it cannot be late before then
        end = started + task.timeout + self.grace
        return end if end > now else None

    def clear(self) -> None:
        self.heap.clear()
