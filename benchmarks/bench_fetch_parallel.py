"""Fetching a job from 8 hosts at once vs 8 rsyncs in parallel, over the same sshd (run on demand; root).

    .venv/bin/python benchmarks/bench_fetch_parallel.py [--hosts 8] [--mib 256] [--rounds 3]

Every host holds one node of the job: a ``--mib`` MiB checkpoint and a few logs. alaunch runs
``fetch_job(... "all")`` (a first fetch: one LISTSEND round trip and stream per host, all
hosts at once: ops/fanout.py); the reference is one ``rsync -a`` per host, all started together and
waited for, with exactly alaunch's ssh options (``rsync -e`` from the same pure function).
Cold: each run opens its own ssh connections (the host's digest cache is removed each round,
so alaunch checks every byte on both ends, as on a first fetch). Rounds alternate; medians are
compared. Every "host" is a network namespace of this machine: the 8 sshds, 8 ssh clients and
both tools share its cores, so this measures how well each keeps N streams going on the same
CPUs, not a real link's width (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher.ops.collect import REMOTE_HASH_CACHE, fetch_job  # noqa: E402
from launcher.ops.registry import Registry  # noqa: E402
from launcher.runners import ConnectOptions  # noqa: E402
from launcher.runners.openssh import rsync_rsh  # noqa: E402
from tests.cluster.cluster import Cluster, unavailable_reason  # noqa: E402

JOB_DIR = "/root/alaunch/alaunch/bench-par"
LOGS = 4


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    reason = unavailable_reason()
    if reason:
        sys.exit(f"cannot run: {reason}")
    cluster = Cluster(args.hosts).up()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run(cluster, Path(tmp), args)
    finally:
        cluster.down()


def populate(cluster: Cluster, mib: int) -> int:
    """One node's files on every host; returns the bytes per host."""
    blob = os.urandom(1 << 20)
    total = 0
    for k, h in enumerate(cluster.hosts):
        root = h.path(JOB_DIR)
        ckpt = root / "output" / "checkpoint" / f"rank_{k}" / f"llama_rank_{k}-1_100.ckpt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        with open(ckpt, "wb") as f:
            for i in range(mib):
                f.write(blob[i % 997:] + blob[:i % 997])  # distinct blocks, no new entropy per MiB
        (root / "msrun_log").mkdir(exist_ok=True)
        for i in range(LOGS):
            (root / "msrun_log" / f"worker_{i}.log").write_bytes(b"step 1 loss 2.0\n" * 4096)
        total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return total


def run(cluster: Cluster, tmp: Path, args) -> None:
    per_host = populate(cluster, args.mib)
    hosts = cluster.hosts_as_launcher_hosts(slots=1)
    hostfile = "".join(f"{h.name} slots=1 user=root identity={h.identity}\n" for h in hosts)
    registry = Registry(tmp / "state" / "registry.sqlite3")
    job = registry.create_job("bench", "finetune", spec_text="name: bench\noutputs:\n  checkpoints: "
                              "['output/checkpoint/**/*.ckpt']\n  logs: ['msrun_log/*.log']\n  tensorboard: []\n",
                              hostfile_text=hostfile, nodes=[(h.name, JOB_DIR) for h in hosts], state="succeeded",
                              meta={"pythons": {h.name: sys.executable for h in hosts}}).id
    options = ConnectOptions(known_hosts=cluster.known_hosts, control_persist=0)
    total = per_host * len(hosts)

    def ours() -> float:
        shutil.rmtree(tmp / "runs", ignore_errors=True)
        for h in cluster.hosts:
            h.path(f"{JOB_DIR}/{REMOTE_HASH_CACHE}").unlink(missing_ok=True)
        start = time.perf_counter()
        report = fetch_job(registry, job, "all", tmp / "runs", tmp / "state", options=options)
        took = time.perf_counter() - start
        assert report.bytes_transferred == total, (report.bytes_transferred, total)
        return took

    def rsyncs() -> float:
        shutil.rmtree(tmp / "rsync", ignore_errors=True)
        start = time.perf_counter()
        procs = []
        for h in hosts:
            dest = tmp / "rsync" / h.name
            dest.mkdir(parents=True)
            procs.append(subprocess.Popen(["rsync", "-a", "-e", rsync_rsh(h, options),
                                           f"{h.name}:{JOB_DIR}/", str(dest) + "/"]))
        codes = [p.wait() for p in procs]
        took = time.perf_counter() - start
        assert codes == [0] * len(procs), codes
        return took

    ours()  # warm-up: page cache, imports
    rsyncs()
    t_ours, t_rsync = [], []
    for _ in range(args.rounds):
        t_ours.append(ours())
        t_rsync.append(rsyncs())
    a, r = statistics.median(t_ours), statistics.median(t_rsync)
    mib = total / 2**20
    print(f"[cold] fetch from {len(hosts)} hosts x ({args.mib} MiB checkpoint + {LOGS} logs) = {mib:.0f} MiB: "
          f"alaunch {a:.2f} s ({mib / a:.0f} MiB/s), {len(hosts)} parallel rsyncs {r:.2f} s ({mib / r:.0f} MiB/s) "
          f"-> throughput ratio {r / a:.2f}x (goal >= 1.0x)")
    print(f"  rounds: alaunch {', '.join(f'{t:.2f}' for t in t_ours)}; "
          f"rsync {', '.join(f'{t:.2f}' for t in t_rsync)}")
    registry.close()


if __name__ == "__main__":
    main()
