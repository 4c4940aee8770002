"""The codec of calls and outcomes that travel to other processes, with cloudpickle.

An executor whose workers are other processes sends each call as
:func:`dumps_call` bytes, runs it there with :func:`call_pickled`, and turns the
bytes that come back into the engine's ``(ok, payload)`` with :func:`load_outcome`.
A worker's outcome is ``(True, value)`` or ``(False, (exception, traceback))``;
an exception that cannot be pickled and rebuilt travels as ``(False, (type name,
message, traceback))`` (:func:`~dispatcher.executors._procworker.failure`) and is
decoded into a :class:`~dispatcher.RemoteError` standing for it
(:func:`decode_outcome`), as is an outcome this process cannot unpickle.

When a call cannot be pickled, :func:`unpicklable_error` finds which part of it
(the function, a positional or keyword argument) and, inside that, the innermost
object that fails (looking into containers, attributes and closures), so the
node's error names the argument and the offending object rather than a bare
``PicklingError`` from deep inside a pool.
"""

from __future__ import annotations

import os
import pickle
import socket
import time
from typing import Any

import cloudpickle

from ..attempts import wall_offset
from ..coroutines import finish
from ..results import RemoteError, format_exception
from ._procworker import failure
from ._wire import pickle_dumps

__all__ = [
    "call_pickled",
    "decode_outcome",
    "dumps_call",
    "dumps_failure",
    "load_outcome",
    "loads_failure",
    "stand_in",
    "unpicklable_error",
]

_DEPTH = 6
_WIDTH = 200


def _fails(obj: Any) -> Exception | None:
    try:
        cloudpickle.dumps(obj)
    except Exception as exc:
        return exc
    return None


def _parts(obj: Any):
    """(where, value) for what pickling ``obj`` pickles next."""
    if isinstance(obj, dict):
        for key, value in list(obj.items())[:_WIDTH]:
            yield " key", key
            yield f"[{_short(key, 40)}]", value
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj[:_WIDTH]):
            yield f"[{i}]", value
    elif isinstance(obj, (set, frozenset)):
        for value in list(obj)[:_WIDTH]:
            yield " item", value
    elif callable(obj) and hasattr(obj, "__code__"):
        code = obj.__code__
        for name, cell in zip(code.co_freevars, obj.__closure__ or ()):
            try:
                yield f" (captured {name!r})", cell.cell_contents
            except ValueError:  # an empty cell
                continue
        for name in code.co_names:
            if name in obj.__globals__:
                yield f" (global {name!r})", obj.__globals__[name]
    else:
        state = getattr(obj, "__dict__", None)
        if isinstance(state, dict):
            for key, value in list(state.items())[:_WIDTH]:
                yield f".{key}", value


def _innermost(obj: Any, path: str, depth: int = 0) -> tuple[str, Any, Exception]:
    for where, part in _parts(obj) if depth < _DEPTH else ():
        exc = _fails(part)
        if exc is not None:
            return _innermost(part, path + where, depth + 1)
    return path, obj, _fails(obj) or pickle.PicklingError("cannot be pickled")


def _short(obj: Any, width: int = 80) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__qualname__} object>"
    return text if len(text) <= width else text[: width - 3] + "..."


def unpicklable_error(label: str, func, args, kwargs) -> pickle.PicklingError:
    """The error for a call of node ``label`` that cannot be pickled."""
    parts = [("its function", func)]
    parts += [(f"argument {i}", a) for i, a in enumerate(args)]
    parts += [(f"keyword argument {k!r}", v) for k, v in (kwargs or {}).items()]
    for what, value in parts:
        if _fails(value) is None:
            continue
        path, culprit, exc = _innermost(value, "")
        inside = f" (at {what}{path})" if path else ""
        return pickle.PicklingError(
            f"cannot send node {label!r} to another process: {what} holds a "
            f"{type(culprit).__module__}.{type(culprit).__qualname__} object{inside}, "
            f"{_short(culprit)}, which cannot be pickled ({type(exc).__name__}: {exc})"
        )
    return pickle.PicklingError(f"cannot send node {label!r} to another process")


def dumps_initializer(initializer, initargs) -> bytes | None:
    """A worker initializer and its arguments as cloudpickle bytes (None for none)."""
    if initializer is None:
        return None
    try:
        return cloudpickle.dumps((initializer, tuple(initargs)))
    except Exception as exc:
        raise unpicklable_error("initializer", initializer, tuple(initargs), None) from exc


def dumps_call(label: str, func, args, kwargs) -> bytes:
    """The call as cloudpickle bytes (code sent by value keeps its file name); a
    :class:`pickle.PicklingError` naming the argument and object that cannot be
    pickled otherwise."""
    try:
        return pickle_dumps((func, args, kwargs))
    except Exception as exc:
        raise unpicklable_error(label, func, args, kwargs) from exc


def call_pickled(payload: bytes) -> bytes:
    """Run a call made by :func:`dumps_call` (in a pool's worker); the outcome, with
    when the call began and ended (wall clock) and the worker's pid, as cloudpickle
    bytes, read by :func:`load_outcome`."""
    func, args, kwargs = cloudpickle.loads(payload)
    start = time.time()
    try:
        outcome = (True, finish(func(*args, **kwargs) if kwargs else func(*args)))
    except BaseException as exc:  # the failure travels back as the node's error
        outcome = failure(exc)
    span = (start, time.time())
    try:
        return pickle_dumps((outcome, span, os.getpid(), socket.gethostname()))
    except Exception as exc:
        err = pickle.PicklingError(
            f"the result ({type(outcome[1]).__qualname__} object) cannot be pickled to send it "
            f"back from the worker process: {type(exc).__name__}: {exc}"
        )
        return pickle_dumps((failure(err), span, os.getpid(), socket.gethostname()))


def decode_outcome(ok: bool, value: Any) -> tuple[bool, Any]:
    """``(ok, payload)`` for the engine from a worker's outcome (see
    :func:`~dispatcher.executors._procworker.failure`): a failure whose exception
    could not travel becomes a :class:`RemoteError`."""
    if ok:
        return True, value
    if len(value) == 3:  # (type name, message, traceback): it could not travel
        type_name, message, tb = value
        return False, (RemoteError(type_name, message), tb)
    return False, value


def load_outcome(data: bytes, task) -> tuple[bool, Any]:
    """``(ok, payload)`` for the engine from the bytes :func:`call_pickled` returned for
    ``task``, which is told where and when its call ran; bytes this process cannot
    unpickle fail the node with a :class:`RemoteError` saying so."""
    try:
        outcome, (start, end), pid, host = cloudpickle.loads(data)
        offset = wall_offset()  # the worker's wall clock -> the engine's
        task.started, task.finished = start + offset, end + offset
        task.where = f"pid {pid}" if host == socket.gethostname() else f"pid {pid} on {host}"
        return decode_outcome(*outcome)
    except Exception as err:  # a result or an exception this process cannot rebuild
        why = f"the outcome of node {task.node.label!r} cannot be unpickled here: {err}"
        exc = RemoteError(type(err).__qualname__, why)
        exc.__cause__ = err
        return False, (exc, format_exception(exc))


def stand_in(exc: BaseException) -> RemoteError:
    """What travels in place of an exception that cannot be pickled and rebuilt."""
    return RemoteError(f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc))


def dumps_failure(exc: BaseException, tb: str) -> bytes:
    """``(exc, tb)`` as bytes for another process: the exception if it survives the
    trip (some pickle but cannot be rebuilt), else the :func:`stand_in` for it."""
    try:
        data = cloudpickle.dumps((exc, tb))
        cloudpickle.loads(data)
    except Exception:
        return cloudpickle.dumps((stand_in(exc), tb))
    return data


def loads_failure(data: bytes) -> tuple[BaseException, str]:
    """``(exception, traceback)`` from :func:`dumps_failure`'s bytes."""
    try:
        return cloudpickle.loads(data)
    except Exception as exc:
        return RemoteError(type(exc).__qualname__, f"the exception cannot be rebuilt here: {exc}"), ""
