"""Every executor as a ``concurrent.futures.Executor``: ``submit``, ``map``, ``shutdown``.

Policy: a submitted call is a node (an :class:`~dispatcher.Op`) run with the
executor's retries, timeouts and lost-worker handling, and its future is a plain
``concurrent.futures.Future``, so ``as_completed``, ``wait`` and
``add_done_callback`` work.

* **Bursts.** Calls submitted close together run together: the first ``submit``
  after the last burst started starts a thread that lets calls gather while they
  keep coming (a fraction of a millisecond, at most :data:`GATHER_MAX`), then takes
  them all as one run, so a loop of quick ``submit`` calls is batched like a
  graph's nodes. A later burst starts a run of its own beside the ones
  still going, so a long call never holds back calls submitted after it.
* **Futures as arguments.** A future of the same executor among a call's
  arguments (also inside lists, tuples, sets and dict values) is a dependency, as
  with dask's ``client.submit``: in the same burst the two are one graph; a call
  whose dependency is in an earlier burst waits until it is done, then runs with
  its value (or fails with its error).
* **Results.** A future is resolved as soon as its node finishes (for an executor
  that keeps values on its workers, dask, when its burst ends). A future's
  exception is the node's original exception, as ``concurrent.futures`` gives it;
  the :class:`~dispatcher.DependencyError` with the node, the attempts and the
  remote traceback is attached as its ``__cause__`` (when it has none of its own).
* **Shutdown.** ``shutdown(wait=True, cancel_futures=False)`` refuses new calls,
  cancels those not yet started if asked, waits for the others if asked, and
  closes the executor; leaving a ``with`` block does ``shutdown(wait=True)``.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from typing import Any

from .engine import Callback
from .nodes import CONTAINERS, Op
from .running import run_graph

__all__ = ["GATHER_MAX", "GATHER_STEP", "Submissions"]

GATHER_STEP = 0.0002  # seconds a burst waits for more calls while they keep coming
GATHER_MAX = 0.005  # and no longer than this


class Submissions:
    """The calls submitted to one executor (see the module docstring)."""

    def __init__(self, executor: Any):
        self.executor = executor
        self.lock = threading.Lock()
        self.pending: list = []  # (node, future, dependencies) not yet in a run
        self.collecting = False  # a burst's thread is about to take the pending calls
        self.shut = False
        self.runs: set = set()  # the threads of the bursts running
        self.held = 0  # calls waiting for a dependency of an earlier burst

    def submit(self, fn, args: tuple, kwargs: dict) -> cf.Future:
        deps: list = []
        with self.lock:
            if self.shut or self.executor.closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            args = tuple(self._nodes_for(a, deps) for a in args)
            kwargs = {k: self._nodes_for(v, deps) for k, v in kwargs.items()}
            node = Op(fn, *args, **kwargs)
            future = cf.Future()
            future._dispatcher_call = (self, node)  # whose call it is, for a later submit that takes it
            self.pending.append((node, future, deps))
            self._start_burst()
        return future

    def _nodes_for(self, value: Any, deps: list) -> Any:
        """``value`` with each future of this executor replaced by its node."""
        if isinstance(value, cf.Future):
            owner, node = getattr(value, "_dispatcher_call", (None, None))
            if owner is not self:
                return value  # another executor's future: an argument like any other
            deps.append(value)
            return node
        t = type(value)
        if t in CONTAINERS:
            if t is dict:
                return {k: self._nodes_for(v, deps) for k, v in value.items()}
            return t(self._nodes_for(v, deps) for v in value)
        return value

    def _burst(self) -> None:
        """Take every pending call and run the ones that can run now as one graph."""
        try:
            self._gather_burst()
            with self.lock:
                burst, self.pending = self.pending, []
                self.collecting = False
            in_burst = {future for _, future, _ in burst}
            ready, inputs = [], {}
            for node, future, deps in burst:
                later = [d for d in deps if d not in in_burst and not d.done()]
                if later:  # a dependency of an earlier burst still runs: wait for it
                    with self.lock:
                        self.held += 1
                    _when_all_done(later, lambda n=node, f=future, d=deps: self._again(n, f, d))
                elif not future.set_running_or_notify_cancel():
                    continue  # cancelled before it started
                elif any(d.cancelled() for d in deps):
                    future.set_exception(cf.CancelledError("a call it depends on was cancelled"))
                else:
                    ready.append((node, future))
                    inputs.update((d._dispatcher_call[1], None) for d in deps if d not in in_burst)
            if ready:
                self._run(ready, list(inputs))
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

    def _again(self, node, future, deps) -> None:
        """The dependencies of a held call are done: it joins the next burst."""
        with self.lock:
            self.held -= 1
            self.pending.append((node, future, deps))
            self._start_burst()

    def _start_burst(self) -> None:
        """(Holding the lock.) A thread will take the pending calls, unless one is about to."""
        if not self.collecting:
            self.collecting = True
            thread = threading.Thread(target=self._burst, name="dispatcher-submit", daemon=True)
            self.runs.add(thread)
            thread.start()

    def _run(self, ready: list, inputs: list) -> None:
        futures = dict(ready)  # node -> future
        resolve = _Resolve(futures)
        pipelines = self.executor.capabilities.pipelines
        try:
            results = run_graph(
                self.executor,
                list(futures),
                inputs,
                throw_error=False,
                callbacks=() if pipelines else (resolve,),
            )
        except BaseException as exc:  # the run could not be made (a closed executor...)
            for future in futures.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for result in results:
            future = futures[result.node]
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
            if cancel_futures:
                pending, self.pending = self.pending, []
                for _, future, _ in pending:
                    future.cancel()
        while wait:
            with self.lock:
                runs = [t for t in self.runs if t is not threading.current_thread()]
                if not runs and not self.held:
                    return
            for thread in runs:
                thread.join(0.1 if self.held else None)


class _Resolve(Callback):
    """Resolves each future as its node finishes, in the thread that drives the run."""

    def __init__(self, futures: dict):
        self.futures = futures

    def on_finish(self, node, value) -> None:
        future = self.futures.get(node)
        if future is not None and not future.done():
            future.set_result(value)

    def on_fail(self, node, error) -> None:
        future = self.futures.get(node)
        if future is not None and not future.done():
            future.set_exception(_original(error))


def _original(error) -> BaseException:
    """The node's own exception, with the DependencyError as its cause."""
    exc = error.error
    if exc.__cause__ is None and exc is not error:
        exc.__cause__ = error
    return exc


def _when_all_done(futures: list, then) -> None:
    """Call ``then()`` once every one of ``futures`` is done."""
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_):
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            then()

    for future in futures:
        future.add_done_callback(one_done)
