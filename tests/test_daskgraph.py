"""Every executor as a dask scheduler (``ex.get``) and dask graphs as dispatcher
graphs (``DispatchGraph.from_dask``): dask's own test suite for ``get`` functions,
and dask collections computed with ``scheduler=ex.get``."""

from __future__ import annotations

import dask
import dask.array as da
import dask.bag as db
import pytest
from dask.utils_test import GetFunctionTestMixin

import dispatcher as dp

from .conftest import make_executor

_MADE: dict = {}


def _get_on(name: str):
    def get(dsk, keys, **kwargs):
        if name not in _MADE:
            _MADE[name] = make_executor(name)[0]
        return _MADE[name].get(dsk, keys, **kwargs)

    return staticmethod(get)


@pytest.fixture(scope="module", autouse=True)
def _close_executors():
    yield
    for ex in _MADE.values():
        ex.close()
    _MADE.clear()


class TestGetOnSerial(GetFunctionTestMixin):
    get = _get_on("serial")


class TestGetOnThreads(GetFunctionTestMixin):
    get = _get_on("threads")


class TestGetOnProcesses(GetFunctionTestMixin):
    get = _get_on("processes")


def test_dask_collections_compute_on_an_executor(executor):
    x = da.arange(1000, chunks=100)
    assert dask.compute((x * 2).sum(), scheduler=executor.get) == (999000,)
    bag = db.from_sequence(range(100), npartitions=8).map(lambda v: v + 1)
    assert bag.sum().compute(scheduler=executor.get) == 5050

    @dask.delayed
    def inc(v):
        return v + 1

    assert dask.compute(inc(inc(1)), scheduler=executor.get) == (3,)


def test_a_failing_task_raises_its_own_exception():
    @dask.delayed
    def refuse(v):
        raise KeyError(v)

    with dp.ThreadExecutor(2, retries=0) as ex, pytest.raises(KeyError) as info:
        dask.compute(refuse(1), scheduler=ex.get)
    assert isinstance(info.value.__cause__, dp.DependencyError)


def test_a_dask_graph_as_a_dispatcher_graph():
    from operator import add

    dsk = {"x": 1, "y": (add, "x", 10), "z": (sum, ["x", "y"]), "unused": (add, 1, 2)}
    graph = dp.DispatchGraph.from_dask(dsk, ["z"])
    assert sorted(n.label for n in graph) == ["x", "y", "z"]
    assert dp.execute(graph) == [12]
