"""Values stay where they are made: the pool's side of :class:`~._wire.Held`.

Policy:

* **Held, not unpickled.** A worker sends back each value whose pickle takes
  :data:`~._wire.HELD_MIN` bytes (1 KiB) or more as a :class:`~._wire.Held`:
  pickled once, where it was made (a smaller one is sent as itself: it costs less
  to send again than to keep track of). The pool's
  process keeps it so and never unpickles it unless it needs the value: a run's
  outputs, the argument of a node the driver runs itself, a callback that wants
  values, ``fetch()``, a value the driver stores (the engine calls
  :func:`~dispatcher.outcomes.here` there); it then keeps what it read beside the
  bytes, which the workers still get. An intermediate value passes through the
  driver as bytes, its large arrays as the shared-memory files they came in
  (never copied, see :mod:`._wire`).
* **Once per worker.** Each worker keeps what it was sent of a held value, by
  key: a value read by many calls on one worker is sent and unpickled there once,
  and later messages name its key (:class:`Holds` is the pool's record of the keys
  each worker keeps). Calls on one worker share what it keeps, as calls in one
  process do, whether or not the driver read the value too. An SPMD node's ranks
  get the whole value, kept by none. A worker that cannot read a message drops every value it
  keeps, and the pool's record of it is cleared.
* **Released with the run's values.** When the driver drops a held value (the
  engine released it once no node needed it, or the run ended and it was no
  output), each worker keeping it is told to forget it: with its next batch, or at
  once in a message of its own (that gets no answer) if it is idle.
* **A lost worker** loses its copies, nothing else: the values are held here and
  go again to whichever worker needs them; nothing is computed again.
"""

from __future__ import annotations

import itertools
import weakref

from .. import outcomes
from . import _wire as wire

__all__ = ["HeldValues", "Holds"]

_keys = itertools.count(1)
outcomes.UNREAD.add(wire.Held)  # the engine reads one only where it needs the value


class Holds:
    """The keys of the held values one worker keeps, and those it is to forget."""

    __slots__ = ("__weakref__", "forget", "gone", "keys", "queued", "values", "worker")

    def __init__(self, values: HeldValues, worker):
        self.values = values
        self.worker = worker
        self.keys: set = set()
        self.forget: list = []  # (appended to by whichever thread drops a held value)
        self.queued = False  # among the pool's holds with keys to forget
        self.gone = False  # the worker left the pool


class _Choice:
    """How each held value goes in one message to one worker: by key where it has
    it, else whole, to keep; :meth:`commit` once the message was sent."""

    __slots__ = ("holds", "new")

    def __init__(self, holds: Holds):
        self.holds = holds
        self.new: list = []

    def __call__(self, held: wire.Held, buffers: list) -> tuple:
        key = held.key
        if key is None:
            key = held.key = next(_keys)
        if key in self.holds.keys:
            return (wire._cached, (key,))
        self.new.append(held)
        return (wire._loaded, (key, held.payload, *buffers))

    def commit(self) -> None:
        holds = self.holds
        for held in self.new:
            holds.keys.add(held.key)
            if held.holders is None:
                held.holders = []
                weakref.finalize(held, _dropped, held.key, held.holders)
            held.holders.append(holds)
        self.new = []


def _encode(jobs, batch: list, dumps, choose):
    """``jobs.encode(batch, dumps)`` with each held value in it going as ``choose``
    says (see :meth:`~._wire.Held.__reduce__`)."""
    wire._sending.to = choose
    try:
        # KeyboardInterrupt from a __reduce__ too: this thread gets no Ctrl-C
        return jobs.encode(batch, dumps, BaseException)
    finally:
        wire._sending.to = None


def _nothing() -> None:
    pass


def _dropped(key: int, holders: list) -> None:
    """A held value is no more: the workers that keep it are to forget it."""
    for holds in holders:
        if holds.gone:
            continue
        holds.keys.discard(key)
        holds.forget.append(key)
        if not holds.queued:
            holds.queued = True
            holds.values.waiting.append(holds)
            holds.values.wake()


class HeldValues:
    """One pool's record of the held values its workers keep (see the module
    docstring)."""

    def __init__(self, wake):
        self.wake = wake  # wakes the pool's I/O thread
        self.waiting: list = []  # the Holds with keys to forget
        self.all: weakref.WeakSet = weakref.WeakSet()  # the Holds of the workers

    def holds(self, worker) -> Holds:
        """The record of what a new ``worker`` keeps."""
        holds = Holds(self, worker)
        self.all.add(holds)
        return holds

    def close(self) -> None:
        """The pool has stopped: its workers keep nothing, and the values that
        outlive it need not keep it alive."""
        for holds in list(self.all):
            holds.gone = True
        self.waiting = []
        self.wake = _nothing

    @staticmethod
    def encode_whole(jobs, batch: list, dumps):
        """``jobs.encode`` of a message that goes to several workers (an SPMD node's):
        each held value in it whole, kept by none."""
        return _encode(jobs, batch, dumps, wire.whole)

    def encode(self, jobs, batch: list, holds: Holds, timed: bool):
        """``jobs.encode`` of ``batch`` for the worker of ``holds``: the message, and
        what :meth:`sent` needs once it went; None if the batch would not pickle."""
        forget = holds.forget[:]
        choice = _Choice(holds)
        encoded = _encode(jobs, batch, lambda calls: wire.dumps((calls, timed, forget)), choice)
        return None if encoded is None else (encoded, (choice, forget))

    @staticmethod
    def sent(holds: Holds, what) -> None:
        """The message :meth:`encode` made went to the worker."""
        choice, forget = what
        del holds.forget[: len(forget)]
        choice.commit()

    def tell_idle(self, counts) -> None:
        """Tell the idle workers with values to forget (a message with no calls)."""
        if not self.waiting:
            return
        waiting, self.waiting = self.waiting, []
        for holds in waiting:
            worker = holds.worker
            if holds.gone or not holds.forget:
                holds.queued = False
                continue
            if not worker.ready or worker.batch is not None:
                self.waiting.append(holds)  # (it may hear with its next batch; else once idle)
                continue
            holds.queued = False
            forget = holds.forget[:]
            try:
                wire.send_payload(worker.sock, *wire.dumps(([], False, forget)), counts=counts)
            except OSError:
                continue  # (its loss is noticed where its connection is read)
            del holds.forget[: len(forget)]
