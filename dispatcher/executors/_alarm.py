"""A call stopped by ``SIGALRM`` at its timeout, in the main thread of the process
where it runs (the serial executors, an MPI worker).

Policy: the process has one real-time timer and one ``SIGALRM`` handler, and an
alarm set before the call (a test runner's time limit, the user's own
``signal.alarm``) must still ring at its time. So :func:`alarm` arms the timer for
whichever is due first, the call's timeout or the alarm already set; when the earlier
one is the alarm already set, its handler runs and the call's timeout stays armed;
on leaving, the handler and the remaining time of the alarm already set are put back
(an alarm that came due during the call rings at once).
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Iterator

__all__ = ["alarm"]

_SOON = 1e-6  # setitimer(0) disarms: a due alarm is armed this close instead


@contextlib.contextmanager
def alarm(seconds: float, error: Callable[[], BaseException]) -> Iterator[None]:
    """Raise ``error()`` in the body if it runs longer than ``seconds``; main thread only."""
    start = time.monotonic()
    ours = start + seconds
    outer_handler = signal.getsignal(signal.SIGALRM)
    outer_delay, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    outer = start + outer_delay if outer_delay else math.inf

    def arm() -> None:
        signal.setitimer(signal.ITIMER_REAL, max(min(ours, outer) - time.monotonic(), _SOON))

    def on_alarm(signum, frame):
        nonlocal outer
        if ours <= outer:
            raise error()
        outer = time.monotonic() + outer_interval if outer_interval else math.inf
        arm()  # the call's own timeout is still to come
        if callable(outer_handler):
            outer_handler(signum, frame)

    signal.signal(signal.SIGALRM, on_alarm)
    arm()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer != math.inf:
            signal.setitimer(signal.ITIMER_REAL, max(outer - time.monotonic(), _SOON), outer_interval)
