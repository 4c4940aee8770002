"""The executor protocol: what every executor shares, and what each must say.

Everything a run decides (ordering, retries, timeouts, errors, progress) lives in
the engine (:mod:`dispatcher.engine`). An executor only says where a
:class:`~dispatcher.engine.Task` runs. It subclasses :class:`Executor`, describes
itself with one :class:`Capabilities` record, and implements:

``start_task(task, done)`` (required)
    start ``task.run()`` wherever the work runs and arrange for
    ``done(task, ok, payload)`` to be called once when it ends, from any thread:
    ``ok`` and the value, or ``False`` and ``(exception, formatted traceback)``
    (:func:`~dispatcher.results.format_exception`). Raising here fails the node
    at once (the pool is broken, the call cannot be sent).
``cancel_task(task)``
    stop the work of a started task if the backend can; ``done`` is still
    called once (its answer is ignored).
``open()`` / ``stop_workers()``
    get ready for a run (start workers on first use; the base refuses a closed
    executor) / release what the executor started; ``close()`` calls it once.
``flush_tasks()``
    a burst of ``start_task`` calls is over: send what was held back to batch it.
``interrupt_run()``
    the run ends by an exception that is not a node's failure (Ctrl-C, a failing
    callback): stop the work at once; the running tasks are then cancelled and
    awaited.
``lend_worker()`` / ``lend_worker_async()``
    a (async) context manager around a run's waiting: an executor whose node may
    start a nested run on it lends that node's worker meanwhile, so that nested
    runs cannot deadlock.
``wrap_run(outputs, run)`` / ``wrap_run_async(outputs, run)``
    make the whole run (``run()``); an SPMD executor drives it on one rank and
    follows it on the others.
``gather_values(handles)`` / ``gather_values_async`` / ``fetch_value(node, handle)``
    for an executor that ``pipelines``: bring back the outputs' values, as
    ``(ok, value or (exception, traceback))`` each, and any other node's value on
    ``fetch()``.

The names avoid ``concurrent.futures.Executor``'s ``submit``, ``map`` and
``shutdown``, which stay free for that surface.

Adding an executor takes one module with its class and one line in
:mod:`dispatcher.executors.registry`, which the test suite's shared fixture and the
bench harness both read; see the docs' page "Writing an executor".
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading
from typing import Any

import attrs

from .. import daskgraph
from ..checks import check_budget, check_retries, check_timeout, retry_predicates
from ..engine import Backoff, Task
from ..engine.cores import CoreBudget
from ..futures import Submissions, map_calls
from ..results import ExecutorError
from ..running import run_graph
from ..slurm import this_host, usable_cores

__all__ = ["TASK_WINDOW", "Capabilities", "Executor"]

TASK_WINDOW = 1024
"""The least :meth:`Executor.task_window` of an executor that queues its tasks."""


@attrs.frozen
class Capabilities:
    """What an executor tells the engine about itself (all False but ``inline_light``
    for an executor that runs tasks concurrently and reports from any thread)."""

    synchronous: bool = False
    """``start_task`` runs the task to its end before it returns."""
    runs_inline: bool = False
    """The engine may call an untimed node's function itself, where the run is
    driven, instead of making a task."""
    reports_start: bool = False
    """The executor sets ``task.started = time.monotonic()`` when the task's work
    begins where it runs (it may wait in a queue before): its deadline counts from
    then. Otherwise it counts from when ``start_task`` was called."""
    on_timeout: str = ""
    """What ``cancel_task`` does to a task past its deadline, to end the message of
    its ``TimeoutError`` (``"; its worker process ({where}) was killed"``, where
    ``{where}`` is the ``task.where`` the executor set)."""
    timeout_grace: float = 0.0
    """The executor stops a task at its timeout where it runs (an alarm on an MPI
    rank that cannot be killed) and reports its ``TimeoutError``; the engine fails
    the task itself only this many seconds later, if it did not."""
    needs_loop: bool = False
    """Tasks run on an asyncio event loop: a blocking ``run`` starts one."""
    inline_light: bool = True
    """The engine computes light nodes (indexing, collecting) itself."""
    in_process: bool = False
    """Tasks run in the process that drives the run (in it, in its threads or on its
    event loop): they share its memory and the state of its modules."""
    store_on_worker: bool = False
    """Tasks run in other processes, which write a run's store themselves
    (:mod:`dispatcher.store.worker`), so that values need not travel to the driver
    for it. Not for an executor whose every rank makes a value of which one counts
    (SPMD)."""
    pipelines: bool = False
    """A task's arguments may hold the *handles* (``task.handle``) of tasks not yet
    finished, which the backend resolves where the work runs (dask futures); see
    :mod:`dispatcher.engine.pipelining`."""
    queues_tasks: bool = False
    """Its tasks wait in a queue for a known number of workers (:meth:`Executor.slots`):
    a run hands it at most :meth:`Executor.task_window` tasks at once."""


class Executor(cf.Executor):
    """Base class of executors.

    Args:
        retries: how many times a failed node may run again (default 5, as in
            Dispatcher.jl); a node's own ``retries`` overrides it.
        retry_on: predicates ``exception -> bool``; a failed node is retried only
            when one of them returns True (default: none). A node's own
            ``retry_on`` replaces them. The executor's :attr:`default_retry_on`
            (a lost worker, for executors that run nodes in other processes)
            apply to every node in addition; ``retries=0`` turns all retries off.
        backoff: the delays between attempts (:class:`~dispatcher.Backoff`).
        timeout: seconds after which any node fails with ``TimeoutError``, unless
            the node has a ``timeout`` of its own (default: no limit).
        cores: the executor's budget of cores for the nodes that ask for cores
            (``@dp.op(cores=...)``; :mod:`dispatcher.engine.cores`); default: what
            it reaches (:meth:`reachable_cores`: the usable CPUs of this machine,
            or of the Slurm job on it).
    """

    capabilities = Capabilities()
    default_retry_on: tuple = ()
    """Predicates that retry every node's failure in addition to its own
    ``retry_on`` (an executor with workers in other processes: a lost worker)."""

    def __init__(
        self,
        *,
        retries: int = 5,
        retry_on: Any = None,
        backoff: Backoff | None = None,
        timeout: float | None = None,
        cores: int | None = None,
    ):
        retries = check_retries(retries)
        timeout = check_timeout(timeout)
        if backoff is not None and not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a dispatcher.Backoff, got {type(backoff).__name__}")
        self.retries = retries
        self.retry_on = () if retry_on is None else retry_predicates(retry_on)
        self.backoff = backoff if backoff is not None else Backoff()
        self.timeout = timeout
        self._cores = check_budget(cores)
        self._budget: CoreBudget | None = None
        self._budget_lock = threading.Lock()  # runs that start together share one budget
        self.closed = False
        self._submitted = Submissions(self)

    # -- cores ----------------------------------------------------------------------
    @property
    def cores(self) -> int:
        """The executor's budget of cores: its ``cores=``, else :meth:`reachable_cores`."""
        return self.core_budget().total

    def core_budget(self) -> CoreBudget:
        """The budget every run on this executor draws on (made on first use, once
        also when runs in several threads ask at the same time)."""
        if self._budget is None:
            with self._budget_lock:
                if self._budget is None:
                    self._budget = CoreBudget(
                        self._cores or self.reachable_cores(),
                        this_host(),
                        self.slots(),
                        self.cores_per_worker(),
                    )
        return self._budget

    def reachable_cores(self) -> int:
        """The cores the executor's nodes may use when it was not given ``cores=``:
        the usable CPUs of this machine, or of the Slurm job here."""
        return usable_cores()

    def cores_per_worker(self) -> int | None:
        """The most cores one node can have: those of the largest worker, where the
        budget spans several (None: the whole budget)."""
        return None

    def slots(self) -> int | None:
        """How many nodes the executor runs at once (its workers; None: no limit
        it knows), among which a run shares the free cores."""
        return getattr(self, "max_workers", None)

    def task_window(self) -> int | None:
        """At most how many of a run's tasks the executor holds at once, not yet
        reported (:attr:`~dispatcher.engine.RunOptions.task_window`): for one that
        queues its tasks for its workers, :data:`TASK_WINDOW`, or four per worker if
        that is more, so that its workers never wait for the engine, while a wide
        graph's other ready nodes wait in the engine, where they cost nothing. The
        window never holds back a call the workers would run: they run at most
        one call per worker, and a call waiting on a nested run frees its slot to
        that run's own tasks. None: no limit."""
        slots = self.slots() if self.capabilities.queues_tasks else None
        if slots is None:
            return None
        return max(TASK_WINDOW, 4 * slots)

    # -- what each executor says (see the module's docstring) ---------------------
    def start_task(self, task: Task, done) -> None:
        """Start ``task``; call ``done(task, ok, payload)`` once when it ends."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to start a task")

    def cancel_task(self, task: Task) -> None:
        """Stop ``task`` if the backend can; its ``done`` is still called once."""

    def open(self) -> None:
        """Get ready for a run (start workers on first use); called by every run."""
        if self.closed:
            raise ExecutorError(f"{type(self).__name__} is closed")

    def stop_workers(self) -> None:
        """Release the workers this executor started."""

    def flush_tasks(self) -> None:
        """A burst of ``start_task`` calls is over: start what was held back."""

    def interrupt_run(self) -> None:
        """The run is being interrupted: stop the work at once (it is then cancelled)."""

    def wrap_run(self, outputs, run):
        """Make the run: ``run()`` does it here. An executor whose runs involve
        every rank of an MPI job (SerialMPIExecutor) runs it on one rank and
        follows it on the others."""
        return run()

    def lend_worker(self):
        """A context manager around a run's waiting: an executor whose node may
        start a nested run on it lends that node's worker while the run waits (a
        thread pool gives the slot to another call), so that nested runs cannot
        deadlock."""
        return contextlib.nullcontext()

    def lend_worker_async(self):
        """:meth:`lend_worker` for ``run_async``: an async context manager (an
        ``AsyncExecutor`` gives back the waiting node's place among its
        ``max_concurrency``)."""
        return contextlib.nullcontext()

    async def wrap_run_async(self, outputs, run):
        """:meth:`wrap_run` for ``run_async``: ``await run()`` does it here."""
        return await run()

    def gather_values(self, handles: list) -> list:
        """Pipelines: the values of ``handles``, ``(ok, value or (exception, traceback))`` each."""
        raise NotImplementedError(f"{type(self).__name__} does not pipeline")

    async def gather_values_async(self, handles: list) -> list:
        """:meth:`gather_values` for ``run_async``."""
        return self.gather_values(handles)

    def fetch_value(self, node, handle) -> Any:
        """Pipelines: the value of ``node``, still on the workers as ``handle``."""
        raise NotImplementedError(f"{type(self).__name__} does not pipeline")

    # -- shared surface ---------------------------------------------------------------
    def run(self, outputs, inputs=(), **options):
        """``dispatcher.run(self, outputs, inputs, **options)``."""
        return run_graph(self, outputs, inputs, **options)

    def close(self) -> None:
        """Shut down what this executor started; running it again raises ExecutorError."""
        if not self.closed:
            self.closed = True
            self.stop_workers()

    # -- the concurrent.futures surface (see dispatcher.futures) -----------------------
    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        """Run ``fn(*args, **kwargs)`` as a node; its ``concurrent.futures.Future``.
        Futures of this executor among the arguments are dependencies."""
        return self._submitted.submit(fn, args, kwargs)

    def map(self, fn, *iterables, timeout: float | None = None, chunksize: int = 1):
        """The values of ``fn`` over the zipped ``iterables``, in order (an iterator).
        All calls are submitted at once; with ``chunksize > 1`` each chunk of that many
        calls is one node (see :mod:`dispatcher.futures`)."""
        return map_calls(self._submitted, fn, iterables, timeout, chunksize)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls, cancel the pending ones if ``cancel_futures``, and close
        the executor once the running ones end (now, if ``wait``)."""
        self._submitted.shutdown(wait, cancel_futures)
        if wait:
            self.close()
        else:
            threading.Thread(target=self.shutdown, name="dispatcher-shutdown", daemon=True).start()

    def get(self, dsk: dict, keys, **kwargs) -> Any:
        """This executor as a dask scheduler: the values of ``keys`` of the dask graph
        ``dsk`` (``dask.compute(x, scheduler=ex.get)``; see :mod:`dispatcher.daskgraph`).
        dask's local callbacks are honoured (``callbacks=`` and the active ones); the
        other keyword arguments dask passes to schedulers are accepted and ignored."""
        return daskgraph.get(
            dsk,
            keys,
            lambda outputs, callbacks: run_graph(self, outputs, release=True, callbacks=callbacks),
            kwargs.get("callbacks"),
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown(wait=True)

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<{type(self).__name__}{state}>"
