"""What a node was given to run with: its cores, its hosts, its communicator.

A node that asks for cores (``@dp.op(cores=...)``, :mod:`dispatcher.engine.cores`)
runs inside an :class:`Allocation` that says what the run granted it; inside the
node, :func:`allocation` returns it::

    @dp.op(cores=(1, 16))
    def fit(model):
        alloc = dp.allocation()
        run_program(model, ncores=alloc.cores, hosts=alloc.hosts)

Policy
------
* The allocation is set for the duration of the call, in the thread (or asyncio
  task) that runs it, by :class:`Allocated`, the wrapper the engine puts around
  the node's function; outside such a call, :func:`allocation` gives one core of
  this host (what a node that asks for none gets).
* Where the call runs in a process of its own for the time of the call (a worker
  process, an MPI rank, a dask worker), ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``
  and ``OPENBLAS_NUM_THREADS`` are set to its cores for the call and put back
  after (on each rank of an SPMD node, to its share: one core per rank), so
  that numeric libraries and the programs it starts use what it was given. In
  the driver's own process (threads, asyncio) the environment is shared by every
  node and is left alone: pass ``alloc.cores`` on.
* ``hosts`` lists ``(host, cores)``: for a node of an executor on one machine,
  this host and the node's cores; for an SPMD node of ``MPIExecutor``, the hosts of
  its ranks. ``comm`` is the node's MPI communicator, where it has one.
"""

from __future__ import annotations

import contextvars
import inspect
import os
from typing import Any

import attrs

from .slurm import this_host

__all__ = ["THREAD_VARIABLES", "Allocated", "Allocation", "allocation", "lender"]

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""The environment variables set to a node's cores where it runs in a process of its own."""


@attrs.frozen
class Allocation:
    """What a node was given: ``cores``, ``hosts`` as ``(host, cores)`` pairs, and
    ``comm``, its MPI communicator (None elsewhere)."""

    cores: int
    hosts: tuple[tuple[str, int], ...]
    comm: Any = attrs.field(default=None, eq=False)

    @property
    def threads(self) -> int:
        """The cores of each process that calls the node: all of them, or, for an
        SPMD node whose ``comm`` spans several ranks, an equal share per rank."""
        if self.comm is None:
            return self.cores
        return max(1, self.cores // self.comm.Get_size())

    def hostfile(self, path: str, style: str = "mpich") -> str:
        """Write the hosts to ``path`` as an MPI host file, one host a line:
        ``host:cores`` (``style="mpich"``, Hydra's form) or ``host slots=cores``
        (``"openmpi"``); returns ``path``."""
        forms = {"mpich": "{}:{}", "openmpi": "{} slots={}"}
        if style not in forms:
            raise ValueError(f"style must be one of {sorted(forms)}, got {style!r}")
        with open(path, "w") as f:
            f.writelines(forms[style].format(host, n) + "\n" for host, n in self.hosts)
        return path


_current: contextvars.ContextVar[Allocation | None] = contextvars.ContextVar(
    "dispatcher_allocation", default=None
)
_lender: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("dispatcher_lender", default=None)


def allocation() -> Allocation:
    """What the node being run was given (see the module's docstring); outside a
    node that asked for cores, one core of this host."""
    found = _current.get()
    if found is not None:
        return found
    return Allocation(1, ((this_host(), 1),))


def lender() -> tuple | None:
    """``(budget, cores)`` of the node being run here, on an executor of this process
    (:func:`dispatcher.engine.cores.lend_cores` lends them to a nested run)."""
    return _lender.get()


class Allocated:
    """``func`` called inside ``allocation``; with ``environment``, the thread
    variables of the process are set to its cores for the call. ``lender``, for a
    call in the driver's process, is the budget its cores were taken from."""

    __slots__ = ("__wrapped__", "allocation", "environment", "lender")

    def __init__(self, func, allocation: Allocation, environment: bool, lender: Any = None):
        self.__wrapped__ = func  # what the job queue's estimates are kept under
        self.allocation = allocation
        self.environment = environment
        self.lender = lender

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        token = _current.set(self.allocation)
        lent = _lender.set((self.lender, self.allocation.cores) if self.lender is not None else None)
        saved = _set_threads(self.allocation.threads) if self.environment else None
        try:
            value = self.__wrapped__(*args, **kwargs)
        finally:
            _current.reset(token)
            _lender.reset(lent)
            if saved is not None:
                _restore(saved)
        if inspect.iscoroutine(value):  # an async def node: the allocation holds while it runs
            return self._awaited(value)
        return value

    async def _awaited(self, coroutine) -> Any:
        token = _current.set(self.allocation)
        lent = _lender.set((self.lender, self.allocation.cores) if self.lender is not None else None)
        try:
            return await coroutine
        finally:
            _current.reset(token)
            _lender.reset(lent)

    def __reduce__(self):  # to another process: the budget stays here
        return (Allocated, (self.__wrapped__, self.allocation, self.environment))

    def __repr__(self) -> str:
        return f"<Allocated {self.allocation.cores} core(s): {self.__wrapped__!r}>"


def _set_threads(cores: int) -> dict:
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    for name in THREAD_VARIABLES:
        os.environ[name] = str(cores)
    return saved


def _restore(saved: dict) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
