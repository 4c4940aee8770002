"""The run state: one explicit state per node, advanced only by its driver's calls.

The policy it carries out (depth-first order, retries, failures reaching
downstream, one clock, release, pipelining) is stated in :mod:`dispatcher.engine`.

States and transitions
----------------------
::

    WAITING  --dependencies finished (pipelined: sent)----------> READY
    WAITING  --pipelined: the last dependency finished, one failed> FAILED
    READY    --light or inline: computed here--------------------> DONE | BACKING_OFF | FAILED
    READY    --poisoned, a bad option, prepare() raised----------> FAILED | BACKING_OFF
    READY    --store: found there, stored by another run meanwhile> DONE
    READY    --store: claimed by another live run-----------------> CLAIMED
    CLAIMED  --time for another look at the store-----------------> READY
    READY    --handed to the executor----------------------------> RUNNING
    READY    --pipelined, some dependency not finished-----------> SENT
    READY    --pipelined, poisoned, other dependencies running---> WAITING
    SENT     --the last dependency finished (clock starts)-------> RUNNING
    SENT     --reported early-------------------------------------> PARKED
    PARKED   --the last dependency finished: report taken--------> as RUNNING's report
    RUNNING  --reported ok----------------------------------------> DONE
    RUNNING  --failed or past its deadline, retries left----------> BACKING_OFF
    RUNNING  --failed or past its deadline------------------------> FAILED
    BACKING_OFF --delay over---------------------------------------> READY (pipelined: WAITING
                                                                     while a dependency is unsent)
    BACKING_OFF --pipelined: a dependency failed--------------------> FAILED
    SENT | PARKED | READY --a dependency withdrawn (pipelined)----> WAITING
    DONE     --pipelined: its value cannot be brought back-------> FAILED (no on_fail: it finished)
    DONE     --release, no remaining node needs it---------------> RELEASED

Fields of :class:`RunState`
---------------------------
::

    state: dict[node, NodeState]      where each node that has moved since the plan is; any
                                      node's state is state_of(node) (not moved: READY if it
                                      waits for nothing, else WAITING)
    waiting: dict[node, int]          its dependencies not yet finished (done or failed)
    unsent: dict[node, int]           pipelined: its dependencies neither sent nor finished
    children: dict[node, node|list]   the nodes waiting for it (see plan.kids)
    poison: dict[node, DependencyError]  a dependency failed: fail with this once waiting is 0
    ready: list[node]                 stack of READY nodes; an entry no longer READY is skipped
    resolved: list[node]              pipelined: nodes whose dependencies all finished, to act on
    running: dict[node, Task]         the current attempt of each SENT or RUNNING node
    parked: dict[node, tuple]         pipelined: the early report (task, ok, payload) of a PARKED node
    attempts: dict[node, int]         the number of the next attempt, for retried nodes
    ready_at: dict[node, float]       when it became READY (its attempt's ready time); taken when it
                                      starts (one that never starts keeps it to the end of the run)
    log: dict[node, list[Attempt]]    the attempts of the outputs (dispatcher.attempts)
    timers: Timers                    the one clock: RUNNING tasks' deadlines, BACKING_OFF nodes' due times
    values: dict[node, value]         given and finished nodes' values (pipelined: handles, of sent ones too)
    errors: dict[node, DependencyError]  failed nodes, given or run
    needed: dict[node, int] | None    with release: how many dependents still need each value
    stored: set[node]                 the nodes whose values were read from the store
    revoked: list[Task]               tasks whose work the driver should cancel now
    cache: RunCache | None            with a store: keys, claims and writes (engine.caching)
    intake: object | None             an open run's source of more nodes (engine.openrun)
    remaining: int                    nodes not yet DONE or FAILED
    error: DependencyError | None     the failure that ends the run
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..attempts import Attempt, record
from ..graph import DispatchGraph, _deps_of
from ..nodes import DispatchNode
from ..outcomes import NEVER, UNREAD, Remote, Stored, here, read_here, value_here
from ..results import DependencyError, DispatcherError, DispatchResult, format_exception
from . import caching, failures, openrun, pipelining, release
from .caching import COMPUTE, RunCache
from .callbacks import failed, listeners, notify, tell
from .clock import Timers
from .cores import CoreBudget, RunCores, wait_for_cores
from .inline import call_here
from .plan import given_values, kids, make_plan, output_nodes
from .records import NodeState, RunOptions, Task
from .retries import JITTER

__all__ = ["RunState"]

logger = logging.getLogger("dispatcher")

WAITING, READY, SENT, RUNNING, PARKED, BACKING_OFF, CLAIMED, DONE, FAILED, RELEASED_ = NodeState
_ABORTED = DependencyError(DispatcherError("the run was interrupted"), "", None)


class RunState:
    """Everything a run knows, advanced only by the calls its driver makes.

    The driver loop is: start every task :meth:`next_task` gives (telling
    :meth:`sent` of each, when pipelined), tell the state of each report with
    :meth:`done`, and call :meth:`expire` when the time of :meth:`next_wakeup`
    comes, until :attr:`finished`; then :meth:`results`. ``options`` (or the same
    fields as keywords) are the run's :class:`~dispatcher.engine.RunOptions`;
    ``owner`` is the executor whose handles a pipelined run holds; ``cache`` the
    run's store policy (:mod:`~dispatcher.engine.caching`), if it has a store.
    """

    def __init__(
        self,
        outputs: Iterable[DispatchNode] | DispatchGraph,
        inputs: Iterable[DispatchNode] = (),
        *,
        input_map: dict | None = None,
        options: RunOptions | None = None,
        owner: Any = None,
        cache: RunCache | None = None,
        budget: Callable[[], CoreBudget] | None = None,
        intake: Any = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = JITTER.random,
        **option_fields: Any,
    ):
        if options is None:
            options = RunOptions(**option_fields)
        elif option_fields:
            raise TypeError("give the run's options either as a RunOptions or as keywords, not both")
        self.options = options
        self.throw_error = options.throw_error
        self.callbacks = tuple(options.callbacks)
        self.pipelined = options.pipelined
        self.inline_light = options.inline_light and not options.pipelined
        self.inline_all = options.inline_all and not options.pipelined
        self.owner = owner  # pipelined: the executor that fetches Remote values and adopts its own
        self.clock = clock
        self.rand = rand
        self.debug = logger.isEnabledFor(logging.DEBUG)
        self.on_submit = listeners(self.callbacks, "on_submit")  # (only those that listen)
        self.on_finish = listeners(self.callbacks, "on_finish")
        self.wanted = any(getattr(cb, "wants_values", True) for cb, _ in self.on_finish)  # values read
        self.on_attempt = listeners(self.callbacks, "on_attempt")
        self.hooks = bool(self.on_submit or self.on_finish) or self.debug

        graph_or_nodes = outputs if isinstance(outputs, DispatchGraph) else output_nodes(outputs)
        self.values: dict = {}
        self.errors: dict = {}
        value_of = functools.partial(pipelining.given_value, self)  # an input node's value
        given_values(inputs, input_map, self.values, self.errors, value_of)
        self.cache = cache
        self.get_budget = budget  # gives the executor's cores (its workers may have to start first)
        self.budget: CoreBudget | None = None  # those cores, once a node asks for some
        self.cores: RunCores | None = None  # made when a node asks for cores
        self.wake: Callable[[], None] | None = None  # wakes the driver when another run frees cores
        if cache is not None:  # the nodes found in the store become given values
            if isinstance(graph_or_nodes, DispatchGraph):
                cache.plan(
                    graph_or_nodes.leaf_nodes(), graph_or_nodes._parents.__getitem__, self.values, self.errors
                )
            else:
                cache.plan(graph_or_nodes, _deps_of, self.values, self.errors)
        plan = make_plan(graph_or_nodes, self.values, self.errors)
        self.outputs, self.waiting, self.children = plan.outputs, plan.waiting, plan.children
        self.poison, self.ready, self.deps_of = plan.poison, plan.ready, plan.deps_of
        self.edges_pass_values = plan.edges_pass_values
        self.state: dict = {}  # only nodes that have moved since the plan: see state_of
        self.total = self.remaining = len(self.waiting)
        self.stored = cache.loaded if cache is not None else frozenset()  # values read from the store
        self.needed = release.needed(self) if options.release else None
        self.keep = set(self.outputs)
        self._get = self.values.__getitem__
        self._get_here = functools.partial(value_here, self.values)  # (for a node run in the driver)
        self.running: dict = {}
        self.interrupted = None  # the node called in the driver's thread when Ctrl-C or SIGTERM came
        self.attempts: dict = {}
        self.ready_at: dict = {}  # when each node became READY, from the start on (dispatcher.attempts)
        self.t_start = clock()  # when the nodes READY from the start became so (reset by start())
        self.log: dict = {}  # the attempts of the outputs
        self.timers = Timers(clock, options)
        self.revoked: list = []
        self.error: DependencyError | None = None
        self.started = False
        self.unsent = dict(self.waiting) if self.pipelined else None
        self.parked: dict = {}
        self.resolved: list = []
        self.intake = intake  # an open run's source of more nodes (engine.openrun)
        if intake is not None:
            openrun.open_state(self)

    def state_of(self, node) -> NodeState:
        """Where ``node`` is in this run (one that has not moved since the plan is not
        stored: a run of a million nodes does not write a million states first)."""
        state = self.state.get(node)
        if state is not None:
            return state
        return WAITING if self.waiting[node] else READY

    # -- the driver's interface -----------------------------------------------------
    @property
    def finished(self) -> bool:
        """Nothing more will start: all nodes are done, or a failure ended the run."""
        return self.remaining == 0 or self.error is not None

    def start(self) -> None:
        """Reset the nodes' outcomes and tell the callbacks the run begins."""
        self.started = True
        self.t_start = self.clock()
        for node in self.waiting:
            node._outcome = NEVER
        if self.cache is not None:
            self.cache.start()
        if self.callbacks:
            notify(self.callbacks, "on_start", None, self.total)
        asking = [n for n in self.ready if n.cores is not None] if self.options.task_window else ()
        if asking:  # (with a window: they wait for cores from the start, not behind the stack)
            self.ready[:] = [n for n in self.ready if n.cores is None]
            for node in reversed(asking):  # (the stack's top first, as it would have gone)
                self._queue_ready(node)

    def next_task(self) -> Task | None:
        """The next task to start, or None if none is ready now (or the window is full).

        Light nodes, nodes the engine runs inline, and nodes whose dependencies
        failed are finished here without a task.
        """
        ready, state, poison, resolved = self.ready, self.state, self.poison, self.resolved
        get, running = self._get, self.running
        inline_light, inline_untimed = self.inline_light, self.inline_all
        pipelined, cache = self.pipelined, self.cache
        default_timeout, window = self.options.timeout, self.options.task_window
        while self.error is None:
            grant = None
            if pipelined and resolved:
                pipelining.resolve(self, resolved.pop())
                continue
            if ready and (window is None or len(running) < window):  # (else they wait; those for cores go)
                node = ready.pop()
                if pipelined and self.state_of(node) is not READY:
                    continue  # a stale entry: withdrawn, or already sent
            elif self.cores is not None and self.cores.queue:  # all ready nodes seen: share the cores
                picked = self.cores.next()
                if picked is None:
                    return None
                node, grant = picked
            else:
                return None
            if poison and node in poison:
                if self.waiting[node]:  # pipelined: it fails once its other dependencies finish
                    state[node] = WAITING
                else:
                    failures.fail(self, node, poison.pop(node))  # -> FAILED, and all downstream
                continue
            if grant is None and node.cores is not None:
                wait_for_cores(self, node)  # -> the queue of the nodes waiting for cores (or FAILED)
                continue
            try:
                func, args, kwargs = node.prepare(self._get_here if node.light else get)
            except Exception as exc:  # a malformed node: fail it, do not crash the run
                self._cores_back(grant)
                failures.failed_attempt(self, node, exc, format_exception(exc), self._attempt(node))
                continue
            timeout = node.timeout
            if timeout is None:
                timeout = default_timeout
            elif (type(timeout) is not float and type(timeout) is not int) or not 0 < timeout < math.inf:
                timeout = failures.checked_timeout(self, node, timeout)  # set by hand on the node
                if timeout is None:
                    self._cores_back(grant)
                    continue
            if cache is not None and not node.light:
                verdict = cache.before_start(node)
                if verdict is not COMPUTE:
                    self._cores_back(grant)
                    caching.set_aside(self, node, verdict)  # -> CLAIMED, or DONE if stored meanwhile
                    continue
                func = cache.wrap(node, func, timeout, self)
            if grant is not None:
                func = self.cores.allocated(func, grant)
            if (inline_untimed and timeout is None) or (inline_light and node.light):
                call_here(self, node, func, args, kwargs, grant)  # READY -> DONE, BACKING_OFF or FAILED
                continue
            if self.hooks:  # before the task exists: a callback that raises leaves nothing running
                self._submitted(node)
            task = Task(node, func, args, kwargs, self.attempts.get(node, 1) if self.attempts else 1, timeout)
            task.cores = grant
            task.ready = self.ready_at.pop(node, self.t_start)
            task.submitted = self.clock()
            running[node] = task
            if self.pipelined:
                if not self.edges_pass_values:  # a graph's edges: some may pass no value
                    own = node.dependencies()
                    values = self.values
                    task.after = tuple(values[d] for d in self.deps_of(node) if d not in own and d in values)
                if self.waiting[node]:
                    state[node] = SENT
                    return task
            state[node] = RUNNING
            if timeout is not None:
                self.timers.watch(task)
            return task
        return None

    def sent(self, task: Task) -> None:
        """The executor accepted ``task`` (pipelined: the nodes sent after it take its handle)."""
        if self.pipelined:
            pipelining.sent(self, task)

    def done(self, task: Task, ok: bool, payload: Any) -> None:
        """A task finished: ``payload`` is its value, or ``(exception, traceback)``."""
        node = task.node
        task.args = task.kwargs = None  # the arguments may be large: drop them now
        pipelined = self.pipelined
        if not pipelined:
            task.handle = None  # the executor's record may point back at the task: no cycle to keep values
        running = self.running
        if running.get(node) is not task:
            return  # a late answer from an attempt that timed out, was revoked or superseded
        del running[node]
        if task.cores is not None:
            self._cores_back(task.cores)
        if self.error is not None:
            return  # the run is ending; running tasks are only awaited
        if ok and type(payload) in UNREAD and (node.nout is not None or caching.driver_needs(self, node)):
            ok, payload = read_here(node, payload)  # kept as its worker pickled it: read it here now
        if self.on_attempt or node in self.keep:
            error = None if ok and node.nout is None else failures.attempt_error(self, node, ok, payload)
            self._attempt_ended(record(task, error, self.clock()))
        if pipelined and self.state.get(node) is SENT:
            self.state[node] = PARKED
            self.parked[node] = (task, ok, payload)
        elif ok and node.nout is None and not pipelined:
            self._finish_ok(node, payload)  # the common case, without a call more
        else:
            self._take(task, ok, payload)

    def take_revoked(self) -> list[Task]:
        """The tasks whose work the driver should cancel now."""
        revoked, self.revoked = self.revoked, []
        return revoked

    def next_wakeup(self) -> float | None:
        """The clock time at which :meth:`expire` has work, or None."""
        return self.timers.next_wakeup(self.running)

    def expire(self) -> list[Task]:
        """Fail the tasks past their deadline and ready the retries that are due
        (see :mod:`~dispatcher.engine.clock`). Returns the timed-out tasks, whose
        work the driver asks the executor to cancel."""
        return failures.expire(self) if self.timers.heap else []

    def abort(self) -> list[Task]:
        """Stop starting nodes; returns the running tasks, to cancel and await."""
        if self.error is None:
            self.error = _ABORTED
        for pending in (self.ready, self.resolved, self.parked, self.timers):
            pending.clear()
        return list(self.running.values()) + self.take_revoked()

    def results(self) -> list[DispatchResult]:
        """One result per output, in order."""
        out = []
        values, errors = self.values, self.errors
        for node in self.outputs:
            attempts = tuple(self.log.get(node, ()))
            if node in errors:
                out.append(DispatchResult(node, error=errors[node], attempts=attempts))
            elif node in values:
                out.append(DispatchResult(node, value=here(values[node], node), attempts=attempts))
            else:
                raise DispatcherError(f"node {node.label!r} did not finish")
        return out

    def end(self) -> None:
        """Store what the run leaves on the nodes, end its claims in the store, and
        tell the callbacks it is over."""
        if self.cache is not None:
            self.cache.end()
        if self.cores is not None:
            self.cores.end(self)
        if self.needed is not None:
            for node, value in self.values.items():
                if node in self.waiting and node not in self.keep:
                    node._outcome = Remote(value, self.owner) if self.pipelined else value
        if self.callbacks and self.started:
            notify(self.callbacks, "on_end", None)

    # -- transitions ---------------------------------------------------------------
    def _attempt(self, node) -> int:
        """The number of ``node``'s attempt about to run (1 unless it was retried)."""
        return self.attempts.get(node, 1) if self.attempts else 1

    def _take(self, task: Task, ok: bool, payload: Any) -> None:
        """The report of a RUNNING (or PARKED) node's task."""
        node = task.node
        if not ok:
            exc, tb = payload
            failures.failed_attempt(self, node, exc, tb, task.attempt)
            return
        if self.pipelined:  # the value is a handle: it stays where it was made
            self._finish_ok(node, payload)
            if node._outcome is payload:
                node._outcome = Remote(payload, self.owner)
            return
        if (
            node.nout is not None
            and type(payload) is not Stored
            and failures.wrong_nout(self, node, here(payload, node), task.attempt)
        ):
            return  # (a Stored value was checked by the worker that stored it)
        self._finish_ok(node, payload)

    def _dependency_finished(self, kid) -> None:
        n = self.waiting[kid] - 1
        self.waiting[kid] = n
        if n == 0:
            self.ready_at[kid] = self.clock()
            if self.pipelined:
                self.resolved.append(kid)
            else:
                self.state[kid] = READY
                self._queue_ready(kid)

    def _due(self, node) -> None:
        """BACKING_OFF or CLAIMED -> READY: the delay before retrying ``node``, or
        before looking at its claim again, is over."""
        self.ready_at[node] = self.clock()
        if self.pipelined and self.unsent[node]:
            self.state[node] = WAITING  # ready once its dependencies are sent again
        else:
            self.state[node] = READY
            self._queue_ready(node)

    def _queue_ready(self, node) -> None:
        """A READY node goes on the ready stack; one that asks for cores waits for them
        from now on instead, not behind the stack (where a full task window would keep
        it), unless it is poisoned (it fails from the stack) or the run is pipelined
        (the stack re-checks its state)."""
        if node.cores is None or node in self.poison or self.pipelined:
            self.ready.append(node)
        else:
            wait_for_cores(self, node)

    def _finish_ok(self, node, value) -> None:
        """-> DONE; the nodes waiting only for it are READY (pipelined: resolved)."""
        self.values[node] = value
        if self.cache is not None:
            self.cache.finished(node, value)
        state = self.state
        state[node] = DONE
        self.remaining -= 1
        if self.needed is None or node in self.keep:
            node._outcome = value
        if self.hooks:
            if self.debug:
                logger.debug("finished %r", node.label)
            if self.on_finish:
                tell(self.on_finish, "on_finish", node, node, here(value, node) if self.wanted else value)
        entry = self.children.get(node)
        if entry is not None:
            if self.pipelined:
                for kid in kids(entry):
                    self._dependency_finished(kid)
            else:  # inline, as it is the hot path of every run
                waiting, ready, ready_at = self.waiting, self.ready, self.ready_at
                now = None
                for kid in entry if type(entry) is list else (entry,):
                    n = waiting[kid] - 1
                    waiting[kid] = n
                    if n == 0:
                        state[kid] = READY
                        ready_at[kid] = now = now or self.clock()
                        if kid.cores is None:  # (the hot path: _queue_ready without a call)
                            ready.append(kid)
                        else:
                            self._queue_ready(kid)
        if self.needed is not None:
            release.after(self, node)

    _finish_error = failures.fail  # -> FAILED, and every node downstream fails with the same error

    def _attempt_ended(self, attempt: Attempt) -> None:
        """Keep ``attempt`` if its node is an output; tell the callbacks."""
        node = attempt.node
        if node in self.keep:
            self.log.setdefault(node, []).append(attempt)
        for callback, on_attempt in self.on_attempt:  # (tell's loop, a call less per attempt)
            try:
                on_attempt(node, attempt)
            except Exception as exc:
                raise failed(callback, "on_attempt", node, exc) from exc

    def _cores_back(self, grant: int | None) -> None:
        if grant is not None:
            self.budget.give_back(grant)

    def _submitted(self, node) -> None:
        if self.debug:
            logger.debug("start %r", node.label)
        if self.on_submit:
            tell(self.on_submit, "on_submit", node, node)
