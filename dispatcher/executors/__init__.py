"""Executors: one short file per backend over the engine."""

from .aio import AsyncExecutor
from .base import Executor
from .dask import DaskExecutor
from .mpi import MPIExecutor
from .pools import PoolExecutor, ThreadExecutor
from .process import ParallelExecutor, ProcessExecutor
from .serial import SerialExecutor
from .serial_mpi import SerialMPIExecutor

__all__ = [
    "AsyncExecutor",
    "DaskExecutor",
    "Executor",
    "MPIExecutor",
    "ParallelExecutor",
    "PoolExecutor",
    "ProcessExecutor",
    "SerialExecutor",
    "SerialMPIExecutor",
    "ThreadExecutor",
]
