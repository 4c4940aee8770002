"""Every executor as a dask scheduler (``ex.get``) and dask graphs as dispatcher
graphs (``DispatchGraph.from_dask``): dask's own test suite for ``get`` functions,
and dask collections computed with ``scheduler=ex.get``."""

from __future__ import annotations

import sys

import dask
import dask.array as da
import dask.bag as db
import pytest
from dask.utils_test import GetFunctionTestMixin

import dispatcher as dp

from .conftest import EXECUTOR_NAMES, make_executor

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


@pytest.mark.slow
@pytest.mark.timeout(900)
def _slow_stack_limit(self):
    """A chain of 10,000 tasks, one hop each: minutes where a hop costs milliseconds
    (on dask's cluster, about 6 ms a hop, dask's own ``client.get`` included, twice
    that on a busy machine)."""
    GetFunctionTestMixin.test_get_stack_limit(self)


for _name in EXECUTOR_NAMES:  # dask's own tests of a scheduler's get, on every executor
    _body = {"get": _get_on(_name)}
    if _name in ("dask", "loky", "mpi", "processes"):  # a round trip to a worker per hop
        _body["test_get_stack_limit"] = _slow_stack_limit
    _cls = type(f"TestGetOn_{_name}", (GetFunctionTestMixin,), _body)
    globals()[_cls.__name__] = _cls
del _name, _body, _cls


def test_dask_collections_compute_on_an_executor(executor):
    x = da.arange(1000, chunks=100)
    assert dask.compute((x * 2).sum(), scheduler=executor.get) == (999000,)
    bag = db.from_sequence(range(100), npartitions=8).map(lambda v: v + 1)
    assert bag.sum().compute(scheduler=executor.get) == 5050

    @dask.delayed
    def inc(v):
        return v + 1

    assert dask.compute(inc(inc(1)), scheduler=executor.get) == (3,)


def test_dask_dataframe_groupby_computes_on_an_executor(executor):
    import dask.dataframe as dd
    import pandas as pd

    frame = pd.DataFrame({"k": [i % 5 for i in range(200)], "v": range(200)})
    ddf = dd.from_pandas(frame, npartitions=8)
    got = ddf.groupby("k").v.sum().compute(scheduler=executor.get)
    pd.testing.assert_series_equal(got.sort_index(), frame.groupby("k").v.sum())


def test_scheduler_may_be_the_executor_itself(executor):
    """dask's branch for concurrent.futures executors: dask schedules, ``ex.submit`` runs."""
    x = da.arange(400, chunks=50)
    assert dask.compute((x + 1).sum(), scheduler=executor) == (80200,)


def test_the_dask_profiler_records_a_row_per_task():
    from dask.diagnostics import Profiler, ResourceProfiler
    from dask.utils import key_split

    total = (da.ones(100, chunks=10) + 1).sum()
    with Profiler() as by_dask:
        assert total.compute(scheduler="sync") == 200
    with dp.ThreadExecutor(2) as ex, Profiler() as prof, ResourceProfiler(dt=0.01) as rprof:
        assert total.compute(scheduler=ex.get) == 200
    assert len(prof.results) == len(by_dask.results) > 10  # a row per task, as dask records
    assert sorted(key_split(r.key) for r in prof.results) == sorted(key_split(r.key) for r in by_dask.results)
    assert all(row.start_time <= row.end_time for row in prof.results)
    assert rprof.results  # its sampling thread ran for the run's length


def test_dask_progress_bar_and_callbacks_given_to_compute(capsys):
    from dask.callbacks import Callback as DaskCallback
    from dask.diagnostics import ProgressBar

    seen: list = []

    class Watch(DaskCallback):
        def _start_state(self, dsk, state):
            seen.append(("start_state", len(state["waiting"])))

        def _posttask(self, key, value, dsk, state, worker_id):
            seen.append(("posttask", key, value))

        def _finish(self, dsk, state, errored):
            seen.append(("finish", errored, len(state["finished"])))

    total = dask.delayed(sum)(
        [dask.delayed(abs)(-i, dask_key_name=f"abs-{i}") for i in range(3)], dask_key_name="total"
    )
    with dp.SerialExecutor() as ex:
        with ProgressBar(out=sys.stdout):
            assert total.compute(scheduler=ex.get) == 3
        assert "100% Completed" in capsys.readouterr().out
        # callbacks given to compute replace the active ones, as with dask's own schedulers
        with ProgressBar(out=sys.stdout):
            assert total.compute(scheduler=ex.get, callbacks=[Watch()]) == 3
    assert capsys.readouterr().out == ""
    assert seen[0] == ("start_state", 4)
    assert ("posttask", "abs-2", 2) in seen and ("posttask", "total", 3) in seen
    assert seen[-1] == ("finish", False, 4)


def test_dask_callbacks_are_told_when_the_run_fails():
    from dask.callbacks import Callback as DaskCallback

    ends: list = []

    class Watch(DaskCallback):
        def _finish(self, dsk, state, errored):
            ends.append(errored)

    @dask.delayed
    def refuse(v):
        raise KeyError(v)

    with dp.ThreadExecutor(2, retries=0) as ex, Watch(), pytest.raises(KeyError):
        dask.compute(refuse(1), scheduler=ex.get)
    assert ends == [True]


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
