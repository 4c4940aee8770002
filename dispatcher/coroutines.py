"""Running coroutines to their end from synchronous code.

Policy: an ``async def`` node gives the same value on every executor. The
:class:`~dispatcher.AsyncExecutor` awaits it on its loop; every other executor
calls the function where it runs the node and, when the call returns a coroutine,
runs that coroutine to its end there (:func:`finish`), with ``asyncio.run`` when
the thread runs no event loop, or on a fresh loop in a helper thread when it does
(a synchronous executor driven from inside ``run_async``, or a notebook).
"""

from __future__ import annotations

import asyncio
import threading
import types
from collections.abc import Coroutine
from typing import Any

__all__ = ["COROUTINE", "finish", "run_to_end"]

COROUTINE = types.CoroutineType
"""The type of what calling an ``async def`` function returns (checked with ``is``
where a call per node counts)."""


def finish(value: Any) -> Any:
    """``value``, or, if it is a coroutine, what it returns once run to its end."""
    if type(value) is COROUTINE:
        return run_to_end(value)
    return value


def run_to_end(coro: Coroutine) -> Any:
    """Run ``coro`` to its end from synchronous code, whether or not a loop runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # This thread already runs a loop: run the coroutine on another loop in a helper thread.
    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
    box: dict = {}

    def target():
        try:
            box["value"] = loop.run_until_complete(task)
        except BaseException as exc:
            box["error"] = exc
        finally:
            loop.close()

    helper = threading.Thread(target=target, name="dispatcher-loop")
    helper.start()
    try:
        helper.join()
    except KeyboardInterrupt:
        loop.call_soon_threadsafe(task.cancel)
        helper.join()
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]
