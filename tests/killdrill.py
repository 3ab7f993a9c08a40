"""The kill drill: ``alaunch submit``, ``submit --follow``, ``run`` (a pipeline), ``logs -f`` and
``fetch`` killed (SIGKILL or SIGINT) at random instants against the real SSH test cluster with
real msrun, then the invariants checked:

1. every registry record is terminal, or has live processes on its hosts (after one look:
   ``status``, as a user would);
2. no process of a terminal job survives on any host;
3. no card is held once every job has ended (a dead job's claim is judged dead);
4. nothing fetched is corrupt: every fetched file (``.part`` files aside) is a prefix of the
   host's file (a log fetched mid-run) or equal to it;
5. no pipeline run is left ``running`` without its ``alaunch run``.

CI runs a small drill (tests/test_kill_drill.py, ~20 kills); the full one is by hand::

    .venv/bin/python -m tests.killdrill --kills 60 [--seed N]

which brings up its own cluster and prints the counts written down in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BIN = str(Path(sys.executable).parent)
WORKER = r'''
import os, sys, time
if os.environ.get("MS_ROLE") == "MS_SCHED":
    sys.exit(0)
steps, step_s = int(os.environ.get("STEPS", "20")), float(os.environ.get("STEP_S", "0.1"))
for step in range(1, steps + 1):
    print("{ Epoch:[  1/  1], step:[%5d/%5d], loss: %5.6f, per_step_time: %dms }" % (step, steps, 2.0 / step,
          int(step_s * 1000)), flush=True)
    time.sleep(step_s)
os.makedirs("output/checkpoint/rank_0", exist_ok=True)
with open("output/checkpoint/rank_0/drill-1_%d.ckpt" % steps, "wb") as f:
    f.write(os.urandom(3 * 2**20))
print("done", flush=True)
'''
# how long after its start each action is killed at most (it is mostly still running then)
WINDOW_S = {"submit": 8.0, "submit-follow": 12.0, "run": 20.0, "logs": 4.0, "fetch": 3.0}
WEIGHTS = {"submit": 3, "submit-follow": 3, "run": 2, "logs": 2, "fetch": 2}


@dataclass
class Report:
    kills: Counter = field(default_factory=Counter)  # "action/SIGNAL"
    exits: Counter = field(default_factory=Counter)  # how the killed commands ended
    violations: list[str] = field(default_factory=list)
    jobs: Counter = field(default_factory=Counter)  # final states
    pipelines: Counter = field(default_factory=Counter)
    fetched_files: int = 0
    hung_after_sigint: int = 0

    def summary(self) -> str:
        return (f"kills: {sum(self.kills.values())} ({dict(sorted(self.kills.items()))}); "
                f"exits: {dict(sorted(self.exits.items()))}; jobs: {dict(sorted(self.jobs.items()))}; "
                f"pipelines: {dict(sorted(self.pipelines.items()))}; fetched files checked: {self.fetched_files}; "
                f"hung after SIGINT: {self.hung_after_sigint}; violations: {len(self.violations)}")


class Drill:
    def __init__(self, cluster, work: Path, seed: int = 0, say=print):
        self.cluster, self.work, self.say = cluster, Path(work), say
        self.rng = random.Random(seed)
        self.state = self.work / "state"
        self.env = {**os.environ, "ALAUNCH_STATE_DIR": str(self.state), "PYTHONUNBUFFERED": "1"}
        self.report = Report()
        self.work.mkdir(parents=True, exist_ok=True)
        code = self.work / "code"
        code.mkdir(exist_ok=True)
        (code / "train.py").write_text(WORKER)
        job = {"name": "drill", "kind": "finetune", "template": "tiny_llama_cpu/finetune.yaml", "seed": 42,
               "nodes": "all", "cards_per_node": 1, "code": {"local": str(code)}, "entry": {"script": "train.py"},
               "env": {"STEPS": 20, "STEP_S": 0.1},
               "outputs": {"checkpoints": ["output/checkpoint/**/*.ckpt"]}}
        self.job = self.work / "drill.yaml"
        self.job.write_text(yaml.safe_dump(job))
        second = {**copy.deepcopy(job), "name": "drill-b", "env": {"STEPS": 10, "STEP_S": 0.1}}
        self.pipeline = self.work / "pipeline.yaml"  # (copies: shared objects would dump as anchors)
        self.pipeline.write_text(yaml.safe_dump({"name": "drill-pipeline", "steps": {
            "a": {"job": copy.deepcopy(job)}, "b": {"job": second, "needs": ["a"]}}}))
        self.hostfile = self.work / "hosts"
        self.hostfile.write_text("".join(cluster.hostfile_text(slots=4).splitlines(keepends=True)[:2]))
        self.ssh = ["--known-hosts", str(cluster.known_hosts)]

    # ----------------------------------------------------------------- the commands
    def argv(self, action: str) -> list[str] | None:
        base = [sys.executable, "-m", "launcher"]
        if action in ("submit", "submit-follow"):
            return base + ["submit", str(self.job), "-H", str(self.hostfile), "--bin-dir", BIN,
                           "--cluster-time-out", "60", *self.ssh] + (["--follow"] if action == "submit-follow" else [])
        if action == "run":
            return base + ["run", str(self.pipeline), "-H", str(self.hostfile), "--bin-dir", BIN,
                           "--runs", str(self.work / "runs"), *self.ssh]
        job = self.newest_job()
        if job is None:
            return None
        if action == "logs":
            return base + ["logs", job, "-f", *self.ssh]
        return base + ["fetch", job, "--dest", str(self.work / "runs"), *self.ssh]

    def newest_job(self) -> str | None:
        from launcher.ops.registry import Registry
        if not self.state.exists():
            return None
        with Registry.in_state_dir(self.state) as registry:
            jobs = [j for j in registry.list(limit=5) if j.nodes and j.nodes[0].pid is not None]
        return jobs[0].id if jobs else None

    def one(self) -> None:
        action = self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        argv = self.argv(action)
        if argv is None:
            action, argv = "submit", self.argv("submit")
        sig = signal.SIGKILL if self.rng.random() < 0.6 else signal.SIGINT
        delay = self.rng.uniform(0.2, WINDOW_S[action])
        proc = subprocess.Popen(argv, cwd=self.work, env=self.env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(timeout=delay)
            self.report.exits[f"{action}: ended before the kill ({proc.returncode})"] += 1
            if proc.returncode == 2:  # usage: the drill's own input is wrong, it tests nothing
                self.report.violations.append(f"{action}: refused its input (exit 2): {argv}")
            return
        except subprocess.TimeoutExpired:
            pass
        os.kill(proc.pid, sig)
        self.report.kills[f"{action}/{sig.name}"] += 1
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.report.hung_after_sigint += 1
            self.report.violations.append(f"{action} still running 60 s after {sig.name}")
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        self.report.exits[f"{action}/{sig.name} -> {code}"] += 1
        if sig == signal.SIGKILL:  # its ssh clients (same session) die with it, as a closed laptop's
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # ----------------------------------------------------------------- the invariants
    def settle(self, timeout: float = 120.0) -> None:
        """Look at every job (``status``) until none runs any more, as a user would."""
        from launcher.cli.connect import runner_factory
        from launcher.ops.registry import Registry
        from launcher.ops.service import JobService
        factory = runner_factory(self.cluster.known_hosts, None, False)
        end = time.monotonic() + timeout
        with Registry.in_state_dir(self.state) as registry:
            service = JobService(registry, self.state, exec_factory=factory)
            while True:
                live = []
                for record in registry.list(limit=None):
                    if not record.terminal:
                        record, _ = service.refresh(record.id)
                    if not record.terminal:
                        live.append(record.id)
                if not live or time.monotonic() > end:
                    return
                time.sleep(2)

    def marked(self, job_id: str) -> list[str]:
        found = []
        for i in (0, 1):
            out = self.cluster.exec_on(i, ["sh", "-c", f"grep -l ALAUNCH_JOB_ID={job_id} /proc/[0-9]*/environ "
                                                       "2>/dev/null"])
            found += [f"host{i}:{line}" for line in out.stdout.split() if "/self/" not in line]
        return found

    def check(self) -> Report:
        from launcher.ops.registry import Registry
        self.settle()
        r = self.report
        with Registry.in_state_dir(self.state) as registry:
            records = registry.list(limit=None)
            runs = registry.pipelines(limit=1000)
        for record in records:
            r.jobs[record.state] += 1
            alive = self.marked(record.id)
            if record.terminal and alive:
                r.violations.append(f"{record.id} is {record.state} but {alive} still run")
            if not record.terminal and not alive:
                r.violations.append(f"{record.id} is {record.state} with no process on its hosts")
        for run in runs:
            r.pipelines[run.state] += 1
            if run.state == "running":
                r.violations.append(f"pipeline run {run.id} is running without its alaunch run")
        self.check_claims(records)
        self.check_fetched(records)
        return r

    def check_claims(self, records) -> None:
        """With every job ended, a claim inventory of each host holds no card."""
        if any(not rec.terminal for rec in records):
            return
        from launcher.cli.connect import runner_factory
        from launcher.core.hostfile import read_hostfile
        from launcher.ops import cards as card_ops
        from launcher.ops.stage import store_base
        factory = runner_factory(self.cluster.known_hosts, None, False)
        for host in read_hostfile(self.hostfile):
            runner = factory(host)
            try:
                look = card_ops.claim(runner.using(sys.executable), store_base(host), "drill-looker", [], "")
            finally:
                runner.close()
            ours = {rec.id for rec in records}
            held = {c: h.describe() for c, h in look.held.items() if h.job_id in ours}
            if held:
                self.report.violations.append(f"{host.name}: cards still held after every job ended: {held}")

    def check_fetched(self, records) -> None:
        by_id = {rec.id: rec for rec in records}
        runs = self.work / "runs"
        for job_dir in runs.iterdir() if runs.is_dir() else []:
            record = by_id.get(job_dir.name)
            if record is None:
                continue
            index = {n.host: i for i, n in enumerate(record.nodes)}
            for path in job_dir.rglob("*"):
                if not path.is_file() or path.name.endswith(".part") or path.parent == job_dir:
                    continue
                host = path.relative_to(job_dir).parts[0]
                if host not in index:
                    continue
                node = record.nodes[index[host]]
                rel = path.relative_to(job_dir / host)
                i = next(k for k, h in enumerate(self.cluster.hosts) if h.address == node.host)
                remote = self.cluster.hosts[i].path(f"{node.job_dir}/{rel}")
                self.report.fetched_files += 1
                here = path.read_bytes()
                try:
                    there = remote.read_bytes()
                except OSError:
                    continue  # pruned or moved on the host since
                if not there.startswith(here):
                    self.report.violations.append(f"{path}: not the host's bytes ({len(here)} here, "
                                                  f"{len(there)} there)")

    def run(self, kills: int) -> Report:
        while sum(self.report.kills.values()) < kills:
            self.one()
        return self.check()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=60)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    from tests.cluster.cluster import Cluster, HostSpec, unavailable_reason
    reason = unavailable_reason()
    if reason:
        print(f"killdrill: cannot run here: {reason}", file=sys.stderr)
        return 2
    import tempfile
    work = args.work or Path(tempfile.mkdtemp(prefix="alaunch-killdrill-"))
    cluster = Cluster(2, specs=[HostSpec() for _ in range(2)]).up()
    try:
        report = Drill(cluster, work, args.seed).run(args.kills)
    finally:
        cluster.down()
    print(f"seed {args.seed}: {report.summary()}")
    for v in report.violations:
        print(f"  violation: {v}")
    print(json.dumps({"kills": dict(report.kills), "jobs": dict(report.jobs), "violations": report.violations}))
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
