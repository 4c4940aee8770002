"""dispatcher: build computation graphs from plain function calls, run them anywhere.

A port of Julia's Dispatcher.jl. Calls deferred with :class:`Op` (or the
:func:`op` decorator) become nodes; the nodes' arguments say what depends on what;
:func:`run` and :func:`execute` run the resulting graph on an interchangeable
executor.

>>> import dispatcher as dp
>>> @dp.op
... def add(x, y):
...     return x + y
>>> total = add(add(1, 2), 10)
>>> dp.execute(total, dp.ThreadExecutor())
13
"""

from .api import execute, run, run_async
from .attempts import Attempt
from .decorator import op
from .engine import Backoff, Callback, ProgressBar
from .executors import (
    AsyncExecutor,
    DaskExecutor,
    Executor,
    MPIExecutor,
    ParallelExecutor,
    PoolExecutor,
    ProcessExecutor,
    SerialExecutor,
    SerialMPIExecutor,
    ThreadExecutor,
)
from .graph import DispatchGraph
from .node_allocation import Allocation, allocation
from .nodes import CollectNode, DataNode, DispatchNode, IndexNode, Op
from .programs import CommandError, CommandResult, command
from .results import (
    DependencyError,
    DispatcherError,
    DispatchResult,
    ExecutorError,
    RemoteError,
    Terminated,
    WorkerLostError,
    is_worker_lost,
)
from .slurm import SlurmAllocation, slurm_allocation
from .store import FileStore, Store
from .trace import Trace

__version__ = "0.1.0"

__all__ = [
    "Allocation",
    "AsyncExecutor",
    "Attempt",
    "Backoff",
    "Callback",
    "CollectNode",
    "CommandError",
    "CommandResult",
    "DaskExecutor",
    "DataNode",
    "DependencyError",
    "DispatchGraph",
    "DispatchNode",
    "DispatchResult",
    "DispatcherError",
    "Executor",
    "ExecutorError",
    "FileStore",
    "IndexNode",
    "MPIExecutor",
    "Op",
    "ParallelExecutor",
    "PoolExecutor",
    "ProcessExecutor",
    "ProgressBar",
    "RemoteError",
    "SerialExecutor",
    "SerialMPIExecutor",
    "SlurmAllocation",
    "Store",
    "Terminated",
    "ThreadExecutor",
    "Trace",
    "WorkerLostError",
    "allocation",
    "command",
    "execute",
    "is_worker_lost",
    "op",
    "run",
    "run_async",
    "slurm_allocation",
]
