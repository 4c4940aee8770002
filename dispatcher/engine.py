"""The engine: one sans-I/O run state and the two drivers every executor uses.

Policy
------
A run starts from its outputs and walks back through each node's dependencies (or
a graph's edges), stopping at nodes whose values are given (``inputs``, the keys
of ``input_map``). Each node to run gets a count of dependencies it waits for and
the list of nodes that wait for it. Before anything runs, the counts are checked
with Kahn's algorithm: a graph in which some nodes can never become ready has a
cycle, and the run raises :class:`ExecutorError` naming it.

Ready nodes sit on a last-in-first-out stack, as in dask's local scheduler: the run
goes depth first, finishing chains before it starts new ones, which keeps few
intermediate values alive. A ready node becomes a :class:`Task` (the function and
its arguments with dependency values substituted) that the executor starts; the
executor reports back ``done(task, ok, payload)`` where the payload is the value or
``(exception, formatted traceback)``. *Light* nodes (indexing, collecting, data) are
computed by the engine itself unless the executor wants them.

A failure is retried when the node's ``retries`` (or the executor's) are not used
up and one of its ``retry_on`` predicates accepts the exception; the retry waits an
exponential, jittered delay (:class:`Backoff`). Otherwise the node fails with a
:class:`DependencyError`, and that same error is handed to every node downstream:
they finish as failed without running. With ``throw_error=True`` the first failure
ends the run: nothing more is started, running tasks are cancelled and awaited, and
the error is raised. With ``throw_error=False`` everything that does not depend on
a failure still runs.

A node with a ``timeout`` that is still running at its deadline fails with
:class:`TimeoutError` (or is retried); the executor is asked to cancel its work, and
a late answer from that attempt is ignored.

With ``release=True`` a value is dropped as soon as every node that needs it has
finished, unless it is an output; such a node's ``fetch()`` then says its value was
released rather than give a stale one. By default (``release=False``) every node
keeps the value of its latest run, as in Dispatcher.jl.

The state knows nothing of threads, processes or event loops. :func:`drive` runs it
with blocking waits on a queue; :func:`drive_async` runs it on an asyncio loop.
Executors only say how a task is started (``_submit``) and cancelled (``_cancel``).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from .checks import check_retries, check_timeout, nout_error, retry_predicates
from .coroutines import COROUTINE, finish
from .graph import DispatchGraph, _deps_of, topological_order
from .nodes import NEVER, RELEASED, DispatchNode, Failure, Remote, _func_name
from .results import DependencyError, DispatcherError, DispatchResult, ExecutorError, format_exception

__all__ = ["Backoff", "Callback", "PipelinedRunState", "RunState", "Task", "drive", "drive_async"]

logger = logging.getLogger("dispatcher")


@attrs.frozen
class Backoff:
    """Exponential, jittered delays between the attempts of a failed node.

    Attempt ``k`` (1 for the first retry) waits
    ``min(max_delay, first_delay * factor ** (k - 1))``, scaled by a random factor
    in ``[1 - jitter, 1 + jitter]``.
    """

    first_delay: float = 0.05
    factor: float = 2.0
    max_delay: float = 10.0
    jitter: float = 0.1

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        base = min(self.max_delay, self.first_delay * self.factor ** (attempt - 1))
        return max(0.0, base * (1.0 + self.jitter * (2.0 * rand() - 1.0)))


class Callback:
    """Base for objects told about a run; override the methods you need.

    Every method is called where the run is driven (never from a worker), in the
    order the events happen. An exception raised by a callback ends the run with a
    :class:`DispatcherError` that names the callback and the node.
    """

    def on_start(self, total: int) -> None:
        """The run is about to start ``total`` nodes."""

    def on_submit(self, node: DispatchNode) -> None:
        """``node`` was handed to the executor (once per attempt)."""

    def on_finish(self, node: DispatchNode, value: Any) -> None:
        """``node`` produced ``value``."""

    def on_fail(self, node: DispatchNode, error: DependencyError) -> None:
        """``node`` failed, or will not run because a dependency failed."""

    def on_retry(self, node: DispatchNode, error: BaseException, attempt: int, delay: float) -> None:
        """``node`` failed with ``error`` and runs again (``attempt``) after ``delay`` s."""

    def on_end(self) -> None:
        """The run is over (also when it failed or was interrupted)."""


class Task:
    """One attempt at running one node: what an executor starts."""

    __slots__ = ("after", "args", "attempt", "func", "handle", "kwargs", "node", "timeout")

    def __init__(self, node, func, args, kwargs, attempt, timeout):
        self.node = node
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.attempt = attempt
        self.timeout = timeout
        self.handle: Any = None  # the executor's own record (a future, a task)
        self.after: tuple = ()  # pipelined: handles of graph edges that pass no value

    def call(self) -> Any:
        """The node's function called with its arguments (a coroutine for an ``async def``)."""
        kwargs = self.kwargs
        return self.func(*self.args, **kwargs) if kwargs else self.func(*self.args)

    def run(self) -> Any:
        """:meth:`call`, with a coroutine it returns run to its end (see :mod:`dispatcher.coroutines`)."""
        return finish(self.call())

    def __repr__(self) -> str:
        return f"<Task {self.node.label!r} attempt {self.attempt}>"


def _label(node: Any) -> str:
    return node.label if isinstance(node, DispatchNode) else repr(node)


class RunState:
    """Everything a run knows, advanced only by the calls its driver makes.

    The driver loop is: start every task :meth:`next_task` gives, tell the state
    of each completion with :meth:`done`, and call :meth:`expire` when the time of
    :meth:`next_wakeup` comes, until :attr:`finished`; then :meth:`results`.
    """

    def __init__(
        self,
        outputs: Iterable[DispatchNode] | DispatchGraph,
        inputs: Iterable[DispatchNode] = (),
        *,
        input_map: dict | None = None,
        throw_error: bool = True,
        retries: int = 5,
        retry_on: tuple = (),
        always_retry_on: tuple = (),
        backoff: Backoff | None = None,
        timeout: float | None = None,
        release: bool = False,
        callbacks: Iterable[Callback] = (),
        inline_light: bool = True,
        inline_all: bool = False,
        track_deadlines: bool = True,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ):
        self.throw_error = throw_error
        self.retries = retries
        self.retry_on = tuple(retry_on)
        self.always_retry_on = tuple(always_retry_on)
        self.backoff = backoff if backoff is not None else Backoff()
        self.timeout = timeout
        self.release = release
        self.callbacks = tuple(callbacks)
        self.inline_light = inline_light
        self.inline_all = inline_all
        self.track_deadlines = track_deadlines
        self.clock = clock
        self.rand = rand
        self.debug = logger.isEnabledFor(logging.DEBUG)

        if isinstance(outputs, DispatchGraph):
            graph: DispatchGraph | None = outputs
            self.outputs = graph.leaf_nodes()
            deps_of = graph._parents.__getitem__
        else:
            graph = None
            self.outputs = _outputs(outputs)
            deps_of = _deps_of

        self.values: dict = {}  # node -> value, for finished and given nodes
        self.errors: dict = {}  # node -> DependencyError
        self._given_nodes(inputs, input_map)
        self._plan(deps_of, graph)
        self._get = self.values.__getitem__
        self.hooks = bool(self.callbacks) or self.debug

        self.running: dict = {}  # node -> Task of its current attempt
        self.attempts: dict = {}  # node -> attempts made so far, for retried nodes
        self.delayed: list = []  # heap of (due time, seq, node) waiting to retry
        self.deadlines: list = []  # heap of (deadline, seq, task)
        self._seq = 0
        self.error: DependencyError | None = None  # the failure that ends the run
        self.started = False
        self._deps_done = self.ready  # where a node goes once its dependencies are done
        self.revoked: list = []  # sent tasks to cancel: their inputs were withdrawn

    # -- set-up ------------------------------------------------------------------
    pipelined = False
    """True for :class:`PipelinedRunState`: nodes are sent before their dependencies finish."""

    def _given_nodes(self, inputs, input_map) -> None:
        values = self.values
        if input_map:
            for node, value in dict(input_map).items():
                if not isinstance(node, DispatchNode):
                    raise TypeError(f"input_map keys must be nodes, got {type(node).__name__}: {node!r:.80}")
                values[node] = value
        for node in _outputs(inputs, "inputs"):
            if node in values:
                continue
            outcome = node._outcome
            if outcome is NEVER or outcome is RELEASED:
                raise ExecutorError(
                    f"input node {node.label!r} has no value to give: "
                    + ("it has not run" if outcome is NEVER else "its value was released")
                )
            if type(outcome) is Failure:
                self.errors[node] = outcome.error
            else:
                values[node] = self._given_value(node, outcome)

    def _given_value(self, node, outcome) -> Any:
        """The value an input node gives this run (a remote value comes back here)."""
        return node.fetch()

    def _plan(self, deps_of, graph) -> None:
        """Walk back from the outputs; count what each node waits for; find cycles."""
        given = self.values
        failed_given = self.errors
        waiting: dict = {}  # node -> number of unfinished dependencies
        children: dict = {}  # node -> the node waiting for it, or a list of several
        poison: dict = {}  # node -> DependencyError of a failed given dependency
        ready: list = []
        out_of_order = False  # an edge against creation order: a cycle is possible
        stack = [n for n in reversed(self.outputs) if n not in given and n not in failed_given]
        while stack:
            node = stack.pop()
            if node in waiting:
                continue
            count = 0
            seq = node._seq
            for dep in deps_of(node):
                if given or failed_given:
                    if dep in given:
                        continue
                    if dep in failed_given:
                        poison.setdefault(node, failed_given[dep])
                        continue
                count += 1
                if dep._seq >= seq:
                    out_of_order = True
                kids = children.get(dep)
                if kids is None:
                    # one waiting node is stored bare: most nodes have one, and
                    # a list for each would cost memory and garbage collection
                    children[dep] = node
                    if dep not in waiting:
                        stack.append(dep)
                elif type(kids) is list:
                    kids.append(node)
                else:
                    children[dep] = [kids, node]
            waiting[node] = count
            if count == 0:
                ready.append(node)
        if graph is not None:
            _check_graph_edges(waiting, graph, given, failed_given)
            if len(waiting) < len(graph):  # nodes not reached from the leaves: a cycle may hold them
                graph.topological_order()  # raises on a cycle
        if out_of_order and not _all_reachable(waiting, children, ready):
            nodes = list(waiting)
            deps = graph._parents.__getitem__ if graph is not None else _deps_of
            topological_order(nodes, lambda n: [d for d in deps(n) if d in waiting])
            raise ExecutorError("the graph has a cycle")  # pragma: no cover - found above
        ready.reverse()  # the first-found roots start first
        self.waiting = waiting
        self.children = children
        self.poison = poison
        self.ready = ready
        self.total = len(waiting)
        self.remaining = len(waiting)
        # node -> how many dependents still need its value; None keeps every value
        self.needed = {n: len(_kids(k)) for n, k in children.items()} if self.release else None
        self.keep = set(self.outputs)
        self.deps_of = deps_of

    # -- the driver's interface -----------------------------------------------------
    @property
    def finished(self) -> bool:
        """Nothing more will start: all nodes are done, or a failure ended the run."""
        return self.remaining == 0 or self.error is not None

    def start(self) -> None:
        """Reset the nodes' outcomes and tell the callbacks the run begins."""
        self.started = True
        for node in self.waiting:
            node._outcome = NEVER
        if self.callbacks:
            self._notify("on_start", None, self.total)

    def next_task(self) -> Task | None:
        """The next task to start, or None if none is ready now.

        Light nodes, and nodes whose dependencies failed, are finished here
        without a task.
        """
        ready = self.ready
        poison = self.poison
        get = self._get
        inline_light = self.inline_light
        inline_untimed = self.inline_all
        while ready and self.error is None:
            node = ready.pop()
            if poison and node in poison:
                self._finish_error(node, poison.pop(node))
                continue
            try:
                func, args, kwargs = node.prepare(get)
            except Exception as exc:  # a malformed node: fail it, do not crash the run
                self._failed(node, exc, format_exception(exc), 1)
                continue
            timeout = node.timeout
            if timeout is None:
                timeout = self.timeout
            elif (type(timeout) is not float and type(timeout) is not int) or not 0 < timeout < math.inf:
                self._bad_option(node, "timeout", check_timeout, timeout)
                continue
            if (inline_untimed and timeout is None) or (inline_light and node.light):
                if self.hooks:
                    self._submitted(node)
                try:
                    value = func(*args, **kwargs) if kwargs else func(*args)
                    if type(value) is COROUTINE:  # inline: no call for a plain value
                        value = finish(value)
                except KeyboardInterrupt:
                    raise  # Ctrl-C, here in the thread that drives the run: the run ends
                except BaseException as exc:  # SystemExit too: it fails the node
                    attempt = self.attempts.get(node, 1) if self.attempts else 1
                    self._failed(node, exc, format_exception(exc), attempt)
                else:
                    wrong = nout_error(node.label, node.nout, value) if node.nout is not None else None
                    if wrong is not None:
                        attempt = self.attempts.get(node, 1) if self.attempts else 1
                        self._failed(node, wrong, format_exception(wrong), attempt)
                    else:
                        self._finish_ok(node, value)
                continue
            task = Task(node, func, args, kwargs, self.attempts.get(node, 1) if self.attempts else 1, timeout)
            self.running[node] = task
            if timeout is not None and self.track_deadlines:
                self._seq += 1
                heapq.heappush(self.deadlines, (self.clock() + timeout, self._seq, task))
            if self.hooks:
                self._submitted(node)
            return task
        return None

    def done(self, task: Task, ok: bool, payload: Any) -> None:
        """A task finished: ``payload`` is its value, or ``(exception, traceback)``."""
        node = task.node
        task.args = task.kwargs = None  # the arguments may be large: drop them now
        task.handle = None  # the executor's record may point back at the task: no cycle to keep values
        running = self.running
        current = running.pop(node, None)
        if current is not task:  # a late answer from an attempt that timed out
            if current is not None:
                running[node] = current
            return
        if self.error is not None:
            return  # the run is ending; running tasks are only awaited
        if ok:
            wrong = nout_error(node.label, node.nout, payload) if node.nout is not None else None
            if wrong is not None:
                self._failed(node, wrong, format_exception(wrong), task.attempt)
            else:
                self._finish_ok(node, payload)
        else:
            exc, tb = payload
            self._failed(node, exc, tb, task.attempt)

    def sent(self, task: Task) -> None:
        """The executor accepted ``task`` (a pipelined state uses its handle)."""

    def take_revoked(self) -> list[Task]:
        """The tasks whose work the driver should cancel now."""
        revoked, self.revoked = self.revoked, []
        return revoked

    def next_wakeup(self) -> float | None:
        """The clock time at which :meth:`expire` has work, or None."""
        times = []
        if self.deadlines:
            times.append(self.deadlines[0][0])
        if self.delayed:
            times.append(self.delayed[0][0])
        return min(times) if times else None

    def expire(self) -> list[Task]:
        """Fail the tasks past their deadline and ready the retries that are due.

        Returns the timed-out tasks, whose work the driver asks the executor to
        cancel.
        """
        now = self.clock()
        expired = []
        deadlines = self.deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, task = heapq.heappop(deadlines)
            if self.running.get(task.node) is task:
                del self.running[task.node]
                expired.append(task)
                exc = TimeoutError(
                    f"node {task.node.label!r} ran longer than its timeout of {task.timeout} s"
                )
                self._failed(task.node, exc, format_exception(exc), task.attempt)
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            _, _, node = heapq.heappop(delayed)
            if self.error is None:
                self._due(node)
        return expired

    def _due(self, node) -> None:
        """The backoff delay before retrying ``node`` is over."""
        self.ready.append(node)

    def abort(self) -> list[Task]:
        """Stop starting nodes; returns the running tasks, to cancel and await."""
        if self.error is None:
            self.error = _ABORTED
        self.ready.clear()
        self.delayed.clear()
        return list(self.running.values())

    def results(self) -> list[DispatchResult]:
        """One result per output, in order."""
        out = []
        values, errors = self.values, self.errors
        for node in self.outputs:
            if node in errors:
                out.append(DispatchResult(node, error=errors[node]))
            elif node in values:
                out.append(DispatchResult(node, value=values[node]))
            else:
                raise DispatcherError(f"node {node.label!r} did not finish")
        return out

    def end(self) -> None:
        """Store what the run leaves on the nodes and tell the callbacks it is over."""
        if self.needed is not None:
            for node, value in self.values.items():
                if node in self.waiting and node not in self.keep:
                    self._keep_value(node, value)  # an ended run: no later node will free it
        if self.callbacks and self.started:
            self._notify("on_end", None)

    def _keep_value(self, node, value) -> None:
        node._outcome = value

    # -- internals ---------------------------------------------------------------
    def _bad_option(self, node, name: str, check, value) -> None:
        """Fail ``node``, whose option ``name`` was set to a wrong ``value`` by hand."""
        try:
            check(value, f"the {name} of node {node.label!r}")
        except (TypeError, ValueError) as exc:
            self._finish_error(node, DependencyError(exc, format_exception(exc), node))

    def _submitted(self, node) -> None:
        if self.debug:
            logger.debug("start %r", node.label)
        if self.callbacks:
            self._notify("on_submit", node, node)

    def _finish_ok(self, node, value) -> None:
        self.values[node] = value
        self.remaining -= 1
        if self.needed is None or node in self.keep:
            node._outcome = value
        if self.hooks:
            if self.debug:
                logger.debug("finished %r", node.label)
            if self.callbacks:
                self._notify("on_finish", node, node, value)
        kids = self.children.get(node)
        if kids is not None:
            waiting = self.waiting
            for kid in kids if type(kids) is list else (kids,):
                n = waiting[kid] - 1
                waiting[kid] = n
                if n == 0:
                    self._deps_done.append(kid)
        if self.needed is not None:
            self._release_deps(node)

    def _release_deps(self, node) -> None:
        needed = self.needed
        for dep in self.deps_of(node):
            n = needed.get(dep)
            if n is None:
                continue
            needed[dep] = n = n - 1
            if n == 0 and dep not in self.keep and dep in self.waiting:
                self._release(dep)

    def _release(self, node) -> None:
        self.values.pop(node, None)
        node._outcome = RELEASED

    def _failed(self, node, exc, tb, attempt) -> None:
        retries = node.retries
        retry_on = node.retry_on
        if retries is None:
            retries = self.retries
        if retry_on is None:
            retry_on = self.retry_on
        if (type(retries) is not int or type(retry_on) is not tuple) and not self._node_options_ok(
            node, exc, attempt
        ):
            return
        if (
            attempt <= retries
            and self.error is None
            and (
                (retry_on and self._should_retry(node, exc, retry_on))
                or (self.always_retry_on and self._should_retry(node, exc, self.always_retry_on))
            )
        ):
            self._retry(node, exc, attempt, retries)
            return
        error = DependencyError(exc, tb, node, attempt)
        error.__cause__ = exc
        logger.info("node %r failed: %s: %s", node.label, type(exc).__name__, exc)
        self._finish_error(node, error)

    def _node_options_ok(self, node, exc, attempt) -> bool:
        """Check ``retries`` and ``retry_on`` set by hand on ``node``; a wrong one
        fails the node with an error naming it (the node's own error as its context)."""
        try:
            if node.retries is not None:
                node.retries = check_retries(node.retries, f"the retries of node {node.label!r}")
            if node.retry_on is not None:
                node.retry_on = retry_predicates(node.retry_on, f"the retry_on of node {node.label!r}")
        except (TypeError, ValueError) as bad:
            bad.__context__ = exc
            self._finish_error(node, DependencyError(bad, format_exception(bad), node, attempt))
            return False
        return True

    def _retry(self, node, exc, attempt, retries) -> None:
        delay = self.backoff.delay(attempt, self.rand)
        self.attempts[node] = attempt + 1
        self._seq += 1
        heapq.heappush(self.delayed, (self.clock() + delay, self._seq, node))
        logger.warning(
            "node %r failed (attempt %d of %d), retrying in %.3g s: %s: %s",
            node.label,
            attempt,
            retries + 1,
            delay,
            type(exc).__name__,
            exc,
        )
        if self.callbacks:
            self._notify("on_retry", node, node, exc, attempt, delay)

    def _should_retry(self, node, exc, retry_on) -> bool:
        for pred in retry_on:
            try:
                if pred(exc):
                    return True
            except Exception as err:
                raise DispatcherError(
                    f"retry_on predicate {_func_name(pred)!r} raised for node {node.label!r}: "
                    f"{type(err).__name__}: {err}"
                ) from err
        return False

    def _finish_error(self, node, error) -> None:
        self.errors[node] = error
        self.remaining -= 1
        node._outcome = Failure(error)
        if self.callbacks:
            self._notify("on_fail", node, node, error)
        if self.throw_error and self.error is None:
            self.error = error
        kids = self.children.get(node)
        if kids is not None:
            waiting, deps_done, poison = self.waiting, self._deps_done, self.poison
            for kid in _kids(kids):
                if kid not in poison:
                    poison[kid] = error
                n = waiting[kid] - 1
                waiting[kid] = n
                if n == 0:
                    deps_done.append(kid)
        if self.needed is not None:
            self._release_deps(node)

    def _notify(self, method: str, node, *args) -> None:
        for cb in self.callbacks:
            try:
                getattr(cb, method)(*args)
            except Exception as exc:
                where = f" for node {node.label!r}" if node is not None else ""
                raise DispatcherError(
                    f"callback {type(cb).__name__}.{method}{where} raised {type(exc).__name__}: {exc}"
                ) from exc


class PipelinedRunState(RunState):
    """The run state for an executor whose tasks take *handles* of other tasks
    (dask futures) as arguments and that resolves them itself, where its workers are.

    Policy: a node is sent as soon as each of its dependencies is *sent*, not
    finished: its arguments hold the dependencies' handles (``task.handle``, set
    by the executor's ``_submit``), so the whole graph reaches the backend at once
    and intermediate values move between workers without coming back. Every value
    a task reports is a handle; the driver brings back only the outputs' values
    (:meth:`remote_outputs`, :meth:`localize`), and a finished node keeps a
    :class:`~dispatcher.nodes.Remote` outcome whose ``fetch()`` asks the executor.

    The engine's semantics stay those of :class:`RunState`; what pipelining changes
    is handled here:

    * A report is taken only once every dependency of the node has finished in the
      engine's eyes; an earlier one (the backend may report a node before its
      dependency) is held back until then, so a node failing because a dependency
      failed is never blamed for it.
    * A node retried, or failed, withdraws the nodes sent on its handle: their
      tasks are revoked (the driver cancels them) and they are sent again with the
      new handle, or fail with the dependency's error.
    * A node's ``timeout`` counts from the moment its dependencies have finished,
      when the backend can start it.
    """

    pipelined = True

    def __init__(self, *args: Any, owner: Any = None, **kwargs: Any):
        self.owner = owner  # the executor: it fetches Remote values and adopts its own
        super().__init__(*args, **kwargs)
        self.unsent = dict(self.waiting)  # node -> dependencies neither sent nor finished
        self.parked: dict = {}  # node -> an early report (task, ok, payload)
        self.resolved: list = []  # nodes whose dependencies have all finished
        self._deps_done = self.resolved
        self.backing_off: set = set()  # nodes waiting out a retry delay

    def _given_value(self, node, outcome) -> Any:
        if type(outcome) is Remote and outcome.owner is self.owner:
            return outcome.handle  # still on this executor's workers: use it there
        return node.fetch()

    def _sent_or_done(self, node) -> bool:
        return node in self.values or node in self.parked or node._outcome is not NEVER

    def next_task(self) -> Task | None:
        resolved, ready, poison, waiting = self.resolved, self.ready, self.poison, self.waiting
        while self.error is None:
            if resolved:
                self._resolve(resolved.pop())
                continue
            if not ready:
                return None
            node = ready.pop()
            if self._sent_or_done(node) or self.unsent[node] or node in self.backing_off:
                continue  # a stale entry: sent already, or waiting again
            if node in poison:
                if waiting[node] == 0:
                    self._finish_error(node, poison.pop(node))
                continue  # it fails once its other dependencies are done
            attempt = self.attempts.get(node, 1) if self.attempts else 1
            try:
                func, args, kwargs = node.prepare(self._get)
            except Exception as exc:
                self._failed(node, exc, format_exception(exc), attempt)
                continue
            timeout = node.timeout
            if timeout is None:
                timeout = self.timeout
            elif (type(timeout) is not float and type(timeout) is not int) or not 0 < timeout < math.inf:
                self._bad_option(node, "timeout", check_timeout, timeout)
                continue
            task = Task(node, func, args, kwargs, attempt, timeout)
            if self.deps_of is not _deps_of:  # a graph's edges: some may pass no value
                own = node.dependencies()
                task.after = tuple(
                    self.values[d] for d in self.deps_of(node) if d not in own and d in self.values
                )
            self.running[node] = task
            if timeout is not None and waiting[node] == 0:
                self._start_clock(task)
            if self.hooks:
                self._submitted(node)
            return task
        return None

    def sent(self, task: Task) -> None:
        node = task.node
        if self.running.get(node) is not task:
            return  # refused at once: its failure is already recorded
        self.values[node] = task.handle
        kids = self.children.get(node)
        if kids is not None:
            unsent, ready = self.unsent, self.ready
            for kid in _kids(kids):
                n = unsent[kid] - 1
                unsent[kid] = n
                if n == 0:
                    ready.append(kid)

    def done(self, task: Task, ok: bool, payload: Any) -> None:
        node = task.node
        task.args = task.kwargs = None
        if self.running.get(node) is not task:
            return  # revoked, timed out or superseded
        del self.running[node]
        if self.error is not None:
            return
        if self.waiting[node]:
            self.parked[node] = (task, ok, payload)
        else:
            self._take(task, ok, payload)

    def _take(self, task: Task, ok: bool, payload: Any) -> None:
        if ok:
            self._finish_ok(task.node, payload)
        else:
            exc, tb = payload
            self._failed(task.node, exc, tb, task.attempt)

    def _resolve(self, node) -> None:
        """Every dependency of ``node`` has finished."""
        if node in self.errors:
            return
        if node in self.poison:
            self._withdraw(node)
            self._finish_error(node, self.poison.pop(node))
            return
        early = self.parked.pop(node, None)
        if early is not None:
            self._take(*early)
            return
        task = self.running.get(node)
        if task is not None and task.timeout is not None:
            self._start_clock(task)

    def _start_clock(self, task: Task) -> None:
        if self.track_deadlines:
            self._seq += 1
            heapq.heappush(self.deadlines, (self.clock() + task.timeout, self._seq, task))

    def _withdraw(self, node) -> None:
        """``node``'s handle is void: undo sending it and every node sent on it."""
        stack = [node]
        while stack:
            n = stack.pop()
            task = self.running.pop(n, None)
            if task is not None:
                self.revoked.append(task)
            was_sent = self.parked.pop(n, None) is not None
            if self.values.pop(n, _NONE) is not _NONE:
                was_sent = True
            if not was_sent:
                continue
            kids = self.children.get(n)
            if kids is not None:
                for kid in _kids(kids):
                    self.unsent[kid] += 1
                    if kid in self.values or kid in self.parked:
                        stack.append(kid)

    def _retry(self, node, exc, attempt, retries) -> None:
        self._withdraw(node)
        self.backing_off.add(node)
        super()._retry(node, exc, attempt, retries)

    def _due(self, node) -> None:
        self.backing_off.discard(node)
        super()._due(node)

    def _finish_ok(self, node, value) -> None:
        super()._finish_ok(node, value)
        if node._outcome is value:
            node._outcome = Remote(value, self.owner)

    def _keep_value(self, node, value) -> None:
        node._outcome = Remote(value, self.owner)

    def _finish_error(self, node, error) -> None:
        self.values.pop(node, None)
        kids = self.children.get(node)
        if kids is not None:
            for kid in _kids(kids):
                if kid in self.values or kid in self.parked:
                    self._withdraw(kid)  # doomed: stop its work now
        super()._finish_error(node, error)

    def abort(self) -> list[Task]:
        tasks = super().abort()
        self.parked.clear()
        self.resolved.clear()
        return tasks + self.take_revoked()

    def remote_outputs(self) -> tuple[list, list]:
        """The outputs that finished here and their values, still handles."""
        values, waiting = self.values, self.waiting
        nodes = [n for n in dict.fromkeys(self.outputs) if n in waiting and n in values]
        return nodes, [values[n] for n in nodes]

    def localize(self, nodes: list, outcomes: list) -> None:
        """Store the values brought back for ``nodes``: ``(True, value)`` or
        ``(False, (exception, traceback))`` each."""
        for node, (ok, payload) in zip(nodes, outcomes):
            if ok:
                self.values[node] = payload
                node._outcome = payload
            else:
                exc, tb = payload
                del self.values[node]
                error = DependencyError(exc, tb, node)
                error.__cause__ = exc
                self.errors[node] = error
                node._outcome = Failure(error)
                if self.throw_error and self.error is None:
                    self.error = error


_NONE = object()


_ABORTED = DependencyError(DispatcherError("the run was interrupted"), "", None)


def _outputs(nodes, what: str = "outputs") -> list:
    if isinstance(nodes, DispatchNode):
        return [nodes]
    if isinstance(nodes, DispatchGraph):
        raise TypeError(f"{what} must be nodes, not a DispatchGraph")
    try:
        out = list(nodes)
    except TypeError:
        raise TypeError(
            f"{what} must be a node, a list of nodes or a DispatchGraph, got "
            f"{type(nodes).__name__}: {nodes!r:.80}{_not_a_node_hint(nodes)}"
        ) from None
    for i, n in enumerate(out):
        if not isinstance(n, DispatchNode):
            raise TypeError(
                f"{what} must be nodes, got {type(n).__name__} at position {i}: {n!r:.80}"
                f"{_not_a_node_hint(n)}"
            )
    return out


def _not_a_node_hint(value) -> str:
    """What to do when a value was given where a node was expected."""
    if callable(value):
        name = _func_name(value)
        return (
            f"; {name!r} is a function: make a node of a call to it with dp.Op({name}, *args), "
            f"or decorate it with @dp.op so that {name}(*args) makes one"
        )
    return (
        "; if this is what a function returned, that function ran at once: decorate it "
        "with @dp.op (or call it as dp.Op(f, *args)) so that calling it makes a node"
    )


def _check_graph_edges(waiting, graph, given, failed_given) -> None:
    parents = graph._parents
    for node in waiting:
        mine = parents.get(node)
        if mine is None:
            raise ExecutorError(f"node {node.label!r} is not in the graph")
        for dep in node.dependencies():
            if dep not in mine and dep not in given and dep not in failed_given:
                raise ExecutorError(
                    f"node {node.label!r} needs the value of {dep.label!r}, which the graph "
                    f"has no edge for; add the edge, or give {dep.label!r} in inputs"
                )


def _kids(entry) -> list | tuple:
    """The nodes of a ``children`` entry (a bare node or a list)."""
    return entry if type(entry) is list else (entry,)


def _all_reachable(waiting, children, ready) -> bool:
    """Kahn's check: can every node become ready?"""
    if len(ready) == len(waiting):
        return True
    count = dict(waiting)
    stack = list(ready)
    seen = 0
    while stack:
        node = stack.pop()
        seen += 1
        for kid in _kids(children.get(node, [])):
            n = count[kid] - 1
            count[kid] = n
            if n == 0:
                stack.append(kid)
    return seen == len(waiting)


# -- drivers -----------------------------------------------------------------------


def drive(state: RunState, executor: Any) -> list[DispatchResult]:
    """Run ``state`` on ``executor`` with blocking waits; returns the results."""
    synchronous = executor.synchronous
    if synchronous:
        done = state.done
        wait = None
    else:
        completions: queue.SimpleQueue = queue.SimpleQueue()
        wait = completions.get

        def done(task, ok, payload, _put=completions.put):
            _put((task, ok, payload))

    clock = state.clock
    try:
        state.start()
        while True:
            _start_ready(state, executor, done)
            if state.finished:
                break
            wake = state.next_wakeup()
            if wake is None and synchronous:
                raise DispatcherError("the run stalled with nodes left to run")
            try:
                if synchronous:
                    time.sleep(max(0.0, wake - clock()))
                    raise queue.Empty
                state.done(*wait(timeout=None if wake is None else max(0.0, wake - clock())))
                while True:
                    state.done(*completions.get_nowait())
            except queue.Empty:
                pass
            if state.deadlines or state.delayed:
                _cancel(executor, state.expire())
        if state.running:
            _settle(state, executor, wait)
        if state.pipelined and state.error is None:
            nodes, handles = state.remote_outputs()
            state.localize(nodes, executor._gather(handles))
    except BaseException:
        executor._interrupt()
        _settle(state, executor, wait)
        state.end()
        raise
    state.end()
    if state.error is not None:
        raise state.error
    return state.results()


def _start_ready(state: RunState, executor, done) -> None:
    """Hand every ready task to the executor, let it send what it held back, and
    cancel the tasks the state revoked."""
    task = state.next_task()
    if task is not None:
        while task is not None:
            _start(state, executor, task, done)
            task = state.next_task()
        executor._flush()
    if state.revoked:
        _cancel(executor, state.take_revoked())


def _start(state: RunState, executor, task: Task, done) -> None:
    """Hand ``task`` to the executor; a refusal (the pool is broken or shut down,
    the call cannot be sent) fails that node instead of leaving it running."""
    try:
        executor._submit(task, done)
    except Exception as exc:
        state.done(task, False, (exc, format_exception(exc)))
    except BaseException as exc:  # Ctrl-C in the thread that drives the run: it ends here
        state.done(task, False, (exc, format_exception(exc)))
        raise
    else:
        state.sent(task)


def _cancel(executor, tasks) -> None:
    for task in tasks:
        executor._cancel(task)


def _settle(state: RunState, executor, wait) -> None:
    """Cancel what is still running and await it, so nothing is left behind.

    A synchronous executor (``wait`` is None) has nothing running once its call
    has returned or raised.
    """
    _cancel(executor, state.abort())
    if wait is None:
        return
    try:
        while state.running:
            state.done(*wait())
    except KeyboardInterrupt:
        logger.warning("stopped waiting for %d running node(s)", len(state.running))
        raise


async def drive_async(state: RunState, executor: Any) -> list[DispatchResult]:
    """Run ``state`` on ``executor`` inside the running asyncio loop."""
    loop = asyncio.get_running_loop()
    completions: asyncio.Queue = asyncio.Queue()
    loop_thread = threading.get_ident()
    synchronous = executor.synchronous

    if synchronous:
        done = state.done
    else:

        def done(task, ok, payload):
            if threading.get_ident() == loop_thread:
                completions.put_nowait((task, ok, payload))
            else:
                loop.call_soon_threadsafe(completions.put_nowait, (task, ok, payload))

    clock = state.clock
    try:
        state.start()
        while True:
            _start_ready(state, executor, done)
            if state.finished:
                break
            wake = state.next_wakeup()
            if wake is None and synchronous:
                raise DispatcherError("the run stalled with nodes left to run")
            try:
                if synchronous:
                    await asyncio.sleep(max(0.0, wake - clock()))
                    raise TimeoutError
                if wake is None:
                    item = await completions.get()
                else:
                    item = await asyncio.wait_for(completions.get(), max(0.0, wake - clock()))
                state.done(*item)
                while not completions.empty():
                    state.done(*completions.get_nowait())
            except TimeoutError:
                pass
            if state.deadlines or state.delayed:
                _cancel(executor, state.expire())
        if state.running:
            await _settle_async(state, executor, None if synchronous else completions)
        if state.pipelined and state.error is None:
            nodes, handles = state.remote_outputs()
            state.localize(nodes, await executor._gather_async(handles))
    except BaseException:
        executor._interrupt()
        await asyncio.shield(_settle_async(state, executor, None if synchronous else completions))
        state.end()
        raise
    state.end()
    if state.error is not None:
        raise state.error
    return state.results()


async def _settle_async(state: RunState, executor, completions) -> None:
    _cancel(executor, state.abort())
    if completions is None:
        return
    while state.running:
        state.done(*await completions.get())
