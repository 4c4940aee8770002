"""``ProcessExecutor`` (alias ``ParallelExecutor``): nodes run in worker processes.

Each worker is a fresh Python interpreter running ``_procworker.py``, a subprocess
of this one connected by its own socket
(:class:`~dispatcher.executors._launch.LocalLauncher`), served by the
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

from ._jobs import check_worker_options
from ._launch import LocalLauncher, cpu_count
from .codec import dumps_initializer
from .pooled import PooledExecutor, PoolHandle

__all__ = ["ParallelExecutor", "ProcessExecutor"]


class ProcessExecutor(PooledExecutor):
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
        self.open()
        self._workers.pool.wait_ready(timeout)
        return self

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<{type(self).__name__} max_workers={self.max_workers}{state}>"


ParallelExecutor = ProcessExecutor
