"""Staging vs rsync over the same sshd, and fan-out to 8 hosts vs 1 (run on demand; root).

    .venv/bin/python benchmarks/bench_stage.py [--big-mib 512] [--files 2000] [--tree-mib 50]

Prints ratios measured in this run. Goals: first staging >= 1.0x rsync's throughput;
no-op re-staging <= 0.5x rsync's no-op time; stage + launch on 8 hosts <= 1.5x 1 host.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher.hostfile import Host  # noqa: E402
from launcher.launch import launch_all, launcher_for  # noqa: E402
from launcher.layout import JobLayout  # noqa: E402
from launcher.nodeexec import make_exec  # noqa: E402
from launcher.plan import NodePlan, Plan, StageItem  # noqa: E402
from launcher.runners import ConnectOptions  # noqa: E402
from launcher.stage import HashCache, InventoryCache, Stager, collect  # noqa: E402
from tests.cluster.cluster import Cluster, unavailable_reason  # noqa: E402

PY = str(Path(sys.executable).parent / "python3")


def make_tree(root: Path, files: int, tree_mib: int, big_mib: int) -> None:
    each = (tree_mib << 20) // files
    for i in range(files):
        d = root / "code" / f"d{i % 40}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.py").write_bytes(os.urandom(each))
    if big_mib:
        with open(root / "big.bin", "wb") as f:
            for _ in range(big_mib):
                f.write(os.urandom(1 << 20))


def rsync(cluster: Cluster, host_i: int, src: Path, dest: str) -> float:
    ssh = f"ssh -F {shlex.quote(str(cluster.ssh_config))}"
    start = time.perf_counter()
    subprocess.run(["rsync", "-a", "-e", ssh, f"{src}/", f"{cluster.hosts[host_i].name}:{dest}/"], check=True)
    return time.perf_counter() - start


def stage(cluster: Cluster, hosts: list[Host], items, root: str, cache: HashCache,
          known: InventoryCache, persist: float = 0) -> tuple[float, int]:
    """As submit does it: hash (with the state dir's caches), survey, send, materialise.
    ``persist=0``: a fresh connection (cold); >0: a shared ssh master kept between calls."""
    options = ConnectOptions(known_hosts=cluster.known_hosts, control_persist=persist)
    nodes = {h.name: make_exec(h, options) for h in hosts}
    start = time.perf_counter()
    local = collect(items, cache)
    result = Stager(nodes, python=PY, known=known).stage(local, {h.name: root for h in hosts})
    took = time.perf_counter() - start
    for n in nodes.values():
        n.close()
    return took, result.bytes_sent


def stage_and_launch(cluster: Cluster, hosts: list[Host], items, job: str) -> float:
    options = ConnectOptions(known_hosts=cluster.known_hosts)
    nodes = {h.name: make_exec(h, options) for h in hosts}
    root = f"/root/alaunch/alaunch/{job}"
    start = time.perf_counter()
    Stager(nodes, python=PY).stage(collect(items, HashCache(None)), {h.name: root for h in hosts})
    plans = tuple(NodePlan(h, i, JobLayout(root), (), (PY, "-c", "pass")) for i, h in enumerate(hosts))
    launch_all(Plan(job, job, hosts[0].name, 1, len(hosts), plans),
               {i: launcher_for(nodes[h.name], job, PY) for i, h in enumerate(hosts)})
    took = time.perf_counter() - start
    for n in nodes.values():
        n.close()
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--tree-mib", type=int, default=50)
    ap.add_argument("--big-mib", type=int, default=512)
    ap.add_argument("--hosts", type=int, default=8)
    args = ap.parse_args()
    reason = unavailable_reason()
    if reason:
        sys.exit(f"cannot run: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        make_tree(src, args.files, args.tree_mib, args.big_mib)
        total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        cluster = Cluster(args.hosts).up()
        try:
            hosts = cluster.hosts_as_launcher_hosts(slots=1)
            items = [StageItem("code", local=str(src / "code"))]
            if args.big_mib:
                items.append(StageItem("data/big.bin", local=str(src / "big.bin")))
            cache = HashCache(Path(tmp) / "hash-cache.json")
            known = InventoryCache(Path(tmp) / "inventory-cache.json")
            t_rsync = rsync(cluster, 0, src, "/root/rsync-dest")
            t_ours, sent = stage(cluster, hosts[:1], items, "/root/alaunch/alaunch/j1", cache, known)
            assert sent == total, (sent, total)
            t_rsync_noop = rsync(cluster, 0, src, "/root/rsync-dest")
            t_noop, sent2 = stage(cluster, hosts[:1], items, "/root/alaunch/alaunch/j2", cache, known)
            assert sent2 == 0
            stage(cluster, hosts[:1], items, "/root/alaunch/alaunch/j3", cache, known, persist=60)
            t_warm, sent3 = stage(cluster, hosts[:1], items, "/root/alaunch/alaunch/j4", cache, known, persist=60)
            assert sent3 == 0
            mib = total / 2**20
            print(f"first staging of {args.files} files + {args.big_mib} MiB ({mib:.0f} MiB): "
                  f"alaunch {t_ours:.2f} s ({mib / t_ours:.0f} MiB/s), rsync {t_rsync:.2f} s "
                  f"({mib / t_rsync:.0f} MiB/s) -> throughput ratio {t_rsync / t_ours:.2f}x (goal >= 1.0x)")
            print(f"no-op re-staging: alaunch {t_noop:.3f} s (new connection), {t_warm:.3f} s (ssh master "
                  f"kept from the previous run, control_persist=60), rsync {t_rsync_noop:.3f} s -> time ratio "
                  f"{t_noop / t_rsync_noop:.2f}x cold, {t_warm / t_rsync_noop:.2f}x warm (goal <= 0.5x)")
            small = [StageItem("code", local=str(src / "code"))]
            t1 = stage_and_launch(cluster, hosts[:1], small, "fan1")
            tn = stage_and_launch(cluster, hosts, small, "fan8")
            print(f"stage ({args.tree_mib} MiB tree) + launch: 1 host {t1:.2f} s, {len(hosts)} hosts {tn:.2f} s -> "
                  f"ratio {tn / t1:.2f}x (goal <= 1.5x)")
        finally:
            cluster.down()


if __name__ == "__main__":
    main()
