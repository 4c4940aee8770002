"""How the ranks of an ``mpiexec`` job wait for messages while they serve an
``MPIExecutor`` (through ``mpi4py.futures``: :mod:`~dispatcher.executors._mpiworld`).

``mpi4py.futures`` never blocks in MPI (a blocking receive spins a core in most MPI
libraries): its threads test for a message, then sleep, each sleep twice the one
before, from a thousandth of a ceiling up to the ceiling (``MPI4PY_FUTURES_BACKOFF``,
1 ms by default). A few milliseconds after the last message the sleeps are near
the ceiling, and a node's trip from the driver to a worker rank and back passes
three such waits (the driver's thread, the worker's receiving loop and its local
queue): a chain of quick nodes took 4.2-4.3 ms per hop on three ranks.

Policy: for :data:`QUICK_FOR` seconds after its last message, a wait sleeps only
:data:`QUICK_SLEEP` between tests (in practice the kernel's timer slack, about
50 µs); only then does it back off as ``mpi4py.futures`` does, up to the same
ceiling. A chain of quick nodes takes 0.4-0.55 ms per hop, an idle rank costs
what it did (about 1 % of a core), and so does a long call: the quick period is
short because a worker rank's receiving loop shares the interpreter with the call
it runs (tests every 50 µs for 0.1 s made 0.1 s CPU-bound nodes 11 % slower).

A message too large to go at once (MPI sends it piece by piece, rendezvous)
moves only while its sender tests for it: the driver's thread for a call, the
worker's loop for an answer. :func:`sending` keeps the waits of this process quick
while one leaves, for its size at :data:`SEND_RATE`, a rate a message on one host
or a network beats; backing off meanwhile made a chain of 10 MB arrays take 1.4 s
per hop on three ranks of one host. The waits stay quick for that time even if
the message left sooner: a 1 GB value keeps its sender testing about every 50 µs
for 20 s, which costs a share of a core, not time.
:func:`install` puts :class:`QuickPoll` in place of ``mpi4py.futures._core.Backoff``,
a private class, for every ``mpi4py.futures`` pool of the process; it was checked
against mpi4py :data:`TESTED`, and with another major version, or a ``Backoff``
without the methods it replaces, mpi4py is left as it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["QUICK_FOR", "QUICK_SLEEP", "SEND_RATE", "TESTED", "QuickPoll", "install", "sending"]

logger = logging.getLogger("dispatcher")

QUICK_SLEEP = 0.000001  # seconds between tests for a message, soon after the last one
QUICK_FOR = 0.005  # seconds after the last message that the tests stay that frequent
SEND_RATE = 50e6  # bytes per second a large message is given to leave, at the least
_sending_until = 0.0  # the tests stay frequent until then: a large message is leaving
TESTED = "4.1"  # the version of mpi4py whose private Backoff this replaces
_CEILING = 0.001  # mpi4py.futures' own default ceiling (its BACKOFF), read by install()


class QuickPoll:
    """The waits of ``mpi4py.futures`` between tests for a message (the interface of
    its ``Backoff``: ``reset()`` when a message came, ``sleep()`` between tests),
    quick for :data:`QUICK_FOR` seconds after the last message, then backing off
    up to ``seconds``."""

    def __init__(
        self,
        seconds: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], None] = time.sleep,
    ):
        self.ceiling = max(float(_CEILING if seconds is None else seconds), 0.0)
        self.quick = min(QUICK_SLEEP, self.ceiling)
        self.clock = clock
        self.pause = pause
        self.last = clock()  # when the last message came (or the wait began)
        self.delay = 0.0  # the next sleep, once the quick period is over

    def reset(self) -> None:
        """A message came."""
        self.last = self.clock()
        self.delay = 0.0

    def sleep(self) -> None:
        """Sleep between two tests for a message."""
        now = self.clock()
        if now - self.last < QUICK_FOR or now < _sending_until:
            self.pause(self.quick)
        else:
            self.pause(self.delay)
            self.delay = min(self.ceiling, max(self.quick, self.delay * 2))


def sending(nbytes: int, clock: Callable[[], float] = time.monotonic) -> None:
    """A message of ``nbytes`` leaves this process now: the waits of its
    ``mpi4py.futures`` threads stay quick until it has had time to go, at
    :data:`SEND_RATE` (see the module docstring)."""
    global _sending_until
    until = clock() + nbytes / SEND_RATE
    if until > _sending_until:
        _sending_until = until


def install() -> bool:
    """Make ``mpi4py.futures`` wait with :class:`QuickPoll` in this process (before
    its pool starts); whether it does."""
    global _CEILING
    import mpi4py
    from mpi4py.futures import _core

    backoff = getattr(_core, "Backoff", None)
    if backoff is QuickPoll:
        return True
    major = mpi4py.__version__.split(".")[0]
    if major != "4" or not all(hasattr(backoff, name) for name in ("reset", "sleep")):
        logger.debug("mpi4py %s: its ranks poll as it does (tested: %s)", mpi4py.__version__, TESTED)
        return False
    _CEILING = float(getattr(_core, "BACKOFF", _CEILING))
    _core.Backoff = QuickPoll
    return True
