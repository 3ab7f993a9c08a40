"""How long from a line written on a host to it being printed here, through the follower.

A real sshd host of the test cluster (own network namespace, loopback-class bridge) runs the
follower's remote script over SSH on a job directory; this process appends 200 lines, each
carrying its write time, to that host's ``worker_0.log`` (20 ms apart), and records when each
comes out of the local printer. Baseline in the same run: the same script through the
local runner (no SSH), so the ratio is what SSH adds.

Goal (issue 6): p95 < 0.5 s over 200 lines. Run: ``.venv/bin/python benchmarks/bench_follow.py``
(as root: it brings the cluster up and down).
"""

from __future__ import annotations

import io
import os
import queue
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402

from launcher.cli import environment  # noqa: E402
from launcher.cli.logview import LinePrinter  # noqa: E402
from launcher.core.hostfile import Host  # noqa: E402
from launcher.ops.follow_transport import NodeStream, follow_argv  # noqa: E402
from launcher.runners import ConnectOptions, LocalRunner, SSHRunner  # noqa: E402

LINES = 200
GAP_S = 0.02
GOAL_P95_S = 0.5


def measure(runner, root_here: Path, root_there: str) -> list[float]:
    """Latencies (s) of LINES lines appended at root_here, followed at root_there by runner."""
    (root_here / "msrun_log").mkdir(parents=True, exist_ok=True)
    log = root_here / "msrun_log" / "worker_0.log"
    log.write_text("")
    q: queue.Queue = queue.Queue()
    stop = threading.Event()
    stream = NodeStream(runner, follow_argv(sys.executable, root_there), q, stop)
    stream.start()
    environment.set_current(environment.Environment(stdout=Console(file=io.StringIO(), width=100)))
    printer = LinePrinter(tagged=True, raw=True)
    latencies: list[float] = []

    def write() -> None:
        with log.open("a") as fh:
            fh.write("warm-up\n")
            fh.flush()
            time.sleep(1.0)  # the channel is up and the file is open before timing starts
            for i in range(LINES):
                fh.write(f"{time.time():.6f} line {i} loss: 1.0\n")
                fh.flush()
                time.sleep(GAP_S)

    writer = threading.Thread(target=write)
    writer.start()
    deadline = time.monotonic() + 60
    while len(latencies) < LINES and time.monotonic() < deadline:
        try:
            ev = q.get(timeout=0.5)
        except queue.Empty:
            continue
        if ev.kind != "line" or " line " not in ev.text:
            continue
        printer.emit(ev.host, ev.rank, ev.text)
        latencies.append(time.time() - float(ev.text.split()[0]))
    stop.set()
    writer.join()
    stream.join(5)
    return latencies


def pct(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> int:
    from tests.cluster.cluster import Cluster, unavailable_reason
    reason = unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    cluster = Cluster(1).up()
    try:
        h = cluster.hosts[0]
        ssh = SSHRunner(Host(h.address, 1, user="root", identity=str(cluster.client_key)),
                        ConnectOptions(known_hosts=cluster.known_hosts))
        remote = measure(ssh, h.path("/root/bench-follow"), "/root/bench-follow")
        base_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-follow-{os.getpid()}"
        local = measure(LocalRunner(Host("localhost", 1)), base_dir, str(base_dir))
        shutil.rmtree(base_dir, ignore_errors=True)
    finally:
        cluster.down()
    for name, lat in (("ssh (cluster host)", remote), ("local (baseline)", local)):
        print(f"{name:<20} lines {len(lat):>3}  p50 {statistics.median(lat) * 1000:6.1f} ms  "
              f"p95 {pct(lat, 95) * 1000:6.1f} ms  max {max(lat) * 1000:6.1f} ms")
    p95 = pct(remote, 95)
    print(f"ratio ssh/local p95: {p95 / max(pct(local, 95), 1e-9):.2f}x")
    ok = len(remote) == LINES and p95 < GOAL_P95_S
    print(f"goal: p95 < {GOAL_P95_S * 1000:.0f} ms over {LINES} lines -> "
          f"{'MET' if ok else 'MISSED'} ({p95 * 1000:.1f} ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
