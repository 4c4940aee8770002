"""``ProcessExecutor`` (alias ``ParallelExecutor``): nodes run in worker processes.

Each worker is a fresh Python interpreter running ``_procworker.py``, connected to
this process by its own socket. Functions, arguments and results travel with
cloudpickle (protocol 5), so lambdas, closures and functions defined in ``__main__``
or a notebook work, and the memory of large contiguous numpy arrays is sent
straight from the array and received straight into the new array's memory.

One I/O thread in this process owns the workers: it sends batches, reads results
and hands them to the engine's ``done``, watches each node's deadline, and notices
a worker that dies. The engine's thread only queues tasks and requests for it.

Policy:

* **Batching.** The pool times every call and keeps a running estimate per
  function. A ready node whose function is known to take well under the batch
  target (10 ms) is sent together with the next such nodes, up to ``batch_size``
  and to an even share of what is waiting among the workers; a node whose function
  has not run yet, is slow, or has a timeout is sent alone.
* **Lost workers.** A worker that dies (killed, a segfault, ``os._exit``, the
  out-of-memory killer) is replaced by a new one. If it was running a single node,
  that node fails with :class:`~dispatcher.WorkerLostError`, which every
  ``ProcessExecutor`` retries by default (``retries`` times, with backoff): a node
  that keeps killing its worker fails with an error that says so. If it was running
  a batch, the batch's nodes are sent again one by one, which finds the culprit
  without charging the others an attempt.
* **Timeouts.** A node's deadline counts from when a worker receives it. At the
  deadline its worker is killed and replaced, and the node fails with
  ``TimeoutError`` (or is retried if its ``retry_on`` says so).
* **Cancellation and interruption.** Cancelling a node that is running kills its
  worker (a replacement starts). Ctrl-C or an exception in the caller during a
  run kills every worker; the next run starts new ones. ``close()`` (or leaving
  the ``with`` block) stops idle workers and kills busy ones. At interpreter exit
  every pool is shut down, and a worker whose parent dies exits at once.
* **Start-up failures.** A worker that cannot start (its ``initializer`` raises, the
  interpreter fails) is tried again; after three failures in a row the nodes fail
  with an :class:`~dispatcher.ExecutorError` that carries the reason.

Workers are started with ``multiprocessing``'s executable (``sys.executable``
unless ``multiprocessing.set_executable`` changed it), inherit the environment,
the working directory and ``sys.path``, and ignore SIGINT. POSIX only.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures as cf
import contextlib
import heapq
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing import spawn

from ..results import ExecutorError, WorkerLostError, format_exception, is_worker_lost
from . import _procworker as wire
from ._batching import (
    MAX_BATCH,
    PENDING,
    REPORTED,
    SENT,
    Job,
    check_worker_options,
    func_key,
    learn,
    take_batch,
)
from ._serialize import decode_outcome, dumps_initializer, unpicklable_error
from .base import Executor

__all__ = ["ParallelExecutor", "ProcessExecutor"]

logger = logging.getLogger("dispatcher")

START_FAILURES = 3  # failed starts in a row before the pool gives up


def cpu_count() -> int:
    """The CPUs this process may use (its affinity mask, e.g. a Slurm allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _exit_text(code: int | None) -> str:
    if code is None:
        return "its exit status is unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        hint = " (as the out-of-memory killer does)" if -code == signal.SIGKILL else ""
        return f"it was killed by signal {name}{hint}"
    return f"it exited with code {code}"


class _Worker:
    __slots__ = ("batch", "deadline", "pid", "proc", "ready", "sock")

    def __init__(self, proc, sock):
        self.proc = proc
        self.sock = sock
        self.pid = proc.pid
        self.ready = False
        self.batch: list | None = None
        self.deadline: float | None = None


class _Pool:
    """The worker processes and the I/O thread that owns them.

    Other threads only call :meth:`submit`, :meth:`wake`, :meth:`cancel`,
    :meth:`stop`, :meth:`pids` and :meth:`wait_ready`; everything else runs on
    the I/O thread.
    """

    def __init__(self, size: int, init: bytes | None, max_batch: int):
        self.size = size
        self.init = init
        self.max_batch = max_batch
        self.inbox: collections.deque = collections.deque()
        self.pending: collections.deque = collections.deque()
        self.workers: dict = {}  # socket -> _Worker
        self.est: dict = {}  # function key -> seconds per call
        self.deadlines: list = []  # heap of (time, seq, worker, batch)
        self.seq = 0
        self.start_failures = 0
        self.broken: ExecutorError | None = None
        self.stopped = threading.Event()
        self.ready_changed = threading.Condition()
        self.stats = collections.Counter()
        self.wake_pending = False
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        self.alive_r, self.alive_w = os.pipe()  # workers exit when alive_w closes
        self.executable = spawn.get_executable()
        self.thread = threading.Thread(target=self._main, name="dispatcher-processes", daemon=True)
        self.thread.start()

    # -- called from other threads --------------------------------------------------
    def submit(self, job: Job) -> None:
        self.inbox.append(("task", job))
        if self.stopped.is_set():  # too late for the I/O thread to see it
            self._report(job, False, (ExecutorError("the process pool has stopped"), ""))
        elif len(self.inbox) >= 256:
            self.wake()

    def wake(self) -> None:
        if not self.wake_pending:
            self.wake_pending = True
            with contextlib.suppress(OSError):
                self.wake_w.send(b"\0")

    def cancel(self, job: Job) -> None:
        self.inbox.append(("cancel", job))
        self.wake()

    def stop(self, kill: bool) -> None:
        """Stop the workers (idle ones are asked to exit, busy ones are killed, or
        all are killed) and the I/O thread; nodes not finished are cancelled."""
        if self.thread.is_alive():
            self.inbox.append(("stop", kill))
            self.wake()
            self.thread.join()
        self._close_fds()

    def pids(self) -> list[int]:
        return [w.pid for w in list(self.workers.values())]

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
                        f"only {ready} of {self.size} worker processes started in {timeout} s"
                    )
                self.ready_changed.wait(0.1 if left is None else min(left, 0.1))

    # -- the I/O thread ---------------------------------------------------------------
    def _main(self) -> None:
        kill = True
        try:
            for _ in range(self.size):
                self._spawn()
            while True:
                request = self._inbox()
                if request is not None:
                    kill = request
                    break
                self._dispatch()
                timeout = None
                if self.deadlines:
                    timeout = max(0.0, self.deadlines[0][0] - time.monotonic())
                for key, _ in self.selector.select(timeout):
                    if key.data is None:
                        self._drain_wake()
                    elif key.fileobj in self.workers:  # not forgotten earlier in this loop
                        self._readable(key.data)
                if self.deadlines:
                    self._expire()
        except BaseException as exc:  # never leave the engine waiting on a dead thread
            logger.exception("the process pool's I/O thread failed")
            self.broken = ExecutorError(f"the process pool failed: {type(exc).__name__}: {exc}")
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
        while inbox:
            kind, arg = inbox.popleft()
            if kind == "task":
                arg.key = func_key(arg.task.func)
                if self.broken is not None and not self.workers:
                    self._report(arg, False, (self.broken, ""))
                else:
                    self.pending.append(arg)
            elif kind == "cancel":
                if arg.state == SENT and arg.worker is not None:
                    doomed.add(arg.worker)
                if arg.state != REPORTED:
                    self._report(
                        arg, False, (cf.CancelledError(f"node {arg.task.node.label!r} was cancelled"), "")
                    )
            else:
                return arg
        for worker in doomed:
            if worker.sock in self.workers:
                self._kill(worker)
        return None

    def _report(self, job: Job, ok: bool, payload) -> None:
        if job.state == REPORTED:
            return
        job.state = REPORTED
        job.worker = None
        job.done(job.task, ok, payload)

    def _spawn(self) -> None:
        if self.stopped.is_set() or self.broken is not None:
            return
        parent, child = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [self.executable, wire.__file__, str(child.fileno()), str(self.alive_r)],
                pass_fds=(child.fileno(), self.alive_r),
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            parent.close()
            self._give_up(f"cannot start a worker process ({self.executable}): {exc}")
            return
        finally:
            child.close()
        worker = _Worker(proc, parent)
        self.workers[parent] = worker
        self.selector.register(parent, selectors.EVENT_READ, worker)
        self.stats["started"] += 1
        with contextlib.suppress(OSError):  # if it died at once, its end of file says how
            wire.send(parent, ("init", list(sys.path), self.init))

    def _readable(self, worker: _Worker) -> None:
        try:
            msg = wire.recv(worker.sock)
        except (EOFError, OSError):
            self._lost(worker)
            return
        except Exception as exc:  # a result this process cannot unpickle
            batch, worker.batch = worker.batch, None
            for job in batch or ():
                self._report(job, False, (exc, format_exception(exc)))
            return
        kind = msg[0]
        if kind == "done":
            self._finished(worker, msg[1], msg[2])
        elif kind == "ready":
            worker.ready = True
            self.start_failures = 0
            with self.ready_changed:
                self.ready_changed.notify_all()
        elif kind == "unreadable":
            batch, worker.batch = worker.batch, None
            if len(batch) == 1:
                job = batch[0]
                exc = ExecutorError(
                    f"node {job.task.node.label!r} cannot be unpickled in the worker process: {msg[1]}"
                )
                self._report(job, False, (exc, msg[1]))
            else:
                self._requeue(batch, alone=True)
        elif kind == "init-failed":
            self._forget(worker)
            self._start_failed(msg[1])

    def _finished(self, worker: _Worker, outcomes: list, seconds: list) -> None:
        batch, worker.batch = worker.batch, None
        worker.deadline = None
        learn(self.est, batch, seconds)
        if self.pending:
            self._dispatch_to(worker, self._ready_count())  # keep it busy while we report
        report = self._report
        for job, (ok, value) in zip(batch, outcomes):
            if job.state != REPORTED:
                if ok:
                    report(job, True, value)
                else:
                    report(job, *decode_outcome(ok, value))

    def _ready_count(self) -> int:
        return sum(1 for w in self.workers.values() if w.ready) or 1

    def _dispatch(self) -> None:
        if not self.pending:
            return
        if self.broken is not None and not self.workers:
            while self.pending:
                self._report(self.pending.popleft(), False, (self.broken, ""))
            return
        idle = [w for w in self.workers.values() if w.ready and w.batch is None]
        share = len(idle) or 1
        for worker in idle:
            if not self.pending:
                break
            self._dispatch_to(worker, share)

    def _dispatch_to(self, worker: _Worker, share: int) -> None:
        while True:
            batch = take_batch(self.pending, self.est, share, self.max_batch)
            if batch is None:
                return
            calls = [(j.task.func, j.task.args, j.task.kwargs) for j in batch]
            try:
                payload, buffers = wire.dumps(calls)
                break
            except Exception as exc:
                if len(batch) > 1:  # find the culprit: send them one by one
                    self._requeue(batch, alone=True)
                    continue
                job = batch[0]
                task = job.task
                err = unpicklable_error(task.node.label, task.func, task.args, task.kwargs)
                err.__cause__ = exc
                self._report(job, False, (err, format_exception(exc)))
        del calls
        try:
            wire.send_payload(worker.sock, payload, buffers)
        except OSError:
            self._requeue(batch, alone=False)  # it never ran: no attempt is charged
            self._lost(worker)
            return
        worker.batch = batch
        for job in batch:
            job.state = SENT
            job.worker = worker
        self.stats["batches"] += 1
        self.stats["tasks"] += len(batch)
        timeout = batch[0].task.timeout
        if timeout is not None:
            worker.deadline = time.monotonic() + timeout
            self.seq += 1
            heapq.heappush(self.deadlines, (worker.deadline, self.seq, worker, batch))

    def _requeue(self, batch: list, alone: bool) -> None:
        for job in reversed(batch):
            if job.state != REPORTED:
                job.state = PENDING
                job.worker = None
                job.alone = job.alone or alone
                self.pending.appendleft(job)

    def _expire(self) -> None:
        now = time.monotonic()
        deadlines = self.deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, worker, batch = heapq.heappop(deadlines)
            if worker.batch is not batch or worker.sock not in self.workers:
                continue  # it finished in time
            job = batch[0]
            task = job.task
            self.stats["timeouts"] += 1
            exc = TimeoutError(
                f"node {task.node.label!r} ran longer than its timeout of {task.timeout} s; "
                f"its worker process (pid {worker.pid}) was killed"
            )
            self._report(job, False, (exc, ""))
            self._kill(worker)

    def _forget(self, worker: _Worker) -> None:
        """Drop ``worker`` from the pool and reap its process."""
        if self.workers.pop(worker.sock, None) is None:
            return
        self.selector.unregister(worker.sock)
        worker.sock.close()
        try:
            worker.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()

    def _kill(self, worker: _Worker) -> None:
        """Kill a worker on purpose; what it ran and was not reported goes back."""
        with contextlib.suppress(OSError):
            worker.proc.kill()
        batch, worker.batch = worker.batch, None
        self._forget(worker)
        if batch:
            self._requeue(batch, alone=False)
        self._spawn()

    def _lost(self, worker: _Worker) -> None:
        """A worker died on its own."""
        self._forget(worker)
        how = _exit_text(worker.proc.returncode)
        if not worker.ready:
            self._start_failed(f"a worker process exited before it was ready: {how}")
            return
        self.stats["lost"] += 1
        batch, worker.batch = worker.batch, None
        live = [job for job in batch or () if job.state != REPORTED]
        if batch is not None and len(batch) == 1 and live:
            job = live[0]
            exc = WorkerLostError(
                f"the worker process (pid {worker.pid}) running node {job.task.node.label!r} died: {how}"
            )
            logger.warning("%s", exc)
            self._report(job, False, (exc, ""))
        elif live:
            logger.warning("a worker process (pid %d) died running %d nodes: %s", worker.pid, len(live), how)
            self._requeue(live, alone=True)
        self._spawn()

    def _start_failed(self, why: str) -> None:
        self.start_failures += 1
        if self.start_failures >= START_FAILURES:
            self._give_up(why)
        else:
            logger.warning("%s; starting another", why)
            self._spawn()

    def _give_up(self, why: str) -> None:
        self.broken = ExecutorError(f"worker processes cannot start: {why}")
        logger.error("%s", self.broken)
        with self.ready_changed:
            self.ready_changed.notify_all()
        if not self.workers:
            while self.pending:
                self._report(self.pending.popleft(), False, (self.broken, ""))

    def _teardown(self, kill: bool) -> None:
        self.stopped.set()  # from here on submit() reports for itself
        stopped = self.broken or cf.CancelledError("the executor was shut down")
        for worker in list(self.workers.values()):
            for job in worker.batch or ():
                self._report(job, False, (stopped, ""))
            if kill or worker.batch is not None or not worker.ready:
                with contextlib.suppress(OSError):
                    worker.proc.kill()
            else:
                worker.sock.shutdown(socket.SHUT_WR)  # end of file: an idle worker exits
        while self.pending:
            self._report(self.pending.popleft(), False, (stopped, ""))
        while self.inbox:
            kind, arg = self.inbox.popleft()
            if kind == "task":
                self._report(arg, False, (stopped, ""))
        deadline = time.monotonic() + 5
        for worker in list(self.workers.values()):
            try:
                worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
            self.selector.unregister(worker.sock)
            worker.sock.close()
        self.workers.clear()
        with self.ready_changed:
            self.ready_changed.notify_all()

    def _close_fds(self) -> None:
        if self.alive_w < 0:
            return
        for fd in (self.alive_w, self.alive_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.alive_w = self.alive_r = -1
        self.selector.close()
        self.wake_r.close()
        self.wake_w.close()


_POOLS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for pool in list(_POOLS):
        pool.stop(kill=True)


class ProcessExecutor(Executor):
    """Run nodes in a pool of ``max_workers`` worker processes.

    Args:
        max_workers: how many processes (default: the CPUs this process may use).
        initializer: called with ``initargs`` in each worker as it starts (set up
            logging, load a model); if it raises, the worker cannot start.
        batch_size: ``"auto"`` sends nodes of functions known to be quick in
            batches of up to 1000; an int sets that limit (1 sends every node on
            its own).

    ``retries``, ``retry_on``, ``backoff`` and ``timeout`` are those of every
    :class:`~dispatcher.Executor`; a lost worker
    (:class:`~dispatcher.WorkerLostError`) is retried by default.

    The pool starts on the first run (or :meth:`start`) and is shut down by
    :meth:`close`. See :mod:`dispatcher.executors.process` for what happens when
    a worker dies, a node times out or a run is interrupted.

    >>> import dispatcher as dp
    >>> with dp.ProcessExecutor(2) as ex:
    ...     dp.execute(dp.Op(lambda x: x * 2, 21), ex)
    42
    """

    enforces_timeouts = True
    default_retry_on = (is_worker_lost,)

    def __init__(
        self, max_workers: int | None = None, *, initializer=None, initargs=(), batch_size="auto", **options
    ):
        super().__init__(**options)
        check_worker_options(max_workers, batch_size, initializer)
        self.max_workers = max_workers or cpu_count()
        self.batch_size = batch_size
        self._init = dumps_initializer(initializer, initargs)
        self._pool: _Pool | None = None

    def start(self, timeout: float | None = 60.0) -> ProcessExecutor:
        """Start the workers now and wait until they are ready; returns ``self``."""
        self._open()
        self._pool.wait_ready(timeout)
        return self

    def worker_pids(self) -> list[int]:
        """The process ids of the current workers (empty before the first run)."""
        return self._pool.pids() if self._pool is not None else []

    @property
    def stats(self) -> dict:
        """Counts for the current pool of ``tasks`` and ``batches`` sent, workers
        ``started``, ``lost`` and killed for ``timeouts``."""
        return dict(self._pool.stats) if self._pool is not None else {}

    def _open(self) -> None:
        super()._open()
        if self._pool is None:
            max_batch = MAX_BATCH if self.batch_size == "auto" else self.batch_size
            self._pool = _Pool(self.max_workers, self._init, max_batch)
            _POOLS.add(self._pool)
            weakref.finalize(self, _Pool.stop, self._pool, True)

    def _submit(self, task, done) -> None:
        job = Job(task, done)
        task.handle = job
        self._pool.submit(job)

    def _flush(self) -> None:
        self._pool.wake()

    def _cancel(self, task) -> None:
        if self._pool is not None and task.handle is not None:
            self._pool.cancel(task.handle)

    def _interrupt(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop(kill=True)

    def _shutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop(kill=False)

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<{type(self).__name__} max_workers={self.max_workers}{state}>"


ParallelExecutor = ProcessExecutor
