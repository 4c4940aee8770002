"""SPMD nodes of ``MPIExecutor`` on the ranks of a user's ``mpiexec`` job: a node
granted ``k`` cores runs on ``k`` worker ranks at once, each calling its function
with a communicator of those ``k`` ranks, while other nodes run on the other ranks.
The ``k`` calls of one node are a *gang*.

Policy:

* A gang starts when ``k`` worker ranks are free. While one waits at the head of
  the queue, no other node passes it, so that a stream of small nodes cannot
  starve it (:class:`~dispatcher.executors._mpiworld.WorldRanks`).
* Its ``k`` members are sent at once through ``mpi4py.futures``, which gives each
  to an idle rank; as the pool never has more in flight than it has ranks, each
  member has a rank of its own at once.
* The members meet at the driver (:class:`Rendezvous`): each connects to a TCP
  socket of the driver's (the ranks may run on other hosts), proves itself with
  the rendezvous's token, and says its gang and its rank among the workers; when
  all ``k`` have, each hears the ``k`` ranks and their hosts. They make their
  communicator with ``MPI_Comm_create_group``, which only those ``k`` ranks call,
  so the others go on with other nodes.
* Every member calls the node's function with that communicator (as ``comm=``
  where the function takes one, and as ``dp.allocation().comm``, with the hosts of
  the ``k`` ranks in ``dp.allocation().hosts``); the thread variables of each rank
  are set to 1. Then the members agree on how the call went
  (:func:`~dispatcher.executors._mpicomm.agree`: a failed member aborts the job
  if the others stay stuck inside the call).
* The node's value is the one of rank 0 of the communicator (the others send back
  nothing); if any member failed, the node fails with the exception of the lowest
  failing rank, with a note naming it. Only rank 0 writes the node's value to a
  store.
* A gang cancelled before all its members met (the run ended, Ctrl-C): the members
  that came hear so and return without calling; those to come hear it as they
  come.
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import logging
import os
import socket
import threading
from collections import Counter

from ..node_allocation import Allocated, Allocation
from ..store.worker import StoredCall
from . import _wire as wire
from ._listen import HELLO_TIMEOUT
from ._mpicomm import agree, error_text, with_comm
from ._procworker import failure

__all__ = ["GANG_TAGS", "GangRun", "Rendezvous", "SpmdCall", "join"]

logger = logging.getLogger("dispatcher")

GANG_TAGS = 1 << 15  # MPI_Comm_create_group tags cycle through these (the least MPI_TAG_UB + 1)


class Rendezvous:
    """Where the members of gangs meet: a listening TCP socket of the driver and
    the thread that answers it (see the module docstring)."""

    def __init__(self):
        self.token = os.urandom(16)
        self._server = socket.create_server(("", 0), backlog=128)
        self.address = (socket.gethostname(), self._server.getsockname()[1])
        self._lock = threading.Lock()
        self._waiting: dict[int, tuple[int, list]] = {}  # gang -> (size, [(rank, host, connection)])
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._serve, name="dispatcher-mpi-gangs", daemon=True)
        self._thread.start()

    def open(self, size: int) -> int:
        """A new gang of ``size`` members; its number."""
        gang = next(self._ids)
        with self._lock:
            self._waiting[gang] = (size, [])
        return gang

    def cancel(self, gang: int) -> None:
        """The members of ``gang`` that have not all met are told to go home."""
        with self._lock:
            entry = self._waiting.pop(gang, None)
        for _, _, conn in entry[1] if entry else ():
            _answer(conn, None)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread from accept()
        self._server.close()
        for gang in list(self._waiting):
            self.cancel(gang)
        self._thread.join(HELLO_TIMEOUT + 1)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:  # closed
                return
            try:
                conn.settimeout(HELLO_TIMEOUT)
                token = wire.recv_exact(conn, len(self.token))
                if not hmac.compare_digest(bytes(token), self.token):
                    raise ConnectionError("a connection without the rendezvous's token")
                gang, rank, host = wire.recv(conn)
                conn.settimeout(None)
            except (OSError, EOFError, ValueError, ConnectionError) as exc:
                logger.warning("refused a connection to the MPI gangs' rendezvous: %s", exc)
                conn.close()
                continue
            with self._lock:
                entry = self._waiting.get(gang)
                if entry is not None:
                    size, members = entry
                    members.append((rank, host, conn))
                    if len(members) < size:
                        continue
                    del self._waiting[gang]
            if entry is None:  # cancelled
                _answer(conn, None)
                continue
            ranks = sorted((rank, host) for rank, host, _ in members)
            for _, _, member in members:
                _answer(member, ranks)


def _answer(conn: socket.socket, ranks: list | None) -> None:
    with contextlib.suppress(OSError):
        wire.send(conn, ranks)
    conn.close()


def join(address: tuple, token: bytes, gang: int, rank: int, host: str) -> list | None:
    """On a member's rank: meet the others of ``gang`` at the driver's ``address``;
    the ``(rank, host)`` of every member in rank order, or None if the gang was
    cancelled."""
    driver, port = address
    with socket.create_connection(("127.0.0.1" if driver == host else driver, port)) as conn:
        conn.sendall(token)
        wire.send(conn, (gang, rank, host))
        return wire.recv(conn)


class SpmdCall:
    """One member's call of an SPMD node: on the rank ``rank`` of ``members`` (the
    ``(rank, host)`` of each rank of the gang, in ``within``: ``"workers"``, the
    communicator of ``mpi4py.futures``' workers, or ``"world"``, the ``COMM_WORLD``
    of the ``mpiexec`` job that started a spawning executor's ranks), it makes the
    gang's communicator, calls ``func`` on it inside an allocation of the gang's
    cores and hosts, agrees with the other members (with a ``grace``: in the
    ranks of a spawning executor, whose pool kills the members still running
    when one fails, ``grace`` is None and they do not wait for each other) and
    frees the communicator.
    Its value is ``func``'s on rank 0 of the gang, None on the others; what
    ``func`` raised, on the rank where it was raised."""

    __slots__ = ("func", "grace", "label", "members", "tag", "within")

    def __init__(self, func, members: list, within: str, tag: int, label: str, grace: float | None):
        self.func = func
        self.members = members
        self.within = within
        self.tag = tag
        self.label = label
        self.grace = grace

    def __reduce__(self):
        return (SpmdCall, (self.func, self.members, self.within, self.tag, self.label, self.grace))

    def __call__(self, *args, **kwargs):
        from mpi4py import MPI

        if self.within == "workers":
            from mpi4py.futures import get_comm_workers

            parent = get_comm_workers()
        else:
            parent = MPI.COMM_WORLD
        whole = parent.Get_group()
        group = whole.Incl([rank for rank, _ in self.members])
        whole.Free()
        comm = parent.Create_group(group, self.tag % GANG_TAGS)
        group.Free()
        try:
            func, kwargs = self._on(comm, kwargs)
            error = None
            try:
                value = func(*args, **kwargs) if kwargs else func(*args)
            except BaseException as exc:  # every rank hears of it; the driver gets it
                error = exc
            if self.grace is not None:
                agree(comm, self.label, None if error is None else error_text(failure(error)[1]), self.grace)
            if error is not None:
                raise error
            return value if comm.Get_rank() == 0 else None  # rank 0's value is the node's
        finally:
            comm.Free()

    def _on(self, comm, kwargs: dict | None) -> tuple:
        """The node's function and keyword arguments on ``comm``: inside an
        allocation of the gang's cores and hosts, ``comm`` passed where the
        function takes one; on a rank other than 0, without storing the value."""
        func = self.func
        hosts = tuple(Counter(host for _, host in self.members).items())  # in rank order
        inner = func.__wrapped__ if isinstance(func, Allocated) else func
        if comm.Get_rank() != 0 and isinstance(inner, StoredCall):
            inner = inner.__wrapped__  # only rank 0's value is stored
        allocated = Allocated(inner, Allocation(len(self.members), hosts, comm), environment=True)
        return allocated, with_comm(inner, kwargs, comm)


class GangRun:
    """One SPMD node on its way: the answers of its members as they come back."""

    __slots__ = ("gang", "job", "members", "outcomes", "size")

    def __init__(self, job, gang: int, size: int):
        self.job = job
        self.gang = gang
        self.size = size
        self.members: list = []  # a pool's job for each member, where the pool sends them itself
        self.outcomes: dict[int, tuple] = {}  # rank in the gang -> (ok, value) as the worker encodes it

    def add(self, rank: int, outcome: tuple) -> bool:
        """A member's outcome; True once every member's is in."""
        self.outcomes[rank] = outcome
        return len(self.outcomes) >= self.size

    def outcome(self) -> tuple[tuple, int | None]:
        """The node's outcome (as its members' were given) and the rank it is from
        when it is a failure (None: it succeeded)."""
        for rank in sorted(self.outcomes):
            ok, _ = self.outcomes[rank]
            if not ok:
                return self.outcomes[rank], rank
        return self.outcomes[0], None

    def failure(self, exc: BaseException, tb: str, rank: int) -> tuple:
        """``(exception, traceback)`` of the node when ``exc`` was raised on ``rank``."""
        where = f"rank {rank} of the {self.size} ranks of the node"
        if hasattr(exc, "add_note"):
            exc.add_note(f"(raised on {where})")
        return exc, f"raised on {where}:\n{tb}"
