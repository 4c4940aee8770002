"""The suites' graphs in each framework's terms: ``Op`` nodes, ``dask.delayed``
objects, futures of a raw pool, or a flat program of plain calls.

A suite's :class:`~dispatcher.bench.suites.Graph` lists calls in topological
order, with :class:`~dispatcher.bench.suites.Ref` standing for the value of an
earlier call (also inside lists and tuples); each function here turns that same
description into one framework's graph, so that every contender runs exactly the
same work.
"""

from __future__ import annotations

import dispatcher as dp

from .suites import Ref


def _subst(value, get):
    """``value`` with every Ref replaced by ``get(ref)`` (inside lists and tuples too)."""
    if type(value) is Ref:
        return get(value)
    if isinstance(value, list):
        return [_subst(v, get) for v in value]
    if isinstance(value, tuple):
        return tuple(_subst(v, get) for v in value)
    return value


def to_ops(graph) -> list:
    """The graph as ``Op`` nodes, each asking for the cores its call asks for;
    returns the output nodes."""
    nodes: list = []
    get = lambda ref: nodes[ref.index]  # noqa: E731
    sized: dict = {}  # (function, cores) -> its dp.op
    for i, (func, args) in enumerate(graph.calls):
        if i in graph.cores:
            key = (func, graph.cores[i])
            make = sized.get(key) or sized.setdefault(key, dp.op(cores=key[1])(func))
            nodes.append(make(*_subst(args, get)))
        else:
            nodes.append(dp.Op(func, *_subst(args, get)))
    return [nodes[i] for i in graph.outputs]


def _last_uses(graph) -> list:
    """For each call, the indices of the values it is the last call to use."""
    last: dict = {}
    for i, (_, args) in enumerate(graph.calls):
        _subst(args, lambda ref, i=i: last.__setitem__(ref.index, i))
    keep = set(graph.outputs)
    drops: list = [[] for _ in graph.calls]
    for index, user in last.items():
        if index not in keep:
            drops[user].append(index)
    return drops


def compile_plain(graph) -> tuple:
    """The graph as a flat program for :func:`run_program`: each call with its
    argument template, where each dependency's value goes, and the values it is
    the last to use (dropped after it)."""
    program = []
    for (func, args), drop in zip(graph.calls, _last_uses(graph)):
        if any(isinstance(a, (list, tuple)) for a in args):  # nested: substitute at run time
            program.append((func, None, args, tuple(drop)))
            continue
        refs = tuple((p, a.index) for p, a in enumerate(args) if type(a) is Ref)
        program.append((func, list(args), refs, tuple(drop)))
    return program, list(graph.outputs)


def run_program(compiled) -> list:
    """Plain calls in topological order, each value dropped after its last use."""
    program, outputs = compiled
    values: list = []
    append = values.append
    get = lambda ref: values[ref.index]  # noqa: E731
    for func, template, refs, drop in program:
        if template is None:
            append(func(*_subst(refs, get)))
        elif refs:
            args = template[:]
            for p, i in refs:
                args[p] = values[i]
            append(func(*args))
        else:
            append(func(*template))
        for i in drop:
            values[i] = None
    return [values[i] for i in outputs]


def run_plain(graph) -> list:
    """The graph as plain calls in topological order: the floor."""
    return run_program(compile_plain(graph))


def to_delayed(graph) -> list:
    import dask

    nodes: list = []
    get = lambda ref: nodes[ref.index]  # noqa: E731
    for func, args in graph.calls:
        nodes.append(dask.delayed(func, pure=False)(*_subst(args, get)))
    return [nodes[i] for i in graph.outputs]


def run_futures(pool, graph) -> list:
    """The graph on a raw ``concurrent.futures``-style pool, as a user writes it:
    in topological order, each call submitted once the futures it needs are done."""
    futures: list = []
    get = lambda ref: futures[ref.index].result()  # noqa: E731
    submit = pool.submit
    for (func, args), drop in zip(graph.calls, _last_uses(graph)):
        futures.append(submit(func, *_subst(args, get)))
        for index in drop:
            futures[index] = None
    return [futures[i].result() for i in graph.outputs]
