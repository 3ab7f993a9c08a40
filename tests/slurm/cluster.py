"""A real Slurm cluster on this machine: munged + slurmctld here, one slurmd per network namespace.

Debian 12's ``slurm-wlm`` 22.05 and ``munge`` (installed by scripts/install-test-deps), run as
root without systemd. Each compute node ``nK`` is a ``slurmd -N nK`` in its own network
namespace with its own address on a bridge this cluster creates, because msrun starts a
scheduler on *every* node whose local addresses include ``--master_addr`` (design/facts.md):
two nodes sharing one address would both start one and the second would fail the step.
The filesystem is shared (one machine), which is what a Slurm cluster's shared workdir is.

Several suites may run at once: each cluster has its own bridge/subnet (creating the bridge is
the lock; :class:`tests.cluster.cluster.Subnet`, shared with the SSH cluster, as are the pid
helpers), its own munged socket (``AuthInfo=socket=``), its own slurmctld port and state dir.
Nothing here touches a process it did not start: every daemon pid is recorded in
``state.json`` and stopped by that pid; job processes left behind are found as the pids inside
this cluster's own network namespaces (``ip netns pids``).
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# the SSH cluster's pieces: bridge/subnet lock, namespaces, state dir, pids (tests/cluster)
from tests.cluster.cluster import OnSubnet, Subnet, _alive, _sh, save_state
from tests.cluster.cluster import stop_pid as _stop

SUBNET_BASE = "10.214"  # 10.214.N.0/24; the SSH cluster uses 10.213
STATE_ROOT = Path("/var/tmp/alaunch-slurm")
SBIN = Path("/usr/sbin")
SLURMD_PORT = 6818  # the same in every namespace: each slurmd has its own address


class SlurmUnavailable(RuntimeError):
    """This machine cannot run the Slurm cluster (not root, packages missing, no netns)."""


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "the Slurm test cluster needs root (network namespaces, slurmd)"
    for tool in (SBIN / "slurmctld", SBIN / "slurmd", SBIN / "munged"):
        if not tool.exists():
            return f"{tool} not found (run scripts/install-test-deps)"
    for tool in ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not found (run scripts/install-test-deps)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (install the munge package)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


@dataclass
class SlurmNode:
    index: int
    name: str  # Slurm's NodeName (n1, n2, ...)
    address: str
    netns: str
    veth: str
    pid: int | None = None  # slurmd (nsenter execs it: same pid)


class SlurmCluster(OnSubnet):
    """``SlurmCluster(2).up()`` ... ``.down()``; ``SlurmCluster.load(dir)`` reattaches."""

    def __init__(self, n: int = 2, *, cpus: int = 1, state_dir: Path | None = None):
        self.n = n
        self.cpus = cpus
        self.state_dir = state_dir
        self.net = Subnet(SUBNET_BASE, "alasl", SlurmUnavailable)
        self.ctld_port: int | None = None
        self.nodes: list[SlurmNode] = []
        self.munged_pid: int | None = None
        self.ctld_pid: int | None = None
        self.hostname = socket.gethostname().split(".")[0]

    # ------------------------------------------------------------------ paths
    @property
    def conf(self) -> Path:
        return self.state_dir / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.state_dir / "munge" / "munge.sock"

    @property
    def partition(self) -> str:
        return "npu"

    def env(self) -> dict[str, str]:
        """The environment a Slurm client (sbatch, squeue, ...) needs to reach this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # ------------------------------------------------------------------ bring-up
    def up(self, timeout: float = 30.0) -> SlurmCluster:
        reason = unavailable_reason()
        if reason:
            raise SlurmUnavailable(reason)
        self.net.claim()
        try:
            self.state_dir = self.net.state_dir(STATE_ROOT, self.state_dir)
            self.ctld_port = _free_port()
            self.nodes = [SlurmNode(i, f"n{i + 1}", self.net.address(i),
                                    f"alaslurm{self.subnet}-n{i + 1}", f"alsv{self.subnet}n{i + 1}")
                          for i in range(self.n)]
            self.save()
            for node in self.nodes:
                self.net.add_netns(node.netns, node.veth, node.address)
            self._start_munged()
            self._write_conf()
            self._start_slurmctld()
            for node in self.nodes:
                self._start_slurmd(node)
            self.save()
            self.wait_idle(timeout)
        except BaseException:
            self.down()
            raise
        return self

    def _start_munged(self) -> None:
        mdir = self.state_dir / "munge"
        mdir.mkdir(mode=0o755)  # munged: the socket dir must be executable by all
        mdir.chmod(0o755)
        munge = pwd.getpwnam("munge")
        key = mdir / "munge.key"
        key.write_bytes(os.urandom(1024))
        for p in (mdir, key):
            os.chown(p, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)
        log = open(self.state_dir / "munged.out", "wb")
        proc = subprocess.Popen(
            [str(SBIN / "munged"), "--foreground", f"--socket={self.munge_socket}", f"--key-file={key}",
             f"--pid-file={mdir / 'munged.pid'}", f"--log-file={mdir / 'munged.log'}",
             f"--seed-file={mdir / 'munged.seed'}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            user=munge.pw_uid, group=munge.pw_gid, extra_groups=[])
        log.close()
        self.munged_pid = proc.pid
        self.save()
        deadline = time.monotonic() + 10
        while not self.munge_socket.exists():
            if not _alive(proc.pid) or time.monotonic() > deadline:
                raise RuntimeError("munged did not start: " + (self.state_dir / "munged.out").read_text())
            time.sleep(0.05)

    def conf_text(self) -> str:
        d = self.state_dir
        lines = [
            f"ClusterName=alaunch{self.subnet}",
            f"SlurmctldHost={self.hostname}({self.gateway})",
            f"SlurmctldPort={self.ctld_port}", f"SlurmdPort={SLURMD_PORT}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={self.munge_socket}",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={d / 'ctld'}", f"SlurmdSpoolDir={d / 'spool'}/%n",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}", f"SlurmdPidFile={d}/slurmd-%n.pid",
            f"SlurmctldLogFile={d / 'slurmctld.log'}", f"SlurmdLogFile={d}/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core", "SchedulerType=sched/backfill", "MpiDefault=none",
            "ReturnToService=2", "MinJobAge=3600", "KillWait=5", "InactiveLimit=0",
            "SlurmctldTimeout=30", "SlurmdTimeout=60", "MessageTimeout=20",
        ]
        for node in self.nodes:
            lines.append(f"NodeName={node.name} NodeHostname={self.hostname} NodeAddr={node.address} "
                         f"CPUs={self.cpus} State=UNKNOWN")
        names = ",".join(n.name for n in self.nodes)
        lines.append(f"PartitionName={self.partition} Nodes={names} Default=YES MaxTime=INFINITE State=UP")
        return "\n".join(lines) + "\n"

    def _write_conf(self) -> None:
        for sub in ("ctld", "spool"):
            (self.state_dir / sub).mkdir()
        self.conf.write_text(self.conf_text())

    def _start_slurmctld(self) -> None:
        log = open(self.state_dir / "slurmctld.out", "wb")
        proc = subprocess.Popen([str(SBIN / "slurmctld"), "-D", "-f", str(self.conf)], env=self.env(),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.ctld_pid = proc.pid
        self.save()

    def _start_slurmd(self, node: SlurmNode) -> None:
        log = open(self.state_dir / f"slurmd-{node.name}.out", "wb")
        (self.state_dir / "spool" / node.name).mkdir(parents=True, exist_ok=True)
        # nsenter --net only: `ip netns exec` would also remount /sys, and slurmd needs the
        # host's /sys/fs/cgroup to initialise even with proctrack/linuxproc.
        proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{node.netns}", "--",
                                 str(SBIN / "slurmd"), "-D",
                                 "-N", node.name, "-f", str(self.conf)], env=self.env(),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        node.pid = proc.pid
        self.save()

    def node_states(self) -> dict[str, str]:
        res = _sh("sinfo", "-h", "-N", "-o", "%N %t", check=False, env=self.env())
        if res.returncode != 0:
            return {}
        return dict(line.split() for line in res.stdout.splitlines() if line.strip())

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until every node is idle (no job left on it)."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.node_states()
            if len(states) == self.n and all(s == "idle" for s in states.values()):
                return
            for name, pid in [("slurmctld", self.ctld_pid)] + [(n.name, n.pid) for n in self.nodes]:
                if not _alive(pid):
                    raise RuntimeError(f"{name} died: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes not idle after {timeout:.0f} s: {states}\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for f in sorted(self.state_dir.glob("*.log")) + sorted(self.state_dir.glob("*.out")):
            text = f.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"== {f.name}\n" + "\n".join(text))
        return "\n".join(out)

    # ------------------------------------------------------------------ helpers for tests
    def netns_pids(self) -> dict[str, list[int]]:
        """Every process inside each node's namespace (slurmd, slurmstepd and job processes)."""
        pids = {}
        for node in self.nodes:
            res = _sh("ip", "netns", "pids", node.netns, check=False)
            pids[node.name] = [int(p) for p in res.stdout.split()]
        return pids

    def job_pids(self) -> dict[str, list[int]]:
        """Processes of jobs: everything in a node's namespace but its slurmd."""
        keep = {n.pid for n in self.nodes}
        return {name: [p for p in pids if p not in keep and _alive(p)]
                for name, pids in self.netns_pids().items()}

    def npu_smi_bin(self) -> Path:
        """A directory holding the test hosts' ``npu-smi`` (tests/cluster/npu_smi.py: 8 cards
        whose values follow the msrun workers on them), for a job's PATH (sbatch exports the
        submitter's environment to the job). One serves every node: they are this machine."""
        d = self.state_dir / "npu-bin"
        d.mkdir(exist_ok=True)
        (d / "npu.json").write_text(json.dumps({"cards": 8}))
        repo = Path(__file__).resolve().parents[2]
        exe = d / "npu-smi"
        exe.write_text(f"#!/bin/sh\ncd {shlex.quote(str(repo))} && exec {shlex.quote(sys.executable)} -m "
                       f"tests.cluster.npu_smi --config {shlex.quote(str(d / 'npu.json'))} \"$@\"\n")
        exe.chmod(0o755)
        return d

    def target_text(self, workdir: Path, **extra) -> str:
        """A Slurm target file (``-H``) for this cluster; ``extra`` adds/overrides keys."""
        values = {"login": "localhost", "partition": self.partition, "nodes": self.n, "cards_per_node": 1,
                  "gres": "", "workdir": str(workdir), **extra}
        return "slurm:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in values.items())

    # ------------------------------------------------------------------ teardown / state
    def down(self) -> None:
        if self.ctld_pid and _alive(self.ctld_pid):
            _sh("scancel", "--full", "--partition", self.partition, check=False, env=self.env())
        for node in self.nodes:  # slurmd first, then whatever jobs left in its namespace
            _stop(node.pid)
        for pids in self.netns_pids().values():
            for pid in pids:
                _stop(pid, signal.SIGKILL, wait=2.0)
        _stop(self.ctld_pid)
        _stop(self.munged_pid)
        Subnet.remove_netns([(node.veth, node.netns) for node in self.nodes])
        if self.state_dir is not None and self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self.net.release()  # last: the bridge is the lock on this subnet and dir
        self.nodes = []

    def save(self) -> None:
        save_state(self.state_dir, {"n": self.n, "cpus": self.cpus, "subnet": self.subnet, "ctld_port": self.ctld_port,
                "munged_pid": self.munged_pid, "ctld_pid": self.ctld_pid,
                "nodes": [{"index": n.index, "name": n.name, "address": n.address, "netns": n.netns,
                           "veth": n.veth, "pid": n.pid} for n in self.nodes]})

    @classmethod
    def load(cls, state_dir: Path) -> SlurmCluster:
        data = json.loads((state_dir / "state.json").read_text())
        c = cls(data["n"], cpus=data["cpus"], state_dir=state_dir)
        c.subnet, c.ctld_port = data["subnet"], data["ctld_port"]
        c.munged_pid, c.ctld_pid = data["munged_pid"], data["ctld_pid"]
        c.nodes = [SlurmNode(**rec) for rec in data["nodes"]]
        return c

    def describe(self) -> str:
        lines = [f"Slurm: {self.n} node(s) on {self.bridge} ({SUBNET_BASE}.{self.subnet}.0/24), "
                 f"slurmctld :{self.ctld_port}, state in {self.state_dir}",
                 f"  export SLURM_CONF={self.conf}"]
        for node in self.nodes:
            lines.append(f"  {node.name:<4} {node.address:<15} slurmd pid {node.pid}")
        return "\n".join(lines)
