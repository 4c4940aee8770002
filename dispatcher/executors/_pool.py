"""The job pool of the executors whose workers are processes connected by sockets.

:class:`~dispatcher.ProcessExecutor` starts its workers as subprocesses of this
process, a spawning :class:`~dispatcher.MPIExecutor` as the ranks of an ``mpiexec``
job that connect back over TCP (the launchers of :mod:`~dispatcher.executors._launch`
and :mod:`~dispatcher.executors._mpilaunch`). Both are served by one :class:`Pool`,
which does not know how its workers were started::

    engine thread            I/O thread of the pool                   workers
    -------------            ----------------------                   -------
    submit(job)  --inbox-->  JobQueue --batch--> socket ----------->  run_calls
    cancel(job)  --inbox-->  kill the worker running it                  |
    stop()       --inbox-->  <-- "started" / "done" / ... <-- socket <---'
    done(task, ok, payload) <-- reports, from the I/O thread
                             launcher.start(n) / kill(w) / stop()

One I/O thread owns the workers: it sends batches, reads results and hands them to
the engine's ``done``, says when a timed call starts, and notices a worker that
dies (its socket closes). The engine's thread only queues requests for it.

Policy:

* **Jobs.** The pool's jobs are kept by a :class:`~dispatcher.executors._jobs.JobQueue`,
  which batches quick calls, reports each job once, finds a call that will not
  pickle, and sends again what never ran (:mod:`~dispatcher.executors._jobs`).
* **Lost workers.** A worker that dies (killed, a segfault, ``os._exit``, the
  out-of-memory killer, a lost host) is replaced. If it was running a single node,
  that node fails with :class:`~dispatcher.WorkerLostError`, which these executors
  retry by default; if it was running a batch, the batch's nodes are sent again one
  by one, which finds the culprit without charging the others an attempt.
* **Timeouts.** A node's deadline counts from the moment its worker starts the
  call (the worker says so, and the pool sets ``task.started``), not from when it
  was sent: unpickling the call, and the imports that brings, is not counted. The
  engine decides that the deadline has passed and cancels the node, which kills
  its worker (a replacement starts).
* **Cancellation and interruption.** Cancelling a node that is running kills its
  worker (a replacement starts). :meth:`Pool.stop` asks idle workers, and those
  still setting up, to exit (the launcher kills any still there after a grace
  period), and kills busy ones; or it kills all of them. A worker rank killed
  needlessly would make ``mpiexec`` report the job as terminated.
* **Start-up failures.** A worker that cannot start is tried again; after
  :data:`START_FAILURES` failures in a row the nodes fail with an
  :class:`~dispatcher.ExecutorError` that carries the reason.
* **Output.** The workers' standard output and error reach this process's own
  through pipes (:mod:`~dispatcher.executors._forward`), never as inherited
  descriptors.
* **SPMD nodes** (a launcher whose workers are the ranks of ``mpiexec`` jobs, for
  a node granted ``k > 1`` cores) run on ``k`` ranks of one job at once
  (:mod:`~dispatcher.executors._poolgangs`).
* **Replacements.** Workers lost or killed in one turn of the I/O thread are
  replaced by one launch.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures as cf
import contextlib
import logging
import selectors
import socket
import sys
import threading
import time
import weakref

from ..results import ExecutorError, WorkerLostError, format_exception
from . import _wire as wire
from ._forward import Forwarder
from ._held import HeldValues
from ._jobs import REPORTED, SENT, Job, JobQueue
from ._launch import Worker
from ._listen import Listener
from ._poolgangs import PoolGangs, running_members

__all__ = ["POOLS", "START_FAILURES", "Pool"]

logger = logging.getLogger("dispatcher")

START_FAILURES = 3  # failed starts in a row before the pool gives up
KILL_WAIT = 5.0  # seconds the cancel of a node past its deadline waits for its worker's end
_LISTEN = object()  # selector data of the listening socket
_WAKE = None  # selector data of the wake-up socket


class Pool:
    """The workers and the I/O thread that owns them (see the module docstring).

    Other threads only call :meth:`submit`, :meth:`wake`, :meth:`cancel`,
    :meth:`stop`, :meth:`workers_info` and :meth:`wait_ready`; everything else
    runs on the I/O thread. The ``launcher`` starts, kills and describes workers.
    """

    def __init__(self, size: int, init: bytes | None, max_batch, launcher, path: list | None = None):
        self.size = size
        self.init = init
        self.path = path
        self.launcher = launcher
        self.inbox: collections.deque = collections.deque()
        self.jobs = JobQueue(max_batch)
        self.workers: dict = {}  # socket -> Worker
        self.starting = 0  # workers launched that have not yet arrived
        self.replace = 0  # workers lost or killed in this turn, to launch again at its end
        self.gangs = PoolGangs(self)  # SPMD nodes
        self.start_failures = 0
        self.broken: ExecutorError | None = None
        self.stopped = threading.Event()
        self.ready_changed = threading.Condition()
        self.stats = self.jobs.stats  # batches, tasks, timeouts; workers started and lost; bytes
        self.held = HeldValues(self.wake)  # what each worker keeps of the values made
        self.wake_pending = False
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, _WAKE)
        self.output = Forwarder()
        # where the workers that connect back reach the pool (the launcher reads it)
        self.listener = Listener(self.selector, launcher.spread, _LISTEN) if launcher.connects else None
        self.thread = threading.Thread(target=self._main, name="dispatcher-pool", daemon=True)
        self.thread.start()

    # -- called from other threads --------------------------------------------------
    def submit(self, job: Job) -> None:
        self.inbox.append(("task", job))
        if self.stopped.is_set():  # too late for the I/O thread to see it
            self.jobs.report(job, False, (ExecutorError("the worker pool has stopped"), ""))
        elif len(self.inbox) >= 256:
            self.wake()

    def wake(self) -> None:
        if not self.wake_pending:
            self.wake_pending = True
            with contextlib.suppress(OSError):
                self.wake_w.send(b"\0")

    def cancel(self, job: Job) -> None:
        """Cancel ``job``; one past its deadline returns once its worker is killed,
        so that the node's ``TimeoutError`` is raised when the worker is gone."""
        killed = threading.Event() if job.task.expired and job.state == SENT else None
        self.inbox.append(("cancel", (job, killed)))
        self.wake()
        if killed is not None and self.thread.is_alive():
            killed.wait(KILL_WAIT)

    def stop(self, kill: bool) -> None:
        """Stop the workers (idle and starting ones are asked to exit, busy ones are
        killed, or all are killed) and the I/O thread; nodes not finished are cancelled."""
        if self.thread.is_alive():
            self.inbox.append(("stop", kill))
            self.wake()
            self.thread.join()
        self._close_fds()

    def workers_info(self) -> list[tuple[str, int]]:
        """``(host, pid)`` of each current worker."""
        return [(w.host, w.pid) for w in list(self.workers.values())]

    def wait_ready(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.ready_changed:
            while True:
                if self.broken is not None:
                    raise self.broken
                ready = sum(1 for w in list(self.workers.values()) if w.ready)
                if ready >= self.size:
                    return
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ExecutorError(
                        f"only {ready} of {self.size} {self.launcher.whats} started in {timeout} s"
                    )
                self.ready_changed.wait(0.1 if left is None else min(left, 0.1))

    # -- the I/O thread ---------------------------------------------------------------
    def _main(self) -> None:
        kill = True
        try:
            self._launch(self.size)
            while True:
                request = self._inbox()
                if request is not None:
                    kill = request
                    break
                self._dispatch()
                self.held.tell_idle(self.stats)  # values the workers may forget
                if self.replace:  # the workers lost, killed or retired in this turn
                    count, self.replace = self.replace, 0
                    self._launch(count)
                # with workers on their way, look after them every 0.1 s
                for key, _ in self.selector.select(0.1 if self.starting else None):
                    if key.data is _WAKE:
                        self._drain_wake()
                    elif key.data is _LISTEN:
                        self._accept(key.fileobj)
                    elif key.fileobj in self.workers:  # not forgotten earlier in this loop
                        self._readable(key.data)
                if self.starting:
                    self._check_launches()
        except BaseException as exc:  # never leave the engine waiting on a dead thread
            logger.exception("the worker pool's I/O thread failed")
            self.broken = ExecutorError(f"the worker pool failed: {type(exc).__name__}: {exc}")
        finally:
            self._teardown(kill)

    def _drain_wake(self) -> None:
        # read the bytes first, then clear the flag, then (later) read the inbox:
        # a wake() that saw the flag set is then sure to have its request seen
        try:
            while self.wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        self.wake_pending = False

    def _inbox(self):
        """Take the requests of other threads; returns the kill flag of a stop."""
        inbox = self.inbox
        doomed = set()
        waiting = []  # the events of cancels that wait for the kill
        new: list = []  # the jobs that came, queued together
        try:
            while inbox:
                kind, arg = inbox.popleft()
                if kind == "task":
                    if self.broken is not None and not self.workers:
                        self.jobs.report(arg, False, (self.broken, ""))
                    elif not self.gangs.queue(arg):
                        new.append(arg)
                elif kind == "cancel":
                    if new:  # the jobs queued before this cancel come first
                        self.jobs.add(new)
                        new = []
                    job, killed = arg
                    if killed is not None:
                        waiting.append(killed)
                    members = []
                    if job.state == SENT and job.worker is not None:
                        members = running_members(job)  # of an SPMD node: every rank goes
                        doomed.update([m.worker for m in members] or [job.worker])
                        if job.task.expired:
                            self.stats["timeouts"] += 1
                    cancelled = cf.CancelledError(f"node {job.task.node.label!r} was cancelled")
                    for member in [job, *members]:
                        self.jobs.report(member, False, (cancelled, ""))
                else:
                    return arg  # stop: every worker goes
            if new:
                self.jobs.add(new)
            for worker in doomed:
                if worker.sock in self.workers:
                    self.kill(worker)
            return None
        finally:
            for killed in waiting:
                killed.set()

    def _broken(self, job: Job) -> ExecutorError:
        return self.broken

    # -- workers arriving ---------------------------------------------------------------
    def _launch(self, count: int) -> None:
        if self.stopped.is_set() or self.broken is not None or count <= 0:
            return
        try:
            self.launcher.start(self, count)
        except OSError as exc:
            self._give_up(f"cannot start a {self.launcher.what}: {exc}")

    def expect(self, count: int) -> None:
        """The launcher started ``count`` workers that will connect back."""
        self.starting += count

    def attach(self, worker: Worker) -> None:
        """A worker connected: register it and send it its set-up."""
        self.workers[worker.sock] = worker
        worker.holds = self.held.holds(worker)
        self.selector.register(worker.sock, selectors.EVENT_READ, worker)
        self.stats["started"] += 1
        path = self.path if self.path is not None else list(sys.path)
        with contextlib.suppress(OSError):  # if it died at once, its end of file says how
            wire.send(worker.sock, ("init", path, self.init))

    def _accept(self, listening: socket.socket) -> None:
        for conn, pid, host, rank, launch_id in self.listener.accept(listening):
            launch = self.launcher.arrived(launch_id)
            if launch is None:
                conn.close()
                continue
            self.starting = max(0, self.starting - 1)
            self.attach(Worker(conn, pid, host, rank=rank, launch=launch))

    def _check_launches(self) -> None:
        """Fail launches whose workers will not come (their launcher ended, or took
        too long)."""
        for why, missing in self.launcher.failed_launches():
            self.starting = max(0, self.starting - missing)
            self._start_failed(why, missing)

    # -- messages from workers ----------------------------------------------------------
    def _readable(self, worker: Worker) -> None:
        try:
            msg = wire.recv(worker.sock, keep=True, counts=self.stats)
        except (EOFError, OSError):
            self.lost(worker)
            return
        except Exception as exc:  # a result this process cannot unpickle, or take (wire.Unreceivable)
            batch, worker.batch = worker.batch, None
            what = "received" if isinstance(exc, wire.Unreceivable) else "unpickled"
            for job in batch or ():
                err = ExecutorError(
                    f"the outcome of node {job.task.node.label!r} cannot be {what} here: "
                    f"{type(exc).__name__}: {exc}"
                )
                self.jobs.report(job, False, (err, format_exception(exc)))
            return
        kind = msg[0]
        if kind == "done":
            self._finished(worker, msg[1], msg[2])
        elif kind == "started":
            self._started(worker)
        elif kind == "ready":
            worker.ready = True
            self.start_failures = 0
            with self.ready_changed:
                self.ready_changed.notify_all()
        elif kind == "unreadable":  # (and the worker dropped every value it kept)
            batch, worker.batch = worker.batch, None
            worker.holds.keys.clear()
            self.jobs.unreadable(batch, msg[1], self.launcher.what)
        elif kind == "init-failed":
            self._forget(worker)
            self._start_failed(msg[1])

    def _started(self, worker: Worker) -> None:
        """The worker started the timed call it was sent: the engine's clock for it
        starts now (at its deadline the engine cancels it, which kills the worker)."""
        if worker.batch:
            task = worker.batch[0].task
            task.where = worker.describe()
            task.started = time.monotonic()

    def _finished(self, worker: Worker, outcomes: list, spans: list) -> None:
        batch, worker.batch = worker.batch, None
        self.jobs.learn(batch, spans, worker.describe())
        if self.jobs.pending and not self.gangs.waiting:
            self._dispatch_to(worker, self._ready_count())  # keep it busy while we report
        self.jobs.finished(batch, outcomes)

    # -- sending work ------------------------------------------------------------------
    def _ready_count(self) -> int:
        return sum(1 for w in self.workers.values() if w.ready) or 1

    def _dispatch(self) -> None:
        if self.broken is not None and not self.workers:
            self.jobs.fail_pending(self._broken)
            self.gangs.fail_waiting(self.broken)
            return
        if self.gangs.waiting and not self.gangs.start():
            return  # an SPMD node waits for its ranks: nothing passes it
        if not self.jobs.pending:
            return
        idle = [w for w in self.workers.values() if w.ready and w.batch is None]
        share = len(idle) or 1
        for worker in idle:
            if not self.jobs.pending:
                break
            self._dispatch_to(worker, share)

    def _dispatch_to(self, worker: Worker, share: int) -> None:
        jobs = self.jobs
        while True:
            batch = jobs.take(share)
            if batch is None:
                return
            # a timed batch: the worker says when it starts the call
            encoded = self.held.encode(jobs, batch, worker.holds, batch[0].task.timeout is not None)
            if encoded is not None:
                break
        try:
            wire.send_payload(worker.sock, *encoded[0], counts=self.stats)
        except OSError:
            jobs.requeue(batch, alone=False)  # it never ran: no attempt is charged
            self.lost(worker)
            return
        self.held.sent(worker.holds, encoded[1])
        worker.batch = batch
        jobs.sent(batch, worker)

    # -- workers leaving ------------------------------------------------------------------
    def _forget(self, worker: Worker) -> None:
        """Drop ``worker`` from the pool and let its launcher reap it."""
        if self.workers.pop(worker.sock, None) is None:
            return
        worker.holds.gone = True
        self.selector.unregister(worker.sock)
        worker.sock.close()
        self.launcher.reap(worker)
        self.gangs.forgotten(worker.launch)

    def retire(self, worker: Worker) -> None:
        """Let an idle worker go (it exits when its connection closes) and start
        another in its place."""
        self._forget(worker)
        self.replace += 1

    def kill(self, worker: Worker) -> None:
        """Kill a worker on purpose; what it ran and was not reported goes back."""
        self.launcher.kill(worker)
        batch, worker.batch = worker.batch, None
        self._forget(worker)
        if batch:
            self.jobs.requeue(batch, alone=False)
        self.replace += 1

    def lost(self, worker: Worker) -> None:
        """A worker died on its own."""
        self._forget(worker)
        how = self.launcher.exit_text(worker)
        if not worker.ready:
            self._start_failed(f"a {self.launcher.what} exited before it was ready: {how}")
            return
        self.stats["lost"] += 1
        batch, worker.batch = worker.batch, None
        live = [job for job in batch or () if job.state != REPORTED]
        what = self.launcher.what
        if batch is not None and len(batch) == 1 and live:
            job = live[0]
            exc = WorkerLostError(
                f"the {what} ({worker.describe()}) running node {job.task.node.label!r} died: {how}"
            )
            logger.warning("%s", exc)
            self.jobs.report(job, False, (exc, ""))
        elif live:
            logger.warning("a %s (%s) died running %d nodes: %s", what, worker.describe(), len(live), how)
            self.jobs.requeue(live, alone=True)
        self.replace += 1

    def _start_failed(self, why: str, count: int = 1) -> None:
        self.start_failures += 1
        if self.start_failures >= START_FAILURES:
            self._give_up(why)
        else:
            logger.warning("%s; starting another", why)
            self._launch(count)

    def _give_up(self, why: str) -> None:
        self.broken = ExecutorError(f"{self.launcher.whats} cannot start: {why}")
        logger.error("%s", self.broken)
        with self.ready_changed:
            self.ready_changed.notify_all()
        if not self.workers:
            self.jobs.fail_pending(self._broken)

    def _teardown(self, kill: bool) -> None:
        self.stopped.set()  # from here on submit() reports for itself
        stopped = self.broken or cf.CancelledError("the executor was shut down")
        for worker in list(self.workers.values()):
            self.jobs.fail(worker.batch or (), stopped)
            if kill or worker.batch is not None:
                self.launcher.kill(worker)
            else:  # end of file: an idle worker exits, one still starting once it is set up
                with contextlib.suppress(OSError):
                    worker.sock.shutdown(socket.SHUT_WR)
        self.jobs.fail_pending(lambda job: stopped)
        while self.inbox:
            kind, arg = self.inbox.popleft()
            if kind == "task":
                self.jobs.report(arg, False, (stopped, ""))
            elif kind == "cancel" and arg[1] is not None:
                arg[1].set()
        self.launcher.stop(list(self.workers.values()), grace=5.0)
        for worker in list(self.workers.values()):
            self.selector.unregister(worker.sock)
            worker.sock.close()
        self.workers.clear()
        self.held.close()
        self.output.stop()
        with self.ready_changed:
            self.ready_changed.notify_all()

    def _close_fds(self) -> None:
        if self.wake_w.fileno() < 0:
            return
        self.launcher.close()
        if self.listener is not None:
            self.listener.close()
        self.selector.close()
        self.wake_r.close()
        self.wake_w.close()


POOLS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for pool in list(POOLS):
        pool.stop(kill=True)
