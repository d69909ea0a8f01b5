"""Test helper: a single-node SLURM of this machine's own, started for the test session and stopped after it.

:func:`start_slurm` writes a ``slurm.conf`` into a temporary folder (one node, ``localhost`` at 127.0.0.1, with
this machine's CPUs and memory; one partition ``debug``; no cgroups, no accounting database), starts ``munged`` on a
socket and key of that folder, then ``slurmctld`` and ``slurmd`` in the foreground as child processes, and waits until
``sinfo`` shows the node idle. Every daemon listens on free ports of the loopback address only. The clients (``sbatch``,
``squeue``, ``scancel``) find the cluster through ``SLURM_CONF``, which :meth:`Slurm.activate` exports.

When a binary is missing or a daemon does not come up, :class:`SlurmUnavailable` says which (with the daemon's log
tail), for the tests' skip reason; CI installs the OS packages (``.ci/install-slurm.sh``) so the tests run there.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scancel", "scontrol")
START_S = 60.0  # for the node to show idle
STOP_S = 10.0
PARTITION = "debug"
NODE = "localhost"


class SlurmUnavailable(Exception):
    """SLURM cannot run here; the message says why (the skip reason)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) or "(empty log)"
    except OSError:
        return "(no log)"


def _memory_mb() -> int:
    """This machine's memory in MiB (``RealMemory``), a little under what the kernel reports."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 * 9 // 10
    return 1024


@dataclass
class Slurm:
    """A running test SLURM.

    Attributes:
        root: Its folder (configuration, state, logs, munge socket).
        conf: ``slurm.conf``.
        procs: The daemons, by name.
    """

    root: Path
    conf: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The variables a client needs (``SLURM_CONF``)."""
        return {"SLURM_CONF": str(self.conf)}

    def activate(self) -> None:
        """Point this process's SLURM clients (and what it starts) at this cluster."""
        os.environ.update(self.env())

    def logs(self) -> str:
        """The daemons' log tails (for a failure message)."""
        return "; ".join(f"{name}: {_tail(self.root / f'{name}.log')}" for name in ("munged", "slurmctld", "slurmd"))

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """A client command against this cluster."""
        env = {**os.environ, **self.env()}
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env, check=False)

    def stop(self) -> None:
        """Cancel every job, stop the daemons (SIGTERM, then SIGKILL) and munged."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self.run("scancel", "--full", "--user", str(os.getuid()), timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _config(root: Path, ctld_port: int, slurmd_port: int) -> str:
    host = socket.gethostname()
    cpus = os.cpu_count() or 1
    return "\n".join(
        [
            "ClusterName=drconvtest",
            f"SlurmctldHost={host}(127.0.0.1)",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",  # bind to 127.0.0.1 only, not every address
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={root / 'munge.socket'}",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill",
            "ReturnToService=2",
            "InactiveLimit=0",
            "KillWait=5",
            "MinJobAge=600",  # finished jobs stay visible to squeue for a while
            "SlurmdTimeout=60",
            f"NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={host} CPUs={cpus} RealMemory={_memory_mb()} "
            "State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def start_slurm(root: Path) -> Slurm:
    """Start munged, slurmctld and slurmd for this machine under ``root``; returns the cluster once its node is idle.

    Raises:
        SlurmUnavailable: A binary is missing (named), or a daemon did not start or the node did not come up (with
            the daemons' log tails).
    """
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        raise SlurmUnavailable(
            f"SLURM is not installed here (missing {', '.join(missing)}); .ci/install-slurm.sh installs slurm-wlm "
            "and munge"
        )
    if os.geteuid() != 0:
        raise SlurmUnavailable("starting a test SLURM needs root (slurmd runs jobs as their user)")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for sub in ("state", "spool"):
        (root / sub).mkdir(exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(_config(root, _free_port(), _free_port()))
    pass
    cluster = Slurm(root, conf)
    env = {**os.environ, **cluster.env()}
    key = root / "munge.key"
    subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True, capture_output=True)
    key.chmod(0o600)

    def daemon(name: str, *args: str) -> None:
        log = open(root / f"{name}.out", "wb")
        cluster.procs[name] = subprocess.Popen(
            list(args), env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()

    try:
        daemon(
            "munged",
            *("munged", "--foreground", "--force", f"--socket={root / 'munge.socket'}", f"--key-file={key}"),
            *(f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'munged.log'}"),
            f"--seed-file={root / 'munged.seed'}",
        )
        if not _wait(lambda: (root / "munge.socket").exists(), 15, cluster):
            raise SlurmUnavailable(f"munged did not start: {cluster.logs()}")
        daemon("slurmctld", "slurmctld", "-D", "-i", "-f", str(conf))
        daemon("slurmd", "slurmd", "-D", "-N", NODE, "-f", str(conf))
        if not _wait(lambda: _node_idle(cluster), START_S, cluster):
            raise SlurmUnavailable(f"the test SLURM's node did not come up within {START_S:.0f} s: {cluster.logs()}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _node_idle(cluster: Slurm) -> bool:
    try:
        out = cluster.run("sinfo", "-h", "-N", "-o", "%N %t", timeout=10).stdout.split()
    except subprocess.TimeoutExpired:
        return False
    return out[:2] == [NODE, "idle"]


def _wait(predicate, timeout: float, cluster: Slurm) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        dead = [name for name, p in cluster.procs.items() if p.poll() is not None]
        if dead:
            raise SlurmUnavailable(f"{', '.join(dead)} exited at start: {cluster.logs()}")
        if predicate():
            return True
        time.sleep(0.5)
    return False
