"""How the ranks of an ``mpiexec`` job wait for messages (``dispatcher/executors/_mpipoll.py``):
quick soon after the last message, then backing off as mpi4py.futures does."""

from __future__ import annotations

from dispatcher.executors import _mpipoll
from dispatcher.executors._mpipoll import QUICK_FOR, QUICK_SLEEP, QuickPoll


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.slept: list = []

    def clock(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_wait_is_quick_after_a_message_then_backs_off_to_its_ceiling():
    t = FakeTime()
    poll = QuickPoll(0.001, clock=t.clock, pause=t.pause)
    while t.now < QUICK_FOR:
        poll.sleep()
    assert set(t.slept) == {QUICK_SLEEP}  # quick for QUICK_FOR seconds after the wait began
    t.slept.clear()
    for _ in range(20):
        poll.sleep()
    assert t.slept[:3] == [0.0, QUICK_SLEEP, 2 * QUICK_SLEEP]  # then twice as long each time
    assert t.slept[-1] == 0.001 and max(t.slept) == 0.001  # up to the ceiling
    poll.reset()  # a message came: quick again
    t.slept.clear()
    poll.sleep()
    assert t.slept == [QUICK_SLEEP]
    assert QuickPoll(0.0).quick == 0.0  # a ceiling of 0 (MPI4PY_FUTURES_BACKOFF=0): never sleeps


def test_install_replaces_the_backoff_of_mpi4py_futures(monkeypatch):
    from mpi4py.futures import _core as core

    monkeypatch.setattr(core, "Backoff", core.Backoff)  # (restored after the test)
    assert _mpipoll.install() and core.Backoff is QuickPoll
    assert core.Backoff().ceiling == core.BACKOFF  # mpi4py's default ceiling when none is given
    assert _mpipoll.install()  # twice: still the same
