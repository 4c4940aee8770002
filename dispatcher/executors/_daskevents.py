"""What a :class:`~dispatcher.DaskExecutor` hears from the scheduler besides its
results: the workers that died (``remove-worker`` events of the client's ``"all"``
topic), and when and where each call ran (the events its workers log on the
:data:`~dispatcher.executors._daskwork.ATTEMPTS` topic, which the scheduler
forwards before the call's result, in the order the worker sent them).

Policy: distributed allows one handler per topic per client, so a handler the
client already had (the user's, another executor's) is kept, called first, and
given back when the executor stops listening. A worker that died fails the
attempts that were running on it with :class:`~dispatcher.WorkerLostError`, and
their dask tasks are cancelled, so that dask does not retry them on top of the
executor's retries.
"""

from __future__ import annotations

import logging
from typing import Any

from ..attempts import wall_offset
from ..results import WorkerLostError
from . import _daskcompat as compat
from ._daskwork import ATTEMPTS

__all__ = ["SchedulerEvents"]

logger = logging.getLogger("dispatcher")


class SchedulerEvents:
    """The events an executor follows on one client; ``executor`` has ``_running``
    (dask key -> ``(task, done)`` of each attempt not yet reported), ``_report``
    and ``client``."""

    def __init__(self, executor: Any):
        self.executor = executor
        self.client = None  # the client followed
        self.chained: dict = {}  # topic -> the handler the client had before

    def follow(self, client) -> None:
        for topic, handler in (("all", self.on_event), (ATTEMPTS, self.on_attempt)):
            self.chained[topic] = compat.event_handler(client, topic)
            client.subscribe_topic(topic, handler)
        self.client = client

    def unfollow(self) -> None:
        client, self.client = self.client, None
        if client is None or client.status in ("closing", "closed"):
            return
        for topic, chained in self.chained.items():
            if chained is not None:
                client.subscribe_topic(topic, chained)
            else:
                client.unsubscribe_topic(topic)

    def on_attempt(self, event) -> None:
        """A worker says when and where it ran a call."""
        chained = self.chained.get(ATTEMPTS)
        if chained is not None:
            chained(event)
        _, (key, start, end, address) = event
        entry = self.executor._running.get(key)
        if entry is not None:
            task = entry[0]
            offset = wall_offset()  # the worker's wall clock -> the engine's
            task.started, task.finished, task.where = start + offset, end + offset, address

    def on_event(self, event) -> None:
        """A scheduler event: a worker that died fails the attempts running on it."""
        chained = self.chained.get("all")
        if chained is not None:
            chained(event)
        _, msg = event
        if not isinstance(msg, dict) or msg.get("action") != "remove-worker" or msg.get("expected"):
            return
        executor = self.executor
        lost = []
        for key in msg.get("processing-tasks", ()):
            entry = executor._running.get(key)
            if entry is None:
                continue
            task = entry[0]
            exc = WorkerLostError(
                f"node {task.node.label!r} was lost with its dask worker {msg.get('worker')}, "
                "which died while the node was assigned to it"
            )
            logger.warning("%s", exc)
            lost.append(task.handle)
            executor._report(key, False, (exc, ""))
        client = executor.client
        if lost and client is not None:
            client.loop.add_callback(client.cancel, lost, asynchronous=True)
