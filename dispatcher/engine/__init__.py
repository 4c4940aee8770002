"""The engine: what a run decides, in one place, whatever executes the nodes.

A run is planned (:mod:`~dispatcher.engine.plan`: which nodes run, what each waits
for, no cycle), then advanced as one sans-I/O state machine
(:mod:`~dispatcher.engine.state`: one explicit state per node, retries as
:mod:`~dispatcher.engine.retries` says, one clock for deadlines and backoff) by one
driver loop (:mod:`~dispatcher.engine.driver`) with a blocking and an asyncio
adapter. Executors only start a :class:`Task` and report its outcome once; they
are told about a run through the frozen :class:`RunOptions`, and callbacks
(:mod:`~dispatcher.engine.callbacks`) hear of each node as it happens.

The state machine's states, transitions and fields are listed in
:mod:`dispatcher.engine.state`; planning, retrying, pipelining and driving state
their own rules in their modules.

Policy
------
Ready nodes sit on a last-in-first-out stack, as in dask's local scheduler: the run
goes depth first, finishing chains before it starts new ones, which keeps few
intermediate values alive. A ready node becomes a :class:`~dispatcher.engine.Task`
(its function and arguments, dependency values substituted) that the executor
starts and reports back once with ``done(task, ok, payload)``. *Light* nodes
(indexing, collecting, data) are computed by the engine itself unless the executor
wants them, and so is every untimed node for an executor that ``runs_inline``.

A failure is retried as :mod:`dispatcher.engine.retries` says, after a backoff
delay. Otherwise the node fails with a :class:`~dispatcher.DependencyError`, and
that same error is handed to every node downstream: each finishes as failed,
without running, once its other dependencies have finished. With
``throw_error=True`` the first failure ends the run: nothing more starts, running
tasks are cancelled and awaited, and the error is raised. With ``throw_error=False``
everything that does not depend on a failure still runs.

**One clock.** The state alone decides that a deadline has passed
(:meth:`~dispatcher.engine.RunState.expire`): a task still running ``timeout``
seconds after it started fails with ``TimeoutError`` (or is retried), the driver
asks the executor to cancel its work, and a late answer from that attempt is
ignored. A task starts when it is handed to the executor, or, for an executor that
says when a task's work begins where it runs (``task.started``: a pool whose
workers take queued tasks), then. An executor that cannot be interrupted from
outside (a node running in the calling thread, or on an MPI rank) may stop the work
where it runs at the same deadline; the error is the same
(:func:`~dispatcher.engine.timeout_error`).

With ``release=True`` a finished value is dropped as soon as every node that needs
it has finished, unless it is an output; such a node's ``fetch()`` then says its
value was released. By default every node keeps the value of its latest run, as in
Dispatcher.jl.

An **open run** (:mod:`dispatcher.engine.openrun`) takes more nodes while it
runs, and forgets each once no node needs it: it serves an executor's ``submit``.

**Pipelining** (``RunOptions.pipelined``) is a policy of the same machine, whose
rules are in :mod:`dispatcher.engine.pipelining`: a node is sent once its
dependencies are sent, and the SENT and PARKED states are used.
"""

from .callbacks import Callback, ProgressBar
from .driver import drive, drive_async
from .records import RunOptions, Task, timeout_error
from .retries import Backoff
from .state import NodeState, RunState

__all__ = [
    "Backoff",
    "Callback",
    "NodeState",
    "ProgressBar",
    "RunOptions",
    "RunState",
    "Task",
    "drive",
    "drive_async",
    "timeout_error",
]
