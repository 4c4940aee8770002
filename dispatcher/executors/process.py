"""``ProcessExecutor`` (alias ``ParallelExecutor``): nodes run in worker processes.

Each worker is a fresh Python interpreter running ``_procworker.py``, a subprocess
of this one connected by its own socket (:class:`LocalLauncher`), served by the
job pool of :mod:`dispatcher.executors._pool`, which says how nodes are batched,
how a lost worker is replaced and its node retried, how a timeout kills its
worker, and where the workers' output goes. Functions, arguments and results
travel with cloudpickle (protocol 5), so lambdas, closures and functions defined
in ``__main__`` or a notebook work, and the memory of large contiguous numpy
arrays is sent straight from the array and received straight into the new
array's memory.

Cancellation and interruption: cancelling a node that is running kills its
worker (a replacement starts). Ctrl-C or an exception in the caller during a run
kills every worker; the next run starts new ones. ``close()`` (or leaving the
``with`` block) stops idle workers and kills busy ones. At interpreter exit every
pool is shut down, and a worker whose parent dies exits at once.

Workers are started with ``multiprocessing``'s executable (``sys.executable``
unless ``multiprocessing.set_executable`` changed it), inherit the environment,
the working directory and ``sys.path``, and ignore SIGINT. POSIX only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from multiprocessing import spawn

from ..results import is_worker_lost
from . import _procworker as wire
from ._batching import check_worker_options
from ._pool import PoolHandle, Worker
from ._serialize import dumps_initializer
from .base import Executor

__all__ = ["ParallelExecutor", "ProcessExecutor"]


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


class LocalLauncher:
    """Starts each worker as a subprocess of this process, connected by a socket pair.

    A worker exits as soon as this process does: it watches a pipe whose only
    write end this process holds (:attr:`alive_w`).
    """

    connects = False  # workers arrive at once, not by connecting back
    what = "worker process"
    whats = "worker processes"

    def __init__(self):
        self.alive_r, self.alive_w = os.pipe()
        self.executable = spawn.get_executable()

    def start(self, pool, count: int) -> None:
        for _ in range(count):
            parent, child = socket.socketpair()
            try:
                proc = subprocess.Popen(
                    [self.executable, wire.__file__, str(child.fileno()), str(self.alive_r)],
                    pass_fds=(child.fileno(), self.alive_r),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            except OSError:
                parent.close()
                raise
            finally:
                child.close()
            pool.output.add(proc.stdout, 1)
            pool.output.add(proc.stderr, 2)
            pool.attach(Worker(parent, proc.pid, socket.gethostname(), proc=proc))

    def kill(self, worker: Worker) -> None:
        with contextlib.suppress(OSError):
            worker.proc.kill()

    def reap(self, worker: Worker) -> None:
        try:
            worker.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()

    def exit_text(self, worker: Worker) -> str:
        return _exit_text(worker.proc.returncode)

    def stop(self, workers: list, grace: float) -> None:
        deadline = time.monotonic() + grace
        for worker in workers:
            try:
                worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()

    def close(self) -> None:
        for fd in (self.alive_w, self.alive_r):
            with contextlib.suppress(OSError):
                os.close(fd)


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
    :meth:`close`. See :mod:`dispatcher.executors._pool` for what happens when
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
        self._workers = PoolHandle(
            self.max_workers, dumps_initializer(initializer, initargs), batch_size, LocalLauncher
        )

    def start(self, timeout: float | None = 60.0) -> ProcessExecutor:
        """Start the workers now and wait until they are ready; returns ``self``."""
        self._open()
        self._workers.pool.wait_ready(timeout)
        return self

    def worker_pids(self) -> list[int]:
        """The process ids of the current workers (empty before the first run)."""
        return [pid for _, pid in self._workers.workers_info()]

    @property
    def stats(self) -> dict:
        """Counts for the current pool of ``tasks`` and ``batches`` sent, workers
        ``started``, ``lost`` and killed for ``timeouts``."""
        return self._workers.stats

    def _open(self) -> None:
        super()._open()
        self._workers.open(self)

    def _submit(self, task, done) -> None:
        self._workers.submit(task, done)

    def _flush(self) -> None:
        self._workers.flush()

    def _cancel(self, task) -> None:
        self._workers.cancel(task)

    def _interrupt(self) -> None:
        self._workers.interrupt()

    def _shutdown(self) -> None:
        self._workers.shutdown()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<{type(self).__name__} max_workers={self.max_workers}{state}>"


ParallelExecutor = ProcessExecutor
