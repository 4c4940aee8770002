"""Batching of quick nodes, shared by the executors that send work to other processes.

A pool keeps a running estimate of the seconds per call of each function
(:func:`learn`). :func:`take_batch` takes the next pending job and, if its
function is known to take well under :data:`BATCH_TARGET`, the pending jobs after
it whose functions are also known to be quick, up to ``max_batch`` and to an even
share of what is waiting among the idle workers. A job whose function has not run
yet, is slow, or has a timeout goes alone. Sending many quick calls in one message
is what lets a pool of processes keep up with nodes that take microseconds.
"""

from __future__ import annotations

import collections

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


def func_key(func):
    """What the estimates are kept under: a function's code, else the callable or its type."""
    code = getattr(func, "__code__", None)
    if code is not None:
        return code
    try:
        hash(func)
    except TypeError:
        return type(func)
    return func


class Job:
    """A task on its way through a pool."""

    __slots__ = ("alone", "done", "key", "state", "task", "worker")

    def __init__(self, task, done):
        self.task = task
        self.done = done
        self.key = None
        self.state = PENDING
        self.alone = False  # send it in a batch of its own
        self.worker = None


def learn(est: dict, batch: list, seconds: list) -> None:
    """Fold the measured ``seconds`` of each job of ``batch`` into the estimates."""
    for job, s in zip(batch, seconds):
        old = est.get(job.key)
        est[job.key] = s if old is None else 0.7 * old + 0.3 * s


def take_batch(pending: collections.deque, est: dict, share: int, max_batch: int) -> list | None:
    """The next batch of pending jobs (skipping those no longer pending), or None."""
    while pending:
        job = pending.popleft()
        if job.state == PENDING:
            break
    else:
        return None
    batch = [job]
    if job.alone or job.task.timeout is not None or max_batch == 1:
        return batch
    total = est.get(job.key)
    if total is None or total >= BATCH_TARGET:
        return batch
    limit = min(max_batch, -(-len(pending) // share) + 1)
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
