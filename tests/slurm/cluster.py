"""A real Slurm cluster of one node, for the duration of one command.

``python tests/slurm/cluster.py [--cpus N] [--timeout S] -- COMMAND ...`` starts
``munged``, ``slurmctld`` and ``slurmd`` (Debian's ``munge`` and ``slurm-wlm``
packages, run as root) in a temporary directory, with a ``slurm.conf`` naming one
node on this host with ``N`` CPUs (more than the machine has, so that tests can run several
tasks), waits for the node to be idle, runs ``COMMAND`` with ``SLURM_CONF``
pointing at the cluster, and exits with its code.

Policy: everything it starts, it stops, whatever happens: when the command ends,
fails, outlives ``--timeout`` or this script gets SIGINT, SIGTERM or SIGHUP, the
jobs left are cancelled, the daemons are stopped (SIGTERM, then SIGKILL), every
process still carrying the cluster's mark in its environment (the jobs' steps,
their children) is killed, and the directory is removed. The daemons run in the
foreground as this script's children, on ports chosen free, with a munge socket of
their own: nothing of the machine's configuration is read or changed, and two
clusters may run side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from dispatcher.executors import _mpisuper

MARK = "DISPATCHER_TEST_SLURM"
"""The environment variable that marks every process of the cluster (its value: the directory)."""

DAEMONS = ("munged", "slurmctld", "slurmd")

NODE = "node1"
"""The node's name in Slurm: not the host's, so that a test can tell a name read
from the allocation (``SLURM_JOB_NODELIST``, ``SLURMD_NODENAME``) from the host's."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(folder: str, host: str, cpus: int, sock: str) -> str:
    node = NODE
    ctld, slurmd = _free_port(), _free_port()
    while slurmd == ctld:
        slurmd = _free_port()
    hardware = f"CPUs={cpus} Sockets=1 CoresPerSocket={cpus} ThreadsPerCore=1"
    # job ids of their own: MPICH names its shared memory after the job and step
    # ids, which two clusters counting from 1 (side by side, or one after another
    # when a killed rank left its segment) would share, and its ranks would hang
    first_job = random.randrange(1_000, 50_000_000)
    return f"""\
ClusterName=dispatcher-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld}
SlurmdPort={slurmd}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SlurmdParameters=config_overrides
KillWait=30
FirstJobId={first_job}
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 {hardware} RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


class Cluster:
    """The daemons of one cluster in ``folder``; :meth:`stop` ends all it started."""

    def __init__(self, cpus: int):
        self.folder = tempfile.mkdtemp(prefix="dispatcher-slurm-")
        os.chmod(self.folder, 0o755)  # munged refuses a socket directory others may write to
        self.host = socket.gethostname().split(".")[0]
        self.conf = os.path.join(self.folder, "slurm.conf")
        self.sock = os.path.join(self.folder, "munge", "munge.socket")
        # the mark: this cluster's folder, after those of the clusters it runs in
        marks = [m for m in os.environ.get(MARK, "").split(os.pathsep) if m]
        self.env = {**os.environ, "SLURM_CONF": self.conf, MARK: os.pathsep.join([*marks, self.folder])}
        self.daemons: dict[str, subprocess.Popen] = {}
        self.cpus = cpus
        self.files_before = _mpisuper.left_files()

    def start(self) -> None:
        for sub in ("munge", "state", "spool"):
            os.makedirs(os.path.join(self.folder, sub), mode=0o755)
        key = os.path.join(self.folder, "munge", "munge.key")
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, env=self.env)
        os.chmod(key, 0o400)
        with open(self.conf, "w") as f:
            f.write(_config(self.folder, self.host, self.cpus, self.sock))
        munge = os.path.join(self.folder, "munge")
        self._daemon(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={self.sock}",
                f"--key-file={key}",
                f"--pid-file={munge}/munged.pid",
                f"--log-file={munge}/munged.log",
                f"--seed-file={munge}/munged.seed",
            ],
        )
        self._wait(lambda: os.path.exists(self.sock), "munged to open its socket")
        self._daemon("slurmctld", ["slurmctld", "-D", "-c", "-i"])
        self._wait(lambda: self._ask(["scontrol", "ping"]).find("UP") >= 0, "slurmctld to answer")
        self._daemon("slurmd", ["slurmd", "-D", "-N", NODE])
        self._wait(lambda: self._ask(["sinfo", "-h", "-o", "%T"]).strip() == "idle", "the node to be idle")

    def _daemon(self, name: str, command: list[str]) -> None:
        with open(os.path.join(self.folder, f"{name}.out"), "wb") as log:
            self.daemons[name] = subprocess.Popen(
                command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _ask(self, command: list[str]) -> str:
        try:
            return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    def _wait(self, ready, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name, proc in self.daemons.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} ended (exit code {proc.returncode}) while waiting for {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.2)

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.out", "slurmctld.out", "slurmd.out"):
            path = os.path.join(self.folder, name)
            with contextlib.suppress(OSError), open(path, errors="replace") as f:
                parts.append(f"--- {name} (last lines)\n" + "".join(f.readlines()[-30:]))
        return "\n".join(parts)

    def stop(self) -> None:
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            jobs = self._ask(["squeue", "-h", "-o", "%i"]).split()
            if jobs:
                self._ask(["scancel", *jobs])
                deadline = time.monotonic() + 20
                while self._ask(["squeue", "-h", "-o", "%i"]).split() and time.monotonic() < deadline:
                    time.sleep(0.5)
        for name in reversed(DAEMONS):
            if name in self.daemons:
                stop_group(self.daemons[name], grace=15)
        for _ in range(10):  # (a process may start another as it is killed)
            marked = marked_processes(self.folder)
            if not marked:
                break
            for pid in marked:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        # MPICH's shared memory of ranks killed before MPI_Finalize (as scancel's
        # SIGKILL does): what the library's MPI supervisor removes after its jobs
        _mpisuper.remove_left_files(self.files_before)
        shutil.rmtree(self.folder, ignore_errors=True)


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the process group that ``proc`` leads, SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def marked_processes(value: str, name: str = MARK) -> list[int]:
    """The processes other than this one whose environment variable ``name`` is
    ``value`` or a list of paths holding it (by default: the processes of the
    cluster in the directory ``value``, also those of a cluster started in it)."""
    prefix = f"{name}=".encode()
    wanted = value.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                variables = f.read().split(b"\0")
        except OSError:
            continue
        marks = (v[len(prefix) :].split(os.pathsep.encode()) for v in variables if v.startswith(prefix))
        if any(wanted in m for m in marks):
            found.append(int(entry))
    return found


def _end_by_signal(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpus", type=int, default=8, help="CPUs the node declares (default 8)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds the command may take")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    if os.geteuid() != 0:
        print("cluster.py: the test cluster's daemons run as root; run it as root", file=sys.stderr)
        return 2
    for name in ("mungekey", *DAEMONS, "sinfo", "srun", "sbatch"):
        if shutil.which(name) is None:
            print(f"cluster.py: {name} is missing (Debian: apt-get install slurm-wlm munge)", file=sys.stderr)
            return 2
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _end_by_signal)
    cluster = Cluster(args.cpus)
    proc = None
    try:
        try:
            cluster.start()
        except RuntimeError as exc:
            print(f"cluster.py: the cluster did not start: {exc}\n{cluster.logs()}", file=sys.stderr)
            return 2
        print(
            f"cluster.py: Slurm cluster of one node ({NODE} on {cluster.host}, {args.cpus} CPUs) up",
            flush=True,
        )
        proc = subprocess.Popen(command, env=cluster.env, start_new_session=True)
        try:
            code = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"cluster.py: the command took over {args.timeout:.0f} s: stopped", file=sys.stderr)
            code = 124
        if code != 0:
            print(cluster.logs(), file=sys.stderr)
        return code
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        if proc is not None:
            stop_group(proc, grace=10)
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
