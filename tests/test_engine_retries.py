"""The retry policy: the backoff between attempts."""

from __future__ import annotations

import random

import pytest

import dispatcher as dp
from dispatcher.engine import Backoff


def test_backoff_is_exponential_and_jittered():
    b = Backoff(first_delay=0.1, factor=3.0, max_delay=1.0, jitter=0.1)
    assert b.delay(1, lambda: 0.5) == pytest.approx(0.1)
    assert b.delay(2, lambda: 0.5) == pytest.approx(0.3)
    assert b.delay(5, lambda: 0.5) == pytest.approx(1.0)
    assert b.delay(1, lambda: 0.0) == pytest.approx(0.09)
    assert b.delay(1, lambda: 1.0) == pytest.approx(0.11)
    with pytest.raises(TypeError):
        dp.SerialExecutor(backoff=0.5)


def test_retries_leave_the_programs_random_numbers_as_they_were():
    """The jitter of the backoffs comes from the library's own generator: a program
    that seeds ``random`` gets the same numbers whether its nodes were retried or not."""
    tries = []

    def flaky():
        tries.append(1)
        if len(tries) < 3:
            raise OSError("not yet")
        return len(tries)

    random.seed(7)
    state = random.getstate()
    ex = dp.SerialExecutor(retries=3, retry_on=OSError, backoff=Backoff(first_delay=0.001))
    assert dp.execute(dp.Op(flaky), ex) == 3
    assert random.getstate() == state
