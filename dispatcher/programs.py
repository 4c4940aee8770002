"""Nodes that run programs: :func:`command`.

``dp.command(["nmfe", "run.mod", "run.lst", "-parafile={hostfile}"], cores=(1, 8))``
makes a node that runs a program, the way Pharmpy runs NONMEM, with what the run
gave it filled in.

Policy
------
* ``args`` is the program and its arguments, a list (or a string, split as the
  shell would, with :func:`shlex.split`). Nodes among them are dependencies, their
  values put in their place (a file made upstream). In each argument,
  ``{cores}`` becomes the node's cores, ``{hosts}`` its hosts separated by commas,
  and ``{hostfile}`` the path of a file listing them (``host:cores`` a line,
  :meth:`~dispatcher.Allocation.hostfile`), written for the call and removed after;
  other braces are left as they are.
* The program's environment is this process's, with the node's thread variables
  (``OMP_NUM_THREADS`` and the others) set to its cores, then ``env``.
* Its output and error streams are captured to files, so that a program that
  leaves something running with them open does not hold the node, and come back
  in the :class:`CommandResult`. A non-zero exit fails the node with a
  :class:`CommandError` that carries the last lines of the error stream.
* The program runs in a process group of its own, and nothing of it outlives its
  node: the group is ended (SIGTERM, then SIGKILL) when the program exits (what it
  left running), at the node's ``timeout`` (a ``TimeoutError``), when the run gives
  the node up (a failure elsewhere with ``throw_error=True``, Ctrl-C: the engine
  stops a call in the driver's process; a worker process is killed), and, by the
  process's guard (:mod:`dispatcher.guard`), when the process that started it
  dies. On ``DaskExecutor`` a call the run gave up runs on to its end or its
  timeout: dask cannot stop a task.
"""

from __future__ import annotations

import itertools
import os
import shlex
import subprocess
import tempfile
import threading
import time
from typing import Any

import attrs

from .checks import check_cores, check_retries, check_timeout, retry_predicates
from .guard import kill_group, start_guard, unwatch, watch
from .node_allocation import THREAD_VARIABLES, allocation
from .nodes import Op

__all__ = ["CommandError", "CommandResult", "command"]

TAIL_LINES = 20  # lines of the error stream a CommandError carries
_hostfiles = itertools.count()


@attrs.frozen
class CommandResult:
    """What a program gave: the arguments it ran with, its exit code, its output and
    error streams (text), and the seconds it ran."""

    args: tuple
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class CommandError(Exception):
    """A program exited with a non-zero code (or was stopped by a signal)."""

    def __init__(self, args: tuple, returncode: int, stderr: str):
        self.command = args
        self.returncode = returncode
        self.stderr = stderr
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with code {returncode}"
        tail = "\n".join(stderr.rstrip().splitlines()[-TAIL_LINES:])
        more = f"; its error stream ends with:\n{tail}" if tail else " and wrote nothing to its error stream"
        super().__init__(f"command {shlex.join(map(str, args))!r} {how}{more}")

    def __reduce__(self):
        return (CommandError, (self.command, self.returncode, self.stderr))


class Command:
    """The call of a :func:`command` node: runs the program (see the module's
    docstring); ``__dispatcher_stop__`` ends the program of a call under way."""

    __slots__ = ("_lock", "_running", "cwd", "env", "timeout")

    def __init__(self, cwd: str | None, env: dict | None, timeout: float | None):
        self.cwd = cwd
        self.env = env
        self.timeout = timeout
        self._running: set = set()  # the calls under way (_Call)
        self._lock = threading.Lock()

    def __call__(self, args) -> CommandResult:
        call = _Call()  # under way from now on: a stop from here on ends its program
        with self._lock:
            self._running.add(call)
        try:
            return self._prepare(call, args)
        finally:
            with self._lock:
                self._running.discard(call)

    def _prepare(self, call: _Call, args) -> CommandResult:
        alloc = allocation()
        hostfile = None
        if any("{hostfile}" in str(a) for a in args):
            folder = self.cwd or tempfile.gettempdir()
            hostfile = alloc.hostfile(os.path.join(folder, f".hostfile.{os.getpid()}.{next(_hostfiles)}"))
        hosts = ",".join(host for host, _ in alloc.hosts)
        argv = tuple(_fill(str(a), alloc.cores, hosts, hostfile) for a in args)
        env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(alloc.cores)), **(self.env or {})}
        try:
            return self._run(call, argv, env)
        finally:
            if hostfile is not None:
                os.unlink(hostfile)

    def _run(self, call: _Call, argv: tuple, env: dict) -> CommandResult:
        start_guard()  # (first, so that the program's group is watched as soon as it starts)
        start = time.monotonic()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own group: it and all it starts end together
            )
            group = proc.pid
            with self._lock:
                call.group = group
                stopped = call.stopped
            try:
                watch(group)
                if stopped:  # the run gave the call up while its program started
                    kill_group(group, reap=proc.poll)
                proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                kill_group(group, reap=proc.poll)
                proc.wait()
                raise TimeoutError(
                    f"command {shlex.join(argv)!r} ran longer than its timeout of {self.timeout} s "
                    f"and was killed{_tail(err)}"
                ) from None
            except BaseException:  # stopped where it waits (Ctrl-C, an alarm): end it too
                kill_group(group, reap=proc.poll)
                proc.wait()
                raise
            finally:
                kill_group(group, grace=0.5, reap=proc.poll)  # what it left running
                with self._lock:
                    call.group = None  # (reaped: its number may be reused)
                unwatch(group)
            stdout, stderr = _read(out), _read(err)
        if proc.returncode != 0:
            raise CommandError(argv, proc.returncode, stderr)
        return CommandResult(argv, proc.returncode, stdout, stderr, time.monotonic() - start)

    def __dispatcher_stop__(self) -> None:
        """The run gave the node up: end the programs of the calls under way."""
        with self._lock:
            for call in self._running:
                call.stopped = True
            groups = [call.group for call in self._running if call.group is not None]
        for group in groups:
            kill_group(group)

    def __reduce__(self):
        return (Command, (self.cwd, self.env, self.timeout))

    def __repr__(self) -> str:
        return "<command>"


class _Call:
    """A call of a :class:`Command` under way: its program's process group, once
    started, and whether the run gave the call up (then a program that starts after
    is ended at once)."""

    __slots__ = ("group", "stopped")

    def __init__(self):
        self.group: int | None = None
        self.stopped = False


def _fill(arg: str, cores: int, hosts: str, hostfile: str | None) -> str:
    arg = arg.replace("{cores}", str(cores)).replace("{hosts}", hosts)
    return arg.replace("{hostfile}", hostfile) if hostfile is not None else arg


def _read(f) -> str:
    f.seek(0)
    return f.read().decode("utf-8", "replace")


def _tail(f) -> str:
    tail = "\n".join(_read(f).rstrip().splitlines()[-TAIL_LINES:])
    return f"; its error stream ends with:\n{tail}" if tail else ""


def command(
    args: Any,
    *,
    cwd: str | os.PathLike | None = None,
    env: dict | None = None,
    cores: Any = None,
    timeout: float | None = None,
    label: str | None = None,
    retries: int | None = None,
    retry_on: Any = None,
) -> Op:
    """A node that runs the program ``args`` and gives its :class:`CommandResult`
    (see :mod:`dispatcher.programs`). ``cores`` is what it asks of the executor's
    cores (``k`` or ``(lo, hi)``), ``timeout`` the seconds after which the program
    and all it started are killed and the node fails; ``label`` names the node
    (default: the program's name); ``retries`` and ``retry_on`` are those of
    :func:`dispatcher.op`.

    >>> import dispatcher as dp
    >>> dp.execute(dp.command(["echo", "{cores} core(s)"], cores=1)).stdout
    '1 core(s)\\n'
    """
    if isinstance(args, str):
        args = shlex.split(args)
    else:
        args = list(args)
    if not args:
        raise ValueError("command needs a program to run, got no arguments")
    if env is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise TypeError("env must map names to strings")
    where = f"of command {args[0]!r}"
    timeout = check_timeout(timeout, f"timeout {where}")
    node = Op(Command(None if cwd is None else os.fspath(cwd), env, timeout), args)
    node.cores = check_cores(cores, f"cores {where}")
    node.timeout = timeout
    program = args[0] if isinstance(args[0], (str, os.PathLike)) else "command"
    node.label = label if label is not None else os.path.basename(os.fspath(program))
    if retries is not None:
        node.retries = check_retries(retries, f"retries {where}")
    if retry_on is not None:
        node.retry_on = retry_predicates(retry_on, f"retry_on {where}")
    return node
