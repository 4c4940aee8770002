"""Cores: an executor's budget of cores, and how many each node gets.

Policy
------
* A node asks for cores with ``@dp.op(cores=k)`` (*fixed*: exactly k) or
  ``cores=(lo, hi)`` (*malleable*: from lo to hi; ``hi`` None for as many as are
  free). A node that asks for none is not counted against the budget: it takes a
  worker, as every node does (dask's rule for resources: a task that names none is
  not held back by them).
* Every executor has a budget, a :class:`CoreBudget`: the ``cores=`` it was given,
  else what it reaches (the usable CPUs of this machine or of the Slurm job here,
  :func:`dispatcher.slurm.usable_cores`; the worker ranks of an MPI executor; the
  threads of a dask cluster). Every run on the executor draws on the same budget.
* A node that asks for more than the whole budget (``k``, or ``lo``), or than the
  largest worker has where the budget spans several (a dask cluster), fails at
  once with an error naming what it asked and what there is.
* The ready nodes of a run that ask for cores wait in a queue (:class:`RunCores`),
  in the order they became ready. The first starts as soon as the cores it needs
  are free; while it cannot, the cores that come free are kept for it, and the
  nodes behind it wait too, so that a large node is never starved by a stream of
  small ones.
* A malleable node gets an even share of the free cores among the nodes of its
  run waiting for cores, itself included, as many of them as the executor runs at
  once (its ``slots``: workers, threads, ranks): ``free // min(waiting, slots)``,
  but at least ``lo`` and at most ``hi``. A lone node takes all that is free, up
  to ``hi``; each of a round of forty takes ``lo``, and those that start later
  what comes free; on a serial executor each takes all.
* A node's cores come back when its attempt ends (its report, its deadline, the
  end of the run), and the runs waiting for cores on the same executor are woken.
  A node that waits for a nested run on the same executor lends its cores to it
  meanwhile (:func:`lend_cores`) and takes them back after, even if others took
  them meanwhile (the budget is then overdrawn until they end).
* Inside the node, :func:`dispatcher.allocation` says what it got
  (:mod:`dispatcher.node_allocation`).
"""

from __future__ import annotations

import collections
import contextlib
import threading
from typing import Any

from ..node_allocation import Allocated, Allocation, lender
from ..results import DependencyError, ExecutorError, format_exception
from . import failures

__all__ = ["CoreBudget", "RunCores", "lend_cores", "wait_for_cores"]


class CoreBudget:
    """The cores of one executor, shared by the runs on it (thread-safe).

    ``total`` cores on ``host``, for at most ``slots`` nodes at once (None: no
    limit known); one node gets at most ``most`` of them (the cores of the largest
    worker, where the budget spans several; default: all)."""

    def __init__(self, total: int, host: str, slots: int | None = None, most: int | None = None):
        self.total = total
        self.free = total
        self.host = host
        self.slots = slots
        self.most = total if most is None else min(most, total)
        self._lock = threading.Lock()
        self._waiting: dict = {}  # run -> its wake-up call, while it has nodes waiting

    def take(self, n: int) -> bool:
        """Take ``n`` cores if they are free."""
        with self._lock:
            if n > self.free:
                return False
            self.free -= n
            return True

    def give_back(self, n: int) -> None:
        """``n`` cores are free again: the runs that wait for cores are woken."""
        with self._lock:
            self.free += n
            wakers = list(self._waiting.values())
        for wake in wakers:
            wake()

    def overdraw(self, n: int) -> None:
        """Take ``n`` cores back whether they are free or not (after a loan)."""
        with self._lock:
            self.free -= n

    def waits(self, run: Any, wake: Any) -> None:
        """``run`` has nodes waiting: call ``wake()`` when cores come back (None: no more)."""
        with self._lock:
            if wake is None:
                self._waiting.pop(run, None)
            else:
                self._waiting[run] = wake

    def hosts_of(self, cores: int) -> tuple:
        """The hosts of a grant of ``cores`` (one machine: this one)."""
        return ((self.host, cores),)

    def __repr__(self) -> str:
        return f"<CoreBudget {self.free} of {self.total} cores free on {self.host}>"


class RunCores:
    """The nodes of one run that wait for cores, and what each got (see the
    module's docstring)."""

    def __init__(self, budget: CoreBudget, environment: bool, wake: Any = None):
        self.budget = budget
        self.environment = environment  # tasks run in processes of their own: set the thread variables
        self.wake = wake  # the run's wake-up call, for cores freed by other runs
        self.queue: collections.deque = collections.deque()

    def enqueue(self, run: Any, node) -> bool:
        """``node`` is ready and asks for cores: it waits in the queue (False: it
        asks for more than the budget has, and failed)."""
        lo, budget = node.cores[0], self.budget
        if lo > budget.most:
            has = (
                f"the executor has {budget.total}"
                if budget.most == budget.total
                else f"its largest worker has {budget.most}"
            )
            exc = ExecutorError(
                f"node {node.label!r} asks for {lo} cores but {has} "
                "(give the executor cores=..., or ask for fewer)"
            )
            failures.fail(run, node, DependencyError(exc, format_exception(exc), node))
            return False
        self.queue.append(node)
        if self.wake is not None:
            self.budget.waits(self, self.wake)
        return True

    def next(self) -> tuple | None:
        """The first node of the queue and its cores, if they can be taken now."""
        queue, budget = self.queue, self.budget
        node = queue[0]
        lo, hi = node.cores
        free = budget.free
        if lo > free:
            return None  # the first waits: what comes free is kept for it
        sharers = len(queue) if budget.slots is None else min(len(queue), budget.slots)
        top = min(free, budget.most) if hi is None else min(hi, free, budget.most)
        grant = min(top, max(lo, free // sharers))
        if not budget.take(grant):
            return None  # taken meanwhile by another run
        queue.popleft()
        if not queue and self.wake is not None:
            budget.waits(self, None)
        return node, grant

    def allocated(self, func, cores: int) -> Allocated:
        """``func`` run inside its allocation of ``cores``."""
        alloc = Allocation(cores, self.budget.hosts_of(cores))
        return Allocated(func, alloc, self.environment, None if self.environment else self.budget)

    def end(self, run: Any) -> None:
        """The run ends: nothing more waits, and the tasks it abandoned give their
        cores back."""
        self.queue.clear()
        self.budget.waits(self, None)
        for task in run.running.values():
            if task.cores is not None:
                self.budget.give_back(task.cores)
                task.cores = None


def wait_for_cores(run: Any, node) -> None:
    """A transition of :class:`~dispatcher.engine.RunState`: a READY node that asks
    for cores waits in the run's queue for them (or fails, if the budget can never
    hold it)."""
    if run.cores is None:
        if run.get_budget is None:
            raise ExecutorError("this run has no budget of cores")  # pragma: no cover - runs have one
        run.budget = run.get_budget()
        run.cores = RunCores(run.budget, not run.options.in_process, run.wake)
    run.cores.enqueue(run, node)


@contextlib.contextmanager
def lend_cores(budget: CoreBudget | None):
    """Around a nested run's waiting: the cores of the node that waits, if it runs
    on ``budget``, are lent to the others meanwhile."""
    held = lender()
    if budget is None or held is None or held[0] is not budget:
        yield
        return
    budget.give_back(held[1])
    try:
        yield
    finally:
        budget.overdraw(held[1])
