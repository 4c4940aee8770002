"""How the ranks of an ``mpiexec`` job wait for messages (``dispatcher/executors/_mpipoll.py``):
quick soon after the last message, then backing off as mpi4py.futures does."""

from __future__ import annotations

import subprocess
import sys

from dispatcher.executors import _mpipoll
from dispatcher.executors._mpipoll import QUICK_FOR, QUICK_SLEEP, SEND_RATE, QuickPoll


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.slept: list = []

    def clock(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_wait_is_quick_after_a_message_then_backs_off_to_its_ceiling(monkeypatch):
    monkeypatch.setattr(_mpipoll, "_sending_until", 0.0)  # (no large message leaving)
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


def test_a_wait_stays_quick_while_a_large_message_leaves(monkeypatch):
    """MPI moves a large message only while its sender tests for it: after
    ``sending(n)`` the waits stay quick for n / SEND_RATE seconds, past QUICK_FOR."""
    monkeypatch.setattr(_mpipoll, "_sending_until", 0.0)
    t = FakeTime()
    poll = QuickPoll(0.001, clock=t.clock, pause=t.pause)
    _mpipoll.sending(int(SEND_RATE * 20 * QUICK_FOR), clock=t.clock)  # 20 quick periods' worth
    while t.now < 20 * QUICK_FOR:
        poll.sleep()
    assert set(t.slept) == {QUICK_SLEEP}
    t.slept.clear()
    for _ in range(5):
        poll.sleep()
    assert t.slept[-1] > QUICK_SLEEP  # then it backs off as before
    _mpipoll.sending(1, clock=t.clock)  # a small message keeps no wait quick for long
    assert _mpipoll._sending_until < t.now + 2 * QUICK_SLEEP


INSTALL = """
from mpi4py.futures import _core
from dispatcher.executors import _mpipoll
_core.BACKOFF = 0.005  # (as if mpi4py's default were another)
assert _mpipoll.install() and _core.Backoff is _mpipoll.QuickPoll
assert _core.Backoff().ceiling == 0.005 and _core.Backoff(0.002).ceiling == 0.002
assert _mpipoll.install()  # twice: still the same
print("installed")
"""


def test_install_replaces_the_backoff_of_mpi4py_futures():
    # in a process of its own: importing mpi4py.futures starts MPI
    proc = subprocess.run([sys.executable, "-c", INSTALL], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "installed", proc.stderr
