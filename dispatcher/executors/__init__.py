"""Executors: one short file per backend over the engine."""

from .aio import AsyncExecutor
from .base import Executor
from .dask import DaskExecutor
from .pools import PoolExecutor, ThreadExecutor
from .process import ParallelExecutor, ProcessExecutor
from .serial import SerialExecutor

__all__ = [
    "AsyncExecutor",
    "DaskExecutor",
    "Executor",
    "ParallelExecutor",
    "PoolExecutor",
    "ProcessExecutor",
    "SerialExecutor",
    "ThreadExecutor",
]
