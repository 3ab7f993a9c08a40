"""Staging vs rsync over the same sshd, and fan-out to 8 hosts vs 1 (run on demand; root).

    .venv/bin/python benchmarks/bench_stage.py [--big-mib 512] [--files 2000] [--tree-mib 50]

Prints ratios measured in this run. Goals: first staging >= 1.0x rsync's throughput;
no-op re-staging <= 0.5x rsync's no-op time; stage + launch on 8 hosts <= 1.5x 1 host.

Like with like: rsync runs with exactly alaunch's ssh options (``rsync -e`` from the same
pure function). *cold*: each run opens its own ssh connection (a fresh command); *warm*: both
go through one ssh master kept between runs (``control_persist``). alaunch's no-op time is
what ``submit`` pays: walk + stat the tree (hash cache), then one LINK round trip (the
inventory cache), with the connection started in the background during the walk.

Fan-out stages a tree no host has yet (fresh content for each measurement), then launches.
All test hosts share this machine's cores, so it also prints the machine's busy CPU-seconds
(from /proc/stat) for each: on 2 cores, 8 hosts' worth of sshd/untar/hash work cannot take
less wall time than CPU-seconds / 2. First staging also prints the CPU-seconds of everything
each tool ran, both ends (``cgroup_cpu.py``), which the other sessions' load does not move.

Before each first-staging transfer (either tool) the benchmark writes and deletes a scratch
file a little larger than the transfer (``warm_page_cache``, outside the measured window).
This machine is a VM that hands free memory beyond ~1 GiB back to its hypervisor; the first
write into such memory costs 2-5 ms per MiB in ``copy_folio_from_iter_atomic`` (measured:
562 MiB into the page cache 0.09 s within 1 s of a delete, 0.6-3.3 s otherwise: freed pages
go back within ~2 s). Without the scratch file, whichever tool wrote while the guest's free
pages were used up paid 1-3 CPU-s more for the same bytes; in the runs before it was mostly
alaunch, second in each round (its CPU-s "grew" ~1.1 per round, rsync's did not), in others
both. With it, both tools start writing into memory the guest holds, as on a real host; a
write that lasts past ~1-2 s can still meet handed-back pages. ``--no-warm`` measures without it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cgroup_cpu import CgroupCPU  # noqa: E402

from launcher.core.hostfile import Host  # noqa: E402
from launcher.core.layout import JobLayout  # noqa: E402
from launcher.core.plan import NodePlan, Plan, StageItem  # noqa: E402
from launcher.ops.launch import (  # noqa: E402
    Launcher,
    launch_all,  # noqa: E402
)
from launcher.ops.stage import HashCache, InventoryCache, Stager, collect  # noqa: E402
from launcher.runners import ConnectOptions  # noqa: E402
from launcher.runners import make_runner as make_exec  # noqa: E402
from launcher.runners.openssh import control_path, rsync_rsh  # noqa: E402
from tests.cluster.cluster import Cluster, unavailable_reason  # noqa: E402

PY = str(Path(sys.executable).parent / "python3")
WALK_TIMES: list[float] = []  # seconds spent walking + hashing (cache) locally, per stage() call


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


def warm_page_cache(scratch: Path, mib: int) -> None:
    """Write ``mib`` MiB to ``scratch`` and delete it: the next ``mib`` MiB written to the page
    cache reuse the pages it freed, which this VM has not handed back to its hypervisor."""
    block = b"\1" * (1 << 20)
    with open(scratch, "wb", buffering=0) as f:
        for _ in range(mib):
            f.write(block)
    scratch.unlink()


def busy_cpu_seconds() -> float:
    """Machine-wide non-idle CPU time so far (every host of the cluster runs on this machine)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def options_for(cluster: Cluster, mode: str) -> ConnectOptions:
    return ConnectOptions(known_hosts=cluster.known_hosts, control_persist=60 if mode == "warm" else 0)


def rsync(host: Host, options: ConnectOptions, src: Path, dest: str) -> float:
    rsh = rsync_rsh(host, options, control=control_path(options) if options.control_persist else None)
    start = time.perf_counter()
    subprocess.run(["rsync", "-a", "-e", rsh, f"{src}/", f"{host.name}:{dest}/"], check=True)
    return time.perf_counter() - start


def stage(hosts: list[Host], options: ConnectOptions, items, root: str, cache: HashCache,
          known: InventoryCache) -> tuple[float, int]:
    """As submit does it: connect in the background while hashing (hash cache), then
    LINK (inventory cache) or survey + send, and materialise. Records the local walk's time."""
    nodes = {h.name: make_exec(h, options).using(PY) for h in hosts}
    start = time.perf_counter()
    for n in nodes.values():
        n.warm()
    local = collect(items, cache, hash_new=False)  # as submit: what the cache does not name waits for the Stager
    WALK_TIMES.append(time.perf_counter() - start)
    result = Stager(nodes, known=known).stage(local, {h.name: root for h in hosts})
    took = time.perf_counter() - start
    for n in nodes.values():
        n.close()
    return took, result.bytes_sent


def stage_and_launch(hosts: list[Host], options: ConnectOptions, items, job: str) -> tuple[float, float]:
    """(wall seconds, machine busy CPU-seconds) to stage ``items`` and start a trivial job."""
    nodes = {h.name: make_exec(h, options).using(PY) for h in hosts}
    root = f"/root/alaunch/alaunch/{job}"
    cpu0, start = busy_cpu_seconds(), time.perf_counter()
    for n in nodes.values():
        n.warm()
    Stager(nodes).stage(collect(items, HashCache(None)), {h.name: root for h in hosts})
    plans = tuple(NodePlan(h, i, JobLayout(root), (), (PY, "-c", "pass")) for i, h in enumerate(hosts))
    launch_all(Plan(job, job, hosts[0].name, 1, len(hosts), plans),
               {i: Launcher(nodes[h.name], job) for i, h in enumerate(hosts)})
    took, cpu = time.perf_counter() - start, busy_cpu_seconds() - cpu0
    for n in nodes.values():
        n.close()
    return took, cpu


def median_of(rounds: int, fn) -> tuple[float, list[float]]:
    times = [fn(k) for k in range(rounds)]
    return statistics.median(times), times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--tree-mib", type=int, default=50)
    ap.add_argument("--big-mib", type=int, default=512)
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--first-only", action="store_true", help="only the first-staging comparison")
    ap.add_argument("--first-rounds", type=int, default=5,
                    help="first-staging rounds (an empty store each, the tool that goes first alternating)")
    ap.add_argument("--no-warm", action="store_true",
                    help="no scratch file before each first-staging transfer (see warm_page_cache)")
    args = ap.parse_args()
    reason = unavailable_reason()
    if reason:
        sys.exit(f"cannot run: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "src"
        make_tree(src, args.files, args.tree_mib, args.big_mib)
        total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        cpu = CgroupCPU()  # before the cluster starts: its sshds are counted too
        cluster = Cluster(args.hosts).up()
        try:
            run(cluster, tmp, src, total, args, cpu)
        finally:
            cluster.down()
            cpu.close()


def spent(cpu: CgroupCPU, before: float | None, into: list[float]) -> None:
    after = cpu.seconds()
    if before is not None and after is not None:
        into.append(after - before)


def run(cluster: Cluster, tmp: Path, src: Path, total: int, args, cpu: CgroupCPU) -> None:
    hosts = cluster.hosts_as_launcher_hosts(slots=1)
    h0 = hosts[0]
    items = [StageItem("code", local=str(src / "code"))]
    if args.big_mib:
        items.append(StageItem("data/big.bin", local=str(src / "big.bin")))
    cache = HashCache(tmp / "hash-cache.json")
    known = InventoryCache(tmp / "inventory-cache.json")
    cold = options_for(cluster, "cold")

    # first staging: each round into an empty store (a workdir of its own) on the next host,
    # both tools, the one that goes first alternating (the second one meets the first one's
    # dirty pages and freed inodes: always the same one second was a bias); medians compared
    rounds = max(1, args.first_rounds)
    ours_t, rsync_t, ours_c, rsync_c = [], [], [], []
    WALK_TIMES.clear()
    warm_mib = 0 if args.no_warm else (total >> 20) + 128

    def rsync_round(host: Host, k: int) -> None:
        if warm_mib:
            warm_page_cache(tmp / "scratch", warm_mib)
        before = cpu.seconds()
        rsync_t.append(rsync(host, cold, src, f"/root/rsync-first{k}"))
        spent(cpu, before, rsync_c)

    def ours_round(host: Host, k: int) -> None:
        if warm_mib:
            warm_page_cache(tmp / "scratch", warm_mib)
        before = cpu.seconds()
        fresh = replace(host, workdir=f"/root/first{k}")  # its own store: empty
        took, sent = stage([fresh], cold, items, f"/root/first{k}/alaunch/job", HashCache(tmp / f"hc{k}.json"),
                           InventoryCache(None))
        spent(cpu, before, ours_c)
        assert sent == total, (sent, total)
        ours_t.append(took)

    for k in range(rounds):
        host = hosts[len(hosts) - 1 - k % max(1, len(hosts) - 1)]
        for one in ((rsync_round, ours_round) if k % 2 == 0 else (ours_round, rsync_round)):
            one(host, k)
    t_ours, t_rsync = statistics.median(ours_t), statistics.median(rsync_t)
    mib = total / 2**20
    print(f"first staging of {args.files} files + {args.big_mib} MiB ({mib:.0f} MiB), cold, incl. hashing: "
          f"alaunch {t_ours:.2f} s ({mib / t_ours:.0f} MiB/s), rsync {t_rsync:.2f} s "
          f"({mib / t_rsync:.0f} MiB/s) -> throughput ratio {t_rsync / t_ours:.2f}x (goal >= 1.0x); of which the "
          f"local walk + sha256 {statistics.median(WALK_TIMES):.2f} s; rounds "
          f"alaunch {', '.join(f'{t:.2f}' for t in ours_t)}; rsync {', '.join(f'{t:.2f}' for t in rsync_t)}; "
          f"CPU-s, both ends: alaunch {', '.join(f'{c:.2f}' for c in ours_c) or 'n/a'}; "
          f"rsync {', '.join(f'{c:.2f}' for c in rsync_c) or 'n/a'}"
          f"{'' if warm_mib else ' (no page-cache warm-up: --no-warm)'}; rsync first in even rounds")
    if args.first_only:
        return
    stage([h0], cold, items, "/root/alaunch/alaunch/j0", cache, known)  # host 0 has it all now

    # no-op re-staging (every file already there), rounds alternating, medians compared
    for mode in ("cold", "warm"):
        options = options_for(cluster, mode)
        rsync(h0, options, src, "/root/rsync-dest")  # warm-up (and, warm mode, the shared master)
        stage([h0], options, items, f"/root/alaunch/alaunch/{mode}-w", cache, known)
        ours_t, rsync_t = [], []
        WALK_TIMES.clear()
        for k in range(args.rounds):
            took, sent = stage([h0], options, items, f"/root/alaunch/alaunch/{mode}{k}", cache, known)
            assert sent == 0
            ours_t.append(took)
            rsync_t.append(rsync(h0, options, src, "/root/rsync-dest"))
        a, r = statistics.median(ours_t), statistics.median(rsync_t)
        print(f"no-op re-staging, {mode}: alaunch {a:.3f} s, rsync {r:.3f} s -> time ratio {a / r:.2f}x "
              f"(goal <= 0.5x); of which the local walk of {args.files} files "
              f"{statistics.median(WALK_TIMES) * 1000:.0f} ms; "
              f"rounds alaunch {', '.join(f'{t:.3f}' for t in ours_t)}; "
              f"rsync {', '.join(f'{t:.3f}' for t in rsync_t)}")

    # fan-out: a tree no host has (fresh random content each time), staged and launched
    for label, n in (("1 host", 1), (f"{len(hosts)} hosts", len(hosts))):
        tree = tmp / f"fan{n}"
        make_tree(tree, args.files, args.tree_mib, 0)
        took, cpu = stage_and_launch(hosts[:n], cold, [StageItem("code", local=str(tree / "code"))], f"fan{n}")
        if n == 1:
            t1, cpu1 = took, cpu
        else:
            cores = os.cpu_count() or 1
            floor = cpu / cores
            print(f"stage ({args.files} files, {args.tree_mib} MiB, new to every host) + launch: 1 host "
                  f"{t1:.2f} s ({cpu1:.2f} CPU-s), {label} {took:.2f} s ({cpu:.2f} CPU-s) -> ratio "
                  f"{took / t1:.2f}x (goal <= 1.5x); on {cores} shared cores the {label} cannot take less than "
                  f"{floor:.2f} s = {floor / t1:.2f}x; wall / that floor {took / floor:.2f}")


if __name__ == "__main__":
    main()
