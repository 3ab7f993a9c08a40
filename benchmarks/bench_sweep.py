"""The sweep driver's own cost per trial at 100 trials: planning, recording the sweep and its
trials, placing each trial on free cards, its thread, following its loss, judging it for
pruning, recording its result, against the same submits and follows done in a plain loop
(the baseline, same run, same engine). The engine is a stand-in whose submit records a job
and whose follow hands the driver 16 loss lines: what is measured is the driver, not msrun.

Goal: (driver - baseline) / trials < 1 s per trial.

    python benchmarks/bench_sweep.py [--trials 100] [--parallel 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launcher.core import sweep as sw  # noqa: E402
from launcher.core.hostfile import Host  # noqa: E402
from launcher.ops import registry as reg  # noqa: E402
from launcher.ops import sweep as ops_sweep  # noqa: E402
from launcher.ops.engine import HostTarget  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOSS = "{{ step:[{s:3d}/ 16], loss: {loss:.4f}, per_step_time: 10ms, lr: 1e-3, overflow cond: False }}"


class StandInEngine:
    """Submit = one job record (running); follow = 16 loss lines, then succeeded."""

    name = "hosts"

    def __init__(self, registry, state_dir, *, say=lambda s: None, progress=None, exec_factory=None):
        self.registry, self.state_dir, self.say, self.progress = registry, state_dir, say, progress
        self.exec_factory = exec_factory

    def submit(self, spec, target, opts, meta=None):
        hosts = target.node_hosts()[:1]
        record = self.registry.create_job(spec.name, spec.kind, spec_text="x", meta={**(meta or {}),
                                          "devices": {hosts[0].name: [0]}}, nodes=[(hosts[0].name, "/j")],
                                          state=reg.RUNNING)
        return record

    def follow(self, record, runner_for, sink, note=None, **kw):
        for s in range(1, 17):
            sink.line("h", 0, LOSS.format(s=s, loss=5.0 / s))
        self.registry.set_state(record.id, reg.SUCCEEDED)
        return None

    def refresh(self, ref):
        return self.registry.get(ref), []

    def cancel(self, ref, grace=10.0):
        self.registry.set_state(ref, reg.CANCELLED, "cancelled")
        return self.registry.get(ref), {}


def sweep_file(tmp: Path, trials: int, parallel: int) -> Path:
    path = tmp / "bench.yaml"
    path.write_text(f"name: bench\nbase: {ROOT / 'jobs' / 'tiny_lora_cpu.yaml'}\n"
                    "job: {nodes: 1, cards_per_node: 1}\n"
                    f"space:\n  random:\n    n: {trials}\n    seed: 1\n    params:\n"
                    "      learning_rate: {loguniform: [1.e-5, 1.e-1]}\n"
                    f"budget: {{max_parallel: {parallel}}}\nprune: {{nan: true, median: {{k: 3, min_steps: 4}}}}\n")
    return path


def driver_run(tmp: Path, trials: int, parallel: int, target: HostTarget) -> float:
    sweep = sw.load_sweep(sweep_file(tmp, trials, parallel))
    t0 = time.perf_counter()
    base = ops_sweep.load_base(sweep)
    plans = ops_sweep.plan(sweep, base, target)
    with reg.Registry(tmp / "driver.sqlite3") as registry:
        engine = StandInEngine(registry, tmp)
        record = ops_sweep.SweepDriver(registry, engine, target, sweep, base, poll=0.02).run(plans)
    elapsed = time.perf_counter() - t0
    assert [t["state"] for t in record.trials].count("succeeded") == trials, record.trials
    return elapsed


def baseline_run(tmp: Path, trials: int, parallel: int, target: HostTarget) -> float:
    """The same submits and follows, one after the other, with nothing around them."""
    sweep = sw.load_sweep(sweep_file(tmp, trials, parallel))
    base = ops_sweep.load_base(sweep)
    plans = ops_sweep.plan(sweep, base, target)
    t0 = time.perf_counter()
    with reg.Registry(tmp / "baseline.sqlite3") as registry:
        engine = StandInEngine(registry, tmp)
        for p in plans:
            record = engine.submit(p.spec, target, None, meta={})
            engine.follow(record, None, ops_sweep._CurveSink([]))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--parallel", type=int, default=8)
    args = ap.parse_args()
    target = HostTarget(tuple(Host(f"h{i}", 4) for i in range(2)), source="bench")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = baseline_run(tmp, args.trials, args.parallel, target)
        drv = driver_run(tmp, args.trials, args.parallel, target)
    per = (drv - base) / args.trials
    print(f"{args.trials} trials, at most {args.parallel} at once, 2 hosts x 4 cards")
    print(f"baseline (submit + follow in a loop): {base:.2f} s ({base / args.trials * 1000:.1f} ms/trial)")
    print(f"driver (plan, record, place, follow, judge, result): {drv:.2f} s")
    print(f"driver overhead: {per * 1000:.1f} ms/trial (goal < 1000 ms) -> {'PASS' if per < 1 else 'FAIL'}")


if __name__ == "__main__":
    main()
