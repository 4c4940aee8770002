"""Executors: one short file per backend over the engine."""

from .aio import AsyncExecutor
from .base import Executor
from .pools import PoolExecutor, ThreadExecutor
from .serial import SerialExecutor

__all__ = ["AsyncExecutor", "Executor", "PoolExecutor", "SerialExecutor", "ThreadExecutor"]
