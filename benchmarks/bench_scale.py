"""Fan-out at 1, 8, 32 and 64 hosts: alaunch against pdsh over the same sshd (run on demand; root).

    .venv/bin/python benchmarks/bench_scale.py [--sizes 1,8,32,64] [--rounds 3]

A 64-host test cluster (tests/cluster: one sshd per network namespace) and four steps per
size, each timed for alaunch and for ``pdsh -R ssh -f 64`` running the *same host-side work*
over the same sshd with the same ssh options (``PDSH_SSH_ARGS`` = alaunch's own
``ssh_options``): pdsh runs alaunch's host script with its request as one argv element (the
scripts read it from ``argv[1]`` when given, ``launcher/remote/_prelude.py``), so the
difference is only the launcher's fan-out and connection handling.

- ``hosts check``: ``ops.probe.check_host`` on every host (connect, 3 pings, the probe);
  pdsh runs the probe program;
- ``launch``: start a no-op entry (``python3 -c pass``, not msrun: 64 schedulers would not
  fit on 2 cores) detached under alaunch's supervisor (DETACH); pdsh runs DETACH;
- ``status``: STATUS of that job on every host; pdsh runs STATUS;
- ``cancel``: CANCEL on every host; pdsh runs CANCEL.

alaunch runs as the CLI does (``control_persist`` 60 s, ``cli/connect.py``; status and cancel
are one round trip per host, so their runners are ``single_use``: they ride a master that is
up, else connect plainly and open none; hosts check always connects fresh). *cold*: no ssh
master is up when a step starts (the first command in a while: a handshake per host, as
pdsh); *warm*: every host's master is up (a command within a minute of another, e.g.
``status`` after ``submit``; ``submit``'s own launch step is always warm: its preflight
opened the masters). The 2-core bound: every sshd, ssh client and host script
runs on this machine's 2 cores, so the busy CPU-seconds of each step (from /proc/stat,
machine-wide, other users included) / 2 is a floor no tool can beat here; it is printed.
"own CPU-s" counts this process, what it ran and reaped (ssh, pdsh), the hosts' sshds and all
they ran (``Cluster.cpu_seconds``) and the detached ControlMasters of the warm runs; "own / 2"
is the 2-core floor on an otherwise idle machine. Last line: ``scale 64 hosts: alaunch A s,
pdsh P s, ratio A/P`` (goal <= 1.0 for launch and status).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher.core.layout import JobLayout  # noqa: E402
from launcher.core.plan import NodePlan  # noqa: E402
from launcher.ops.fanout import run_parallel  # noqa: E402
from launcher.ops.launch import Launcher  # noqa: E402
from launcher.ops.probe import CheckPolicy, check_host  # noqa: E402
from launcher.remote import wire  # noqa: E402
from launcher.runners import ConnectOptions, make_runner  # noqa: E402
from launcher.runners.openssh import control_path, ssh_options  # noqa: E402
from tests.cluster.cluster import Cluster, unavailable_reason  # noqa: E402

PY = str(Path(sys.executable).parent / "python3")
ROOT = "/root/bench-scale"


def busy_cpu_seconds() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def pid_cpu(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in f[11:15]) / os.sysconf("SC_CLK_TCK")


def own_cpu(cluster: Cluster, masters: dict) -> float:
    """This process and the processes it reaped (ssh, pdsh), the hosts' sshds and all they ran,
    and the detached ControlMaster processes of the warm runs (not our children)."""
    t = os.times()
    return (t.user + t.system + t.children_user + t.children_system + cluster.cpu_seconds()
            + sum(pid_cpu(p) for p in masters))


class Alaunch:
    """Each step as its own command: runners made, the fan-out, runners closed."""

    def __init__(self, hosts, options: ConnectOptions, job: str, warm: bool):
        self.hosts, self.options, self.job, self.warm = hosts, options, job, warm
        self.started = {}

    def before_step(self) -> None:
        """Untimed: cold = no master up (as the first command after a while), warm = every
        host's master up (as a command right after another)."""
        if self.warm:
            self._with_runners(lambda r: r.check(["true"]), single_use=False)
            return
        control = control_path(self.options)
        run_parallel(self.hosts, lambda h: subprocess.run(
            ["ssh", *ssh_options(h, self.options, control=control), "-O", "exit", "--", h.name],
            capture_output=True))

    def masters(self) -> set[int]:
        """pids of the shared ControlMaster processes (warm runs), via ``ssh -O check``."""
        if self.options.control_persist <= 0:
            return set()
        pids = set()
        for h in self.hosts:
            res = subprocess.run(["ssh", *ssh_options(h, self.options, control=control_path(self.options)),
                                  "-O", "check", "--", h.name], capture_output=True, text=True)
            if "pid=" in res.stderr:
                pids.add(int(res.stderr.split("pid=", 1)[1].split(")", 1)[0]))
        return pids

    def _with_runners(self, fn, options: ConnectOptions | None = None, single_use: bool = True):
        """Runners as the tool makes them for one step: status and cancel are one round trip
        per host (``single_use``: ride a master that is up, else connect plainly); hosts check
        connects fresh (``control_persist=0``) and makes several."""
        runners = [make_runner(h, options or self.options) for h in self.hosts]
        if single_use:
            runners = [r.single_use() for r in runners]
        try:
            return run_parallel(runners, fn).raise_on_failure()
        finally:
            run_parallel(runners, lambda r: r.close())

    def check(self):
        policy = CheckPolicy(python=PY, min_disk_gb=0)
        rows = self._with_runners(lambda r: check_host(r, policy, 30), replace(self.options, control_persist=0),
                                  single_use=False)
        bad = [row for row in rows.values() if not row.reachable]
        if bad:
            raise SystemExit(f"hosts check failed: {bad[0]}")

    def launch(self):
        layout = JobLayout(f"{ROOT}/{self.job}")
        index = {h.name: i for i, h in enumerate(self.hosts)}

        def start(r):
            plan = NodePlan(r.host, index[r.host.name], layout, (), (PY, "-c", "pass"))
            return Launcher(r.using(PY), self.job).start(plan)
        self.started = {r.host.name: s for r, s in self._with_runners(start).items()}

    def status(self):
        layout = JobLayout(f"{ROOT}/{self.job}")
        self._with_runners(lambda r: Launcher(r.using(PY), self.job).status(layout.state, 0))

    def cancel(self):
        self._with_runners(lambda r: Launcher(r.using(PY), self.job).cancel(self.started[r.host.name].pid, grace=1.0))


class Pdsh:
    """The same host scripts through ``pdsh -R ssh -f 64`` with alaunch's ssh options."""

    def masters(self) -> set[int]:
        return set()

    def before_step(self) -> None:
        pass

    def __init__(self, hosts, options: ConnectOptions, job: str):
        self.hosts, self.job = hosts, job
        same = ssh_options(replace(hosts[0], user=None), options)  # alaunch's options; pdsh adds the user
        if any(" " in a for a in same):
            raise SystemExit("pdsh splits PDSH_SSH_ARGS on spaces: use paths without spaces")
        self.env = dict(os.environ, PDSH_SSH_ARGS=" ".join(same) + " -l%u %h")  # pdsh does no quoting

    def run(self, argv):
        cmd = " ".join(shlex.quote(a) for a in argv)
        res = subprocess.run(["pdsh", "-S", "-R", "ssh", "-f", "64", "-l", "root", "-w",
                              ",".join(h.name for h in self.hosts), cmd], env=self.env,
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"pdsh failed ({res.returncode}): {res.stderr[-500:]}")
        return res.stdout

    def script(self, op: str, request: dict):
        return self.run([PY, "-S", "-c", wire.program("launch", op), wire.request_arg(request)])

    def check(self):
        self.run([PY, "-c", wire.program("probe", "probe"), wire.request_arg({"op": "probe", "workdir": "~"})])

    def launch(self):
        layout = JobLayout(f"{ROOT}/{self.job}")
        self.script("detach", {"op": "detach", "argv": [PY, "-c", "pass"], "cwd": layout.root,
                               "state_dir": layout.state, "env": {wire.JOB_MARKER: self.job, "PATH": "/usr/bin:/bin"}})

    def status(self):
        self.script("status", {"op": "status", "state_dir": JobLayout(f"{ROOT}/{self.job}").state, "job_id": self.job})

    def cancel(self):
        self.script("cancel", {"op": "cancel", "job_id": self.job, "msrun_pid": None, "grace": 1.0})


STEPS = ("check", "launch", "status", "cancel")


def one_round(tool, cluster: Cluster) -> dict:
    """step -> (wall s, own CPU-s, machine busy CPU-s)."""
    out = {}
    for step in STEPS:
        tool.before_step()
        time.sleep(0.3)  # the hosts' sshds reap what the last step left (their CPU is counted then)
        before = tool.masters()
        own0, cpu0, t0 = own_cpu(cluster, before), busy_cpu_seconds(), time.perf_counter()
        getattr(tool, step)()
        wall, busy = time.perf_counter() - t0, busy_cpu_seconds() - cpu0
        time.sleep(0.3)
        after = tool.masters()
        own = own_cpu(cluster, after) - own0 + sum(pid_cpu(p) for p in before - after)
        out[step] = (wall, own, busy)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,8,32,64")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if unavailable_reason() or not shutil.which("pdsh"):
        raise SystemExit(f"skipped: {unavailable_reason() or 'pdsh not installed (make bench-deps)'}")
    t0 = time.perf_counter()
    cluster = Cluster(max(sizes), shared=False).up()
    up = time.perf_counter() - t0
    cold = ConnectOptions(known_hosts=cluster.known_hosts, control_persist=0)
    warm = ConnectOptions(known_hosts=cluster.known_hosts, control_persist=120)
    try:
        rss = sum(int(line.split()[1]) for h in cluster.hosts for pid in [h.sshd_pid]
                  for kid in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                  for line in Path(f"/proc/{kid}/status").read_text().splitlines() if line.startswith("VmRSS"))
        print(f"{max(sizes)}-host cluster up in {up:.1f} s; its sshds hold {rss / 1024:.0f} MiB RSS in all; "
              f"load {os.getloadavg()[0]:.1f}")
        all_hosts = cluster.hosts_as_launcher_hosts(slots=1)
        table = {}
        for n in sizes:
            hosts = all_hosts[:n]
            results = {"alaunch cold": [], "alaunch warm": [], "pdsh": []}
            for r in range(args.rounds):
                for name, tool in (("pdsh", Pdsh(hosts, cold, f"p{n}-{r}")),
                                   ("alaunch cold", Alaunch(hosts, warm, f"c{n}-{r}", warm=False)),
                                   ("alaunch warm", Alaunch(hosts, warm, f"w{n}-{r}", warm=True))):
                    results[name].append(one_round(tool, cluster))
            table[n] = {name: {s: tuple(statistics.median(x[s][k] for x in rs) for k in range(3))
                               for s in STEPS} for name, rs in results.items()}
            print(f"\n{n} host(s), median of {args.rounds}; load {os.getloadavg()[0]:.1f}")
            print(f"  {'step':<8} {'pdsh':>8} {'alaunch cold':>13} {'ratio':>6} {'alaunch warm':>13} {'ratio':>6} "
                  f"  own CPU-s pdsh / cold / warm  machine busy CPU-s")
            for s in STEPS:
                p, c, w = (table[n][k][s] for k in ("pdsh", "alaunch cold", "alaunch warm"))
                print(f"  {s:<8} {p[0]:7.2f}s {c[0]:12.2f}s {c[0] / p[0]:5.2f}x {w[0]:12.2f}s {w[0] / p[0]:5.2f}x "
                      f"  {p[1]:6.2f} / {c[1]:6.2f} / {w[1]:6.2f}  {p[2]:6.2f} / {c[2]:6.2f} / {w[2]:6.2f}")
        n = max(sizes)
        print()
        for s in STEPS:
            p, c, w = (table[n][k][s][0] for k in ("pdsh", "alaunch cold", "alaunch warm"))
            print(f"scale {n} hosts {s}: alaunch {c:.2f} s (warm {w:.2f} s), pdsh {p:.2f} s, ratio {c / p:.2f} "
                  f"(warm {w / p:.2f})")
    finally:
        mine = Path(control_path(warm)).name.split("%", 1)[0]  # only the warm masters this run opened
        for f in Path(control_path(warm)).parent.glob(mine + "*"):
            subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={f}", "x"], capture_output=True)
        cluster.down()


if __name__ == "__main__":
    main()
