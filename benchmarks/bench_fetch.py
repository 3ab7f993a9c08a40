"""Fetching a checkpoint home vs rsync over the same sshd (run on demand; root).

    .venv/bin/python benchmarks/bench_fetch.py [--mib 512] [--rounds 3] [--check crc32x1m]

Both pull one ``--mib`` MiB checkpoint from a real cluster host into an empty local dir,
rsync with exactly the ssh options alaunch uses (``rsync -e`` from the same pure function).
alaunch's time includes everything ``fetch_job`` does: the listing (cold: the host's digest
cache is removed each round), the transfer with its check on both ends (xxh3-128 where both
Pythons import xxhash, as here; ``--check crc32x1m``: the stdlib CRC-32 per MiB a host without
xxhash gets), the rename and job.json. Rounds alternate; medians are compared. Goal: >= 1.0x rsync's
throughput. Two modes, like with like: *cold* (each run opens its own ssh connection, as a
fresh command does) and *warm* (both through one ssh master kept between runs). Also
printed: a no-op refetch (everything already here) vs rsync's no-op, and the limits of this
machine in the same run: the ssh cipher alone (``ssh host cat file > /dev/null`` through the
same warm master) and the cipher plus the local disk (``> file``). Beside every time, the
CPU-seconds of everything the tool ran, both ends (``cgroup_cpu.py``): on this shared machine
those hold still when the wall times swing with the other sessions' load.
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

from cgroup_cpu import CgroupCPU  # noqa: E402

from launcher.cli.environment import Environment  # noqa: E402
from launcher.ops.collect import REMOTE_HASH_CACHE, fetch_job  # noqa: E402
from launcher.ops.registry import Registry  # noqa: E402
from launcher.runners import ConnectOptions  # noqa: E402
from launcher.runners.openssh import control_path, rsync_rsh, ssh_argv  # noqa: E402
from tests.cluster.cluster import Cluster, unavailable_reason  # noqa: E402

REL = "output/checkpoint/rank_0/llama_rank_0-1_100.ckpt"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--check", choices=["best", "crc32x1m"], default="best",
                    help="the fetch check the laptop offers (crc32x1m: as with a host Python without xxhash)")
    args = ap.parse_args()
    if args.check != "best":
        from launcher.ops import collect
        collect.fetch_checks = lambda: [args.check]  # type: ignore[assignment]  # what LIST is offered
    reason = unavailable_reason()
    if reason:
        sys.exit(f"cannot run: {reason}")
    cpu = CgroupCPU()  # before the cluster starts: its sshds are counted too
    cluster = Cluster(1).up()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run(cluster, Path(tmp), args, cpu)
    finally:
        cluster.down()
        cpu.close()


def timed(cpu: CgroupCPU, fn, spent: list[float]) -> float:
    """``fn()``'s wall time; its CPU-seconds (every process it ran) appended to ``spent``."""
    before = cpu.seconds()
    took = fn()
    after = cpu.seconds()
    if before is not None and after is not None:
        spent.append(after - before)
    return took


def cpu_line(spent: list[float]) -> str:
    return ", ".join(f"{c:.2f}" for c in spent) if spent else "n/a (no cgroup)"


def run(cluster: Cluster, tmp: Path, args, cpu: CgroupCPU) -> None:
    h = cluster.hosts[0]
    host = cluster.hosts_as_launcher_hosts(slots=1)[0]
    job_dir = "/root/alaunch/alaunch/bench"
    ckpt = h.path(f"{job_dir}/{REL}")
    ckpt.parent.mkdir(parents=True)
    with open(ckpt, "wb") as f:
        for _ in range(args.mib):
            f.write(os.urandom(1 << 20))
    registry = Registry(tmp / "state" / "registry.sqlite3")
    job = registry.create_job("bench", "finetune", spec_text="name: bench\noutputs:\n  checkpoints: "
                              "['output/checkpoint/**/*.ckpt']\n  logs: []\n",
                              hostfile_text=f"{host.name} slots=1 user=root identity={host.identity}\n",
                              nodes=[(host.name, job_dir)], state="succeeded",
                              meta={"pythons": {host.name: sys.executable}}).id
    env = Environment(state_dir=tmp / "state")
    remote_cache = h.path(f"{job_dir}/{REMOTE_HASH_CACHE}")
    for mode, persist in (("cold", 0), ("warm", 60)):
        # cold: every run opens its own ssh connection (what a fresh `alaunch fetch` / `rsync`
        # does); warm: both go through one ssh master kept open between runs (control_persist).
        options = ConnectOptions(known_hosts=cluster.known_hosts, control_persist=persist)
        rsh = rsync_rsh(host, options, control=control_path(options) if persist else None)

        def ours(options: ConnectOptions = options) -> float:
            shutil.rmtree(tmp / "runs", ignore_errors=True)
            remote_cache.unlink(missing_ok=True)
            start = time.perf_counter()
            report = fetch_job(registry, job, "checkpoints", tmp / "runs", env.state_dir, options=options)
            took = time.perf_counter() - start
            assert report.bytes_transferred == ckpt.stat().st_size, report
            return took

        def rsync(rsh: str = rsh) -> float:
            shutil.rmtree(tmp / "rsync", ignore_errors=True)
            (tmp / "rsync").mkdir()
            start = time.perf_counter()
            subprocess.run(["rsync", "-a", "-e", rsh, f"{host.name}:{job_dir}/{REL}", str(tmp / "rsync") + "/"],
                           check=True)
            return time.perf_counter() - start

        ours()  # warm-up: page cache, imports (and, warm mode, the ssh master)
        rsync()
        t_ours, t_rsync, c_ours, c_rsync = [], [], [], []
        for _ in range(args.rounds):
            t_ours.append(timed(cpu, ours, c_ours))
            t_rsync.append(timed(cpu, rsync, c_rsync))
        a, r = statistics.median(t_ours), statistics.median(t_rsync)
        print(f"[{mode}] fetch of a {args.mib} MiB checkpoint: alaunch {a:.2f} s ({args.mib / a:.0f} MiB/s), "
              f"rsync {r:.2f} s ({args.mib / r:.0f} MiB/s) -> throughput ratio {r / a:.2f}x (goal >= 1.0x)")
        print(f"  rounds: alaunch {', '.join(f'{t:.2f}' for t in t_ours)}; "
              f"rsync {', '.join(f'{t:.2f}' for t in t_rsync)}")
        print(f"  CPU-s, both ends: alaunch {cpu_line(c_ours)}; rsync {cpu_line(c_rsync)}")

    start = time.perf_counter()
    again = fetch_job(registry, job, "checkpoints", tmp / "runs", env.state_dir, options=options)
    t_noop = time.perf_counter() - start
    assert again.bytes_transferred == 0
    t_rsync_noop = rsync_noop(rsh, host.name, job_dir, tmp)
    print(f"[warm] no-op refetch: alaunch {t_noop:.3f} s, rsync {t_rsync_noop:.3f} s -> time ratio "
          f"{t_noop / t_rsync_noop:.2f}x")
    limits(host, options, job_dir, tmp, args, cpu)
    registry.close()


def limits(host, options: ConnectOptions, job_dir: str, tmp: Path, args, cpu: CgroupCPU) -> None:
    """The same file through the same warm ssh master with nothing but ``cat`` on either end."""
    argv = ssh_argv(host, options, ["cat", f"{job_dir}/{REL}"], control=control_path(options))

    def cat(to) -> float:
        start = time.perf_counter()
        with open(to, "wb") as out:
            subprocess.run(argv, stdout=out, check=True)
        return time.perf_counter() - start

    for label, to in (("ssh cipher alone (cat > /dev/null)", os.devnull), ("ssh + local disk (cat > file)",
                                                                         tmp / "cat.bin")):
        spent: list[float] = []
        times = [timed(cpu, lambda to=to: cat(to), spent) for _ in range(args.rounds)]
        t = statistics.median(times)
        print(f"[limit] {label}: {t:.2f} s ({args.mib / t:.0f} MiB/s); rounds {', '.join(f'{x:.2f}' for x in times)}; "
              f"CPU-s {cpu_line(spent)}")


def rsync_noop(rsh: str, name: str, job_dir: str, tmp: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["rsync", "-a", "-e", rsh, f"{name}:{job_dir}/{REL}", str(tmp / "rsync") + "/"], check=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
