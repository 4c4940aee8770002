"""Every executor as a ``concurrent.futures.Executor``: ``submit``, ``map``, ``shutdown``.

Policy: a submitted call is a node (an :class:`~dispatcher.Op`) run with the
executor's retries, timeouts and lost-worker handling, and its future is a plain
``concurrent.futures.Future``, so ``as_completed``, ``wait`` and
``add_done_callback`` work.

* **One open run.** The calls submitted to an executor are nodes of one run, an
  *open run* (:mod:`dispatcher.engine.openrun`) that takes each call as it comes
  and ends when it has nothing left to do; the next call starts another. The first
  call starts it in a thread of its own after letting a burst of calls gather (a
  fraction of a millisecond while they keep coming, at most :data:`GATHER_MAX`),
  so that a loop of quick ``submit`` calls starts as one graph; calls submitted
  while it runs join it at once, beside the calls still running, so a long call
  never holds back calls submitted after it. Calls ready together start in the
  order they were submitted. The run forgets each call once its future is settled
  and no call waiting needs its value: a run fed calls for hours holds only what
  its unfinished calls need.
* **Bursts of their own** for the executors where an open run would not do:
  those that keep values on their workers (dask, ``pipelines``: the values stay
  where they were made until the run ends) and those whose calls run in the
  driver's own thread (``SerialExecutor``, ``AsyncExecutor``'s plain functions:
  a call there would hold up the taking of every later call, and one that submits
  a call and waits for it would wait forever). Each burst of calls is a run of its
  own, in a thread of its own, beside the runs still going; a call whose
  dependency is in an earlier burst still running waits for it in its burst's
  thread. :func:`takes_calls_as_they_come` says which way an executor goes.
* **Futures as arguments.** A future of the same executor among a call's
  arguments (also inside lists, tuples, sets and dict values) is a dependency, as
  with dask's ``client.submit``: the call runs with its value once it is done, or
  fails with its error (a cancelled one: ``CancelledError``).
* **Results.** A future is resolved as soon as its node finishes (dask: when its
  burst ends). A future's exception is the node's original exception, as
  ``concurrent.futures`` gives it; the :class:`~dispatcher.DependencyError` with
  the node, the attempts and the remote traceback is attached as its ``__cause__``
  (when it has none of its own). A call is *running* (``cancel()`` cannot take it
  back) once its run has taken it. A node among a call's arguments (not a future)
  runs with it; one on a cycle makes ``submit`` raise ``ExecutorError`` at once.
* **Map.** ``map(fn, *iterables, timeout=None, chunksize=1)`` reads the
  iterables whole, submits all the calls at once (one taking of the lock) and
  yields their values in order; an error raises at its place, and ``timeout``
  counts from the call to ``map``, as in ``concurrent.futures``. When the iterator
  raises or is closed, the calls not yet waited for are cancelled, which takes
  back only those no run has taken yet: an open run takes calls within
  milliseconds, so most of them run all the same. With ``chunksize=1`` each call
  is a node of its own (its own retries, timeout and trace span). With ``chunksize=k`` each chunk of
  ``k`` calls is one node (:class:`CallsOfChunk`, labelled ``map(fn)[i:j]``) that
  returns their values in a list, as ``ProcessPoolExecutor`` does: far less cost
  per call for quick calls, but the executor's retries and timeout apply to the
  chunk, and a call that raises loses the values of its chunk's other calls.
* **Shutdown.** ``shutdown(wait=True, cancel_futures=False)`` refuses new calls,
  cancels those not yet taken if asked, waits for the others if asked, and
  closes the executor; leaving a ``with`` block does ``shutdown(wait=True)``.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import itertools
import threading
import time
from typing import Any

from .engine import Callback
from .graph import _deps_of, topological_order
from .nodes import CONTAINERS, Op, _func_name
from .results import DependencyError, DispatcherError
from .running import run_graph

__all__ = [
    "GATHER_MAX",
    "GATHER_STEP",
    "CallFuture",
    "CallsOfChunk",
    "Submissions",
    "map_calls",
    "takes_calls_as_they_come",
]

GATHER_STEP = 0.0002  # seconds a burst waits for more calls while they keep coming
GATHER_MAX = 0.005  # and no longer than this


class CallFuture(cf.Future):
    """The future of a submitted call: a ``concurrent.futures.Future`` that knows its
    call (its node, and the futures it depends on) and the executor it was
    submitted to."""

    __slots__ = ("deps", "node", "owner")

    def __init__(self, owner: Submissions, node: Op, deps):
        super().__init__()
        self.owner = owner
        self.node = node
        self.deps = deps


def _may_hold_futures(values) -> bool:
    """Some of ``values`` is a future or a container (which may hold one)."""
    for value in values:  # noqa: SIM110 (a loop: any() would make a generator per call)
        if isinstance(value, cf.Future) or type(value) in CONTAINERS:
            return True
    return False


class Submissions:
    """The calls submitted to one executor (see the module docstring); it is the
    intake of their open run."""

    def __init__(self, executor: Any):
        self.executor = executor
        self.lock = threading.Lock()
        self.pending: list = []  # the futures of the calls not yet taken by a run
        self.serving = False  # a thread will take the pending calls (an open run, or a burst's)
        self.wake = None  # wakes the open run's driver, once it runs (None: it looks by itself)
        self.shut = False
        self.runs: set = set()  # the threads of the runs
        self.futures: dict = {}  # node -> future: the open run's calls not yet settled

    def submit(self, fn, args: tuple, kwargs: dict) -> CallFuture:
        """The future of ``fn(*args, **kwargs)``: a node of the open run (or of a burst)."""
        with self.lock:
            return self._submit_locked(fn, args, kwargs)

    def submit_all(self, calls) -> list[CallFuture]:
        """The futures of ``fn(*args)`` for each ``(fn, args)`` of ``calls``, submitted
        under one taking of the lock (the calls of a ``map``)."""
        with self.lock:
            return [self._submit_locked(fn, args, None) for fn, args in calls]

    def _submit_locked(self, fn, args: tuple, kwargs: dict | None) -> CallFuture:
        if self.shut or self.executor.closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        deps: Any = ()
        if _may_hold_futures(args) or (kwargs and _may_hold_futures(kwargs.values())):
            deps = []
            args = tuple([self._nodes_for(a, deps) for a in args])
            if kwargs:
                kwargs = {k: self._nodes_for(v, deps) for k, v in kwargs.items()}
        node = Op(fn, *args, **kwargs) if kwargs else Op(fn, *args)
        if node.dependencies() and len(node.dependencies()) > len({d.node for d in deps}):
            _refuse_cycles(node, deps)  # nodes among the arguments, which run with it
        future = CallFuture(self, node, deps)
        if not self.serving:
            self._start_serving()
        elif not self.pending and self.wake is not None:
            self.wake()  # the open run's driver waits: it has calls to take
        self.pending.append(future)
        return future

    def _nodes_for(self, value: Any, deps: list) -> Any:
        """``value`` with each future of this executor replaced by its node."""
        if isinstance(value, CallFuture) and value.owner is self:
            deps.append(value)
            return value.node
        t = type(value)
        if t in CONTAINERS:
            if t is dict:
                return {k: self._nodes_for(v, deps) for k, v in value.items()}
            return t(self._nodes_for(v, deps) for v in value)
        return value

    def _start_serving(self) -> None:
        """(Holding the lock.) Start a thread that takes the pending calls."""
        self.serving = True
        thread = threading.Thread(target=self._serve, name="dispatcher-submit", daemon=True)
        self.runs.add(thread)
        thread.start()

    def _serve(self) -> None:
        """A thread that runs the calls: an open run, or one burst's run."""
        try:
            self._gather_burst()
            if takes_calls_as_they_come(self.executor):
                self._run_open()
            else:
                self._run_burst()
        finally:
            self.runs.discard(threading.current_thread())

    def _gather_burst(self) -> None:
        """Let a burst of calls gather: wait while they keep coming, by steps of
        :data:`GATHER_STEP` seconds, up to :data:`GATHER_MAX` (a lone call waits one step)."""
        waited, seen = 0.0, -1
        while waited < GATHER_MAX and len(self.pending) != seen:
            seen = len(self.pending)
            time.sleep(GATHER_STEP)
            waited += GATHER_STEP

    # -- the open run ------------------------------------------------------------------
    def _run_open(self) -> None:
        try:
            run_graph(self.executor, [], throw_error=False, callbacks=(_Resolve(self.futures),), intake=self)
        except BaseException as exc:  # the run could not be made (a closed executor...) or broke
            with self.lock:
                self.wake = None  # (calls submitted meanwhile wait for the next run)
                unsettled = list(self.futures.values())
                self.futures.clear()
            for future in unsettled:  # before any later call can depend on them
                if not future.done():
                    future.set_exception(exc)
            with self.lock:
                self.serving = False
                if self.pending:
                    self._start_serving()

    def take(self, run, final: bool) -> tuple[list, Any]:
        """(The open run's driver.) The calls submitted since, as nodes, and how to
        know the outcome of their dependencies that are not in the run; with
        ``final`` and no call, the run ends and the next call starts another."""
        with self.lock:
            calls, self.pending = self.pending, []
            # (else cancelled before its run took it)
            calls = [future for future in calls if future.set_running_or_notify_cancel()]
            if calls or not final:
                self.wake = run.wake
            else:
                self.serving, self.wake = False, None
        deps = {}
        for future in calls:
            self.futures[future.node] = future
            for dep in future.deps:
                deps[dep.node] = dep
            future.deps = ()  # (a future kept by the caller must not keep those it took)
        return [future.node for future in calls], functools.partial(_outcome_of, deps)

    # -- a burst's run (executors whose calls stay where they are made, or run in the
    # -- driver's own thread) ------------------------------------------------------------
    def _run_burst(self) -> None:
        with self.lock:
            burst, self.pending = self.pending, []
            self.serving = False  # the next call starts a burst of its own
        in_burst = set(burst)
        earlier = [d for future in burst for d in future.deps if d not in in_burst]
        cf.wait(earlier)  # a dependency of an earlier burst still running: wait for it
        ready, inputs = {}, {}
        for future in burst:
            if not future.set_running_or_notify_cancel():
                continue  # cancelled before it started
            if any(d.cancelled() for d in future.deps):
                future.set_exception(cf.CancelledError("a call it depends on was cancelled"))
            else:
                ready[future.node] = future
                inputs.update((d.node, None) for d in future.deps if d not in in_burst)
            future.deps = ()
        if not ready:
            return
        pipelines = self.executor.capabilities.pipelines
        try:
            results = run_graph(
                self.executor,
                list(ready),
                list(inputs),
                throw_error=False,
                callbacks=() if pipelines else (_Resolve(dict(ready)),),
            )
        except BaseException as exc:  # the run could not be made (a closed executor...)
            for future in ready.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for result in results:
            future = ready[result.node]
            if future.done():
                continue
            if result.is_ok():
                future.set_result(result.value)
            else:
                future.set_exception(_original(result.error))

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        """Refuse new calls; cancel the pending ones if asked; wait for the rest if asked."""
        with self.lock:
            self.shut = True
            pending: list = []
            if cancel_futures:
                pending, self.pending = self.pending, []
        for future in pending:  # (outside the lock: cancelling runs the futures' callbacks)
            future.cancel()
        while wait:
            with self.lock:
                runs = [t for t in self.runs if t is not threading.current_thread()]
            if not runs:
                return
            for thread in runs:
                thread.join()


def map_calls(submissions: Submissions, fn, iterables: tuple, timeout: float | None, chunksize: int):
    """``Executor.map``: the values of ``fn`` over the zipped ``iterables``, in order,
    as an iterator; all calls are submitted at once (see the module docstring)."""
    if not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"chunksize must be a positive integer, got {chunksize!r}")
    end = None if timeout is None else time.monotonic() + timeout
    calls = zip(*iterables)  # read whole before the lock is taken: an iterable may submit calls itself
    if chunksize == 1:
        return _values_in_order(submissions.submit_all([(fn, args) for args in calls]), end, chunked=False)
    chunks, start = [], 0
    while chunk := list(itertools.islice(calls, chunksize)):
        chunks.append((CallsOfChunk(fn, start, start + len(chunk)), (chunk,)))
        start += len(chunk)
    return _values_in_order(submissions.submit_all(chunks), end, chunked=True)


def _values_in_order(futures: list, end: float | None, chunked: bool):
    """The values of ``futures`` (of each chunk's list, if ``chunked``) in order; an
    error raises at its place; the futures not yet waited for are cancelled when the
    iterator is closed or raises (``concurrent.futures``' way)."""
    futures.reverse()
    try:
        while futures:
            future = futures.pop()
            try:
                value = future.result(None if end is None else end - time.monotonic())
            except BaseException:
                future.cancel()
                raise
            if not chunked:
                yield value
            else:
                value.reverse()
                while value:
                    yield value.pop()
            del future, value  # (an iterator kept by the caller must not keep the values)
    finally:
        for future in futures:
            future.cancel()


class CallsOfChunk:
    """The calls of one chunk of a ``map`` with ``chunksize > 1``, one node: ``fn(*args)``
    for each ``args`` of the chunk, their values in a list (``ProcessPoolExecutor``'s
    way). Its name (the node's label) says which calls of the map it makes."""

    __slots__ = ("fn", "start", "stop")

    def __init__(self, fn, start: int, stop: int):
        self.fn, self.start, self.stop = fn, start, stop

    def __call__(self, chunk: list) -> list:
        fn = self.fn
        return [fn(*args) for args in chunk]

    @property
    def __name__(self) -> str:
        return f"map({_func_name(self.fn)})[{self.start}:{self.stop}]"


class _Resolve(Callback):
    """Settles each call's future as its node finishes, in the thread that drives
    the run, and lets it go."""

    def __init__(self, futures: dict):
        self.futures = futures

    def on_finish(self, node, value) -> None:
        future = self.futures.pop(node, None)
        if future is not None:
            future.set_result(value)

    def on_fail(self, node, error) -> None:
        future = self.futures.pop(node, None)
        if future is not None:
            future.set_exception(_original(error))


def _outcome_of(deps: dict, node) -> tuple | None:
    """The outcome of ``node``, a dependency not in the open run: a call in ``deps``
    (node -> future) was settled (by an earlier run, or before the run forgot it) or
    cancelled; None for a node that is no call (it joins the run)."""
    future = deps.get(node)
    if future is None:
        return None
    if future.cancelled():
        exc = cf.CancelledError("a call it depends on was cancelled")
        return False, DependencyError(exc, "", node)
    if not future.done():  # (cannot be: a call in no run was settled; never break the run)
        return False, DependencyError(DispatcherError(f"call {node.label!r} was not settled"), "", node)
    exc = future.exception()
    if exc is None:
        return True, future.result()
    cause = exc.__cause__
    return False, cause if isinstance(cause, DependencyError) else DependencyError(exc, None, node)


def takes_calls_as_they_come(executor: Any) -> bool:
    """Whether ``executor``'s submitted calls join one open run as they come (see the
    module docstring); else each burst of calls is a run of its own."""
    capabilities = executor.capabilities
    return not (capabilities.pipelines or capabilities.synchronous or capabilities.needs_loop)


def _refuse_cycles(node: Op, deps: list) -> None:
    """Raise ExecutorError if the nodes among a call's arguments (not futures) form a cycle."""
    calls = {future.node for future in deps}
    topological_order([d for d in node.dependencies() if d not in calls], _deps_of)


def _original(error) -> BaseException:
    """The node's own exception, with the DependencyError as its cause."""
    exc = error.error
    if exc.__cause__ is None and exc is not error:
        exc.__cause__ = error
    return exc
