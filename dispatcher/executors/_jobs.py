"""The jobs of a pool of worker processes: batching, reporting once, sending again.

Both transports of the library's pools use one :class:`JobQueue`: the sockets of
:mod:`~dispatcher.executors._pool` (``ProcessExecutor``, a spawning
``MPIExecutor``) and ``mpi4py.futures`` for the ranks of a user's ``mpiexec`` job
(:mod:`~dispatcher.executors._mpiworld`). A job (one task) is PENDING, then SENT
in a batch to one worker, then REPORTED to the engine, exactly once whatever
happens after (a late answer, a cancel, a lost worker).

Policy:

* **Batching.** The queue keeps a running estimate of the seconds per call of each
  function (:meth:`JobQueue.learn`). :meth:`JobQueue.take` takes the next pending job and,
  if its function is known to take well under :data:`BATCH_TARGET`, the pending
  jobs after it whose functions are also known to be quick, up to ``max_batch``
  and to an even share of what is waiting among the idle workers. A job whose
  function has not run yet, is slow, or has a timeout goes alone. Sending many
  quick calls in one message is what lets a pool of processes keep up with nodes
  that take microseconds.
* **A call that will not pickle.** A batch that cannot be pickled goes back to the
  queue one job at a time, which finds the culprit without charging the others an
  attempt; the culprit fails with an error naming the argument and the object at
  fault.
* **A batch a worker cannot read** (a module it cannot import) goes back one job
  at a time too; a job alone that a worker cannot read fails.
* **Sending again.** Jobs that never ran (the send failed, their worker was killed
  for another job) go back to the front of the queue, uncharged.
"""

from __future__ import annotations

import collections
import logging
import pickle
import threading

from ..attempts import wall_offset
from ..nodes import function_key
from ..results import ExecutorError, format_exception
from .codec import decode_outcome, unpicklable_error

__all__ = ["BATCH_TARGET", "MAX_BATCH", "PENDING", "REPORTED", "SENT", "Job", "JobQueue"]

logger = logging.getLogger("dispatcher")

BATCH_TARGET = 0.01  # seconds of estimated work per batch
MAX_BATCH = 1000
PENDING, SENT, REPORTED = 0, 1, 2


def check_worker_options(max_workers, batch_size, initializer) -> None:
    """The checks of the options every pool of worker processes takes."""
    if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
        raise ValueError(f"max_workers must be a positive int, got {max_workers!r}")
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f'batch_size must be "auto" or a positive int, got {batch_size!r}')
    if initializer is not None and not callable(initializer):
        raise TypeError(f"initializer must be callable, got {type(initializer).__name__}")


class Job:
    """A task on its way through a pool."""

    __slots__ = ("alone", "done", "key", "state", "task", "worker")

    def __init__(self, task, done):
        self.task = task
        self.done = done
        self.key = None  # function_key(task.func), set where the job is queued
        self.state = PENDING
        self.alone = False  # send it in a batch of its own
        self.worker = None  # the worker it was sent to, for a transport that says


class JobQueue:
    """The pending jobs of one pool, the estimates that batch them, and the counts
    of what was sent (``stats``). Safe to call from any thread: every change of a
    job's state is made under the queue's lock, so a job reported (cancelled, say)
    is never sent or queued again; calls are pickled and the engine is told outside
    it."""

    def __init__(self, max_batch: int | str = "auto"):
        self.pending: collections.deque = collections.deque()
        self.est: dict = {}  # function key -> seconds per call
        self.max_batch = MAX_BATCH if max_batch == "auto" else max_batch
        self.stats: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def add(self, jobs: list) -> None:
        """Queue ``jobs``, each under its function's estimate."""
        for job in jobs:
            func = job.task.func
            code = getattr(func, "__code__", None)  # function_key's common case, inline
            job.key = code if code is not None else function_key(func)
        self.pending.extend(jobs)

    def take(self, share: int) -> list | None:
        """The next batch for an idle worker, or None (see the module docstring)."""
        with self._lock:
            return self._take(share)

    def _take(self, share: int) -> list | None:
        pending, est = self.pending, self.est
        while pending:
            job = pending.popleft()
            if job.state == PENDING:
                break
        else:
            return None
        batch = [job]
        if job.alone or job.task.timeout is not None or self.max_batch == 1:
            return batch
        total = est.get(job.key)
        if total is None or total >= BATCH_TARGET:
            return batch
        limit = min(self.max_batch, -(-len(pending) // share) + 1)
        while pending and len(batch) < limit:
            nxt = pending[0]
            if nxt.state != PENDING:
                pending.popleft()
                continue
            e = est.get(nxt.key)
            if nxt.alone or nxt.task.timeout is not None or e is None or total + e > BATCH_TARGET:
                break
            batch.append(pending.popleft())
            total += e
        return batch

    def encode(self, batch: list, dumps, catch: type[BaseException] = Exception):
        """``dumps`` of the batch's calls, or None if one will not pickle (then the
        batch goes back one job at a time, or its one job fails naming the culprit).
        ``catch`` is what pickling may raise that is not the caller's to see."""
        try:
            return dumps([(j.task.func, j.task.args, j.task.kwargs) for j in batch])
        except catch as exc:
            if len(batch) > 1:
                self.requeue(batch, alone=True)
            else:
                self.report(batch[0], False, (_unsendable(batch[0].task, exc), format_exception(exc)))
            return None

    def sent(self, batch: list, worker=None) -> None:
        """``batch`` goes to ``worker``; a job reported meanwhile stays reported."""
        with self._lock:
            for job in batch:
                if job.state != REPORTED:
                    job.state = SENT
                    job.worker = worker
            self.stats["batches"] += 1
            self.stats["tasks"] += len(batch)

    def requeue(self, batch: list, alone: bool) -> None:
        """Put the jobs of ``batch`` not yet reported back at the front of the queue."""
        with self._lock:
            for job in reversed(batch):
                if job.state != REPORTED:
                    job.state = PENDING
                    job.worker = None
                    job.alone = job.alone or alone
                    self.pending.appendleft(job)

    def report(self, job: Job, ok: bool, payload) -> None:
        """Tell the engine how ``job`` ended, once."""
        with self._lock:
            if job.state == REPORTED:
                return
            job.state = REPORTED
            job.worker = None
        _tell(job, ok, payload)

    def learn(self, batch: list, spans: list, where: str | None) -> None:
        """Fold the time each call of ``batch`` took into the estimates (one
        estimate read while another thread writes it is only a little older), and
        tell each task when its call began and ended (``spans``: ``(start, end)``
        on the worker's wall clock) and ``where`` it ran."""
        est = self.est
        offset = wall_offset()  # a worker's wall clock -> the engine's
        for job, (start, end) in zip(batch, spans):
            s = end - start
            old = est.get(job.key)
            est[job.key] = s if old is None else 0.7 * old + 0.3 * s
            task = job.task
            task.started = start + offset
            task.finished = end + offset
            task.where = where

    def finished(self, batch: list, outcomes: list) -> None:
        """Report the ``outcomes`` a worker sent back for ``batch`` (``(ok, value)``
        as the worker encodes them), but for the jobs already reported."""
        todo = []
        with self._lock:
            for job, outcome in zip(batch, outcomes):
                if job.state != REPORTED:
                    job.state = REPORTED
                    job.worker = None
                    todo.append((job, outcome))
        for job, (ok, value) in todo:
            if ok:
                _tell(job, True, value)
            else:
                _tell(job, *decode_outcome(ok, value))

    def unreadable(self, batch: list, why: str, where: str) -> None:
        """The worker (``where``) could not unpickle ``batch``: ``why``."""
        if len(batch) > 1:
            self.requeue(batch, alone=True)
            return
        job = batch[0]
        exc = ExecutorError(f"node {job.task.node.label!r} cannot be unpickled on the {where}: {why}")
        self.report(job, False, (exc, why))

    def fail(self, jobs, exc: BaseException, tb: str = "") -> None:
        for job in jobs:
            self.report(job, False, (exc, tb))

    def fail_pending(self, error) -> None:
        """Fail every pending job with ``error(job)``."""
        with self._lock:
            pending, self.pending = self.pending, collections.deque()
        for job in pending:
            self.report(job, False, (error(job), ""))


def _tell(job: Job, ok: bool, payload) -> None:
    """The engine's ``done`` for ``job``; an error there must not break the pool's thread."""
    try:
        job.done(job.task, ok, payload)
    except Exception:
        logger.exception("could not report node %r", job.task.node.label)


def _unsendable(task, exc: BaseException) -> Exception:
    """The error of a node whose call could not be pickled (``exc``)."""
    try:
        err = unpicklable_error(task.node.label, task.func, task.args, task.kwargs)
    except BaseException:  # pickling its parts raises again, and not an Exception
        err = pickle.PicklingError(
            f"cannot send node {task.node.label!r} to another process: pickling it raised "
            f"{type(exc).__name__}: {exc}"
        )
    err.__cause__ = exc
    return err
