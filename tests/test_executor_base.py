"""The executor base: the options every executor takes are checked."""

from __future__ import annotations

import pytest

import dispatcher as dp


def test_executor_options_are_validated():
    with pytest.raises(ValueError):
        dp.ThreadExecutor(timeout=-1)
    with pytest.raises(ValueError):
        dp.SerialExecutor(retries=-1)
    with pytest.raises(ValueError):
        dp.ThreadExecutor(0)
    with pytest.raises(ValueError):
        dp.AsyncExecutor(sync="processes")


def test_an_executor_says_whether_its_tasks_run_in_this_process(executor_factory):
    """``capabilities.in_process``, which tools that start runs from inside a task
    need, is what the registry says of the executor's nodes."""
    from dispatcher.executors.registry import EXECUTORS

    ex = executor_factory()
    assert ex.capabilities.in_process is EXECUTORS[executor_factory.name].local


def test_a_pool_executor_runs_in_this_process_only_over_threads():
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(1) as threads, cf.ProcessPoolExecutor(1) as processes:
        assert dp.PoolExecutor(threads).capabilities.in_process
        assert not dp.PoolExecutor(threads, cloudpickle=True).capabilities.in_process
        assert not dp.PoolExecutor(processes).capabilities.in_process
