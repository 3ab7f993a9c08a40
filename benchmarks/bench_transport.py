"""Transport benchmark on a real 8-host sshd cluster (needs root; run with `make bench`).

Prints, each against a baseline measured in the same run:
  1. 8 hosts connected sequentially vs in parallel (launcher.ops.fanout.run_parallel);
  2. command round trip on an open connection with vs without TCP_NODELAY;
  3. the host scripts' round trips.
(Staging many small files against rsync is benchmarks/bench_stage.py.)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launcher.core.hostfile import Host  # noqa: E402
from launcher.ops.fanout import run_parallel  # noqa: E402
from launcher.runners import ConnectOptions, SSHRunner  # noqa: E402
from tests.cluster import Cluster, unavailable_reason  # noqa: E402


def runners(cluster, nodelay=True):
    opts = ConnectOptions(known_hosts=cluster.known_hosts, ssh_config=cluster.ssh_config, nodelay=nodelay)
    return [SSHRunner(Host(h.name, 8), opts) for h in cluster.hosts]


def connect_all(rs, parallel):
    t0 = time.perf_counter()
    if parallel:
        run_parallel(rs, lambda r: r.ping()).raise_on_failure()
    else:
        for r in rs:
            r.ping()
    dt = time.perf_counter() - t0
    for r in rs:
        r.close()
    return dt


def round_trip(cluster, nodelay, n=30):
    r = runners(cluster, nodelay)[0]
    r.run(["true"])
    times = [r.run(["true"]).duration for _ in range(n)]
    r.close()
    return statistics.median(times)


def remote_script_round_trips(cluster, n=20) -> str:
    """A fixed host script's round trip (ssh session + python -S + request + answer) with its
    request read by ``json`` vs by the marshal prelude (launcher/remote/_prelude.py, no ``import json``)."""
    from launcher.remote import wire
    r = runners(cluster)[0]
    py = str(Path(sys.executable).parent / "python3")
    req = {"base": "/root/alaunch", "objects": ["0" * 64] * 10}
    json_script = "import json, sys\nreq = json.load(sys.stdin)\nprint(json.dumps({'n': len(req['objects'])}))"
    wire_script = wire.source("_prelude") + "req = read_request()\nprint(dumps({'n': len(req['objects'])}))"
    import json
    times = {}
    for label, argv, stdin in (("json", [py, "-S", "-c", json_script], json.dumps(req)),
                               ("wire", [py, "-S", "-c", wire_script], wire.request(req))):
        r.run(argv, stdin=stdin)
        times[label] = statistics.median(r.run(argv, stdin=stdin).duration for _ in range(n))
    r.close()
    return (f"host script round trip: json request {times['json'] * 1000:.1f} ms, marshal (launcher.remote.wire) "
            f"{times['wire'] * 1000:.1f} ms -> {(times['json'] - times['wire']) * 1000:.1f} ms saved per call")


def main() -> int:
    reason = unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    cluster = Cluster(8).up()
    try:
        seq = statistics.median(connect_all(runners(cluster), False) for _ in range(3))
        par = statistics.median(connect_all(runners(cluster), True) for _ in range(3))
        print(f"connect 8 hosts: sequential {seq:.3f} s, parallel {par:.3f} s -> {seq / par:.1f}x faster")

        slow, fast = round_trip(cluster, False), round_trip(cluster, True)
        print(f"round trip: no TCP_NODELAY {slow * 1000:.1f} ms, TCP_NODELAY {fast * 1000:.1f} ms "
              f"-> {slow / fast:.1f}x faster")

        print(remote_script_round_trips(cluster))

    finally:
        cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
