"""The executor base: what every executor shares, and the two things each must say.

An executor says how a ready :class:`~dispatcher.engine.Task` is started
(``_submit(task, done)``, which arranges for ``done(task, ok, payload)`` to be
called when it finishes, from any thread) and how a started task is stopped
(``_cancel(task)``). Everything else (ordering, retries, timeouts, errors,
progress) lives in the engine. Class flags describe the executor to the engine:

``synchronous``
    ``_submit`` runs the task to the end before it returns.
``runs_inline``
    the engine may call the node's function itself, where the run is driven,
    instead of making a task (``_submit`` is then used only for nodes with a
    timeout).
``enforces_timeouts``
    ``_submit`` stops a task at its timeout itself (raising ``TimeoutError``), so
    the engine need not watch the clock for it.
``needs_loop``
    tasks run on an asyncio event loop, so a blocking ``run`` starts one.
``pipelines``
    a task's arguments may hold the *handles* (``task.handle``) of tasks not yet
    finished, which the backend resolves where the work runs (dask futures): the
    run uses a :class:`~dispatcher.engine.PipelinedRunState`, every reported value
    is a handle, and ``_gather`` / ``_gather_async`` bring back the outputs'
    values, ``_fetch_remote`` any other node's on ``fetch()``.

Optional hooks: ``_flush()`` is called after each burst of ``_submit`` calls
(an executor may hold tasks back to send them together), ``_interrupt()`` when a
run ends by an exception that is not a node's failure (Ctrl-C, a failing
callback): an executor with worker processes stops them there, and
``_run_spmd(outputs, run)`` wraps a whole run (an SPMD executor drives it on one
MPI rank and follows it on the others).
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..checks import check_retries, check_timeout, retry_predicates
from ..engine import Backoff, Task
from ..results import ExecutorError

__all__ = ["Executor"]


class Executor:
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
    """

    synchronous = False
    runs_inline = False
    enforces_timeouts = False
    needs_loop = False
    inline_light = True
    pipelines = False
    default_retry_on: tuple = ()

    def __init__(
        self,
        *,
        retries: int = 5,
        retry_on: Any = None,
        backoff: Backoff | None = None,
        timeout: float | None = None,
    ):
        retries = check_retries(retries)
        timeout = check_timeout(timeout)
        if backoff is not None and not isinstance(backoff, Backoff):
            raise TypeError(f"backoff must be a dispatcher.Backoff, got {type(backoff).__name__}")
        self.retries = retries
        self.retry_on = () if retry_on is None else retry_predicates(retry_on)
        self.backoff = backoff if backoff is not None else Backoff()
        self.timeout = timeout
        self.closed = False

    # -- what each executor says -------------------------------------------------
    def _submit(self, task: Task, done) -> None:
        raise NotImplementedError

    def _cancel(self, task: Task) -> None:
        """Stop ``task`` if the backend can; its ``done`` is still called once."""

    def _open(self) -> None:
        """Get ready for a run (start workers on first use); called by every run."""
        if self.closed:
            raise ExecutorError(f"{type(self).__name__} is closed")

    def _shutdown(self) -> None:
        """Release the workers this executor started."""

    def _flush(self) -> None:
        """A burst of ``_submit`` calls is over: start what was held back."""

    def _interrupt(self) -> None:
        """The run is being interrupted: stop the work at once (it is then cancelled)."""

    def _run_spmd(self, outputs, run):
        """Make the run: ``run()`` does it here. An executor whose runs involve
        every rank of an MPI job (SerialMPIExecutor) runs it on one rank and
        follows it on the others."""
        return run()

    def _nested_wait(self):
        """A context manager around a run's waiting: an executor whose node may
        start a nested run on it lends that node's worker while the run waits (a
        thread pool gives the slot to another call), so that nested runs cannot
        deadlock."""
        return contextlib.nullcontext()

    def _nested_wait_async(self):
        """:meth:`_nested_wait` for ``run_async``: an async context manager (an
        ``AsyncExecutor`` gives back the waiting node's place among its
        ``max_concurrency``)."""
        return contextlib.nullcontext()

    async def _run_spmd_async(self, outputs, run):
        """:meth:`_run_spmd` for ``run_async``: ``await run()`` does it here."""
        return await run()

    # -- shared surface ---------------------------------------------------------------
    def run(self, outputs, inputs=(), **options):
        """``dispatcher.run(self, outputs, inputs, **options)``."""
        from ..api import run

        return run(self, outputs, inputs, **options)

    def close(self) -> None:
        """Shut down what this executor started; running it again raises ExecutorError."""
        if not self.closed:
            self.closed = True
            self._shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<{type(self).__name__}{state}>"
