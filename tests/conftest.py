"""Shared fixtures: every in-process executor, each made fresh and closed after."""

from __future__ import annotations

import concurrent.futures as cf

import pytest

import dispatcher as dp

EXECUTOR_NAMES = ["serial", "async", "threads", "pool"]


def make_executor(name: str, **options) -> tuple[dp.Executor, object]:
    """A fresh executor named ``name`` and the pool it runs on (or None)."""
    if name == "serial":
        return dp.SerialExecutor(**options), None
    if name == "async":
        return dp.AsyncExecutor(**options), None
    if name == "threads":
        return dp.ThreadExecutor(4, **options), None
    if name == "pool":
        pool = cf.ThreadPoolExecutor(4)
        return dp.PoolExecutor(pool, **options), pool
    raise ValueError(name)


@pytest.fixture(params=EXECUTOR_NAMES)
def executor_factory(request):
    """Call with executor options; every executor made is closed after the test."""
    made = []

    def factory(**options):
        ex, pool = make_executor(request.param, **options)
        made.append((ex, pool))
        return ex

    factory.name = request.param
    yield factory
    for ex, pool in made:
        ex.close()
        if pool is not None:
            pool.shutdown(wait=True)


@pytest.fixture
def executor(executor_factory):
    return executor_factory()
