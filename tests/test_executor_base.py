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
