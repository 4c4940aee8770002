"""The ``@op`` decorator: calling a decorated function makes an :class:`~dispatcher.Op`.

Policy: the decorator's options (``label``, ``nout``, ``retries``, ``retry_on``,
``timeout``, ``cache``, ``version``, ``cores``) belong to the nodes it makes,
never to the function's own keyword arguments, and each is checked when the
function is decorated, so that a wrong one raises at once, naming it. Decorating
a decorated function replaces its options.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .checks import check_cores, check_nout, check_retries, check_timeout, retry_predicates
from .nodes import Op, _func_name

__all__ = ["OpFunction", "op"]

_OPTIONS = ("label", "nout", "retries", "retry_on", "timeout", "cache", "version", "cores")


class OpFunction:
    """A function wrapped by :func:`op`: calling it returns an :class:`Op`."""

    __slots__ = ("__dict__", "func", "options")

    def __init__(self, func: Callable, options: dict):
        self.func = func
        self.options = options
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Op:
        node = Op(self.func, *args, **kwargs)
        options = self.options
        if options:
            label = options.get("label")
            if label is not None:
                node._label = label
            node.nout = options.get("nout")
            node.retries = options.get("retries")
            node.retry_on = options.get("retry_on")
            node.timeout = options.get("timeout")
            node.cache = options.get("cache", True)
            node.version = options.get("version")
            node.cores = options.get("cores")
        return node

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return self if obj is None else functools.partial(self, obj)

    def __repr__(self) -> str:
        return f"<op {_func_name(self.func)}>"


def op(
    func: Callable | None = None,
    /,
    *,
    label: str | None = None,
    nout: int | None = None,
    retries: int | None = None,
    retry_on: Any = None,
    timeout: float | None = None,
    cache: bool = True,
    version: Any = None,
    cores: Any = None,
) -> Any:
    """Make calling ``func`` return an :class:`Op` instead of running it.

    Use as ``@op``, as ``@op(label=..., nout=..., retries=..., retry_on=...,
    timeout=...)``, or as ``op(func, ...)(*args)``. The options belong to the node,
    never to the function's own keyword arguments; ``retries``, ``retry_on`` and
    ``timeout`` override the executor's defaults for the nodes it makes. Each
    option is checked here: a wrong one raises at once, naming it.
    ``retry_on`` takes predicates ``exception -> bool`` and exception classes
    (``retry_on=OSError`` retries an ``OSError``). In a run with a store
    (``dp.run(..., store=...)``), ``cache=False`` keeps the nodes out of it (for a
    function whose value changes from run to run: random numbers, the clock, I/O)
    and ``version`` (any value) becomes part of their keys, to make them run again
    by hand. ``cores`` is what each node asks of the executor's cores: ``k``
    (exactly k) or ``(lo, hi)`` (from lo to hi, as many as are free when it
    starts); inside the node, :func:`dispatcher.allocation` says what it got (see
    :mod:`dispatcher.engine.cores`).

    >>> import dispatcher as dp
    >>> @dp.op(nout=2)
    ... def divmod_(a, b):
    ...     return divmod(a, b)
    >>> q, r = divmod_(17, 5)
    >>> dp.execute([q, r])
    [3, 2]
    """

    def wrap(f: Callable) -> OpFunction:
        if isinstance(f, OpFunction):
            f = f.func
        if not callable(f):
            raise TypeError(f"op needs a callable, got {type(f).__name__}: {f!r:.80}")
        return OpFunction(f, _op_options(label or getattr(f, "__name__", repr(f)), options))

    options = {
        "label": label,
        "nout": nout,
        "retries": retries,
        "retry_on": retry_on,
        "timeout": timeout,
        "cache": None if cache is True else cache,
        "version": version,
        "cores": cores,
    }
    return wrap if func is None else wrap(func)


def _op_options(name: str, options: dict) -> dict:
    """The options given to ``op`` for the function ``name``, checked, without the
    ones left out."""
    where = f"of op {name!r}"
    options = {k: v for k, v in options.items() if v is not None}
    if "nout" in options:
        options["nout"] = check_nout(options["nout"], f"nout {where}")
    if "retries" in options:
        options["retries"] = check_retries(options["retries"], f"retries {where}")
    if "timeout" in options:
        options["timeout"] = check_timeout(options["timeout"], f"timeout {where}")
    if "retry_on" in options:
        options["retry_on"] = retry_predicates(options["retry_on"], f"retry_on {where}")
    if "cores" in options:
        options["cores"] = check_cores(options["cores"], f"cores {where}")
    if "cache" in options and options["cache"] is not False:
        raise TypeError(f"cache {where} must be True or False, got {options['cache']!r}")
    return options
