"""The engine: what a run decides, in one place, whatever executes the nodes.

A run is planned (:mod:`~dispatcher.engine.plan`: which nodes run, what each waits
for, no cycle), then advanced as one sans-I/O state machine
(:mod:`~dispatcher.engine.state`: one explicit state per node, retries as
:mod:`~dispatcher.engine.retries` says, one clock for deadlines and backoff) by one
driver loop (:mod:`~dispatcher.engine.driver`) with a blocking and an asyncio
adapter. Executors only start a :class:`Task` and report its outcome once; they
are told about a run through the frozen :class:`RunOptions`, and callbacks
(:mod:`~dispatcher.engine.callbacks`) hear of each node as it happens.

Each module states its policy; the state machine's states, transitions and fields
are listed in :mod:`dispatcher.engine.state`.
"""

from .callbacks import Callback
from .driver import drive, drive_async
from .records import RunOptions, Task, timeout_error
from .retries import Backoff
from .state import NodeState, RunState

__all__ = [
    "Backoff",
    "Callback",
    "NodeState",
    "RunOptions",
    "RunState",
    "Task",
    "drive",
    "drive_async",
    "timeout_error",
]
