"""The three ways of "Running on a Slurm cluster" (docs/slurm.md), with the very
files the page shows (its blocks named by ``% doc-test: file NAME``), submitted
to the cluster as a user would."""

from __future__ import annotations

import collections
import pathlib

import pytest

from .. import docexamples

PAGE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "slurm.md"

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def page_files() -> dict[str, str]:
    return docexamples.files(PAGE)


def _write(slurm, page_files, *names):
    for name in names:
        slurm.write(name, page_files[name])


def test_the_page_names_the_files_the_tests_submit(page_files):
    assert set(page_files) == {"script.py", "job.sh", "dask_jobs.py", "sweep.py", "array.sh"}


def test_an_mpi_job_runs_the_batch_script_of_the_docs(slurm, page_files):
    _write(slurm, page_files, "script.py", "job.sh")
    job_id, out = slurm.sbatch("job.sh")
    assert out.split() == ["4995000"], out
    assert slurm.job_state(job_id) == "COMPLETED"


def test_a_dask_cluster_of_slurm_jobs_runs_the_example_and_releases_its_jobs(slurm, page_files):
    _write(slurm, page_files, "dask_jobs.py")
    out = slurm.check("python", "dask_jobs.py", timeout=360)
    assert out.strip().splitlines()[-1] == "2470 from 2 jobs", out
    # leaving the `with` block cancelled the workers' batch jobs
    slurm.wait_until(lambda: not slurm.queue(), "the dask workers' jobs to end", timeout=60)


def test_an_array_job_shares_one_store_and_computes_each_node_once(slurm, page_files):
    _write(slurm, page_files, "sweep.py", "array.sh")
    best = max(seed * 7919 % 1000 for seed in range(40))
    job_id, _ = slurm.sbatch("array.sh", "--output=job-%A_%a.out")
    outputs = [slurm.output(f"{job_id}_{task}") for task in range(4)]
    assert [out.split() for out in outputs] == [[str(best)]] * 4, outputs
    calls = [line.split() for line in (slurm.folder / "calls.log").read_text().splitlines()]
    seeds = collections.Counter(int(seed) for seed, _ in calls)
    assert seeds == collections.Counter(range(40))  # each of the 40 fits ran once, in one of the tasks
    assert {task for _, task in calls} <= {"0", "1", "2", "3"}
