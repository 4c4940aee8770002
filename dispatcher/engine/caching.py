"""The store of a run: which nodes are taken from it, which are computed and kept.

A run given a store (``dp.run(..., store=...)``; :mod:`dispatcher.store`) follows
these rules, which :class:`RunCache` carries out for its
:class:`~dispatcher.engine.RunState`:

1. **Keys first.** Before anything runs, every node the run reaches gets its key
   (:class:`~dispatcher.store.keys.KeyMaker`), dependencies before dependants. A
   value given to the run (``inputs``, ``input_map``) is keyed by its contents. A
   node without a key (``cache=False``, an argument that cannot be hashed, a
   dependency without a key) is computed every time, and so is everything
   downstream of it; the run warns once per function about an argument that cannot
   be hashed.
2. **Only what is needed is read.** The plan walks back from the outputs; a node
   whose entry is present is not run and its dependencies are not visited, so its
   value is loaded only if an output is that node or a node that runs needs it. A
   fully stored graph reads only its outputs' entries (a run that looks for many
   entries asks the store for all its keys at once, when that costs less); with
   ``release``, a value read is let go once no node needs it, as a computed one is
   (:mod:`~dispatcher.engine.release`). A damaged entry (cut short, altered) is
   logged, removed and computed again; a sound entry whose value this process
   cannot unpickle (a module missing here) is logged and computed again, and left
   for the processes that can read it until the new value replaces it.
3. **Claim, then compute.** Before a node runs, the run claims its key in the
   store, so that runs sharing the store compute each node once: a node claimed by
   another live run waits (state CLAIMED, polled with a growing delay up to
   :data:`POLL_MAX`) for that run's entry, or for the claim to lapse, while the rest
   of the graph goes on. Once claimed, an entry that appeared meanwhile is taken
   instead of computing. A claim costs file operations that a quick call does not
   repay: once a claimed call of a function has taken less than :data:`CLAIM_MIN`,
   the run stores that function's further nodes without claiming them (two runs
   may then both compute such a node: a few milliseconds, and the same value).
4. **Keep what succeeded.** A node's value is stored when the node finishes, by
   the worker that made it where the executor's workers are other processes and
   the store is ``shared`` (:class:`~dispatcher.store.worker.StoredCall`),
   otherwise here (a value that stayed on a dask worker is fetched to be stored).
   A worker reports only the key of a large value the driver has no use for
   (:func:`driver_needs`); its dependants' workers read it from the store. Failures,
   timeouts and light nodes (indexing, collecting) are never stored. A write that
   fails (a full disk) costs the entry, never the run: it is logged once per run.
   A store that cannot be written is only read.
5. **Claims end with the run**, however it ends.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

from ..graph import topological_order
from ..nodes import DispatchNode, Op, function_key
from ..outcomes import here
from ..results import ExecutorError
from ..store import CorruptEntry, StoreError, UnreadableValue, open_store
from ..store.keys import KeyMaker
from ..store.worker import StoredCall
from . import pipelining
from .plan import kids
from .records import NodeState

__all__ = [
    "CLAIMED_ELSEWHERE",
    "COMPUTE",
    "POLL_MAX",
    "Cached",
    "RunCache",
    "driver_needs",
    "set_aside",
]

logger = logging.getLogger("dispatcher")

POLL_MAX = 2.0  # seconds between two looks at a node claimed by another run
CLAIM_MIN = 0.005  # seconds: a function whose calls are quicker is stored without claims
_POLL_FIRST = 0.02
_ASK_ONE_BY_ONE = 64  # entries looked for one by one before the store is asked for them all

COMPUTE = "compute"
CLAIMED_ELSEWHERE = "claimed elsewhere"


class Cached:
    """A node's value, found in the store when it was about to run."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


class RunCache:
    """What one run does with its store (see the module's docstring)."""

    def __init__(self, store: Any, *, store_on_worker: bool, fetch: Any = None):
        self.store = open_store(store)
        # a worker writes only to a store whose copies reach the same entries
        self.store_on_worker = store_on_worker and self.store.shared
        self.fetch = fetch  # (node, handle) -> value: where the run holds handles to values
        self.keys: dict = {}  # node -> key, or None
        self.claimable: dict = {}  # node -> key: nodes this run may store (not light, keyed)
        self.storing: dict = {}  # node -> (key, function, time claimed or None): to store once it ends
        self.quick: set = set()  # the functions whose claimed calls took under CLAIM_MIN
        self.polls: dict = {}  # node -> the delay before its next look at a claim elsewhere
        self.loaded: set = set()  # the nodes whose values the plan took from the store
        self.run: Any = None
        self.writable = True
        self._write_failed = False

    # -- planning ------------------------------------------------------------------
    def plan(self, outputs: list, deps_of, values: dict, errors: dict) -> None:
        """Key every node reached from ``outputs`` and load the stored ones the run
        needs into ``values`` (given values and failures stop the walk)."""
        self._make_keys(outputs, deps_of, values, errors)
        self._warn_unkeyed()
        self._load_needed(outputs, deps_of, values, errors)

    def _make_keys(self, outputs, deps_of, values, errors) -> None:
        keys = self.keys
        maker = KeyMaker(keys)
        for node, value in values.items():
            keys[node] = maker.value_key(value)
        for node in errors:
            keys[node] = None
        claimable, key_of = self.claimable, maker.key_of
        expanded: set = set()  # nodes whose missing dependencies were pushed
        stack = [n for n in reversed(outputs) if n not in keys]
        while stack:  # depth first, each node after its dependencies
            node = stack[-1]
            if node in keys:
                stack.pop()
                continue
            deps = deps_of(node)
            missing = [d for d in deps if d not in keys]
            if missing:
                if node in expanded:  # its dependencies came back to it: a cycle
                    topological_order([node], deps_of)  # raises, naming the nodes of the cycle
                    raise ExecutorError("the graph has a cycle")  # pragma: no cover - raised above
                expanded.add(node)
                stack.extend(missing)
                continue
            stack.pop()
            own = node.dependencies()
            if deps is own:
                key = key_of(node)
            else:  # a graph's edges: those that pass no value count too
                own = set(own)
                key = key_of(node, [d for d in deps if d not in own])
            keys[node] = key
            if key is not None and not node.light:
                claimable[node] = key
        self.unkeyed = maker.unkeyed

    def _warn_unkeyed(self) -> None:
        """One warning per function for the nodes that cannot be keyed by themselves."""
        reasons: dict = {}
        counts: collections.Counter = collections.Counter()
        for node, why in self.unkeyed.items():
            if why.inherited:
                continue
            reasons.setdefault(node.label, why.reason)
            counts[node.label] += 1
        for label, why in reasons.items():
            count = counts[label]
            more = f" (and {count - 1} more of its nodes)" if count > 1 else ""
            logger.warning("node %r%s is not stored: %s; nor is anything downstream of it", label, more, why)

    def _load_needed(self, outputs, deps_of, values, errors) -> None:
        claimable, store = self.claimable, self.store
        contains, asked = store.contains, 0
        seen: set = set()
        stack = [n for n in outputs if n not in values and n not in errors]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            key = claimable.get(node)
            if key is None:
                pass
            elif asked < _ASK_ONE_BY_ONE:
                asked += 1
                if asked == _ASK_ONE_BY_ONE:  # many to ask: all at once, if that is cheaper
                    present = store.present_keys(len(claimable))
                    if present is not None:
                        contains = present.__contains__
            if key is not None and contains(key):
                found = self._load(node, key)
                if found is not None:
                    values[node] = node._outcome = found.value
                    self.loaded.add(node)
                    continue
            for dep in deps_of(node):
                if dep not in values and dep not in errors and dep not in seen:
                    stack.append(dep)

    def _load(self, node: DispatchNode, key: str) -> Cached | None:
        try:
            return Cached(self.store.load(key))
        except KeyError:
            return None
        except UnreadableValue as exc:
            logger.warning("the stored value of node %r (%s) is computed again: %s", node.label, key, exc)
        except CorruptEntry as exc:
            logger.warning("the stored value of node %r (%s) is computed again: %s", node.label, key, exc)
            self._discard(key)
        except OSError as exc:
            logger.warning("the stored value of node %r (%s) cannot be read: %s", node.label, key, exc)
        return None

    def _discard(self, key: str) -> None:
        try:
            self.store.discard(key)
        except OSError as exc:
            logger.warning("could not remove the unreadable entry %s: %s", key, exc)

    # -- running ---------------------------------------------------------------------
    def start(self) -> None:
        """The run begins: it may claim and store from now on."""
        try:
            self.run = self.store.begin_run()
        except StoreError as exc:
            self.writable = False
            logger.warning("%s; its entries are read, nothing new is stored", exc)

    def before_start(self, node: DispatchNode) -> Any:
        """What to do with a node about to run: :data:`COMPUTE` it,
        :data:`CLAIMED_ELSEWHERE` (wait), or its :class:`Cached` value."""
        key = self.claimable.get(node)
        if key is None or not self.writable or node in self.storing:
            return COMPUTE
        kind = function_key(node.func) if type(node) is Op else type(node)
        if kind in self.quick:  # not worth a claim: store it without one
            self.storing[node] = (key, kind, None)
            return COMPUTE
        store = self.store
        try:
            if not store.claim(key, self.run):
                if store.contains(key):  # stored by its claimant, which may be gone since
                    found = self._load(node, key)
                    if found is not None:
                        self.polls.pop(node, None)
                        return found
                return CLAIMED_ELSEWHERE
        except OSError as exc:
            logger.warning(
                "could not claim node %r in %r (%s): it is computed without a claim", node.label, store, exc
            )
        self.polls.pop(node, None)
        if store.contains(key):  # stored by another run since the plan
            found = self._load(node, key)
            if found is not None:
                self._release(key)
                return found
        self.storing[node] = (key, kind, time.perf_counter())
        return COMPUTE

    def poll_delay(self, node: DispatchNode) -> float:
        """Seconds before the next look at ``node``, claimed by another run."""
        delay = self.polls.get(node, _POLL_FIRST)
        self.polls[node] = min(delay * 2, POLL_MAX)
        return delay

    def wrap(self, node: DispatchNode, func: Any, timeout: float | None, run: Any) -> Any:
        """The function a worker runs for ``node``: it stores the value itself,
        unless the call outlived ``timeout`` (the run has failed it meanwhile), and
        reports only its key if ``run``'s driver has no use for it."""
        entry = self.storing.get(node)
        if entry is None or not self.store_on_worker:
            return func
        report_key = not driver_needs(run, node)
        return StoredCall(func, self.store, entry[0], node.label, node.nout, timeout, report_key)

    def finished(self, node: DispatchNode, value: Any) -> None:
        """``node`` finished with ``value``: store it (unless its worker did)."""
        entry = self.storing.pop(node, None)
        if entry is None:
            return
        key, kind, claimed_at = entry
        if not self.store_on_worker:  # else its worker stored it (wrap)
            try:
                if self.fetch is not None:  # the value stayed on a worker: bring it to store it
                    value = self.fetch(node, value)
                value = here(value)  # (kept as its worker pickled it)
                self.store.save(key, value, node.label)
            except Exception as exc:
                if not self._write_failed:
                    self._write_failed = True
                    logger.warning(
                        "node %r: its value could not be stored in %r (%s: %s); the run goes on, "
                        "and says this once",
                        node.label,
                        self.store,
                        type(exc).__name__,
                        exc,
                    )
        if claimed_at is not None:
            self._release(key)
            if time.perf_counter() - claimed_at < CLAIM_MIN:
                self.quick.add(kind)

    def failed(self, node: DispatchNode) -> None:
        """``node`` failed for good: give up its claim."""
        entry = self.storing.pop(node, None)
        if entry is not None and entry[2] is not None:
            self._release(entry[0])

    def _release(self, key: str) -> None:
        try:
            self.store.release(key, self.run)
        except OSError as exc:
            logger.warning("could not release the claim of %s: %s", key, exc)

    def end(self) -> None:
        """The run is over: every claim it still holds lapses."""
        for key, _, claimed_at in self.storing.values():
            if claimed_at is not None:
                self._release(key)
        self.storing.clear()
        if self.run is not None:
            run, self.run = self.run, None
            try:
                self.store.end_run(run)
            except OSError as exc:
                logger.warning("could not end the run's lease in %r: %s", self.store, exc)


def driver_needs(run: Any, node: DispatchNode) -> bool:
    """Whether the driver of ``run`` has a use for ``node``'s value: it is an output,
    a node the driver runs itself (a light one) takes it, a callback wants values,
    or the run keeps values where they were made anyway (pipelined, on dask)."""
    if run.pipelined or node in run.keep:
        return True
    if any(getattr(cb, "wants_values", True) for cb in run.callbacks):
        return True
    if run.inline_light:
        entry = run.children.get(node)
        if entry is not None and any(kid.light for kid in kids(entry)):
            return True
    return False


def set_aside(run: Any, node: DispatchNode, verdict: Any) -> None:
    """A transition of :class:`~dispatcher.engine.RunState`: a READY node that
    :meth:`RunCache.before_start` says not to compute becomes CLAIMED (looked at
    again after :meth:`RunCache.poll_delay`) or DONE with the value another run
    stored (pipelined: the nodes waiting for it to be sent take that value)."""
    if verdict is CLAIMED_ELSEWHERE:
        run.state[node] = NodeState.CLAIMED
        run.timers.retry_after(run.cache.poll_delay(node), node)
        return
    if run.pipelined:
        pipelining.given_late(run, node, verdict.value)
    run._finish_ok(node, verdict.value)
