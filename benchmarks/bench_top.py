"""`alaunch top`'s refresh at 8 and 64 hosts against one ``pdsh npu-smi info`` (run on demand; root).

    .venv/bin/python benchmarks/bench_top.py [--sizes 8,64] [--rounds 5]

A test cluster (tests/cluster: one sshd per network namespace, each host's ``npu-smi`` the
emulator of 8 cards, a few held by claims). Per size:

- ``pdsh``: ``pdsh -R ssh -f 64 -w HOSTS npu-smi info`` with alaunch's own ssh options
  (``PDSH_SSH_ARGS``), a fresh connection per host, as ``watch pdsh ...`` would do;
- ``top cold``: the first refresh of ``alaunch top`` (``ops.cards.survey``: no ssh master up yet,
  a handshake per host);
- ``top warm``: the refreshes after it (what ``top`` does every 2 s: its runners keep their
  masters, so a refresh is one round trip per host: the TOP host script, which runs the same
  ``npu-smi info`` and also reads every user's claims and the owners of the listed processes).

Also checked, not timed: every refresh makes exactly one host command per host (the runners'
``check`` calls are counted). Every sshd, ssh client and npu-smi emulator (a Python start,
~0.1 CPU-s each) runs on this machine's 2 cores, so both tools are bound by the hosts' work
at 64 hosts; own CPU-s (this process, its children, the hosts' sshds and all they ran) is
printed. Last line: ``top 64 hosts: warm W s, cold C s, pdsh P s, ratio W/P``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher.ops.cards import survey  # noqa: E402
from launcher.runners import ConnectOptions, make_runner  # noqa: E402
from launcher.runners.openssh import control_path, ssh_options  # noqa: E402
from tests.cluster.cluster import Cluster, unavailable_reason  # noqa: E402

PY = str(Path(sys.executable).parent / "python3")


def own_cpu(cluster: Cluster) -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + cluster.cpu_seconds()


def pdsh(hosts, options: ConnectOptions) -> float:
    same = ssh_options(replace(hosts[0], user=None), options)
    env = dict(os.environ, PDSH_SSH_ARGS=" ".join(same) + " -l%u %h")
    t0 = time.perf_counter()
    res = subprocess.run(["pdsh", "-S", "-R", "ssh", "-f", "64", "-l", "root", "-w", ",".join(h.name for h in hosts),
                          "npu-smi info"], env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if res.returncode != 0 or res.stdout.count("npu-smi") < len(hosts):
        raise SystemExit(f"pdsh failed ({res.returncode}): {res.stderr[-500:]}")
    return took


class Counting:
    """Counts each runner's host commands (one per host per refresh is the claim)."""

    def __init__(self):
        self.calls = Counter()

    def wrap(self, runner):
        check = runner.check

        def counted(*a, **kw):
            self.calls[runner.host.name] += 1
            return check(*a, **kw)
        runner.check = counted
        return runner


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="8,64")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if unavailable_reason() or not shutil.which("pdsh"):
        raise SystemExit(f"skipped: {unavailable_reason() or 'pdsh not installed (scripts/install-bench-deps)'}")
    t0 = time.perf_counter()
    cluster = Cluster(max(sizes), shared=False).up()
    print(f"{max(sizes)}-host cluster up in {time.perf_counter() - t0:.1f} s; load {os.getloadavg()[0]:.1f}")
    cold = ConnectOptions(known_hosts=cluster.known_hosts, control_persist=0)
    warm = ConnectOptions(known_hosts=cluster.known_hosts, control_persist=120)
    try:
        all_hosts = cluster.hosts_as_launcher_hosts(slots=8)
        for i in range(0, len(all_hosts), 3):  # some cards held, so holders are resolved too
            cluster.exec_on(i, ["python3", "-c",
                                "import os; os.makedirs('/var/tmp/alaunch-cards', exist_ok=True); "
                                "os.chmod('/var/tmp/alaunch-cards', 0o1777); "
                                "open('/var/tmp/alaunch-cards/bench-j.claim', 'w')"
                                ".write('job_id=bench-j\\ncards=0,1\\ntime=9e99\\n')"])
        last = {}
        for n in sizes:
            hosts = all_hosts[:n]
            pythons = {h.name: PY for h in hosts}
            rows = {"pdsh": [], "top cold": [], "top warm": []}
            cpu = {"pdsh": [], "top warm": []}
            for _ in range(args.rounds):
                c0 = own_cpu(cluster)
                rows["pdsh"].append(pdsh(hosts, cold))
                cpu["pdsh"].append(own_cpu(cluster) - c0)
                count = Counting()
                runners = {h.name: count.wrap(make_runner(h, warm)) for h in hosts}
                try:
                    t0 = time.perf_counter()
                    views = survey(runners, hosts, pythons)
                    rows["top cold"].append(time.perf_counter() - t0)
                    assert all(v.error is None and len(v.cards) == 8 for v in views), [v.summary() for v in views]
                    c0 = own_cpu(cluster)
                    t0 = time.perf_counter()
                    survey(runners, hosts, pythons)
                    rows["top warm"].append(time.perf_counter() - t0)
                    cpu["top warm"].append(own_cpu(cluster) - c0)
                    assert set(count.calls.values()) == {2}, count.calls  # one host command per refresh
                finally:
                    for r in runners.values():
                        r.close()
                    mine = Path(control_path(warm)).name.split("%", 1)[0]
                    for f in Path(control_path(warm)).parent.glob(mine + "*"):
                        subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={f}", "x"], capture_output=True)
            med = {k: statistics.median(v) for k, v in rows.items()}
            print(f"\n{n} host(s), median of {args.rounds}; load {os.getloadavg()[0]:.1f}; one host command per host "
                  f"per refresh (counted)")
            for k in rows:
                extra = f"   own CPU-s {statistics.median(cpu[k]):.2f}" if k in cpu else ""
                print(f"  {k:<9} {med[k]:6.2f} s  (min {min(rows[k]):.2f}, max {max(rows[k]):.2f}){extra}")
            last = med
        n = max(sizes)
        print(f"\ntop {n} hosts: warm {last['top warm']:.2f} s, cold {last['top cold']:.2f} s, "
              f"pdsh {last['pdsh']:.2f} s, ratio {last['top warm'] / last['pdsh']:.2f}")
    finally:
        cluster.down()


if __name__ == "__main__":
    main()
