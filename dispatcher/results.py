"""Results of a run and the package's exceptions.

A run gives one :class:`DispatchResult` per requested output. A result is either
a value or a :class:`DependencyError`; the error always names the node that failed
first, carries the original exception and its formatted traceback from wherever the
node ran, and is shared by every node downstream of that failure.
"""

from __future__ import annotations

import traceback as _tb
from typing import Any

import attrs

__all__ = [
    "DependencyError",
    "DispatchResult",
    "DispatcherError",
    "ExecutorError",
    "RemoteError",
    "Terminated",
    "WorkerLostError",
]


class DispatcherError(Exception):
    """Base of the package's own exceptions."""


class ExecutorError(DispatcherError):
    """The graph or the executor's configuration cannot run.

    Raised before anything runs for a cycle or a malformed graph, and for a closed
    executor or a missing backend.
    """


class WorkerLostError(DispatcherError):
    """The worker process, rank or machine running a node went away mid-node.

    Executors that run nodes elsewhere retry a node that fails with it by default
    (``retries`` times); the message says which worker died and how.
    """


class RemoteError(DispatcherError):
    """Stands for an exception raised in a worker that could not be pickled back.

    Attributes:
        type_name: the qualified name of the original exception's type.
    """

    def __init__(self, type_name: str, message: str):
        self.type_name = type_name
        super().__init__(type_name, message)

    def __str__(self) -> str:
        return f"{self.type_name}: {self.args[1]}"


class Terminated(KeyboardInterrupt):
    """The process driving a run was sent SIGTERM: a batch system cancelled its job
    (Slurm's ``scancel``) or the job reached its time limit, or another program
    asked it to stop.

    While a blocking run is driven from the main thread (and SIGTERM has no
    handler of the script's own) the signal raises it there; it derives from
    ``KeyboardInterrupt`` so that it stops the run wherever Ctrl-C does (a node
    running in the driver's thread included). The run then stops as after Ctrl-C,
    and every node it had not finished fails with it: the run returns (or, with
    ``throw_error``, raises) instead of the process dying with nothing said.
    """


def is_worker_lost(error: BaseException) -> bool:
    """``retry_on`` predicate: the node's worker went away (:class:`WorkerLostError`)."""
    return isinstance(error, WorkerLostError)


class DependencyError(DispatcherError):
    """A node failed, or a node it depends on failed.

    Attributes:
        error: the original exception.
        traceback: its formatted traceback, from wherever the node ran.
        node: the node that failed first.
        attempts: how many times that node ran (more than 1 after retries).
    """

    def __init__(
        self, error: BaseException, traceback: str | None = None, node: Any = None, attempts: int = 1
    ):
        self.error = error
        self.traceback = traceback if traceback is not None else format_exception(error)
        self.node = node
        self.attempts = attempts
        super().__init__(error, self.traceback, node, attempts)

    def __str__(self) -> str:
        label = self.node.label if self.node is not None else "<unknown>"
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"node {label!r} failed{tries}: {type(self.error).__name__}: {self.error}"

    def __repr__(self) -> str:
        return f"DependencyError({self})"


def format_exception(error: BaseException) -> str:
    """The formatted traceback of ``error`` as one string."""
    return "".join(_tb.format_exception(type(error), error, error.__traceback__))


@attrs.define(slots=True, eq=False)
class DispatchResult:
    """The outcome of one output node: its value, or the error that stopped it.

    Attributes:
        node: the output node this result is for.
        value: its value (None when it failed).
        error: the :class:`DependencyError` that stopped it, naming the node that
            failed first (None when it has a value).
        attempts: the node's :class:`~dispatcher.Attempt` records in this run, in
            order (none for a node that did not run: given, found in a store, or
            stopped by a failed dependency).
    """

    node: Any
    value: Any = None
    error: DependencyError | None = None
    attempts: tuple = ()

    def is_ok(self) -> bool:
        """True when the node produced a value."""
        return self.error is None

    def is_error(self) -> bool:
        """True when the node or one of its dependencies failed."""
        return self.error is not None

    def unwrap(self) -> Any:
        """The value, or raise the :class:`DependencyError`."""
        if self.error is not None:
            raise self.error
        return self.value

    def __repr__(self) -> str:
        label = self.node.label
        if self.error is None:
            return f"DispatchResult({label!r}, value={_short(self.value)})"
        return f"DispatchResult({label!r}, error={self.error})"


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
