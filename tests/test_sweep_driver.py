"""The sweep driver against a stand-in engine (no hosts, no msrun): placement over the hosts'
cards, ``max_parallel``, pruning (recorded before the cancel, the cards freed for the next
trial), a re-run that keeps finished trials and re-attaches a running one found by its meta,
the card-hour budget."""

from __future__ import annotations

import math
import threading
from pathlib import Path

from launcher.core import sweep as sw
from launcher.core.hostfile import Host
from launcher.ops import registry as reg
from launcher.ops import sweep as ops_sweep
from launcher.ops.engine import HostTarget

ROOT = Path(__file__).resolve().parent.parent
LOSS = "{{ step:[{s:3d}/ 8], loss: {loss}, per_step_time: 10ms, lr: 1e-3, overflow cond: False }}"


class StandIn:
    """Submit records a running job on the target's first host; follow plays the trial's curve
    (NaN from step 3 for lr 1000) and waits until released or cancelled."""

    name = "hosts"
    submits: list[tuple[str, tuple[str, ...], str]] = []
    running: set[str] = set()
    most = 0
    gate = threading.Event()
    lock = threading.Lock()

    def __init__(self, registry, state_dir, *, say=lambda s: None, progress=None, exec_factory=None):
        self.registry, self.state_dir, self.exec_factory = registry, state_dir, exec_factory

    def submit(self, spec, target, opts, meta=None):
        hosts = tuple(h.name for h in target.node_hosts())
        record = self.registry.create_job(spec.name, spec.kind, meta={**(meta or {}), "lr": spec.overrides[
            "lr_schedule.learning_rate"]}, nodes=[hosts[0]], state=reg.RUNNING)
        with StandIn.lock:
            StandIn.submits.append((record.id, hosts, (meta or {}).get("sweep_trial")))
            StandIn.running.add(record.id)
            StandIn.most = max(StandIn.most, len(StandIn.running))
        return record

    def follow(self, record, runner_for, sink, note=None, **kw):
        lr = record.meta["lr"]
        for s in range(1, 9):
            loss = math.nan if lr > 100 and s >= 3 else 5.0 / s + lr
            sink.line("h", 0, LOSS.format(s=s, loss=loss))
            if lr > 100 and s >= 3:
                break
        # a diverged job trains on (MindSpore does not stop at NaN) until it is cancelled
        while self.registry.get(record.id).state == reg.RUNNING and (lr > 100 or not StandIn.gate.wait(0.02)):
            threading.Event().wait(0.01)
        if self.registry.get(record.id).state == reg.RUNNING:
            self.registry.set_state(record.id, reg.SUCCEEDED)
        with StandIn.lock:
            StandIn.running.discard(record.id)

    def refresh(self, ref):
        return self.registry.get(ref), []

    def cancel(self, ref, grace=10.0):
        self.registry.set_state(ref, reg.CANCELLED, "cancelled")
        return self.registry.get(ref), {}


def _sweep(tmp_path, rates, parallel=3, extra="") -> sw.Sweep:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: drv\nbase: {ROOT / 'jobs' / 'tiny_lora_cpu.yaml'}\njob: {{nodes: 1, cards_per_node: 1}}\n"
                    "space:\n  list:\n" + "".join(f"    - {{learning_rate: {r}}}\n" for r in rates)
                    + f"budget: {{max_parallel: {parallel}}}\nprune: {{nan: true}}\n{extra}")
    return sw.load_sweep(path)


def _run(tmp_path, sweep, target) -> reg.SweepRecord:
    StandIn.submits, StandIn.running, StandIn.most = [], set(), 0
    base = ops_sweep.load_base(sweep)
    with reg.Registry(tmp_path / "r.sqlite3") as registry:
        return ops_sweep.SweepDriver(registry, StandIn(registry, tmp_path), target, sweep, base, poll=0.02).run()


TARGET = HostTarget((Host("a", 2), Host("b", 2)), source="hosts")


def test_trials_spread_over_the_hosts_at_most_max_parallel_and_the_nan_one_is_pruned(tmp_path):
    StandIn.gate.set()
    record = _run(tmp_path, _sweep(tmp_path, [0.1, 1000, 0.2, 0.3, 0.4]), TARGET)
    states = {t["params"]["learning_rate"]: t["state"] for t in record.trials}
    assert states == {0.1: "succeeded", 1000: "pruned", 0.2: "succeeded", 0.3: "succeeded", 0.4: "succeeded"}
    pruned = next(t for t in record.trials if t["state"] == "pruned")
    assert pruned["reason"] == "loss nan at step 3"
    # the first three placed at once: a, then b (more free), then a (a tie: hostfile order); by
    # trial, not by submit order (a slow thread submits after a later trial's under load)
    on = {trial: hosts for _, hosts, trial in StandIn.submits}
    assert StandIn.most <= 3 and [on[t["trial"]] for t in record.trials[:3]] == [("a",), ("b",), ("a",)]
    rows = sw.leaderboard(record.trials, record.info)
    assert [r["params"]["learning_rate"] for r in rows] == [0.1, 0.2, 0.3, 0.4, 1000]


def test_a_rerun_keeps_finished_trials_and_reattaches_a_running_job_found_by_its_meta(tmp_path):
    StandIn.gate.set()
    sweep = _sweep(tmp_path, [0.1, 0.2])
    first = _run(tmp_path, sweep, TARGET)
    done = first.trials[0]
    with reg.Registry(tmp_path / "r.sqlite3") as registry:
        # the second trial as a killed driver leaves it: its job runs, its id not yet recorded
        t = first.trials[1]
        registry.set_trial(first.id, t["trial"], state="queued", run_id=None)
        job = registry.create_job("drv-x", "finetune", meta={"sweep": first.id, "sweep_trial": t["trial"], "lr": 0.2},
                                  nodes=["a"], state=reg.RUNNING)
    again = _run(tmp_path, sweep, TARGET)
    assert StandIn.submits == []  # nothing submitted again
    assert [x["state"] for x in again.trials] == ["succeeded", "succeeded"]
    assert again.trials[0]["result"] == done["result"] and again.trials[1]["run_id"] == job.id


def test_the_card_hour_budget_stops_starting_trials(tmp_path):
    StandIn.gate.set()
    sweep = _sweep(tmp_path, [0.1, 0.2, 0.3], parallel=1, extra="")
    sweep = sw.Sweep(**{**sweep.__dict__, "budget": sw.Budget(1, None, 1e-12)})
    record = _run(tmp_path, sweep, TARGET)
    assert [t["state"] for t in record.trials] == ["succeeded", "skipped", "skipped"]
    assert record.trials[1]["reason"] == "card-hour budget"


def test_a_trial_whose_job_died_with_its_driver_mid_submit_runs_again(tmp_path):
    StandIn.gate.set()
    sweep = _sweep(tmp_path, [0.1])
    first = _run(tmp_path, sweep, TARGET)
    with reg.Registry(tmp_path / "r.sqlite3") as registry:
        t = first.trials[0]
        registry.set_trial(first.id, t["trial"], state="queued", run_id=None)
        stuck = registry.create_job("drv-x", "finetune", meta={"sweep": first.id, "sweep_trial": t["trial"],
                                                               "lr": 0.1}, nodes=["a"], state=reg.STAGING)

    class Refreshing(StandIn):
        def refresh(self, ref):  # as JobService.refresh ends a job whose submitter is gone
            return self.registry.set_state(ref, reg.FAILED, "interrupted: the submit is gone"), []

    StandIn.submits = []
    base = ops_sweep.load_base(sweep)
    with reg.Registry(tmp_path / "r.sqlite3") as registry:
        again = ops_sweep.SweepDriver(registry, Refreshing(registry, tmp_path), TARGET, sweep, base, poll=0.02).run()
        assert registry.get(stuck.id).state == reg.FAILED
    assert len(StandIn.submits) == 1 and again.trials[0]["state"] == "succeeded"
    assert again.trials[0]["run_id"] == StandIn.submits[0][0]


def test_a_pruned_trials_job_left_running_by_a_killed_driver_is_cancelled_on_the_rerun(tmp_path):
    StandIn.gate.set()
    sweep = _sweep(tmp_path, [0.1])
    first = _run(tmp_path, sweep, TARGET)
    with reg.Registry(tmp_path / "r.sqlite3") as registry:
        t = first.trials[0]
        job = registry.create_job("drv-x", "finetune", meta={"sweep": first.id, "sweep_trial": t["trial"]},
                                  nodes=["a"], state=reg.RUNNING)
        registry.set_trial(first.id, t["trial"], state="pruned", run_id=job.id, reason="loss nan at step 3")
    again = _run(tmp_path, sweep, TARGET)
    with reg.Registry(tmp_path / "r.sqlite3") as registry:
        assert registry.get(job.id).state == reg.CANCELLED
    assert StandIn.submits == [] and again.trials[0]["state"] == "pruned"


def test_a_rerun_starts_a_pipeline_trial_on_the_hosts_its_job_runs_on(tmp_path, monkeypatch):
    """A pipeline trial's step identity covers its hosts: re-run on other hosts than its
    running job's, its pipeline run would train it again (the re-run placed it as a new trial)."""
    placed: list[tuple[str, tuple[str, ...]]] = []

    def pipeline_trial(self, sid, lv, registry, engine):
        placed.append((lv.plan.trial.id, lv.hosts))
        self._end(registry, sid, lv.plan.trial.id, state="succeeded", result={"objective": 0.5}, curve=[])

    monkeypatch.setattr(ops_sweep.SweepDriver, "_pipeline_trial", pipeline_trial)
    path = tmp_path / "s.yaml"
    path.write_text((ROOT / "jobs" / "sweeps" / "tiny_lr.yaml").read_text().replace(
        "base: ../pipelines/", f"base: {ROOT / 'jobs' / 'pipelines'}/"))
    sweep = sw.load_sweep(path)
    first = _run(tmp_path, sweep, TARGET)
    on = dict(placed)  # by trial: the trials' threads record in any order
    assert [on[t["trial"]] for t in first.trials] == [("a",), ("b",), ("a",), ("b",)]
    with reg.Registry(tmp_path / "r.sqlite3") as registry:
        # the first trial as a killed driver leaves it: its training job still runs, on b
        t = first.trials[0]
        job = registry.create_job("tiny-sweep-train", "finetune", meta={"pipeline_step": "train", "lr": 0.001},
                                  nodes=["b"], state=reg.RUNNING)
        registry.set_trial(first.id, t["trial"], state="running", run_id=job.id)
    placed.clear()
    _run(tmp_path, sweep, TARGET)
    assert placed == [(t["trial"], ("b",))]


def test_a_pipeline_trial_whose_job_ended_while_no_driver_ran_gets_its_whole_curve(tmp_path, monkeypatch):
    """Its pipeline run finds the training job terminal (it ended between the kill and the
    re-run) and never follows it: the driver reads its logs once, from their start, so the
    leaderboard has its final loss (a full run once showed an empty one)."""
    from types import SimpleNamespace

    import launcher.ops.pipeline as ops_pipeline
    ended: dict[str, str] = {}
    reads: list[dict] = []

    class Reused:  # the pipeline run of a trial whose train step's job already succeeded
        def __init__(self, registry, engine, target, **kw):
            self.registry = registry

        def run(self, pipe):
            train = next(s for s in pipe.steps if s.name == "train")
            lr = next(v for k, v in train.sets.items() if k.endswith("learning_rate"))
            job = self.registry.create_job("tiny-sweep-train", "finetune", nodes=["a"], state=reg.SUCCEEDED,
                                           meta={"pipeline_step": "train", "lr": lr})
            ended[job.id] = "succeeded"
            steps = (SimpleNamespace(step="train", kind="job", job_id=job.id, outputs={}),
                     SimpleNamespace(step="score", kind="score", job_id=None, outputs={"accuracy": 0.25}))
            return SimpleNamespace(id="run-1", state=reg.SUCCEEDED, reason=None, steps=steps)

    class Reading(StandIn):
        def follow(self, record, runner_for, sink, note=None, **kw):
            reads.append(kw)
            return super().follow(record, runner_for, sink, note, **kw)

    monkeypatch.setattr(ops_pipeline, "PipelineRunner", Reused)
    path = tmp_path / "s.yaml"
    path.write_text((ROOT / "jobs" / "sweeps" / "tiny_lr.yaml").read_text().replace(
        "base: ../pipelines/", f"base: {ROOT / 'jobs' / 'pipelines'}/").replace(
        "    - {learning_rate: 1.e+3}   # diverges\n", ""))  # no pruning here: each trial's curve whole
    sweep = sw.load_sweep(path)
    StandIn.submits, StandIn.running, StandIn.most = [], set(), 0
    base = ops_sweep.load_base(sweep)
    with reg.Registry(tmp_path / "r.sqlite3") as registry:
        record = ops_sweep.SweepDriver(registry, Reading(registry, tmp_path), TARGET, sweep, base, poll=0.02).run()
    assert len(ended) == len(record.trials) and all(r == {"follow": False} for r in reads), reads
    assert [len(t["curve"]) for t in record.trials] == [8, 8, 8], record.trials
    rows = sw.leaderboard(record.trials, record.info)
    assert [(r["state"], r["steps"], r["final_loss"]) for r in rows] == [
        ("succeeded", 8, 5.0 / 8 + lr) for lr in (1e-3, 3e-3, 1e-2)], rows
