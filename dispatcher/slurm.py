"""What a Slurm allocation says about itself, read from the environment.

Inside a job (``sbatch``, ``salloc``, ``srun``) Slurm sets ``SLURM_JOB_ID``, the
number of tasks (``SLURM_NTASKS``, older ``SLURM_NPROCS``, or, failing both, the
tasks per node ``SLURM_TASKS_PER_NODE`` such as ``"2(x3),1"``), the nodes
(``SLURM_JOB_NODELIST`` such as ``"node[01-03,07],gpu1"``), the CPUs of the job
on each node (``SLURM_JOB_CPUS_PER_NODE``, in the same form as the tasks per
node), on this node (``SLURM_CPUS_ON_NODE``) and per task (``SLURM_CPUS_PER_TASK``),
and the name of this node (``SLURMD_NODENAME``). :func:`slurm_allocation` reads
them without calling any Slurm command, so it works on compute nodes and in tests
alike; :func:`usable_cores` gives the cores a process may use, in a job or not.
"""

from __future__ import annotations

import os
import re
import socket

import attrs

__all__ = [
    "SlurmAllocation",
    "expand_nodelist",
    "slurm_allocation",
    "tasks_per_node",
    "this_host",
    "usable_cores",
]


@attrs.frozen
class SlurmAllocation:
    """The job this process runs in."""

    job_id: str
    ntasks: int | None
    nodes: tuple[str, ...]
    cpus_per_task: int | None
    cpus_per_node: tuple[int, ...] = ()
    """The job's CPUs on each of ``nodes``, in order (empty if Slurm did not say)."""
    cpus_on_node: int | None = None
    """The job's CPUs on the node this process runs on."""
    node_name: str | None = None
    """The name of the node this process runs on, as Slurm knows it."""
    in_step: bool = False
    """This process is a task of a job step (``srun``), not the batch script."""

    @property
    def hosts(self) -> tuple[tuple[str, int], ...]:
        """``(node, CPUs)`` of each node of the job, for a host or parameter file."""
        if len(self.cpus_per_node) != len(self.nodes):
            return tuple((node, self.cpus_on_node or 1) for node in self.nodes)
        return tuple(zip(self.nodes, self.cpus_per_node))

    def describe(self) -> str:
        more = len(self.nodes) - 4
        hosts = ", ".join(self.nodes[:4]) + (f" and {more} more" if more > 0 else "")
        tasks = f"{self.ntasks} tasks" if self.ntasks is not None else "an unknown number of tasks"
        return f"Slurm job {self.job_id}: {tasks} on {len(self.nodes) or '?'} node(s) ({hosts or 'unknown'})"


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p]


def expand_nodelist(nodelist: str) -> list[str]:
    """Host names of a Slurm node list: ``"node[01-03,07],gpu1"`` gives
    ``["node01", "node02", "node03", "node07", "gpu1"]``.

    >>> expand_nodelist("cn[1-2]-ib,login")
    ['cn1-ib', 'cn2-ib', 'login']
    """
    hosts: list[str] = []
    for part in _split_top(nodelist.strip()):
        match = re.match(r"^([^\[]*)\[([^\]]*)\](.*)$", part)
        if match is None:
            hosts.append(part)
            continue
        prefix, ranges, rest = match.groups()
        for tail in expand_nodelist(rest) if rest else [""]:
            for item in ranges.split(","):
                lo, _, hi = item.partition("-")
                if not hi:
                    hosts.append(f"{prefix}{lo}{tail}")
                    continue
                width = len(lo)
                for n in range(int(lo), int(hi) + 1):
                    hosts.append(f"{prefix}{n:0{width}d}{tail}")
    return hosts


def tasks_per_node(spec: str) -> list[int]:
    """Tasks (or CPUs) on each node from ``SLURM_TASKS_PER_NODE`` (or
    ``SLURM_JOB_CPUS_PER_NODE``): ``"2(x3),1"`` gives ``[2, 2, 2, 1]``.

    >>> tasks_per_node("2(x3),1")
    [2, 2, 2, 1]
    """
    counts: list[int] = []
    for item in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if match is None:
            raise ValueError(f"cannot read SLURM_TASKS_PER_NODE={spec!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def _int(environ, *names: str) -> int | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def slurm_allocation(environ=None) -> SlurmAllocation | None:
    """The Slurm job this process runs in, or None outside Slurm.

    >>> job = slurm_allocation({"SLURM_JOB_ID": "42", "SLURM_TASKS_PER_NODE": "4(x2)",
    ...                         "SLURM_JOB_NODELIST": "cn[07-08]", "SLURM_JOB_CPUS_PER_NODE": "8,4"})
    >>> job.ntasks, job.nodes, job.hosts
    (8, ('cn07', 'cn08'), (('cn07', 8), ('cn08', 4)))
    """
    env = os.environ if environ is None else environ
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job_id:
        return None
    ntasks = _int(env, "SLURM_NTASKS", "SLURM_NPROCS")
    if ntasks is None and env.get("SLURM_TASKS_PER_NODE"):
        try:
            ntasks = sum(tasks_per_node(env["SLURM_TASKS_PER_NODE"]))
        except ValueError:
            ntasks = None
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    try:
        nodes = tuple(expand_nodelist(nodelist)) if nodelist else ()
    except ValueError:
        nodes = (nodelist,)
    try:
        per_node = (
            tuple(tasks_per_node(env["SLURM_JOB_CPUS_PER_NODE"]))
            if env.get("SLURM_JOB_CPUS_PER_NODE")
            else ()
        )
    except ValueError:
        per_node = ()
    return SlurmAllocation(
        job_id,
        ntasks,
        nodes,
        _int(env, "SLURM_CPUS_PER_TASK"),
        cpus_per_node=per_node,
        cpus_on_node=_int(env, "SLURM_CPUS_ON_NODE"),
        node_name=env.get("SLURMD_NODENAME") or None,
        in_step=bool(env.get("SLURM_STEP_ID")),
    )


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def usable_cores(environ=None) -> int:
    """The cores this process may use: its CPU affinity, and in a Slurm job no more
    than the job has on this node (``SLURM_CPUS_ON_NODE``), nor, in a task of a
    job step, than each task has (``SLURM_CPUS_PER_TASK``).

    >>> usable_cores({"SLURM_JOB_ID": "1", "SLURM_CPUS_ON_NODE": "1"})
    1
    """
    usable = _affinity()
    alloc = slurm_allocation(environ)
    if alloc is None:
        return usable
    limits = [alloc.cpus_on_node]
    if alloc.in_step:
        limits.append(alloc.cpus_per_task)
    return max(1, min([usable] + [n for n in limits if n]))


def this_host(environ=None) -> str:
    """This node's name: Slurm's name for it in a job, else the short host name."""
    env = os.environ if environ is None else environ
    return env.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]
