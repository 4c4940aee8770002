"""The one SIGALRM timer of a process shared by a call's timeout and an alarm set
before it (a test runner's time limit, the user's own ``signal.alarm``)."""

from __future__ import annotations

import signal
import time

import pytest

import dispatcher as dp
from dispatcher.executors._alarm import alarm


class Rang(Exception):
    pass


@pytest.fixture
def outer():
    """An alarm of the caller's: records when it rang; cleared after the test."""
    rings: list = []
    timer = signal.setitimer(signal.ITIMER_REAL, 0)  # the test runner's own time limit, if any
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: rings.append(time.monotonic()))
    yield rings
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)
    if timer[0]:
        signal.setitimer(signal.ITIMER_REAL, *timer)


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_the_body_is_stopped_at_its_timeout(outer):
    start = time.monotonic()
    with pytest.raises(Rang), alarm(0.05, Rang):
        time.sleep(5)
    assert time.monotonic() - start < 4
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and not outer


def test_an_earlier_outer_alarm_rings_at_its_time_and_the_timeout_still_stops_the_body(outer):
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    start = time.monotonic()
    with pytest.raises(Rang), alarm(0.3, Rang):
        _spin(5)
    assert len(outer) == 1 and outer[0] - start < 0.3  # rang first, at its own time
    assert time.monotonic() - start < 4


def test_a_later_outer_alarm_keeps_its_remaining_time(outer):
    signal.setitimer(signal.ITIMER_REAL, 0.4)
    start = time.monotonic()
    with alarm(5, Rang):
        time.sleep(0.05)
    remaining = signal.getitimer(signal.ITIMER_REAL)[0]
    assert 0 < remaining <= 0.4 - 0.05 + 0.01
    _spin(remaining + 0.2)
    assert len(outer) == 1 and outer[0] - start >= 0.35


def test_an_outer_alarm_due_during_the_body_rings_once_it_ends(outer):
    """Its handler is run in the body when it comes due, and not armed again."""
    signal.setitimer(signal.ITIMER_REAL, 0.02)
    with alarm(5, Rang):
        _spin(0.1)
    assert len(outer) == 1
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_serial_node_timeout_leaves_the_callers_alarm_armed(outer):
    """A test runner's time limit (SIGALRM) still holds around a timed serial node."""
    signal.setitimer(signal.ITIMER_REAL, 30)
    with dp.SerialExecutor() as ex:
        (result,) = dp.run(ex, [dp.op(time.sleep, timeout=0.05)(5)], throw_error=False)
    assert isinstance(result.error.error, TimeoutError)
    assert 25 < signal.getitimer(signal.ITIMER_REAL)[0] <= 30
    assert signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL
