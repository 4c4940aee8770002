"""The engine's vocabulary: the :class:`NodeState` of a node in a run, and what the
engine and an executor hand each other: a :class:`Task` to start, the frozen
:class:`RunOptions` of a run, and the error of a node past its deadline.

An executor receives a task, starts ``task.run()`` (or ``task.call()``) wherever
its work runs, and reports the outcome once with ``done(task, ok, payload)``: the
value, or ``(exception, formatted traceback)``. ``task.handle`` is the executor's
own record of the attempt (a future, a job); the engine only passes it back.
Before it reports, an executor that knows says where the task ran
(``task.where``) and when its call began and ended there (``task.started``,
``task.finished``; see :mod:`dispatcher.attempts`).
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from ..coroutines import finish
from .callbacks import Callback
from .retries import Backoff

__all__ = ["NodeState", "RunOptions", "Task", "timeout_error"]

_WRAPPERS = 16  # wrappers looked through for a call's __dispatcher_stop__


class NodeState(enum.Enum):
    """Where a node of a run is (the transitions are in :mod:`dispatcher.engine.state`)."""

    WAITING = "waiting"
    READY = "ready"
    SENT = "sent"
    RUNNING = "running"
    PARKED = "parked"
    BACKING_OFF = "backing off"
    CLAIMED = "claimed by another run"
    DONE = "done"
    FAILED = "failed"
    RELEASED = "released"

    def __repr__(self) -> str:
        return self.name


@attrs.frozen
class RunOptions:
    """Everything a run is told besides its graph, fixed when the run starts.

    ``dispatcher.run`` builds it from its own arguments and the executor's settings
    and :class:`~dispatcher.executors.base.Capabilities`.
    """

    throw_error: bool = True
    """The first failure ends the run and is raised."""
    retries: int = 5
    """Attempts after the first, for a node without its own ``retries``."""
    retry_on: tuple = ()
    """Predicates ``exception -> bool`` for a node without its own ``retry_on``."""
    always_retry_on: tuple = ()
    """Predicates that apply to every node as well (the executor's lost worker)."""
    backoff: Backoff = attrs.Factory(Backoff)
    timeout: float | None = None
    """Seconds a node without its own ``timeout`` may run."""
    release: bool = False
    """Drop each intermediate value once no remaining node needs it."""
    callbacks: tuple[Callback, ...] = ()
    inline_light: bool = True
    """The engine computes light nodes (indexing, collecting) itself."""
    inline_all: bool = False
    """The engine calls every node without a timeout itself (a serial executor)."""
    starts_reported: bool = False
    """The executor sets ``task.started`` when a task's work begins where it runs
    (it may first wait in a queue): a deadline counts from then, not from when the
    task was handed over."""
    on_timeout: str = ""
    """What the executor does to a task past its deadline, as the end of the
    ``TimeoutError``'s message; ``{where}`` stands for ``task.where``."""
    timeout_grace: float = 0.0
    """Seconds the executor's own stop of a late task (an alarm where it runs) has
    to report it, before the engine fails the task itself."""
    pipelined: bool = False
    """A node is sent once its dependencies are *sent*, with their handles as
    arguments (see :mod:`dispatcher.engine.pipelining`)."""
    in_process: bool = False
    """Tasks run in the driver's process (its threads, its event loop), which they
    share: a node's cores do not set the process's thread variables."""
    task_window: int | None = None
    """At most this many tasks handed to the executor and not yet reported (None: no
    limit); the other ready nodes wait in the engine, where no task, future or job
    exists for them yet, so that a wide graph of a million nodes does not make a
    million objects for the collector to walk. A node waiting for cores starts as
    soon as they are free, full window or not."""


class Task:
    """One attempt at running one node: what an executor starts."""

    __slots__ = (
        "after",
        "args",
        "attempt",
        "cores",
        "expired",
        "finished",
        "func",
        "handle",
        "kwargs",
        "node",
        "ready",
        "started",
        "submitted",
        "timeout",
        "where",
    )

    def __init__(self, node, func, args, kwargs, attempt, timeout):
        self.node = node
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.attempt = attempt
        self.timeout = timeout
        self.handle: Any = None  # the executor's own record (a future, a task)
        self.after: tuple = ()  # pipelined: handles of graph edges that pass no value
        self.ready = 0.0  # when it became ready (the engine's clock: see dispatcher.attempts)
        self.submitted = 0.0  # when the engine handed it over
        self.started: float | None = None  # when its work began (time.monotonic), if the executor says
        self.finished: float | None = None  # when its work ended where it ran, if the executor says
        self.expired = False  # the engine failed it at its deadline (then cancels its work)
        self.where: str | None = None  # the worker it runs on, if the executor says ("pid 12 on node3")
        self.cores: int | None = None  # the cores it holds of the executor's budget

    def call(self) -> Any:
        """The node's function called with its arguments (a coroutine for an ``async def``)."""
        kwargs = self.kwargs
        return self.func(*self.args, **kwargs) if kwargs else self.func(*self.args)

    def run(self) -> Any:
        """:meth:`call`, with a coroutine it returns run to its end (see :mod:`dispatcher.coroutines`)."""
        return finish(self.call())

    def stop(self) -> None:
        """The run gave this attempt up while it runs in this process: a function
        that can stop its work says how with ``__dispatcher_stop__`` (a program a
        :func:`dispatcher.command` runs is ended); others run on."""
        func = self.func
        for _ in range(_WRAPPERS):  # a mock's __wrapped__ is another mock, and so on
            if func is None:
                return
            stop = getattr(type(func), "__dispatcher_stop__", None)
            if stop is not None:
                stop(func)
                return
            func = getattr(func, "__wrapped__", None)

    def __repr__(self) -> str:
        return f"<Task {self.node.label!r} attempt {self.attempt}>"


def timeout_error(label: str, timeout: float, why: str = "") -> TimeoutError:
    """The error of node ``label`` that ran longer than its ``timeout``; ``why``
    says what was done about it (``"; its worker was killed"``)."""
    return TimeoutError(f"node {label!r} ran longer than its timeout of {timeout} s{why}")
