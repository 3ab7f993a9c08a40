"""Relay staging vs direct sends vs rsync to each host, with the laptop's link throttled.

    .venv/bin/python benchmarks/bench_relay.py [--hosts 8] [--mib 256] [--rate 200mbit]

The real sshd cluster (tests/cluster, root) with ``tc`` (a token bucket) on the laptop's side
of the test network: the bridge's own egress carries only what the laptop sends, while
host-to-host traffic is forwarded between the hosts' ports and is not throttled (as a laptop
on a 1 Gb/s link next to nodes on a fast fabric).

Three ways to put ``--mib`` MiB (4 files) on every host, each from empty stores:
- alaunch relay (``ALAUNCH_RELAY=on``): laptop -> host0 -> {host1, host2} -> ...;
- alaunch direct (``ALAUNCH_RELAY=off``): the laptop sends to every host;
- rsync to each host, all at once, with alaunch's ssh options.
For each: wall time, bytes the laptop put on the wire (the bridge's tx counter, ssh framing
included) and the machine's busy CPU-seconds (every host shares these 2 cores: the hops'
hashing, writing and ssh crypto cannot take less than CPU-seconds / 2).
Goals: laptop bytes <= 1.2x the data for relay (8x for direct); relay faster than both.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher.core.plan import StageItem  # noqa: E402
from launcher.ops.stage import HashCache, Stager, collect  # noqa: E402
from launcher.runners import ConnectOptions, make_runner  # noqa: E402
from launcher.runners.openssh import rsync_rsh  # noqa: E402
from tests.cluster.cluster import Cluster, unavailable_reason  # noqa: E402

PY = str(Path(sys.executable).parent / "python3")


def busy_cpu_seconds() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def tx_bytes(dev: str) -> int:
    return int(Path(f"/sys/class/net/{dev}/statistics/tx_bytes").read_text())


def wipe(cluster: Cluster) -> None:
    for i in range(len(cluster.hosts)):
        cluster.exec_on(i, ["rm", "-rf", "/root/alaunch", "/root/rsync-dest"])
    subprocess.run(["sync"], check=False)


def own_cpu(cluster: Cluster) -> float:
    """This process and what it ran (ssh, rsync), plus the hosts' sshds and what they ran."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + cluster.cpu_seconds()


def measure(cluster: Cluster, name: str, fn) -> dict:
    wipe(cluster)
    tx0, cpu0, own0, t0 = tx_bytes(cluster.bridge), busy_cpu_seconds(), own_cpu(cluster), time.monotonic()
    fn()
    wall = time.monotonic() - t0
    return {"name": name, "wall": wall, "cpu": busy_cpu_seconds() - cpu0, "own": own_cpu(cluster) - own0,
            "tx": tx_bytes(cluster.bridge) - tx0, "load": os.getloadavg()[0]}


def check_everywhere(cluster: Cluster, root: str, expect: str) -> None:
    for i in range(len(cluster.hosts)):
        out = cluster.exec_on(i, ["sh", "-c", f"cd {root} && sha256sum data/* | sha256sum"], timeout=120).stdout
        if out.split()[0:1] != [expect]:
            raise SystemExit(f"host{i}: {root} does not hold the data ({out!r})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rate", default="200mbit")
    args = ap.parse_args()
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"skipped: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "data"
        src.mkdir()
        for k in range(4):
            with open(src / f"part{k}.bin", "wb") as f:
                for _ in range(args.mib // 4):
                    f.write(os.urandom(1 << 20))
        expect = subprocess.run(f"cd {tmp} && sha256sum data/* | sha256sum", shell=True, capture_output=True,
                                text=True).stdout.split()[0]
        local = collect([StageItem("data", local=str(src))], HashCache(None))
        data = local.total_bytes
        cluster = Cluster(args.hosts, shared=False).up()
        try:
            subprocess.run(["tc", "qdisc", "add", "dev", cluster.bridge, "root", "tbf", "rate", args.rate,
                            "burst", "256kb", "latency", "100ms"], check=True)
            hosts = cluster.hosts_as_launcher_hosts(slots=1)
            opts = ConnectOptions(known_hosts=cluster.known_hosts, control_persist=0)

            def stage(mode: str) -> None:
                nodes = {h.name: make_runner(h, options=opts).using(PY) for h in hosts}
                try:
                    result = Stager(nodes, relay=mode).stage(local, {h.name: "~/alaunch/j" for h in hosts})
                finally:
                    for n in nodes.values():
                        n.close()
                if mode == "on" and (result.relay is None or result.relay.failed):
                    raise SystemExit(f"relay did not reach every host: {result.relay and result.relay.failed}")
                check_everywhere(cluster, "/root/alaunch/j", expect)

            def rsync_all() -> None:
                procs = [subprocess.Popen(["rsync", "-a", "--whole-file", "--mkpath", "-e", rsync_rsh(h, opts),
                                           f"{src}/", f"{h.name}:/root/rsync-dest/data/"]) for h in hosts]
                if any(p.wait() for p in procs):
                    raise SystemExit("rsync failed")
                check_everywhere(cluster, "/root/rsync-dest", expect)

            print(f"{args.hosts} hosts, {data / 2**20:.0f} MiB, laptop link {args.rate} (tc tbf on "
                  f"{cluster.bridge}); 2 cores shared by every host")
            rows = [measure(cluster, "alaunch relay", lambda: stage("on")),
                    measure(cluster, "alaunch direct", lambda: stage("off")),
                    measure(cluster, "rsync to each host", rsync_all)]
        finally:
            subprocess.run(["tc", "qdisc", "del", "dev", cluster.bridge, "root"], check=False)
            cluster.down()
    link = data * 8 / parse_rate(args.rate)
    print(f"{'':<20} {'wall':>8} {'laptop bytes':>14} {'x data':>7} {'own CPU-s':>9} {'floor':>7} "
          f"{'machine CPU-s':>13} {'load':>5}")
    for r in rows:
        print(f"{r['name']:<20} {r['wall']:7.1f}s {r['tx'] / 2**20:11.0f} MiB {r['tx'] / data:6.2f}x "
              f"{r['own']:9.1f} {r['own'] / 2:6.1f}s {r['cpu']:13.1f} {r['load']:5.1f}")
    print(f"(own CPU-s: this process, its ssh/rsync children, the hosts' sshds and all they ran; floor = own / 2 "
          f"cores, reached only on an otherwise idle machine; the link alone needs {link:.1f} s per copy)")
    relay, direct, rsync = rows
    print(f"relay {args.hosts} hosts {data / 2**20:.0f} MiB at {args.rate}: laptop sent {relay['tx'] / data:.2f}x "
          f"the data (direct {direct['tx'] / data:.2f}x); wall relay {relay['wall']:.1f} s, direct "
          f"{direct['wall']:.1f} s ({relay['wall'] / direct['wall']:.2f}x), rsync {rsync['wall']:.1f} s "
          f"({relay['wall'] / rsync['wall']:.2f}x); relay 2-core floor {relay['own'] / 2:.1f} s, "
          f"link floor {link:.1f} s")


def parse_rate(rate: str) -> float:
    """tc's rate (``200mbit``, ``1gbit``) in bits/s."""
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bit": 1}
    for unit, scale in units.items():
        if rate.endswith(unit):
            return float(rate[:-len(unit)]) * scale
    raise SystemExit(f"--rate {rate!r}: use e.g. 200mbit")


if __name__ == "__main__":
    main()
