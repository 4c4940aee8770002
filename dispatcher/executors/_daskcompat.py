"""Everything ``DaskExecutor`` needs of dask beyond its public API, in one place.

Policy: the executor sends each burst of nodes to the scheduler as one graph, and
waits on its futures inside the client's event loop rather than with a callback
thread per future. Both use private parts of dask and distributed
(``dask._task_spec``, ``dask._expr.LLGExpr``, a future's ``_state``), which the
versions that ``setup.cfg`` accepts have and the test suite runs. When they are
missing (:func:`internals` is False), the executor falls back to the public API:
each node is ``Client.submit``-ted when it is ready, with its dependencies'
futures as arguments, and its future's ``add_done_callback`` reports it; slower
per node, the same behaviour. A handler of the scheduler's ``"all"`` topic that
the client already had is found through ``Client._event_handlers`` when it exists,
and is otherwise replaced. A worker's event on when a call ran goes with the call's
result, queued in the worker's ``batched_stream`` (:func:`log_with_result`), where
there is one as this module uses it; otherwise it is sent at once.
"""

from __future__ import annotations

import functools
from typing import Any

from ..nodes import CONTAINERS

__all__ = [
    "GraphBurst",
    "event_handler",
    "internals",
    "log_with_result",
    "status_of",
    "submit_one",
    "task_graph",
]

FINAL = ("finished", "error", "cancelled")


@functools.cache
def internals() -> bool:
    """dask's private graph API is there as this module uses it (the task spec, a
    graph expression that takes a token, a future's waitable state): nodes are
    sent in one graph per burst. Looked at on first use: importing dispatcher
    imports no dask."""
    import inspect

    try:
        import dask._task_spec  # noqa: F401
        from dask._expr import LLGExpr
        from distributed.client import FutureState
    except ImportError:  # pragma: no cover - another version of dask
        return False
    takes_token = "_determ_token" in inspect.signature(LLGExpr.__new__).parameters
    return takes_token and hasattr(FutureState, "wait")


class GraphBurst:
    """The nodes started since the last send, as one dask graph (private API)."""

    def __init__(self):
        self.graph: dict = {}

    def add(self, key: str, func, fixed: tuple, args: list, kwargs: dict, after: tuple) -> None:
        """The task ``func(*fixed, args, kwargs, *after)``, where the futures found in
        ``args``, ``kwargs`` and ``after`` stand for their values."""
        from dask._task_spec import Task, parse_input

        if _holds_specials(args, kwargs):
            args = [_frozensets(a, parse_input, _frozenset_task) for a in args]
            kwargs = {k: _frozensets(v, parse_input, _frozenset_task) for k, v in kwargs.items()}
        self.graph[key] = Task(
            key, func, *fixed, parse_input(args), parse_input(kwargs), *map(parse_input, after)
        )

    def take(self) -> dict:
        graph, self.graph = self.graph, {}
        return graph


def send_graph(client, graph: dict) -> None:
    """Send ``graph`` (from :meth:`GraphBurst.take`) to the scheduler. The expression
    gets a random token, as ``Client.submit`` gives its own: dask would otherwise
    tokenize every function."""
    import uuid

    from dask._expr import LLGExpr

    client.get(LLGExpr(graph, _determ_token=uuid.uuid4().hex), list(graph), sync=False)


def submit_one(client, key: str, func, fixed: tuple, args: list, kwargs: dict, after: tuple, resources=None):
    """The public fallback of :meth:`GraphBurst.add`, and the way of a task that
    needs worker ``resources``: submit the task now; its future."""
    if _holds_specials(args, kwargs):
        make_set = functools.partial(_frozenset_future, client)
        args = [_frozensets(a, None, make_set) for a in args]
        kwargs = {k: _frozensets(v, None, make_set) for k, v in kwargs.items()}
    return client.submit(func, *fixed, args, kwargs, *after, key=key, pure=False, resources=resources)


async def status_of(future) -> tuple[str, BaseException | None, Any]:
    """Wait, in the client's loop, until ``future`` is final; its status, exception
    and traceback object (private API: the way distributed's own callbacks wait)."""
    state = future._state
    while state.status not in FINAL:
        await state.wait()
    return state.status, state.exception, state.traceback


def event_handler(client, topic: str):
    """The handler of ``topic`` the client already has, to chain to, or None."""
    return getattr(client, "_event_handlers", {}).get(topic)


def log_with_result(worker, topic: str, msg: Any) -> None:
    """Log an event from the thread of a task that is about to end, so that it
    leaves with the task's result (the worker's next message), or before it, and
    never holds the result back. ``Worker.log_event`` would send it at once, and
    the worker's batched stream then holds the task's result back for its interval
    (2 ms): a chain of tasks would wait that long at each hop. The event is queued
    on the worker's loop, which runs it before it hears that the task ended (both
    come from this thread, in this order), without waking the stream. A task that
    sends no result (cancelled while it ran) leaves its event for the worker's next
    message. ``msg`` must be what msgpack encodes (``log_event`` checks it, this
    does not): a message that is not would fail the whole batch."""
    stream = getattr(worker, "batched_stream", None)
    if not isinstance(getattr(stream, "buffer", None), list):
        worker.log_event(topic, msg)  # (another version of distributed: sent at once)
        return
    worker.loop.add_callback(_queue_quietly, stream, {"op": "log-event", "topic": topic, "msg": msg})


def _queue_quietly(stream, message: dict) -> None:
    stream.buffer.append(message)
    stream.message_count += 1


def _holds_specials(args, kwargs) -> bool:
    """Some argument is a container, or a dask task of its own (the argument of a
    task that a dask scheduler hands to ``submit``)."""
    return any(map(_special, args)) or any(map(_special, kwargs.values()))


def _special(value: Any) -> bool:
    return type(value) in CONTAINERS or isinstance(value, _graph_node())


@functools.cache
def _graph_node() -> type:
    """dask's base class of tasks; a class nothing is an instance of without it."""
    try:
        from dask._task_spec import GraphNode
    except ImportError:  # pragma: no cover - another version of dask
        return type("NoGraphNode", (), {})
    return GraphNode


def _frozensets(value: Any, parse, make_set) -> Any:
    """``value`` with each ``frozenset`` that holds futures replaced by ``make_set``
    of its items (dask's own parsing does not look inside frozensets), and each dask
    task in it made plain data, so that dask passes it on rather than runs it."""
    t = type(value)
    if isinstance(value, _graph_node()):
        from dask._task_spec import DataNode

        return DataNode(None, value)
    if t is frozenset:
        items = [_frozensets(v, parse, make_set) for v in value]
        if parse is not None:
            parsed = parse(items)
            return value if parsed is items else make_set(parsed)
        return make_set(items) if any(_has_future(v) for v in items) else value
    if t is list or t is tuple or t is set:
        return t(_frozensets(v, parse, make_set) for v in value)
    if t is dict:
        return {k: _frozensets(v, parse, make_set) for k, v in value.items()}
    return value


def _has_future(value: Any) -> bool:
    from distributed import Future

    if isinstance(value, Future):
        return True
    if type(value) in (list, tuple, set, frozenset):
        return any(_has_future(v) for v in value)
    if type(value) is dict:
        return any(_has_future(v) for v in value.values())
    return False


def _frozenset_task(items):
    from dask._task_spec import Task

    return Task(None, frozenset, items)


def _frozenset_future(client, items):
    return client.submit(frozenset, items, pure=False)


def task_graph(dsk: dict) -> dict:
    """A dask graph (legacy tuples or task specification) as ``key -> task``, each
    task with its ``dependencies`` (keys) and called with their values
    (``task({key: value})``): dask's own conversion, from its task specification."""
    from collections.abc import Mapping

    from dask._task_spec import convert_legacy_graph

    if not isinstance(dsk, Mapping):  # an expression, as dask.compute passes it
        dsk = dsk.__dask_graph__()
    return convert_legacy_graph(dsk)
