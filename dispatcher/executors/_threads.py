"""A thread pool whose calls can lend their slot while they wait on a nested run.

Policy: at most ``max_workers`` calls run at once, as in
``concurrent.futures.ThreadPoolExecutor``, whose interface this pool has. A call
running in the pool that blocks in a nested run on the same pool (a node that
calls ``dispatcher.run`` on the executor it runs on, as a workflow tool's task
starting its own tasks does) would otherwise hold its slot while the nested nodes
wait for one, and with every slot so held the run deadlocks. :meth:`lent` marks
such a wait, as dask's ``secede``/``rejoin`` do: the slot goes to the next waiting
call (a thread is added if none is idle) and comes back when the wait ends. Until
the borrowed slot is returned, one more call than ``max_workers`` may run; no new
call starts until the count is back under the limit.

Threads are started as calls need them and stay for the pool's life.
``shutdown(wait=True)`` waits for the calls running, except those whose
:class:`Ticket` was cancelled after they started: their run has given up on them
(it was interrupted, or they passed their timeout) and a thread cannot be
stopped, so their threads (daemon threads) are left to end with the call or
with the process, and shutting down never hangs on them. Besides
``submit`` (a ``concurrent.futures.Future`` per call), :meth:`SlotPool.start`
queues a call that reports by itself, with a :class:`Ticket` that can only take
it back before it starts: an executor's task needs no future, whose making and
settling would cost more than the rest of its trip through the pool.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["SlotPool", "Ticket", "current_pool"]

logger = logging.getLogger("dispatcher")

_here = threading.local()  # .pool: the SlotPool whose call this thread is running


def current_pool() -> SlotPool | None:
    """The pool whose call the current thread is running, or None."""
    return getattr(_here, "pool", None)


class Ticket:
    """A call queued by :meth:`SlotPool.start`, which :meth:`cancel` takes back if it
    has not started, and marks abandoned if it has (its thread runs on)."""

    __slots__ = ("lock", "state")

    QUEUED, STARTED, CANCELLED, ABANDONED = 0, 1, 2, 3

    def __init__(self, lock):
        self.lock = lock
        self.state = Ticket.QUEUED

    def cancel(self) -> bool:
        """True if the call will not run (it had not started)."""
        with self.lock:
            if self.state == Ticket.QUEUED:
                self.state = Ticket.CANCELLED
            elif self.state == Ticket.STARTED:
                self.state = Ticket.ABANDONED
            return self.state == Ticket.CANCELLED


def _settle(future: cf.Future, fn, args: tuple, kwargs: dict) -> None:
    """Run a submitted call unless its future was cancelled, and settle the future."""
    if future.set_running_or_notify_cancel():
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)


class SlotPool(cf.Executor):
    """Run calls in threads, at most ``max_workers`` at once (see the module docstring)."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "dispatcher"):
        self.max_workers = max_workers
        self.prefix = thread_name_prefix
        self._lock = threading.Lock()
        self._queue: collections.deque = collections.deque()  # (future or ticket, fn, args)
        self._running = 0  # calls holding a slot
        self._idle = 0  # threads waiting for work
        self._granted = 0  # slots granted to idle threads that have not woken yet
        self._wake = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._calls: dict[threading.Thread, Any] = {}  # thread -> the handle of the call it runs
        self._shutdown = False

    def submit(self, fn, /, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        self._enqueue(future, _settle, (future, fn, args, kwargs))
        return future

    def start(self, fn, /, *args: Any) -> Ticket:
        """Queue ``fn(*args)``, which must report its own outcome (an exception it
        raises is only logged)."""
        ticket = Ticket(self._lock)
        self._enqueue(ticket, fn, args)
        return ticket

    def _enqueue(self, handle, fn, args: tuple) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._queue.append((handle, fn, args))
            self._start_next()

    def _start_next(self) -> None:
        """With the lock held: if a call waits and a slot is free, grant the slot to
        an idle thread (one not granted one already), or to a new thread."""
        if self._running >= self.max_workers or not self._queue:
            return
        self._running += 1
        if self._idle > self._granted:
            self._granted += 1
            self._wake.notify()
            return
        thread = threading.Thread(target=self._work, name=f"{self.prefix}-{len(self._threads)}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        """A thread's loop. It holds a slot from its start; between calls it keeps
        the slot while calls wait and the pool is not over its limit, else gives it
        back and waits, idle, until a slot is granted to it (or the pool shuts down)."""
        _here.pool = self
        me = threading.current_thread()
        calls = self._calls
        lock = self._lock
        lock.acquire()
        try:
            while True:
                if not self._queue or self._running > self.max_workers:
                    self._running -= 1
                    while True:
                        if self._shutdown and not self._queue:
                            return
                        self._idle += 1
                        self._wake.wait()
                        self._idle -= 1
                        if self._granted:
                            self._granted -= 1
                            break
                    continue
                handle, fn, args = self._queue.popleft()
                if type(handle) is Ticket:  # a future is settled, cancelled or not, by _settle
                    if handle.state == Ticket.CANCELLED:
                        continue
                    handle.state = Ticket.STARTED
                calls[me] = handle
                lock.release()
                try:
                    fn(*args)
                except BaseException:
                    logger.exception("a call of the thread pool raised")
                finally:
                    del handle, fn, args
                    lock.acquire()
                    del calls[me]
        finally:
            lock.release()

    @contextlib.contextmanager
    def lent(self) -> Iterator[None]:
        """While the ``with`` block waits, the calling thread's slot works for others."""
        if current_pool() is not self:
            yield
            return
        with self._lock:
            self._running -= 1
            self._start_next()
        try:
            yield
        finally:
            with self._lock:
                self._running += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    handle = self._queue.popleft()[0]
                    if type(handle) is Ticket:
                        handle.state = Ticket.CANCELLED  # the lock is held: not cancel()
                    else:
                        handle.cancel()
            self._wake.notify_all()
        if wait:
            me = threading.current_thread()
            for thread in list(self._threads):
                while thread is not me and thread.is_alive() and not self._abandoned(thread):
                    thread.join(0.1)

    def _abandoned(self, thread: threading.Thread) -> bool:
        """``thread`` runs a call whose ticket was cancelled after it started."""
        with self._lock:
            handle = self._calls.get(thread)
        if type(handle) is Ticket and handle.state == Ticket.ABANDONED:
            logger.debug("not waiting for %s: its call was abandoned by its run", thread.name)
            return True
        return False
