"""Nodes: deferred function calls and the small pieces that glue them together.

A node only knows what it computes and what it needs first; it knows nothing of
graphs or executors. ``Op(func, *args, **kwargs)`` is the deferred call
``func(*args, **kwargs)``: every node found among the arguments, also inside
nested ``list``/``tuple``/``dict`` (values)/``set``/``frozenset`` containers of
exactly those types, is a dependency and is replaced by its value before the call.

Nodes are slotted attrs classes that compare and hash by identity, so a million of
them fit in memory and a graph of them builds in seconds. The dependency scan runs
once, when the node is made (or its arguments are replaced), and records where the
nodes sit, so that running a node only touches the arguments that need it. Each
node remembers the outcome of its latest run (:mod:`dispatcher.outcomes`), which
:meth:`DispatchNode.fetch` returns (or raises); :func:`~dispatcher.op` is in
:mod:`dispatcher.decorator`.
"""

from __future__ import annotations

import functools
import itertools
import types
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import attrs

from .outcomes import NEVER, RELEASED, Failure, Remote, Stored, here
from .results import DispatcherError

__all__ = ["CollectNode", "DataNode", "DispatchNode", "IndexNode", "Op"]

_ELSEWHERE = (Remote, Stored)  # outcomes whose value is fetched from where it stayed
CONTAINERS = frozenset((list, tuple, set, frozenset, dict))
"""The types searched for nodes among a node's arguments (exactly these, not subclasses)."""

_creation = itertools.count()
"""Numbers nodes in the order they are made. A node made from others comes after
them, so a graph whose every edge runs from a lower to a higher number has no
cycle; only a replaced argument or a hand-made edge can break that order."""


@attrs.define(slots=True, eq=False, repr=False, init=False, weakref_slot=False)
class DispatchNode:
    """Abstract base of every node.

    ``dependencies()`` returns the tuple of nodes that must finish first. Nodes
    compare and hash by identity. ``node[i]`` makes an :class:`IndexNode`.
    """

    _label: str | None
    _outcome: Any
    _seq: int

    light = False
    """True for nodes so cheap (indexing, collecting) that an executor may compute
    them where the run is driven instead of sending them to a worker."""

    timeout: ClassVar[float | None] = None
    """Seconds after which a run fails this node with ``TimeoutError`` (None for
    the executor's default)."""
    retries: ClassVar[int | None] = None
    """How many times a failed run of this node may be retried (None for the executor's)."""
    retry_on: ClassVar[tuple | None] = None
    """Predicates ``exception -> bool`` that allow a retry (None for the executor's)."""
    nout: ClassVar[int | None] = None
    """How many values the node's function returns, when declared (``@op(nout=k)``):
    a run fails the node if its value does not hold exactly that many."""
    cores: ClassVar[tuple | None] = None
    """The cores it asks for, ``(lo, hi)`` (:mod:`dispatcher.engine.cores`), or None."""

    def __init__(self, label: str | None = None):
        """Subclasses call this first (or set the same three slots)."""
        self._label = label
        self._outcome = NEVER
        self._seq = next(_creation)

    # -- structure -----------------------------------------------------------
    def dependencies(self) -> tuple[DispatchNode, ...]:
        """The nodes that must finish before this one can run."""
        return ()

    def prepare(self, get: Callable[[DispatchNode], Any]) -> tuple[Callable, Any, Any]:
        """The call that computes this node, as ``(func, args, kwargs)``.

        ``get(dep)`` gives the value of each dependency; ``kwargs`` may be None.
        """
        raise NotImplementedError

    # -- labels ----------------------------------------------------------------
    def _default_label(self) -> str:
        return type(self).__name__

    @property
    def label(self) -> str:
        """The node's name in summaries, errors, logs and DOT output."""
        label = self._label
        return label if label is not None else self._default_label()

    @label.setter
    def label(self, value: str) -> None:
        self._label = str(value)

    def get_label(self) -> str:
        """Dispatcher.jl's accessor for :attr:`label`."""
        return self.label

    def set_label(self, label: str) -> str:
        """Set the label; returns it (as Dispatcher.jl's ``set_label!``)."""
        self.label = label
        return self._label

    def has_label(self) -> bool:
        """True when the node has a label of its own (always for :class:`Op`)."""
        return self._label is not None

    # -- outcome ---------------------------------------------------------------
    def fetch(self) -> Any:
        """The value this node got in its latest run.

        Raises the node's :class:`DependencyError` if it failed, and
        :class:`DispatcherError` if it never ran or its value was released.
        """
        outcome = self._outcome
        if outcome is NEVER:
            raise DispatcherError(f"node {self.label!r} has not run")
        if outcome is RELEASED:
            raise DispatcherError(
                f"the value of node {self.label!r} was released once no other node "
                "needed it; run with release=False, or list it among the outputs"
            )
        if type(outcome) is Failure:
            raise outcome.error
        if type(outcome) in _ELSEWHERE:  # the value stayed on a worker, or in a store
            return outcome.fetch(self)
        return here(outcome, self)  # (read here if kept as the worker that made it pickled it)

    def state(self) -> str:
        """One of ``"not run"``, ``"done"``, ``"failed"``, ``"released"``."""
        outcome = self._outcome
        if outcome is NEVER:
            return "not run"
        if outcome is RELEASED:
            return "released"
        if type(outcome) is Failure:
            return "failed"
        return "done"

    # -- composition -----------------------------------------------------------
    def __getitem__(self, index: Any) -> IndexNode:
        return IndexNode(self, index)

    def __iter__(self) -> Iterator[IndexNode]:
        nout = self._nout()
        if nout is None:
            raise TypeError(
                f"cannot unpack node {self.label!r}: its number of outputs is unknown; "
                "declare it with @op(nout=k) or index it with node[i]"
            )
        return (IndexNode(self, i) for i in range(nout))

    def _nout(self) -> int | None:
        return None

    # -- display ---------------------------------------------------------------
    def _call_text(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label!r}{self._call_text()}>"

    def summary(self) -> str:
        """The label, a short view of the arguments, and the state of the latest run."""
        return f"{type(self).__name__} {self.label!r}{self._call_text()} [{self.state()}]"


def _short(value: Any, width: int = 40) -> str:
    if isinstance(value, DispatchNode):
        return f"<{value.label}>"
    if type(value) in CONTAINERS and len(value) > 4:
        return f"{type(value).__name__}[{len(value)}]"
    text = repr(value) if type(value) not in CONTAINERS else _short_container(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _short_container(value: Any) -> str:
    if type(value) is dict:
        inner = ", ".join(f"{k!r}: {_short(v)}" for k, v in value.items())
        return "{" + inner + "}"
    inner = ", ".join(_short(v) for v in value)
    if type(value) is list:
        return "[" + inner + "]"
    if type(value) is tuple:
        return "(" + inner + ("," if len(value) == 1 else "") + ")"
    return f"{type(value).__name__}({{{inner}}})"


_SHARED_POSITIONS: dict = {}


def _positions(positions: tuple) -> tuple:
    """One shared tuple for each short list of argument positions: most nodes have
    the same few (``(0,)``, ``(0, 1)``), so a million nodes need not hold a million
    copies."""
    if len(positions) > 4:
        return positions
    return _SHARED_POSITIONS.setdefault(positions, positions)


_ONE_SHOT = (types.GeneratorType, types.AsyncGeneratorType)


def _one_shot(value: Any, where: str) -> TypeError:
    return TypeError(
        f"{where} is a {type(value).__name__}, which can be read only once and could "
        "hide nodes that must run first; pass a list (list(...)) or a tuple instead"
    )


def _scan(value: Any, found: dict, where: str = "an argument") -> bool:
    """Record the nodes inside ``value`` in ``found``; True if there were any."""
    if isinstance(value, DispatchNode):
        found[value] = None
        return True
    t = type(value)
    if t is dict:
        value = value.values()
    elif t not in CONTAINERS:
        if t in _ONE_SHOT:
            raise _one_shot(value, where)
        return False
    any_node = False
    for item in value:
        if _scan(item, found, where):
            any_node = True
    return any_node


def _substitute(value: Any, get: Callable[[DispatchNode], Any]) -> Any:
    """``value`` with every node inside it replaced by ``get(node)``."""
    if isinstance(value, DispatchNode):
        return get(value)
    t = type(value)
    if t is list:
        return [_substitute(v, get) for v in value]
    if t is tuple:
        return tuple([_substitute(v, get) for v in value])
    if t is dict:
        return {k: _substitute(v, get) for k, v in value.items()}
    if t is set or t is frozenset:
        return t([_substitute(v, get) for v in value])
    return value


@attrs.define(slots=True, eq=False, repr=False, init=False)
class Op(DispatchNode):
    """The deferred call ``func(*args, **kwargs)``.

    Nodes among the arguments (also nested in lists, tuples, dict values, sets) are
    dependencies, replaced by their values before the call. The default label is
    the function's name. ``retries``, ``retry_on`` and ``timeout`` override the
    executor's defaults for this node; ``nout`` allows ``a, b = node``; ``cores``
    is what it asks of the executor's cores. In a run with a store, ``cache=False``
    keeps it out of the store and ``version`` is part of its key.

    >>> import dispatcher as dp
    >>> total = dp.Op(sum, [dp.Op(len, "abc"), 4])
    >>> dp.execute(total)
    7
    """

    func: Callable
    _args: tuple
    _kwargs: dict | None
    _deps: tuple
    _argpos: tuple | None
    _kwkeys: tuple | None
    nout: int | None
    retries: int | None
    retry_on: tuple | None
    timeout: float | None
    cache: bool
    version: Any
    cores: tuple | None

    def __init__(self, func: Callable, /, *args: Any, **kwargs: Any):
        if not callable(func):
            raise TypeError(f"Op needs a callable, got {type(func).__name__}: {func!r:.80}")
        # DispatchNode.__init__'s three slots, set here without a call to it: making
        # an Op is the hot path of building a graph
        self._label = None
        self._outcome = NEVER
        self._seq = next(_creation)
        self.func = func
        self.nout = None
        self.retries = None
        self.retry_on = None
        self.timeout = None
        self.cache = True
        self.version = None
        self.cores = None
        self._set_call(args, kwargs or None)

    def _set_call(self, args: tuple, kwargs: dict | None) -> None:
        # (the hot path of building a graph: no list for the collector to count
        # without a dependency; a node whose arguments are distinct nodes shares their tuple)
        found: dict = {}
        argpos: list | None = None
        only_nodes = True
        for i, a in enumerate(args):
            if isinstance(a, DispatchNode):
                found[a] = None
            else:
                only_nodes = False
                if type(a) in _ONE_SHOT:
                    raise _one_shot(a, self._where(f"argument {i}"))
                if type(a) not in CONTAINERS or not _scan(a, found, self._where(f"argument {i}")):
                    continue
            (argpos := argpos or []).append(i)
        kwkeys = (
            tuple([k for k, v in kwargs.items() if _scan(v, found, self._where(f"keyword argument {k!r}"))])
            if kwargs
            else ()
        )
        self._args = args
        self._kwargs = kwargs
        same = only_nodes and not kwkeys and len(found) == len(args) and type(args) is tuple  # none twice
        self._deps = args if same else tuple(found) if found else ()
        self._argpos = _positions(tuple(argpos)) if argpos else None
        self._kwkeys = kwkeys or None

    def _where(self, what: str) -> str:
        return f"{what} of node {_func_name(self.func)!r}"

    @property
    def args(self) -> tuple:
        """The positional arguments; assigning new ones rescans the dependencies."""
        return self._args

    @args.setter
    def args(self, value: tuple) -> None:
        self._set_call(tuple(value), self._kwargs)

    @property
    def kwargs(self) -> dict:
        """The keyword arguments; assigning new ones rescans the dependencies."""
        return dict(self._kwargs) if self._kwargs else {}

    @kwargs.setter
    def kwargs(self, value: dict) -> None:
        self._set_call(self._args, dict(value) or None)

    def dependencies(self) -> tuple[DispatchNode, ...]:
        return self._deps

    def prepare(self, get):
        args = self._args
        kwargs = self._kwargs
        argpos = self._argpos
        if argpos is not None:
            args = list(args)
            for i in argpos:
                a = args[i]
                args[i] = get(a) if isinstance(a, DispatchNode) else _substitute(a, get)
        if self._kwkeys is not None:
            kwargs = dict(kwargs)
            for k in self._kwkeys:
                kwargs[k] = _substitute(kwargs[k], get)
        return self.func, args, kwargs

    def _default_label(self) -> str:
        return _func_name(self.func)

    def has_label(self) -> bool:
        return True

    def _nout(self) -> int | None:
        return self.nout

    def _call_text(self) -> str:
        parts = [_short(a) for a in self._args[:4]]
        if len(self._args) > 4:
            parts.append(f"... {len(self._args) - 4} more")
        if self._kwargs:
            parts.extend(f"{k}={_short(v)}" for k, v in list(self._kwargs.items())[:4])
        return f": {_func_name(self.func)}({', '.join(parts)})"


def function_key(func: Callable) -> Any:
    """What the calls of one function share, to learn how long they take: its code,
    else the callable or its type; a wrapper (``__wrapped__``, such as the store's
    :class:`~dispatcher.store.worker.StoredCall`) counts as what it wraps."""
    func = getattr(func, "__wrapped__", func)
    code = getattr(func, "__code__", None)
    if code is not None:
        return code
    try:
        hash(func)
    except TypeError:
        return type(func)
    return func


def _func_name(func: Callable) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__name__", None)
    return name if isinstance(name, str) else type(func).__name__


@attrs.define(slots=True, eq=False, repr=False, init=False)
class DataNode(DispatchNode):
    """A node that wraps a value already known; runs return it as is."""

    data: Any

    light = True

    def __init__(self, data: Any, label: str | None = None):
        self._label = label
        self._outcome = data
        self._seq = next(_creation)
        self.data = data

    def fetch(self) -> Any:
        return self.data

    def prepare(self, get):
        return _identity, (self.data,), None

    def _default_label(self) -> str:
        return "data"

    def _call_text(self) -> str:
        return f": {_short(self.data)}"


@attrs.define(slots=True, eq=False, repr=False, init=False)
class IndexNode(DispatchNode):
    """The element ``index`` of another node's result (``node[index]``)."""

    node: DispatchNode
    index: Any

    light = True

    def __init__(self, node: DispatchNode, index: Any):
        if not isinstance(node, DispatchNode):
            raise TypeError(f"IndexNode needs a node, got {type(node).__name__}")
        super().__init__()
        self.node = node
        self.index = index

    def dependencies(self) -> tuple[DispatchNode, ...]:
        return (self.node,)

    def prepare(self, get):
        return _getitem, (get(self.node), self.index), None

    def _default_label(self) -> str:
        return f"{self.node.label}[{self.index!r}]"


def _identity(value: Any) -> Any:
    return value


def _getitem(value: Any, index: Any) -> Any:
    return value[index]


@attrs.define(slots=True, eq=False, repr=False, init=False)
class CollectNode(DispatchNode):
    """A node whose value is the list of the given nodes' values."""

    nodes: tuple

    light = True

    def __init__(self, nodes: Any, label: str | None = None):
        nodes = tuple(nodes)
        for n in nodes:
            if not isinstance(n, DispatchNode):
                raise TypeError(f"CollectNode needs nodes, got {type(n).__name__}: {n!r:.80}")
        super().__init__(label)
        self.nodes = nodes

    def dependencies(self) -> tuple[DispatchNode, ...]:
        return tuple(dict.fromkeys(self.nodes))

    def prepare(self, get):
        return _collect, [get(n) for n in self.nodes], None

    def _default_label(self) -> str:
        return f"collect({len(self.nodes)})"


def _collect(*values: Any) -> list:
    return list(values)
