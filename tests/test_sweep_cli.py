"""`alaunch sweep --dry-run` on a hostfile and on a Slurm target (planning only, through the
engine chooser), the refusals before anything runs, and `alaunch results SWEEP` from a
registry written as the driver writes it: best first, 80 columns, CSV, JSON, the best diff."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import yaml

from launcher.core import sweep as sw
from launcher.ops import sweep as ops_sweep
from launcher.ops.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
SHAPE = str(ROOT / "jobs" / "sweeps" / "llama3_8b_lora_shape.yaml")
TINY = str(ROOT / "jobs" / "sweeps" / "tiny_lr.yaml")
SLURM = "slurm:\n  login: login01\n  partition: npu\n  nodes: 2\n  cards_per_node: 8\n  workdir: /shared/w\n"


def _width(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_the_shape_sweep_dry_run_lists_16_trials_with_trainable_counts_and_cards(run_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run_cli("sweep", SHAPE, "-H", str(ROOT / "hostfiles" / "one-card"), "--dry-run")
    assert code == 0, err
    assert "16 trial(s) of pipeline llama3_8b_math.yaml (step train)" in out
    # rank 16 on q,k,v,o of Llama3-8B: 32 layers x 16 x ((4096+4096) x 2 + (4096+1024) x 2) = 13.63M
    assert out.count("13.63M") == 4 and out.count("3.41M") == 4 and out.count("6.82M") == 8
    assert "lora_rank=16 lora_alpha=32" in out and _width(out.split("\n", 2)[2]) <= 80


def test_the_shape_sweep_dry_run_plans_on_a_slurm_target_too(run_cli, tmp_path):
    target = tmp_path / "slurm.yaml"
    target.write_text(SLURM)
    code, out, err = run_cli("sweep", SHAPE, "-H", str(target), "--dry-run")
    assert code == 0, err
    assert f"16 trial(s) of pipeline llama3_8b_math.yaml (step train) on {target}" in out
    assert out.count("13.63M") == 4


def test_the_tiny_sweep_dry_run_on_a_hostfile_and_a_slurm_target(run_cli, tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("a slots=2\nb slots=2\n")
    target = tmp_path / "slurm.yaml"
    target.write_text(SLURM.replace("cards_per_node: 8", "cards_per_node: 2"))
    for t in (hostfile, target):
        code, out, err = run_cli("sweep", TINY, "-H", str(t), "--dry-run")
        assert code == 0, err
        assert "4 trial(s) of pipeline tiny_sweep.yaml (step train)" in out and "at most 4 at once" in out
        assert "objective: score.math_accuracy (max)" in out
        assert "pruning: nan/inf, median x2 from step 5" in out and "learning_rate=1000" in out
        assert out.count("81.9K") == 4
        # a hostfile: the driver's placement, all four at once over both hosts; Slurm places them itself
        assert ("wave" in out) == (t == hostfile)
    code, out, _ = run_cli("sweep", TINY, "-H", str(hostfile), "--dry-run")
    # the sweep's `job: {cards_per_node: 1}` reaches the pipeline's train step (its job file says all)
    assert [line.split()[3:6] for line in out.splitlines() if line[:1].isdigit()] == [
        ["1", "1", "a"], ["1", "1", "b"], ["1", "1", "a"], ["1", "1", "b"]]


def test_a_swept_key_the_template_lacks_is_refused_before_anything_runs(run_cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: bad\nbase: {ROOT / 'jobs' / 'tiny_lora_cpu.yaml'}\nspace:\n  grid:\n"
                   "    lora_rnak: [8, 16]\n")
    code, _, err = run_cli("sweep", str(bad), "--local", "--dry-run")
    assert code == 2
    assert f"{bad}:5: space.grid.lora_rnak: the base's template has no key 'lora_rnak'; did you mean 'lora_rank'" in err


def test_a_trial_the_render_refuses_names_the_trial(run_cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: bad\nbase: {ROOT / 'jobs' / 'tiny_lora_cpu.yaml'}\nspace:\n  grid:\n"
                   "    cards_per_node: [1, 3]\n")
    code, _, err = run_cli("sweep", str(bad), "--local", "--slots", "2", "--dry-run")
    assert code == 2 and "trial " in err and "cards_per_node=3" in err and "fewer slots" in err


def _recorded_sweep() -> str:
    """The tiny sweep as the driver leaves it: three succeeded, the diverging one pruned."""
    sweep = sw.load_sweep(TINY)
    base = ops_sweep.load_base(sweep)
    plans = ops_sweep.plan(sweep, base, type("T", (), {"node_hosts": lambda self: _hosts()})())
    with Registry.in_state_dir() as registry:
        info = {"objective": {"metric": "final_loss", "goal": "min"}, "keys": sweep.keys(),
                "base_overrides": ops_sweep.base_values(base, plans),
                "trainable": {p.trial.id: p.trainable for p in plans}}
        record = registry.open_sweep(sweep.name, sweep.source, info)
        for p in plans:
            registry.add_trial(record.id, p.trial.id, p.trial.position, p.trial.identity, p.trial.params,
                               p.trial.overrides, p.trial.seed)
        for p, loss in zip(plans, (6.5, 5.4, 2.7, None), strict=True):
            curve = [[1, 7.0], [16, loss]] if loss else [[1, 7.0], [9, 46800.0]]
            if loss is None:
                registry.set_trial(record.id, p.trial.id, state="pruned", curve=curve,
                                   reason="loss 4.68e+04 at step 9 above 2 x the median 4.85 of 2 others")
            else:
                registry.set_trial(record.id, p.trial.id, state="succeeded", curve=curve, run_id=f"job-{loss}",
                                   result={"final_loss": loss, "objective": loss, "steps": 16, "duration_s": 55.0,
                                           "card_hours": 55 / 3600})
        registry.end_sweep(record.id, "succeeded")
    return record.id


def _hosts():
    from launcher.core.hostfile import Host
    return [Host("a", 2), Host("b", 2)]


def test_results_of_a_sweep_ranks_the_trials_in_80_columns(run_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    _recorded_sweep()
    code, out, err = run_cli("results", "tiny-lr")
    assert code == 0, err
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    assert [c[2] for c in cells] == ["succeeded"] * 3 + ["pruned"]
    assert [float(c[3]) for c in cells[:3]] == [2.7, 5.4, 6.5]
    assert [c[-1] for c in cells] == ["learning_rate=0.01", "learning_rate=0.003", "learning_rate=0.001",
                                      "learning_rate=1000"]
    assert _width(out) <= 80 and len(cells) == 4  # one line per trial
    assert "pruned: loss 4.68e+04 at step 9" in out
    # the best's lr (1e-2) is the template's own: only the sweep's fixed epochs differ
    assert "best 2d2c93ae against the base:\n  runner_config.epochs: 4 -> 1\n" in out
    code, out, _ = run_cli("results", "tiny-lr", "--wide")
    assert "card-h" in out and "81.9K" in out  # dropped first at 80 columns, whole with --wide
    monkeypatch.setenv("COLUMNS", "50")
    code, out, _ = run_cli("results", "tiny-lr")
    assert "overrides" not in out.splitlines()[2] and "2d2c93ae: learning_rate=0.01" in out  # printed below


def test_results_of_a_sweep_as_csv_and_json(run_cli):
    sid = _recorded_sweep()
    code, out, _ = run_cli("results", sid, "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["learning_rate"] for r in rows] == ["0.01", "0.003", "0.001", "1000.0"]
    assert rows[-1]["state"] == "pruned" and rows[0]["trainable"] == "81920"
    code, out, _ = run_cli("results", "tiny-lr", "--json")
    data = json.loads(out)
    assert code == 0 and data["sweep"] == sid and [t["objective"] for t in data["trials"]][:3] == [2.7, 5.4, 6.5]


def test_results_of_a_sweep_plots_objective_per_key_and_the_curves(run_cli, tmp_path):
    _recorded_sweep()
    code, _, err = run_cli("results", "tiny-lr", "--plot", str(tmp_path / "p.png"))
    assert code == 0 and "plotted 2 panel(s)" in err and (tmp_path / "p.png").stat().st_size > 1000


def test_a_rerun_keeps_the_recorded_trials_state(tmp_path):
    sid = _recorded_sweep()
    with Registry.in_state_dir() as registry:
        again = registry.open_sweep("tiny-lr", TINY, {"objective": {}})
        first = registry.sweep(sid).trials[0]
        registry.add_trial(sid, first["trial"], 0, first["identity"], {}, {}, None)
        assert again.id == sid and registry.sweep(sid).trials[0]["state"] == "succeeded"
        assert yaml.safe_load(json.dumps(registry.sweep(sid).trials[0]["params"])) == first["params"]


def test_a_pipeline_trial_sets_its_overrides_on_the_swept_step_only():
    sweep = sw.load_sweep(SHAPE)
    base = ops_sweep.load_base(sweep)
    trial = ops_sweep.trials_of(sweep, base)[-1]
    pipeline = ops_sweep.trial_pipeline(base, trial)
    assert pipeline.name == base.pipeline.name and pipeline.step("squad") == base.pipeline.step("squad")
    assert pipeline.step("train").sets == {"model.model_config.pet_config.lora_rank": 16,
                                           "model.model_config.pet_config.lora_alpha": 32,
                                           "model.model_config.pet_config.target_modules": ".*wq|.*wk|.*wv|.*wo",
                                           "model.model_config.seq_length": 512}


def test_a_pipeline_trials_job_fields_and_seed_go_on_its_step_and_reach_its_job():
    """A pipeline could not take the job fields (its step's `set:` sent cards_per_node to the
    template): the tiny sweep's trials took every card of a host, and a sweep's seed was refused."""
    from launcher.ops.pipeline import step_job_data
    sweep = sw.load_sweep(TINY)
    sweep = sw.Sweep(**{**sweep.__dict__, "seed": 7})
    base = ops_sweep.load_base(sweep)
    trial = ops_sweep.trials_of(sweep, base)[0]
    step = ops_sweep.trial_pipeline(base, trial).step("train")
    assert step.sets == {"runner_config.epochs": 1, "lr_schedule.learning_rate": 0.001, "nodes": 1,
                         "cards_per_node": 1, "seed": 7}
    data, _, _ = step_job_data(step, lambda ref, site: {})
    assert (data["nodes"], data["cards_per_node"], data["seed"]) == (1, 1, 7)
    assert "cards_per_node" not in data["overrides"] and data["overrides"]["runner_config.epochs"] == 1


def test_the_demo_ends_pointing_at_a_sweep_that_plans():
    last = (ROOT / "scripts" / "demo").read_text().rstrip().splitlines()[-1]
    command = last[last.index("alaunch sweep"):].rstrip('"').split()
    assert command[:3] == ["alaunch", "sweep", "jobs/sweeps/tiny_lr.yaml"] and (ROOT / command[2]).is_file()


def test_a_score_steps_accuracy_is_the_objective_under_either_name():
    result = ops_sweep.result_of(type("R", (), {"started_at": None, "created_at": "2026-01-01T00:00:00.000000Z",
                                                "ended_at": "2026-01-01T01:00:00.000000Z", "id": "j"})(),
                                 [(1, 5.0), (8, 2.0)], 2, {"score-after.accuracy": 0.4})
    assert (result["final_loss"], result["steps"], result["card_hours"]) == (2.0, 8, 2.0)
    for metric in ("score-after.math_accuracy", "score-after.accuracy"):
        assert ops_sweep.objective_of(result, sw.Objective(metric, "max")) == 0.4
    assert ops_sweep.objective_of(result, sw.Objective("final_loss")) == 2.0


def test_a_sweep_whose_driver_is_gone_reads_interrupted_not_running(run_cli):
    from launcher.ops import proc
    dead = {**proc.me(), "pid": 2 ** 22 + 1}  # no such process
    with Registry.in_state_dir() as registry:
        registry.open_sweep("gone", "s.yaml", {"objective": {"metric": "final_loss", "goal": "min"}}, runner=dead)
        assert registry.open_sweep("alive", "s.yaml", {}, runner=proc.me()).state == "running"
    code, out, _ = run_cli("results", "gone")
    assert code == 0 and "sweep gone (failed)" in out
    with Registry.in_state_dir() as registry:
        assert "the `alaunch sweep` process" in registry.sweep("gone").reason and registry.sweep("alive").state == "running"


def test_sweeps_lists_each_sweep_newest_first_with_its_best_trial(run_cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_cli("sweeps")
    assert code == 0 and "no sweeps yet" in out
    sid = _recorded_sweep()
    with Registry.in_state_dir() as registry:
        registry.open_sweep("later", "s.yaml", {"objective": {"metric": "score.math_accuracy", "goal": "max"}})
    code, out, err = run_cli("sweeps")
    assert code == 0, err
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    assert [c[:2] for c in cells] == [["later", "running"], ["tiny-lr", "succeeded"]]
    assert cells[1][3:5] == ["2d2c93ae", "2.7"] and cells[0][3:5] == ["-", "-"]
    assert _width(out) <= 80 and len(cells) == 2  # one line per sweep
    code, out, _ = run_cli("sweeps", "--json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["later", "tiny-lr"] and rows[1]["id"] == sid
    assert rows[1]["counts"] == {"succeeded": 3, "pruned": 1} and rows[1]["best"]["params"] == {"learning_rate": 0.01}
    code, out, _ = run_cli("sweeps", "--wide")
    assert "learning_rate=0.01" in out and "3 succeeded, 1 pruned" in out
