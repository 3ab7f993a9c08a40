"""The follower at 64 nodes: the laptop's CPU per minute (idle logs, and 10 lines/s per node)
and the p95 latency of a line, for the follower's two transports (run on demand; root).

    .venv/bin/python benchmarks/bench_follow_scale.py [--nodes 64] [--seconds 20]

Every node runs the follower's host script (``ops.follow_transport.follow_argv``) on a job directory of
its own test host; a separate writer process (not measured) appends timestamped lines to each
host's ``msrun_log/worker_0.log`` directly on disk. Transports, same script, same sshd, both the
code ``alaunch logs -f`` runs:

- ``paramiko NodeStream threads``: ``ops.follow_transport.NodeStream`` over ``SSHRunner.stream``, one
  thread per node plus its stop watcher (the SSH crypto and packet handling in Python, in this
  process, under one GIL): the fallback when there is no ``ssh`` binary;
- ``PipeHub (ssh + 1 thread)``: ``ops.follow_transport.PipeHub`` over ``OpenSSHRunner``: one OpenSSH
  client per node (``OpenSSHRunner.process_argv``: it rides a master that is up, else its own
  connection: no master is up here, as for a ``logs -f`` a minute after the submit; crypto in
  C, in its own process), every client's stdout read by a single thread with ``selectors``.

CPU = user+sys of this process plus its live ssh processes (its children, and the daemonized
ControlMasters, found by their control path) from /proc, over the window; reported per minute.
The machine's busy CPU-seconds (all processes: sshds, host scripts, other users) are printed
beside it: with 64 hosts on 2 cores the host side competes for the same cores, which bounds the
latency here.
"""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher.ops.follow_transport import NodeStream, PipeHub, follow_argv  # noqa: E402
from launcher.runners import ConnectOptions, OpenSSHRunner, SSHRunner  # noqa: E402
from tests.cluster.cluster import Cluster, unavailable_reason  # noqa: E402

PY = str(Path(sys.executable).parent / "python3")
TICK = os.sysconf("SC_CLK_TCK")

WRITER = r"""
import sys, time
paths, rate, seconds = sys.argv[3:], float(sys.argv[1]), float(sys.argv[2])
files = [open(p, "a", buffering=1) for p in paths]
gap, n, end = 1.0 / rate, 0, time.time() + seconds
while time.time() < end:
    t = time.time()
    for f in files:
        f.write("%.6f line %d loss: 1.0\n" % (time.time(), n))
    n += 1
    time.sleep(max(0.0, gap - (time.time() - t)))
"""


def proc_cpu(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / TICK


def busy_cpu_seconds() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


class Threads:
    name = "paramiko NodeStream threads"

    def __init__(self, hosts, options, root):
        self.q: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.streams = [NodeStream(SSHRunner(h, options), follow_argv(PY, root), self.q, self.stop) for h in hosts]

    def start(self):
        for s in self.streams:
            s.start()

    def pids(self):
        return []

    def events(self, timeout):
        try:
            return [self.q.get(timeout=timeout)]
        except queue.Empty:
            return []

    def close(self):
        self.stop.set()
        for s in self.streams:
            s.join(5)


def masters(prefixes: list[str]) -> list[int]:
    """The pids of ControlMasters whose socket names start with one of ``prefixes``."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"ssh: ") and any(p.encode() in cmd for p in prefixes):
                found.append(int(d.name))
    return found


class Hub:
    name = "PipeHub (ssh + 1 thread)"

    def __init__(self, hosts, options, root):
        self.q: queue.Queue = queue.Queue()
        self.hub = PipeHub(self.q, threading.Event())
        self.runners = [OpenSSHRunner(h, options) for h in hosts]
        for r in self.runners:
            self.hub.add(r, lambda offsets: follow_argv(PY, root, offsets=offsets))

    def start(self):
        self.hub.start()

    def pids(self):
        prefixes = [Path(r._control).name.split("%", 1)[0] for r in self.runners]
        return [n.proc.pid for n in self.hub.nodes if n.proc is not None] + masters(prefixes)

    def events(self, timeout):
        try:
            return [self.q.get(timeout=timeout)]
        except queue.Empty:
            return []

    def close(self):
        self.hub.close()


def window(strategy, seconds: float, writer=None) -> tuple[float, float, list[float]]:
    """(laptop CPU-s, machine busy CPU-s, latencies) over ``seconds``."""
    pids = strategy.pids()
    print(f"{strategy.name}: window of {seconds:g} s, CPU of this process + {len(pids)} ssh processes", flush=True)
    cpu0 = proc_cpu(os.getpid()) + sum(proc_cpu(p) for p in pids)
    busy0, end = busy_cpu_seconds(), time.monotonic() + seconds
    lat = []
    if writer is not None:
        writer()
    while time.monotonic() < end:
        for ev in strategy.events(0.2):
            if ev.kind == "line" and " line " in ev.text:
                lat.append(time.time() - float(ev.text.split()[0]))
    cpu = proc_cpu(os.getpid()) + sum(proc_cpu(p) for p in pids) - cpu0
    return cpu, busy_cpu_seconds() - busy0, lat


def pct(values, p):
    return sorted(values)[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rate", type=float, default=10.0, help="lines/s per node")
    args = ap.parse_args()
    if unavailable_reason():
        raise SystemExit(f"skipped: {unavailable_reason()}")
    cluster = Cluster(args.nodes, shared=False).up()
    rows = []
    try:
        hosts = cluster.hosts_as_launcher_hosts(slots=1)
        options = ConnectOptions(known_hosts=cluster.known_hosts, control_persist=0)
        for k, cls in enumerate((Threads, Hub)):
            root = f"/root/follow-{k}"
            logs = []
            for h in cluster.hosts:
                d = h.path(f"{root}/msrun_log")
                d.mkdir(parents=True, exist_ok=True)
                (d / "worker_0.log").write_text("start\n")
                logs.append(str(d / "worker_0.log"))
            strategy = cls(hosts, options, root)
            t0 = time.monotonic()
            strategy.start()
            connected = set()
            while len(connected) < len(hosts) and time.monotonic() - t0 < 120:
                for ev in strategy.events(0.5):
                    connected.add(ev.host)
            up = time.monotonic() - t0
            idle = window(strategy, args.seconds)
            proc = []

            def write(proc: list = proc, logs: list = logs) -> None:
                proc.append(subprocess.Popen([sys.executable, "-c", WRITER, str(args.rate), str(args.seconds - 1),
                                              *logs]))
            busy = window(strategy, args.seconds, write)
            proc[0].wait()
            strategy.close()
            rows.append((cls.name, up, len(connected), idle, busy))
    finally:
        cluster.down()
    per_min = 60 / args.seconds
    expected = int(args.rate * (args.seconds - 1)) * args.nodes
    print(f"{args.nodes} nodes, windows of {args.seconds:.0f} s, {args.rate:g} lines/s per node; load "
          f"{os.getloadavg()[0]:.1f}; laptop CPU-s per minute (machine busy CPU-s per minute)")
    for name, up, n, idle, busy in rows:
        print(f"  {name:<26} all {n} streams up in {up:5.1f} s | idle {idle[0] * per_min:6.1f} "
              f"({idle[1] * per_min:6.1f}) | at {args.rate:g} lines/s {busy[0] * per_min:6.1f} "
              f"({busy[1] * per_min:6.1f}) | lines {len(busy[2])}/{expected} "
              f"p50 {pct(busy[2], 50) * 1e3:6.0f} ms p95 {pct(busy[2], 95) * 1e3:6.0f} ms")
    (a, *_, ia, ba), (b, *_, ib, bb) = rows
    print(f"follow {args.nodes} nodes: {a} {ba[0] * per_min:.1f} CPU-s/min p95 {pct(ba[2], 95) * 1e3:.0f} ms; "
          f"{b} {bb[0] * per_min:.1f} CPU-s/min p95 {pct(bb[2], 95) * 1e3:.0f} ms; idle {ia[0] * per_min:.1f} vs "
          f"{ib[0] * per_min:.1f} CPU-s/min")


if __name__ == "__main__":
    main()
