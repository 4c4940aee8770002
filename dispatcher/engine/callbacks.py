"""Callbacks: objects told about a run as it happens.

Policy: every method is called where the run is driven (never from a worker), in
the order the events happen. An exception a callback raises ends the run with a
:class:`~dispatcher.DispatcherError` naming the callback and the node.
"""

from __future__ import annotations

import sys
from typing import Any

from ..attempts import Attempt
from ..nodes import DispatchNode
from ..results import DependencyError, DispatcherError

__all__ = ["Callback", "ProgressBar", "failed", "listeners", "notify", "tell"]


class Callback:
    """Base for objects told about a run; override the methods you need.

    Every method is called where the run is driven (never from a worker), in the
    order the events happen. An exception raised by a callback ends the run with a
    :class:`DispatcherError` that names the callback and the node.

    ``wants_values``: whether :meth:`on_finish` needs each node's value. A callback
    that does not (a progress bar, a trace) sets it False, so that in a run with a
    store the workers of other processes may keep a value the driver has no use
    for in the store instead of sending it back, and the driver need not unpickle
    what a worker process made; ``on_finish`` is then given a
    :class:`~dispatcher.outcomes.Stored` reference for such a node, or the value
    as its worker pickled it (an :data:`~dispatcher.outcomes.UNREAD` type).
    """

    wants_values = True

    def on_start(self, total: int) -> None:
        """The run is about to start ``total`` nodes."""

    def on_submit(self, node: DispatchNode) -> None:
        """``node`` was handed to the executor (once per attempt)."""

    def on_finish(self, node: DispatchNode, value: Any) -> None:
        """``node`` produced ``value``."""

    def on_fail(self, node: DispatchNode, error: DependencyError) -> None:
        """``node`` failed, or will not run because a dependency failed."""

    def on_attempt(self, node: DispatchNode, attempt: Attempt) -> None:
        """An attempt at ``node`` ended (before ``on_finish``, ``on_retry`` or
        ``on_fail`` tell what comes of it): its :class:`~dispatcher.Attempt` record."""

    def on_retry(self, node: DispatchNode, error: BaseException, attempt: int, delay: float) -> None:
        """``node`` failed with ``error`` and runs again (``attempt``) after ``delay`` s."""

    def on_end(self) -> None:
        """The run is over (also when it failed or was interrupted)."""


def listeners(callbacks: tuple, method: str) -> tuple:
    """``(callback, its method)`` of each callback that does something on ``method``
    (the base's does nothing), for :func:`tell`: the others need not be told of
    each node."""
    base = getattr(Callback, method)
    pairs = ((cb, getattr(cb, method)) for cb in callbacks)
    return tuple((cb, m) for cb, m in pairs if getattr(m, "__func__", None) is not base)


def tell(listening: tuple, method: str, node: DispatchNode | None, *args: Any) -> None:
    """Call each method of ``listening`` (as :func:`listeners` gives them, for
    ``method``) with ``args``; a failing one raises DispatcherError."""
    for cb, bound in listening:
        try:
            bound(*args)
        except Exception as exc:
            raise failed(cb, method, node, exc) from exc


def notify(callbacks: tuple, method: str, node: DispatchNode | None, *args: Any) -> None:
    """Call ``method(*args)`` of each callback; a failing one raises DispatcherError."""
    for cb in callbacks:
        try:
            getattr(cb, method)(*args)
        except Exception as exc:
            raise failed(cb, method, node, exc) from exc


def failed(callback: Callback, method: str, node: DispatchNode | None, exc: Exception) -> DispatcherError:
    """The error that ends a run whose ``callback`` raised ``exc`` in ``method``
    (for ``node``), naming all three."""
    where = f" for node {node.label!r}" if node is not None else ""
    raised = f"raised {type(exc).__name__}: {exc}"
    return DispatcherError(f"callback {type(callback).__name__}.{method}{where} {raised}")


class ProgressBar(Callback):
    """A tqdm progress bar (on stderr, or a notebook's widget where ``tqdm.auto``
    finds one), one step per finished or failed node, with how many nodes are
    running and how many failed beside done/total."""

    wants_values = False

    def __init__(self, **tqdm_options: Any):
        self.options = {"file": sys.stderr, "unit": "node", "desc": "dispatcher", **tqdm_options}
        self.bar = None
        self.running: set = set()
        self.failed = 0

    def on_start(self, total: int) -> None:
        from tqdm.auto import tqdm

        self.running.clear()
        self.failed = 0
        self.bar = tqdm(total=total, **self.options)

    def _step(self, n: int) -> None:
        bar = self.bar
        bar.postfix = f"running={len(self.running)}, failed={self.failed}"
        bar.update(n)

    def on_submit(self, node) -> None:
        self.running.add(node)

    def on_finish(self, node, value) -> None:
        self.running.discard(node)
        self._step(1)

    def on_retry(self, node, error, attempt, delay) -> None:
        self.running.discard(node)

    def on_fail(self, node, error) -> None:
        self.running.discard(node)
        self.failed += 1
        self._step(1)

    def on_end(self) -> None:
        if self.bar is not None:  # None when an earlier callback's on_start failed
            self.bar.postfix = f"running=0, failed={self.failed}"
            self.bar.close()
            self.bar = None
        self.running.clear()
