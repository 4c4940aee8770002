"""The key of a node in a store: a hash of what determines its value.

Policy
------
A node's key is a BLAKE2b digest (128 bits, 32 hex digits) of the tokens
(:mod:`~dispatcher.store.tokens`) of:

* its **function** (its code, defaults, closure and the parts of its module it
  names);
* its **plain arguments' contents**;
* the **keys of its dependencies**, in place of their values (a Merkle chain: a
  change upstream changes every key downstream), and of a graph's edges that pass
  no value;
* its ``version`` (``@dp.op(version=...)``) and the version of this scheme.

Indexing, collecting and data nodes are keyed the same way. A node whose function
or arguments cannot be read deterministically has no key (the reason is kept), and
neither do the nodes downstream of it: they are computed every time, never wrongly
taken from the store. Given values (``inputs``, ``input_map``) are keyed by their
contents.

The key does not see what a function reads besides its arguments (files, the
environment, other modules' state, mutable module globals): ``version=`` is for
that, and ``cache=False`` for nodes whose value changes from run to run.
"""

from __future__ import annotations

import hashlib

import attrs

from ..nodes import CollectNode, DataNode, DispatchNode, IndexNode, Op
from .tokens import SCALARS, NotHashable, Tokens, str_token, token

__all__ = ["SCHEME", "KeyMaker", "NoKey", "NotHashable", "token"]

SCHEME = b"dispatcher-key-2"
"""Changes when the encoding does, so that old entries are never read as new ones."""


@attrs.frozen
class NoKey:
    """Why a node has no key: a reason of its own (an argument that cannot be read),
    or ``inherited`` from a dependency without a key or ``cache=False``."""

    reason: str
    inherited: bool = False

    def __str__(self) -> str:
        return self.reason


class NodeTokens(Tokens):
    """Tokens in which a node, wherever it is among the values, stands for the key
    of its value (a dependency's key is computed before its dependants')."""

    __slots__ = ("keys",)

    def __init__(self, keys: dict):
        super().__init__()
        self.keys = keys

    def _other(self, obj, depth: int) -> bytes:
        if isinstance(obj, DispatchNode):
            return self.dep(obj)
        return super()._other(obj, depth)

    def dep(self, node: DispatchNode) -> bytes:
        key = self.keys.get(node)
        if key is None:
            raise _Unkeyed(f"it depends on node {node.label!r}, which has no key")
        return b"k" + key.encode()


class KeyMaker:
    """Makes the keys of one run's nodes (see the module's docstring).

    ``key_of(node)`` reads the keys of the node's dependencies from ``keys``
    (computed first, by the caller's walk); it returns None for a node that cannot
    have one, and records why in :attr:`unkeyed` (node -> :class:`NoKey`).
    """

    def __init__(self, keys: dict):
        self.keys = keys
        self.tokens = NodeTokens(keys)
        self.unkeyed: dict = {}

    def key_of(self, node, extra_deps=()) -> str | None:
        keys = self.keys
        kind = type(node)
        tokens = self.tokens
        try:
            if kind is Op or isinstance(node, Op):
                if node.cache is False:
                    self.unkeyed[node] = NoKey("it is marked cache=False", inherited=True)
                    return None
                parts = [SCHEME, b"op", self.func_token(node.func)]
                if node.version is not None:
                    parts.append(b"version" + tokens.of(node.version))
                parts.append(self.arguments(node._args, node._kwargs))
            elif kind is IndexNode:
                parts = [SCHEME, b"index", tokens.dep(node.node), tokens.of(node.index)]
            elif kind is CollectNode:
                parts = [SCHEME, b"collect", *[tokens.dep(n) for n in node.nodes]]
            elif kind is DataNode:
                parts = [SCHEME, b"data", tokens.of(node.data)]
            else:
                self.unkeyed[node] = NoKey(
                    f"it is a {kind.__name__}, which the store does not know how to key"
                )
                return None
        except _Unkeyed as exc:
            self.unkeyed[node] = NoKey(exc.args[0], inherited=True)
            return None
        except NotHashable as exc:
            self.unkeyed[node] = NoKey(str(exc))
            return None
        except Exception as exc:  # reading a value raised: the node is computed, never taken
            self.unkeyed[node] = NoKey(f"reading it raised {type(exc).__name__}: {exc}")
            return None
        for dep in extra_deps:  # a graph's edges that pass no value still order the work
            dep_key = keys.get(dep)
            if dep_key is None:
                self.unkeyed[node] = NoKey(
                    f"it waits for node {dep.label!r}, which has no key", inherited=True
                )
                return None
            parts.append(b"after" + dep_key.encode())
        return hashlib.blake2b(b"\0".join(parts), digest_size=16).hexdigest()

    def value_key(self, value) -> str | None:
        """The key of a value given to the run (``inputs``, ``input_map``): its contents."""
        try:
            return hashlib.blake2b(SCHEME + b"given" + self.tokens.of(value), digest_size=16).hexdigest()
        except Exception:  # not NotHashable only: reading a value may raise anything
            return None

    def func_token(self, func) -> bytes:
        try:
            return self.tokens.function(func)
        except NotHashable as exc:
            raise NotHashable(f"its function: {exc}") from None

    def arguments(self, args: tuple, kwargs: dict | None) -> bytes:
        by_type, tokens = SCALARS, self.tokens
        of = tokens.of
        try:
            out = [by_type[type(a)](tokens, a, 0) if type(a) in by_type else of(a) for a in args]
            if kwargs:
                out.extend([str_token(k) + of(v) for k, v in kwargs.items()])
        except NotHashable:
            self._blame(args, kwargs)
            raise
        return b"%d(" % len(args) + b"".join(out) + b")"

    def _blame(self, args: tuple, kwargs: dict | None) -> None:
        """Raise :class:`NotHashable` naming the argument that cannot be hashed."""
        of = self.tokens.of
        for i, a in enumerate(args):
            try:
                of(a)
            except NotHashable as exc:
                raise NotHashable(f"argument {i}: {exc}") from None
        for k, v in (kwargs or {}).items():
            try:
                of(v)
            except NotHashable as exc:
                raise NotHashable(f"keyword argument {k!r}: {exc}") from None


class _Unkeyed(Exception):
    """A dependency has no key."""
