"""SerialExecutor: one node at a time, in the calling thread.

The engine calls each node's function itself (``runs_inline``), so a serial run
costs little more than calling the functions by hand.

Nodes run inside the caller's own stack, so ``pdb.set_trace()``, ``breakpoint()``
and ``cProfile`` work inside them. An exception a node raises fails it,
``SystemExit`` included; ``KeyboardInterrupt`` (Ctrl-C) ends the run. A node's
timeout is enforced with ``SIGALRM`` when the run is driven from the main thread (the node is interrupted by a
``TimeoutError`` raised inside it); from any other thread the node runs in a helper
thread that is abandoned, still running, when its time is up.
"""

from __future__ import annotations

import threading

from ..engine.records import timeout_error
from ..results import format_exception
from ._alarm import alarm
from .base import Capabilities, Executor

__all__ = ["SerialExecutor", "call_in_thread", "call_with_alarm"]


class SerialExecutor(Executor):
    """Run nodes one at a time in the calling thread (debugging, profiling).

    The default of :func:`~dispatcher.execute`. A breakpoint or a profiler in the
    calling thread sees every node. A node past its timeout is interrupted with
    ``SIGALRM`` when the run is driven from the main thread (from another thread,
    it runs in a helper thread that is abandoned at the deadline). ``retries``,
    ``retry_on``, ``backoff`` and ``timeout`` are those of every
    :class:`~dispatcher.Executor`.

    >>> import dispatcher as dp
    >>> with dp.SerialExecutor() as ex:
    ...     dp.run(ex, [dp.Op(max, 3, 4)])[0].value
    4
    """

    capabilities = Capabilities(synchronous=True, runs_inline=True, in_process=True)

    def slots(self) -> int:
        return 1  # one node at a time: each takes all the cores it may

    def start_task(self, task, done) -> None:
        # The engine calls untimed nodes itself (runs_inline); the rest come here.
        task.where = "driver"
        if task.timeout is None:
            outcome = _call(task)
        elif threading.current_thread() is threading.main_thread():
            outcome = call_with_alarm(task)
        else:
            outcome = call_in_thread(task)
        done(task, *outcome)


def _call(task):
    try:
        return True, task.run()
    except KeyboardInterrupt:
        raise  # Ctrl-C in the calling thread: the run ends
    except BaseException as exc:  # SystemExit too: it fails the node, as on every executor
        return False, (exc, format_exception(exc))


def _timeout_error(task) -> TimeoutError:
    return timeout_error(task.node.label, task.timeout)


def call_with_alarm(task):
    """The outcome of ``task`` called here, interrupted by ``SIGALRM`` at its timeout
    (main thread only; an alarm set before it still rings at its time)."""
    try:
        with alarm(task.timeout, lambda: _timeout_error(task)):
            return _call(task)
    except TimeoutError as exc:  # the alarm rang as the call was returning
        return False, (exc, format_exception(exc))


def call_in_thread(task):
    """The outcome of ``task`` called in a helper thread that is abandoned, still
    running, at its timeout."""
    box: list = []

    def target():
        try:
            box.append(_call(task))
        except BaseException as exc:  # KeyboardInterrupt raised by the node itself, in this thread
            box.append((False, (exc, format_exception(exc))))

    worker = threading.Thread(target=target, name=f"dispatcher-{task.node.label}", daemon=True)
    worker.start()
    worker.join(task.timeout)
    if not box:
        exc = _timeout_error(task)
        return False, (exc, format_exception(exc))
    return box[0]
