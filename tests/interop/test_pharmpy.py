"""Pharmpy's modelsearch on dispatcher executors, through
``dispatcher.interop.pharmpy``: the same ranking as Pharmpy's own dispatcher."""

from __future__ import annotations

import contextlib

import pharmpy
import pytest
from pharmpy.modeling import load_example_model
from pharmpy.tools import fit, run_modelsearch
from pharmpy.workflows.dispatchers import Dispatcher

import dispatcher as dp
from dispatcher.interop.pharmpy import ExecutorDispatcher, use_executor

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.timeout(600)]

SPACE = "ABSORPTION([FO,ZO]);PERIPHERALS([0,1]);ELIMINATION([FO,MM])"


@pytest.fixture(scope="module")
def pheno(tmp_path_factory):
    pharmpy.conf.broadcaster = "null"
    model = load_example_model("pheno")
    with contextlib.chdir(tmp_path_factory.mktemp("fit")):  # where fit writes its directory
        return model, fit(model, esttool="dummy")


def _ranking(pheno, dispatcher: str, path) -> dict:
    model, start = pheno
    search = run_modelsearch(
        model=model,
        results=start,
        search_space=SPACE,
        esttool="dummy",
        dispatcher=dispatcher,
        ncores=2,
        name="search",
        ref=str(path),
    )
    return search.summary_tool["rank"].to_dict()


@pytest.fixture(scope="module")
def pharmpy_ranking(pheno, tmp_path_factory):
    return _ranking(pheno, "local_serial", tmp_path_factory.mktemp("own"))


@pytest.mark.parametrize(
    "make",
    [dp.SerialExecutor, lambda: dp.ThreadExecutor(1), lambda: dp.ThreadExecutor(2), dp.AsyncExecutor],
    ids=["serial", "threads-1", "threads-2", "async"],
)
def test_modelsearch_ranks_as_with_pharmpys_own_dispatcher(make, pheno, pharmpy_ranking, tmp_path):
    with make() as ex, use_executor(ex) as chosen:
        assert Dispatcher.select_dispatcher("dispatcher") is chosen
        assert Dispatcher.select_dispatcher(None) is chosen
        got = _ranking(pheno, "dispatcher", tmp_path)
    assert got == pharmpy_ranking
    assert len(got) > 4
    # the block's end gives Pharmpy back its own choice
    assert type(Dispatcher.select_dispatcher("local_serial")).__name__ == "LocalSerialDispatcher"
    with pytest.raises(ValueError, match="Unknown dispatcher"):
        Dispatcher.canonicalize_dispatcher_name("dispatcher")


def test_an_executor_whose_tasks_run_elsewhere_is_refused_with_the_reason():
    with dp.ProcessExecutor(1) as ex, pytest.raises(ValueError, match="runs its tasks in other processes"):
        ExecutorDispatcher(ex)
    with pytest.raises(ValueError, match="other processes"), use_executor(dp.ProcessExecutor(1)):
        pass


def test_cores_per_fit():
    assert ExecutorDispatcher(dp.SerialExecutor()).get_available_cores(4) == 4
    assert ExecutorDispatcher(dp.ThreadExecutor(2)).get_available_cores(4) == 1
