"""Pharmpy's tools on a dispatcher executor: a Pharmpy dispatcher.

Policy: Pharmpy runs a tool as a workflow, a dask graph
(``workflow.as_dask_dict()`` with the tool's result under ``"results"``), and its
tasks start more workflows from inside a running task, through the dispatcher
their context names. :class:`ExecutorDispatcher` runs each workflow with
``executor.get``, the executor as a dask scheduler, so a workflow is one
dispatcher run with the executor's retries and timeouts; a workflow started
from inside a task is a nested run on the same executor, which lends it the
slot of the task that waits for it. Both need the tasks to run in this process
(``executor.capabilities.in_process``: the serial, thread and asyncio
executors), which is also how Pharmpy's own dask dispatcher runs them (threads of
one local worker); any other executor is refused with the reason. As Pharmpy's
dispatchers do, a run takes place in a temporary working directory, and SIGINT or
SIGTERM abort the workflow through its context. A fit is given all the cores
(``get_available_cores``) on an executor that runs one task at a time, one core
otherwise.

Pharmpy picks its dispatcher by name from a fixed list (``local_dask``,
``local_serial``), in the driver and again inside tasks. :func:`use_executor`
makes its name (``"dispatcher"``), and Pharmpy's default, select this
dispatcher until the ``with`` block ends, by replacing Pharmpy's
``Dispatcher.select_dispatcher`` and ``Dispatcher.canonicalize_dispatcher_name``
for the process. For Pharmpy to accept a third dispatcher without this, it would
need to take a ``Dispatcher`` instance where it takes a name, or look names up in
a registry that others can add to (an entry point group).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from pharmpy.workflows import Workflow, WorkflowBuilder
from pharmpy.workflows.dispatchers.baseclass import AbortWorkflowException, Dispatcher, SigHandler
from pharmpy.workflows.dispatchers.slurm_helpers import (
    get_slurm_nodedict,
    get_slurm_nodename,
    is_running_on_slurm,
)
from pharmpy.workflows.workflow import insert_context

__all__ = ["NAME", "ExecutorDispatcher", "use_executor"]

NAME = "dispatcher"
"""The dispatcher name that :func:`use_executor` makes Pharmpy accept."""


class ExecutorDispatcher(Dispatcher):
    """Pharmpy's ``Dispatcher`` interface over ``executor`` (see the module docstring)."""

    def __init__(self, executor: Any):
        if not executor.capabilities.in_process:
            raise ValueError(
                f"{type(executor).__name__} runs its tasks in other processes, where Pharmpy's "
                "tasks cannot start the nested workflows of a tool on it; use SerialExecutor, "
                "ThreadExecutor or AsyncExecutor (Pharmpy's own dask dispatcher runs its tasks "
                "in threads too)"
            )
        self.executor = executor

    def run(self, workflow: Workflow, context) -> Any:
        with tempfile.TemporaryDirectory() as workdir, contextlib.chdir(workdir):
            context.log_info(f"Dispatching workflow with {self.executor!r} in {context}")
            with SigHandler(context):
                try:
                    result = self.executor.get(workflow.as_dask_dict(), "results")
                except AbortWorkflowException:
                    result = None
            context.log_info("End dispatch")
        return result

    def call_workflow(self, wf: Workflow, unique_name: str, context) -> Any:
        builder = WorkflowBuilder(wf)
        insert_context(builder, context)
        return self.executor.get(Workflow(builder).as_dask_dict(), "results")

    def abort_workflow(self):
        raise AbortWorkflowException

    def get_hosts(self) -> dict[str, int]:
        if is_running_on_slurm():
            return get_slurm_nodedict()
        return {"localhost": os.cpu_count() or 1}

    def get_hostname(self) -> str:
        return get_slurm_nodename() if is_running_on_slurm() else "localhost"

    def get_available_cores(self, allocation: int) -> int:
        return allocation if self.executor.capabilities.synchronous else 1


@contextlib.contextmanager
def use_executor(executor: Any) -> Iterator[ExecutorDispatcher]:
    """Within the block, Pharmpy's tools given ``dispatcher="dispatcher"`` (or no
    dispatcher) run on ``executor``::

        with use_executor(ex):
            res = run_modelsearch(model=..., results=..., dispatcher="dispatcher")

    The replacement is for the whole process and undone when the block ends."""
    chosen = ExecutorDispatcher(executor)
    select, canonicalize = (
        Dispatcher.__dict__["select_dispatcher"],
        Dispatcher.__dict__["canonicalize_dispatcher_name"],
    )

    def ours(name: str | None) -> bool:
        return name is None or name.lower() == NAME

    def select_dispatcher(name):
        return chosen if ours(name) else select.__func__(name)

    def canonicalize_dispatcher_name(name):
        return NAME if ours(name) else canonicalize.__func__(name)

    Dispatcher.select_dispatcher = staticmethod(select_dispatcher)
    Dispatcher.canonicalize_dispatcher_name = staticmethod(canonicalize_dispatcher_name)
    try:
        yield chosen
    finally:
        Dispatcher.select_dispatcher = select
        Dispatcher.canonicalize_dispatcher_name = canonicalize
