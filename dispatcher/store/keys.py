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

from ..nodes import CONTAINERS, CollectNode, DataNode, DispatchNode, IndexNode, Op
from .tokens import BY_TYPE, MAX_DEPTH, SCALARS, NotHashable, Tokens, str_token, token

__all__ = ["SCHEME", "KeyMaker", "NotHashable", "token"]

SCHEME = b"dispatcher-key-1"
"""Changes when the encoding does, so that old entries are never read as new ones."""


class KeyMaker:
    """Makes the keys of one run's nodes (see the module's docstring).

    ``key_of(node)`` reads the keys of the node's dependencies from ``keys``
    (computed first, by the caller's walk); it returns None for a node that cannot
    have one, and records why in :attr:`unkeyed` (node -> reason).
    """

    def __init__(self, keys: dict):
        self.keys = keys
        self.tokens = Tokens()
        self.unkeyed: dict = {}

    def key_of(self, node, extra_deps=()) -> str | None:
        keys = self.keys
        kind = type(node)
        try:
            if kind is Op or isinstance(node, Op):
                if node.cache is False:
                    self.unkeyed[node] = "it is marked cache=False"
                    return None
                parts = [SCHEME, b"op", self.func_token(node.func)]
                if node.version is not None:
                    parts.append(b"version" + self.tokens.of(node.version))
                parts.append(self.arguments(node._args, node._kwargs))
            elif kind is IndexNode:
                parts = [SCHEME, b"index", self.dep(node.node), self.tokens.of(node.index)]
            elif kind is CollectNode:
                parts = [SCHEME, b"collect", *[self.dep(n) for n in node.nodes]]
            elif kind is DataNode:
                parts = [SCHEME, b"data", self.tokens.of(node.data)]
            else:
                self.unkeyed[node] = f"it is a {kind.__name__}, which the store does not know how to key"
                return None
        except _Unkeyed as exc:
            self.unkeyed[node] = exc.args[0]
            return None
        except NotHashable as exc:
            self.unkeyed[node] = str(exc)
            return None
        for dep in extra_deps:  # a graph's edges that pass no value still order the work
            dep_key = keys.get(dep)
            if dep_key is None:
                self.unkeyed[node] = f"it waits for node {dep.label!r}, which has no key"
                return None
            parts.append(b"after" + dep_key.encode())
        return hashlib.blake2b(b"\0".join(parts), digest_size=16).hexdigest()

    def value_key(self, value) -> str | None:
        """The key of a value given to the run (``inputs``, ``input_map``): its contents."""
        try:
            return hashlib.blake2b(SCHEME + b"given" + self.tokens.of(value), digest_size=16).hexdigest()
        except NotHashable:
            return None

    def func_token(self, func) -> bytes:
        try:
            return self.tokens.function(func)
        except NotHashable as exc:
            raise NotHashable(f"its function: {exc}") from None

    def dep(self, node) -> bytes:
        key = self.keys.get(node)
        if key is None:
            raise _Unkeyed(f"it depends on node {node.label!r}, which has no key")
        return b"k" + key.encode()

    def arguments(self, args: tuple, kwargs: dict | None) -> bytes:
        by_type, tokens, arg = SCALARS, self.tokens, self._arg
        try:
            out = [by_type[type(a)](tokens, a, 0) if type(a) in by_type else arg(a) for a in args]
            if kwargs:
                out.extend([str_token(k) + arg(v) for k, v in kwargs.items()])
        except NotHashable:
            self._blame(args, kwargs)
            raise
        return b"%d(" % len(args) + b"".join(out) + b")"

    def _blame(self, args: tuple, kwargs: dict | None) -> None:
        """Raise :class:`NotHashable` naming the argument that cannot be hashed."""
        for i, a in enumerate(args):
            try:
                self._arg(a)
            except NotHashable as exc:
                raise NotHashable(f"argument {i}: {exc}") from None
        for k, v in (kwargs or {}).items():
            try:
                self._arg(v)
            except NotHashable as exc:
                raise NotHashable(f"keyword argument {k!r}: {exc}") from None

    def _arg(self, value) -> bytes:
        kind = type(value)
        handler = BY_TYPE.get(kind)
        if handler is not None and kind not in CONTAINERS:
            return handler(self.tokens, value, 0)
        if isinstance(value, DispatchNode):
            return self.dep(value)
        if kind in CONTAINERS:
            return self._container(value, 1)
        return self.tokens.of(value)

    def _container(self, value, depth: int) -> bytes:
        """A container that may hold nodes (as :mod:`dispatcher.nodes` finds them)."""
        if depth > MAX_DEPTH:
            raise NotHashable(f"it nests deeper than {MAX_DEPTH} levels")

        def item(v):
            if isinstance(v, DispatchNode):
                return self.dep(v)
            if type(v) in CONTAINERS:
                return self._container(v, depth + 1)
            return self.tokens.of(v, depth)

        kind = type(value)
        if kind is dict:
            return (
                b"D%d{" % len(value)
                + b"".join([self.tokens.of(k) + item(v) for k, v in value.items()])
                + b"}"
            )
        if kind is set or kind is frozenset:
            return (
                (b"S" if kind is set else b"Z")
                + b"%d{" % len(value)
                + b"".join(sorted(item(v) for v in value))
                + b"}"
            )
        tag = b"t" if kind is tuple else b"l"
        return tag + b"%d[" % len(value) + b"".join([item(v) for v in value]) + b"]"


class _Unkeyed(Exception):
    """A dependency has no key."""
