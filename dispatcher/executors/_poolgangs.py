"""SPMD nodes on the worker ranks of a :class:`~dispatcher.executors._pool.Pool`
whose launcher starts them as ``mpiexec`` jobs (a spawning
:class:`~dispatcher.MPIExecutor`): a node granted ``k > 1`` cores runs on ``k``
ranks at once, each calling its function with a communicator of those ``k`` ranks,
while other nodes run on the other ranks. The ``k`` calls of one node are a *gang*.

Policy:

* A gang waits at the head of the queue, and nothing passes it, until ``k`` ranks
  of one ``mpiexec`` job are idle (ranks of different jobs share no world, so no
  communicator). Each of them is sent the call wrapped in a
  :class:`~dispatcher.executors._mpigang.SpmdCall`, which makes the communicator of
  those ``k`` ranks of the job's world.
* When one member fails (or dies), the node fails at once with its error and the
  members still running are killed (and replaced): they may be stuck in a
  collective call that needs it. Cancelling the node kills every member.
* A job that lost a rank (*tainted*) takes no more SPMD nodes: its world has a
  dead rank. Its other ranks still run single-rank nodes.
* Replacements of lost ranks are launched together, but each launch is a world of
  its own: when no job can hold a node's ``k`` ranks, the idle ranks of the jobs
  too small for it (and of tainted ones) leave, once there are ``k`` of them, and
  are started again as one job.

All of it runs on the pool's I/O thread.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import functools
import itertools

from ..results import WorkerLostError
from . import _wire as wire
from ._jobs import PENDING, REPORTED, SENT, Job
from ._mpicomm import too_many_ranks
from ._mpigang import GangRun, SpmdCall

__all__ = ["PoolGangs", "running_members"]


def running_members(job: Job) -> list:
    """The member jobs of an SPMD node still running on their ranks (none for
    another node)."""
    run = job.worker
    if not isinstance(run, GangRun):
        return []
    return [m for m in run.members if m.state == SENT]


class PoolGangs:
    """The SPMD nodes of one pool (see the module docstring)."""

    def __init__(self, pool):
        self.pool = pool
        self.waiting: collections.deque = collections.deque()  # nodes waiting for their ranks
        self.tainted: set = set()  # the launches (jobs) of ranks that lost one
        self.ids = itertools.count(1)

    def queue(self, job: Job) -> bool:
        """Queue ``job`` if it is an SPMD node; False if it is not."""
        cores = job.task.cores
        if cores is None or cores <= 1 or not self.pool.launcher.spmd:
            return False
        self.waiting.append(job)
        return True

    def fail_waiting(self, err: Exception) -> None:
        waiting, self.waiting = self.waiting, collections.deque()
        self.pool.jobs.fail(waiting, err)

    def forgotten(self, launch) -> None:
        """A rank of ``launch`` left the pool: the ranks left of its world no longer
        make SPMD nodes."""
        if launch is None:
            return
        if any(w.launch is launch for w in self.pool.workers.values()):
            self.tainted.add(launch)
        else:
            self.tainted.discard(launch)

    def start(self) -> bool:
        """Start the SPMD nodes at the head of the queue whose ranks are idle; False
        if one has to wait for them."""
        pool, waiting = self.pool, self.waiting
        while waiting:
            job = waiting[0]
            if job.state != PENDING:  # cancelled meanwhile
                waiting.popleft()
                continue
            size = job.task.cores
            if size > pool.size:
                waiting.popleft()
                pool.jobs.report(job, False, (too_many_ranks(job.task.node.label, size, pool.size), ""))
                continue
            if pool.broken is not None:  # no rank will be started again: it would wait forever
                waiting.popleft()
                pool.jobs.report(job, False, (pool.broken, ""))
                continue
            idle: dict = {}
            live: collections.Counter = collections.Counter()
            for worker in pool.workers.values():
                if worker.launch in self.tainted:
                    continue
                live[worker.launch] += 1
                if worker.ready and worker.batch is None:
                    idle.setdefault(worker.launch, []).append(worker)
            fit = next((ws for ws in idle.values() if len(ws) >= size), None)
            if fit is None:
                if not (pool.starting or pool.replace) and max(live.values(), default=0) < size:
                    self._regroup(size)
                return False
            waiting.popleft()
            self._send(job, sorted(fit, key=lambda w: w.rank)[:size])
        return True

    def _regroup(self, size: int) -> None:
        """No job of ranks can hold an SPMD node of ``size`` ranks: once ``size``
        ranks are idle, those of the jobs too small for it (or tainted) leave, to
        be started again as one job."""
        pool = self.pool
        sizes = collections.Counter(w.launch for w in pool.workers.values())
        small = [
            w
            for w in pool.workers.values()
            if w.ready and w.batch is None and (w.launch in self.tainted or sizes[w.launch] < size)
        ]
        if len(small) < size:
            return  # wait for more to be idle
        for worker in small:
            pool.retire(worker)

    def _send(self, job: Job, members: list) -> None:
        pool, task = self.pool, job.task
        run = GangRun(job, next(self.ids), len(members))
        ranks = [(w.rank, w.host) for w in members]
        label = task.node.label
        timed = task.timeout is not None  # the workers say when they start the call

        def gang_dumps(calls):
            wrapped = [(SpmdCall(f, ranks, "world", run.gang, label, None), a, k) for f, a, k in calls]
            return wire.dumps((wrapped, timed, ()))

        encoded = pool.held.encode_whole(pool.jobs, [job], gang_dumps)  # (held values whole)
        if encoded is None:  # it failed, naming what would not pickle
            return
        pool.jobs.sent([job], run)
        task.where = f"{run.size} worker ranks"
        for rank, worker in enumerate(members):
            if job.state == REPORTED:  # a member could not be sent: the rest stay home
                break
            member = Job(task, functools.partial(self._member_done, run, rank))
            run.members.append(member)
            try:
                wire.send_payload(worker.sock, *encoded, counts=pool.stats)
            except OSError:
                pool.lost(worker)
                pool.jobs.report(member, False, (WorkerLostError(f"could not send node {label!r} to it"), ""))
                continue
            worker.batch = [member]
            pool.jobs.sent([member], worker)

    def _member_done(self, run: GangRun, rank: int, task, ok: bool, payload) -> None:
        """A member of an SPMD node ended (see the module docstring)."""
        pool, job = self.pool, run.job
        if job.state == REPORTED:
            return
        if ok:
            if run.add(rank, (True, payload)):
                task.where = f"{run.size} worker ranks"
                pool.jobs.report(job, True, run.outcome()[0][1])
            return
        pool.jobs.report(job, False, run.failure(*payload, rank))
        for member in run.members:
            worker = member.worker
            if member.state == SENT and worker is not None:
                why = cf.CancelledError(f"rank {rank} of node {task.node.label!r} failed")
                pool.jobs.report(member, False, (why, ""))
                if worker.sock in pool.workers:
                    pool.kill(worker)
