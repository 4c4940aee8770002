"""The recipes of "Using dispatcher from other tools" with the real tools
(``make test-interop`` installs them): the page's examples as written, and each
tool's results on dispatcher executors equal to the tool's own run."""

from __future__ import annotations

import math
import warnings

import joblib
import MDAnalysis as mda
import numpy as np
import pytest
import xyzpy as xyz
from joblib import Parallel, delayed
from MDAnalysis.analysis.rdf import InterRDF
from MDAnalysis.analysis.rms import RMSD
from MDAnalysisTests.datafiles import DCD, GRO, PSF, XTC

import dispatcher as dp
from dispatcher.interop import worker_count
from dispatcher.interop.joblib import ExecutorBackend as JoblibBackend
from dispatcher.interop.joblib import register
from dispatcher.interop.mdanalysis import ExecutorBackend as MDAnalysisBackend

from .. import docexamples
from ..test_docs import INTEROP_PAGE

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.timeout(600)
def test_the_page_runs_as_written():
    failures, ran = docexamples.check_page(INTEROP_PAGE)
    assert not failures, "\n\n".join(failures)
    assert ran == 5


def _sweep(a, b, c="x"):
    return a * b, f"{c}{a + b}"


@pytest.mark.parametrize(
    "make", [lambda: dp.ProcessExecutor(2), lambda: dp.ThreadExecutor(3)], ids=["processes", "threads"]
)
def test_an_xyzpy_sweep_equals_its_sequential_run(make):
    runner = xyz.Runner(_sweep, var_names=["product", "label"])
    combos = {"a": [1, 2, 3], "b": range(8)}  # 24 points
    expected = runner.run_combos(combos, constants={"c": "n"}, verbosity=0)
    with make() as ex:
        got = runner.run_combos(combos, constants={"c": "n"}, executor=ex, verbosity=0)
        harvester = xyz.Harvester(runner)
        harvester.harvest_combos(combos, constants={"c": "n"}, executor=ex, verbosity=0)
    assert got.identical(expected)
    assert harvester.full_ds.identical(expected)


def _refuse(a, b):
    if a == 2 and b == 3:
        raise ArithmeticError("no")
    return a * b


def test_a_failing_xyzpy_point_raises_its_own_exception():
    runner = xyz.Runner(_refuse, var_names="product")
    with dp.ProcessExecutor(2, retries=0) as ex, pytest.raises(ArithmeticError, match="no"):
        runner.run_combos({"a": [1, 2], "b": range(4)}, executor=ex, verbosity=0)


@pytest.mark.parametrize("name", ["processes", "dask", "mpi"])
def test_mdanalysis_rmsd_and_rdf_equal_the_serial_analysis(name):
    u = mda.Universe(PSF, DCD)
    water = mda.Universe(GRO, XTC).select_atoms("name OW")
    rmsd = RMSD(u, select="backbone").run().results.rmsd
    rdf = InterRDF(water, water, range=(1, 8)).run(stop=4).results.rdf
    make = {
        "processes": lambda: dp.ProcessExecutor(2),
        "dask": lambda: dp.DaskExecutor(n_workers=2, threads_per_worker=1),
        "mpi": lambda: dp.MPIExecutor(2),
    }[name]
    with make() as ex:
        backend = MDAnalysisBackend(ex)
        assert backend.n_workers == 2 or name == "dask"
        got = RMSD(u, select="backbone").run(backend=backend, n_parts=3, unsupported_backend=True)
        got_rdf = InterRDF(water, water, range=(1, 8)).run(stop=4, backend=backend, unsupported_backend=True)
    np.testing.assert_array_equal(got.results.rmsd, rmsd)
    np.testing.assert_allclose(got_rdf.results.rdf, rdf)


def test_joblib_batches_run_on_the_executor_and_fail_with_their_own_exception():
    with dp.ProcessExecutor(2, retries=0) as ex:
        backend = JoblibBackend(ex)
        assert backend.effective_n_jobs(-1) == 2 and backend.effective_n_jobs(-2) == 1
        assert backend.effective_n_jobs(5) == 5
        with pytest.raises(ValueError, match="no meaning"):
            backend.effective_n_jobs(0)
        with joblib.parallel_config(backend=backend):
            assert Parallel(n_jobs=-1)(delayed(math.factorial)(i) for i in range(200)) == [
                math.factorial(i) for i in range(200)
            ]
            lazy = Parallel(n_jobs=2, return_as="generator")(delayed(abs)(-i) for i in range(5))
            assert list(lazy) == [0, 1, 2, 3, 4]
            with pytest.raises(ValueError, match="math domain error"):
                Parallel(n_jobs=2)(delayed(math.sqrt)(i) for i in [1, -1, 4])
        register()
        with joblib.parallel_config(backend="dispatcher", executor=ex):
            assert Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(3)) == [0, 1, 2]
        # the executor is the caller's: still open after joblib is done with it
        assert ex.submit(abs, -7).result() == 7


def test_joblib_needs_the_executor_by_name():
    register()
    with pytest.raises(TypeError, match="executor=ex"), joblib.parallel_config(backend="dispatcher"):
        Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(3))


def test_joblib_abort_cancels_the_batches_not_started():
    with dp.ThreadExecutor(1) as ex:
        backend = JoblibBackend(ex)
        gate = ex.submit(__import__("time").sleep, 0.5)
        queued = [backend.submit(lambda: 1) for _ in range(3)]
        backend.abort_everything(ensure_ready=True)
        assert all(f.cancelled() for f in queued)
        gate.result()


def test_worker_count_says_how_many_calls_run_at_once():
    assert worker_count(dp.SerialExecutor()) == 1
    assert worker_count(dp.ThreadExecutor(3)) == 3
    with warnings.catch_warnings():
        assert worker_count(dp.ProcessExecutor(2)) == 2
