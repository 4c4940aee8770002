"""What a Slurm allocation says about itself.

Inside a job (``sbatch``, ``salloc``, ``srun``) Slurm sets ``SLURM_JOB_ID``, the
number of tasks (``SLURM_NTASKS``, older ``SLURM_NPROCS``, or, failing both, the
tasks per node ``SLURM_TASKS_PER_NODE`` such as ``"2(x3),1"``), the nodes
(``SLURM_JOB_NODELIST`` such as ``"node[01-03,07],gpu1"``), the CPUs of the job
on each node (``SLURM_JOB_CPUS_PER_NODE``, in the same form as the tasks per
node), on this node (``SLURM_CPUS_ON_NODE``) and per task (``SLURM_CPUS_PER_TASK``),
and the name of this node (``SLURMD_NODENAME``). :func:`slurm_allocation` reads
them; :func:`usable_cores` gives the cores a process may use, in a job or not.

Policy: the environment is the source, read with the tools made for it: a node
list is expanded by ``scontrol show hostnames`` where Slurm's commands are
installed, else by the ``python-hostlist`` package (compute nodes and containers
without them), which gives the same names in the same order; counts per node
are read by ``python-hostlist`` too. Reading an allocation works on every node
of a job and costs at most one ``scontrol`` call per node list (of at most 5 s:
``scontrol`` answers from the list itself, though a configless cluster's first
call fetches the configuration).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
import subprocess

import attrs

logger = logging.getLogger(__name__)

__all__ = [
    "SlurmAllocation",
    "expand_nodelist",
    "parse_nodelist",
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

    @property
    def reaches_other_hosts(self) -> bool:
        """Some of the job's nodes are not the one this process runs on (a job of
        several nodes, or ``salloc`` run on a login node): ranks or workers started
        through Slurm may run on another host."""
        if not self.nodes:
            return False
        return self.node_name is None or any(node != self.node_name for node in self.nodes)

    def describe(self) -> str:
        more = len(self.nodes) - 4
        hosts = ", ".join(self.nodes[:4]) + (f" and {more} more" if more > 0 else "")
        tasks = f"{self.ntasks} tasks" if self.ntasks is not None else "an unknown number of tasks"
        return f"Slurm job {self.job_id}: {tasks} on {len(self.nodes) or '?'} node(s) ({hosts or 'unknown'})"


def expand_nodelist(nodelist: str) -> list[str]:
    """Host names of a Slurm node list: ``"node[01-03,07],gpu1"`` gives
    ``["node01", "node02", "node03", "node07", "gpu1"]``.

    Read as Slurm reads it: by ``scontrol show hostnames`` where the command is
    on ``PATH`` (a login or compute node with Slurm's tools), else by the
    ``python-hostlist`` package (a compute node without them, a container); the
    two agree (``tests/slurm``). A list neither can read raises ``ValueError``.

    >>> expand_nodelist("cn[1-2],login")
    ['cn1', 'cn2', 'login']
    """
    return list(_expand_nodelist(nodelist.strip()))


@functools.cache  # one scontrol per node list: a job's list does not change
def _expand_nodelist(nodelist: str) -> tuple[str, ...]:
    if not nodelist:
        return ()
    scontrol = shutil.which("scontrol")
    if scontrol is not None:
        try:
            done = subprocess.run(
                [scontrol, "show", "hostnames", nodelist], capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.SubprocessError) as exc:
            logger.debug("scontrol show hostnames %s failed (%s): reading it here", nodelist, exc)
        else:
            if done.returncode == 0 and done.stdout.split():
                return tuple(done.stdout.split())
            logger.debug("scontrol show hostnames %s: %s", nodelist, done.stderr.strip())
    return tuple(parse_nodelist(nodelist))


def parse_nodelist(nodelist: str) -> list[str]:
    """A Slurm node list read without Slurm's commands (by ``python-hostlist``), in
    Slurm's order and with its repeats: what ``scontrol show hostnames`` prints.

    >>> parse_nodelist("r[1-2]n[08-09]")
    ['r1n08', 'r1n09', 'r2n08', 'r2n09']
    """
    import hostlist

    try:
        return hostlist.expand_hostlist(nodelist, allow_duplicates=True)
    except hostlist.BadHostlist as exc:
        raise ValueError(f"cannot read the Slurm node list {nodelist!r}: {exc}") from exc


def tasks_per_node(spec: str) -> list[int]:
    """Tasks (or CPUs) on each node from ``SLURM_TASKS_PER_NODE`` (or
    ``SLURM_JOB_CPUS_PER_NODE``): ``"2(x3),1"`` gives ``[2, 2, 2, 1]``.

    >>> tasks_per_node("2(x3), 1")
    [2, 2, 2, 1]
    """
    import hostlist

    try:
        return [int(n) for n in hostlist.parse_slurm_tasks_per_node("".join(spec.split()))]
    except (hostlist.BadHostlist, ValueError) as exc:
        raise ValueError(f"cannot read the Slurm counts per node {spec!r}") from exc


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
