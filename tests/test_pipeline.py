"""Pipelines without hosts: the file model, refs, order, selection, identity, the registry's
pipeline tables, retry classification, the resumed config, the dry run of the seed recipe."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
import yaml

from launcher.core import pipeline as pl
from launcher.errors import InputError
from launcher.metrics.retry import classify
from launcher.ops.registry import Registry
from launcher.ops.resume import resumed_config

ROOT = Path(__file__).resolve().parent.parent


def parse(steps: dict, name: str = "p") -> pl.Pipeline:
    text = yaml.safe_dump({"name": name, "steps": steps}, sort_keys=False)
    return pl.parse_pipeline(yaml.safe_load(text), "p.yaml", str(ROOT / "jobs" / "pipelines"), text)


def test_refs_become_needs_and_order_follows_them():
    p = parse({"after": {"job": "../tiny_predict_cpu.yaml", "checkpoint": {"from": "merge"}},
               "train": {"job": "../tiny_lora_cpu.yaml"},
               "merge": {"builtin": "merge", "with": {"checkpoint": {"from": "train", "select": "all"}}}})
    assert p.step("after").needs == ("merge",) and p.step("merge").needs == ("train",)
    assert [s.name for s in p.order()] == ["train", "merge", "after"]
    assert p.step("after").checkpoint == pl.Ref("merge", "last")
    assert p.step("merge").options["checkpoint"] == pl.Ref("train", "all")
    assert p.step("after").job == str(ROOT / "jobs" / "tiny_predict_cpu.yaml")


@pytest.mark.parametrize("steps, message", [
    ({"a": {"job": "x.yaml", "needs": ["b"]}, "b": {"job": "x.yaml", "needs": ["a"]}}, "cycle"),
    ({"a": {"job": "x.yaml", "needs": ["trian"]}, "train": {"job": "x.yaml"}}, "did you mean 'train'"),
    ({"a": {"job": "x.yaml", "builtin": "merge"}}, "exactly one of"),
    ({"a": {"builtin": "mrege"}}, "did you mean 'merge'"),
    ({"a": {"job": "x.yaml", "retries": -1}}, "retries"),
    ({"a": {"job": "x.yaml", "chekpoint": {}}}, "did you mean 'checkpoint'"),
    ({"a": {"builtin": "score", "with": {"predictions": {"from": "b", "select": "first"}}},
      "b": {"job": "x.yaml"}}, "select"),
    ({"a": {"builtin": "merge", "retries": 1}}, "only job steps"),
])
def test_bad_pipelines_are_refused_with_file_line_and_key(steps, message):
    with pytest.raises(InputError) as err:
        parse(steps)
    assert message in str(err.value) and str(err.value).startswith("p.yaml:")


def test_a_steps_set_takes_the_job_files_keys_onto_the_job_and_the_rest_as_overrides():
    """`set: {cards_per_node: 1}` on a step of a `cards_per_node: all` job went to the template
    (refused there): a pipeline, and so a sweep of one, could not make the tiny job take one card."""
    from launcher.core.render import with_sets
    from launcher.core.spec import parse_job
    job = yaml.safe_load((ROOT / "jobs" / "tiny_lora_cpu.yaml").read_text())
    data = with_sets(job, {"cards_per_node": 1, "nodes": 1, "seed": 7, "env.GLOG_v": 3,
                           "runner_config.epochs": 1, "+model.extra": 2})
    spec = parse_job(data, "tiny_lora_cpu.yaml", str(ROOT / "jobs"))
    assert (spec.nodes, spec.cards_per_node, spec.seed, spec.env) == (1, 1, 7, {"GLOG_v": 3})
    assert spec.overrides == {"runner_config.epochs": 1, "+model.extra": 2}
    assert with_sets(job, {}) == job and "overrides" not in with_sets(job, {"nodes": 1})
    for bad in ("nodes.x", "env", "env.A.B"):
        with pytest.raises(InputError, match="a job-file key"):
            with_sets(job, {bad: 1})


def test_select_from_and_only():
    p = parse({"a": {"job": "x.yaml"}, "b": {"job": "x.yaml", "needs": ["a"]},
               "c": {"job": "x.yaml"}, "d": {"job": "x.yaml", "needs": ["b", "c"]}})
    assert pl.select(p) == ["a", "b", "c", "d"]
    assert pl.select(p, "b") == ["b", "d"]
    assert pl.select(p, only=["c"]) == ["c"]
    with pytest.raises(InputError):
        pl.select(p, "a", ["c"])
    assert p.upstream("d") == {"a", "b", "c"}


def test_identity_changes_with_any_part_only():
    base = pl.identity({"job file": "aa", "train's outputs": "d1"})
    assert base == pl.identity({"train's outputs": "d1", "job file": "aa"})  # key order
    assert base != pl.identity({"job file": "ab", "train's outputs": "d1"})
    assert base != pl.identity({"job file": "aa", "train's outputs": "d2"})
    assert pl.changed({"job file": "aa", "x": "1"}, {"job file": "ab", "y": "1"}) == ["job file", "x (gone)", "y (new)"]


def test_registry_keeps_pipeline_runs_and_finds_reusable_steps(tmp_path):
    with Registry(tmp_path / "r.sqlite3") as r:
        assert r.schema_version >= 3  # the pipelines migration (4: the jobs indexes)
        run = r.create_pipeline("demo", "demo.yaml", [("train", "job"), ("merge", "merge")])
        r.set_step(run.id, "train", state="succeeded", identity="abc", job_id="j1", outputs={"paths": {"c": ["/x"]}})
        r.set_step(run.id, "merge", state="failed", reason="boom")
        r.end_pipeline(run.id, "failed", "failed: merge")
        got = r.pipeline("demo")
        assert [(s.step, s.state) for s in got.steps] == [("train", "succeeded"), ("merge", "failed")]
        assert [s.job_id for s in r.reusable_steps("demo", "train", "abc")] == ["j1"]
        assert r.reusable_steps("demo", "train", "other") == [] and r.reusable_steps("demo", "merge") == []
        with pytest.raises(InputError):
            r.set_step(run.id, "train", state="exploded")


def test_a_run_whose_alaunch_run_process_died_reads_interrupted_not_running(tmp_path):
    import subprocess
    import sys

    from launcher.ops import proc
    dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # plays `alaunch run`
    with Registry(tmp_path / "r.sqlite3") as r:
        mine = r.create_pipeline("alive", "a.yaml", [("train", "job")], runner=proc.me())
        r.set_step(mine.id, "train", state="running")
        assert r.pipeline(mine.id).state == "running" and r.pipeline(mine.id).runner["pid"] == proc.me()["pid"]
        gone = r.create_pipeline("gone", "g.yaml", [("prep", "data"), ("train", "job"), ("eval", "job")],
                                 runner={**proc.me(), "pid": dead.pid, "start": proc.process_start(dead.pid)})
        r.set_step(gone.id, "prep", state="succeeded", identity="i1", outputs={})
        r.set_step(gone.id, "train", state="running")
        assert r.pipeline("gone").state == "running"
        dead.kill()
        dead.wait()
        got = r.pipeline("gone")
        assert got.state == "failed" and "interrupted" in got.reason and str(dead.pid) in got.reason
        assert [(s.step, s.state) for s in got.steps] == [("prep", "succeeded"), ("train", "failed"), ("eval", "pending")]
        assert "run it again to resume" in got.steps[1].reason
        assert [s.step for s in r.reusable_steps("gone", "prep", "i1")] == ["prep"]  # the resume reuses it
        other = r.create_pipeline("elsewhere", "e.yaml", [("train", "job")],
                                  runner={**proc.me(), "pid": dead.pid, "host": "another-laptop"})
        assert r.pipeline(other.id).state == "running"  # a process on another machine is not judged here
        assert r.pipeline(r.create_pipeline("old", "o.yaml", [("t", "job")]).id).state == "running"  # no runner


@pytest.mark.parametrize("codes, lines, transient, cause", [
    ([-9], [], True, "signal 9"),
    ([1], ["worker process 41 (rank 1) was killed by signal 9 (SIGKILL), as msrun reported"], True, "signal"),
    ([1], ["The node: 1 is timed out"], True, "node_lost"),
    ([1], ["EI0002: The wait execution of the Notify register times out."], True, "hccl_*_timeout"),
    ([1], ["Worker process 4 exit with exception. Error code: -9"], True, "worker_exit*"),
    ([1], ["KeyError: 'model_config'", "killed by signal 15"], False, "config_error"),
    ([1], ["ValueError: bad batch size"], False, "config_error"),
    ([1], [], False, "exit code 1"),
])
def test_classify_retries_only_transient_failures(codes, lines, transient, cause):
    """Transient (retried) or not, from metrics.signatures' rows and the exit codes."""
    verdict = classify(codes, lines)
    assert verdict.transient == transient and fnmatch.fnmatch(verdict.cause, cause), verdict


def test_resumed_config_loads_the_jobs_own_checkpoints():
    text = "load_checkpoint: /base.ckpt\nresume_training: False\nmodel:\n  model_config:\n    checkpoint_name_or_path: x\n"
    config = yaml.safe_load(resumed_config(text, "/home/u/alaunch/j1"))
    assert config["resume_training"] is True
    assert config["load_checkpoint"] == "/home/u/alaunch/j1/output/checkpoint"
    assert config["model"]["model_config"]["checkpoint_name_or_path"] is None


def test_seed_recipe_dry_run_shows_every_step_and_sends_nothing(run_cli):
    """Per step what matters (job, hosts, cards, the training's LoRA count, where inputs come
    from) and the scores at the end; the commands (a 600-character env-script wrapper per node
    per step) only with --verbose."""
    code, out, err = run_cli("run", str(ROOT / "jobs/pipelines/llama3_8b_math.yaml"),
                             "-H", str(ROOT / "hostfiles/one-card"), "--dry-run")
    assert code == 0, err
    heads = [line for line in out.splitlines() if line.startswith("# ") and ". " in line[:6]]
    assert [h.split()[2] for h in heads] == ["train", "squad", "math", "fetch", "score-squad", "score-math"]
    assert "checkpoint <- train's last output: ~/alaunch/<train's job id>/output/checkpoint/rank_0/<last>.ckpt" in out
    train = out.split("# 2. ")[0]
    assert "#   job: llama3-8b-lora-math (jobs/llama3_8b_lora_math.yaml), finetune\n" in train, train
    assert "#   hosts: ascend-0 (1 card)\n#   LoRA: 13,631,488 trainable parameters\n" in train, train
    assert "score SQuAD EM/F1" in out and "'reference': '../data/math_test_200.jsonl'" in out
    assert "msrun" not in out and "ALAUNCH_ENV_SCRIPTS" not in out and "--dry-run --verbose" in out
    code, out, err = run_cli("run", str(ROOT / "jobs/pipelines/llama3_8b_math.yaml"),
                             "-H", str(ROOT / "hostfiles/one-card"), "--dry-run", "--verbose")
    assert code == 0, err
    assert out.count("msrun \\") == 3 and "ascend-0" in out
    with Registry.in_state_dir() as r:
        assert r.pipelines() == [] and r.list() == []  # nothing recorded, nothing sent


@pytest.mark.parametrize("hostfile, squad, math", [
    ("one-card", "# 2. squad (job), needs train: run (train runs first (new outputs))\n",
     "# 3. math (job), needs train; waits for the cards of squad: run (train runs first (new outputs))\n"),
    ("one-node-8", "# 2. squad (job), needs train; runs together with math: run (train runs first (new outputs))\n",
     "# 3. math (job), needs train; runs together with squad: run (train runs first (new outputs))\n"),
])
def test_dry_run_says_which_steps_run_together(run_cli, hostfile, squad, math):
    """squad and math both need only train: on one card they take turns, on eight they run together."""
    code, out, err = run_cli("run", str(ROOT / "jobs/pipelines/llama3_8b_math.yaml"),
                             "-H", str(ROOT / "hostfiles" / hostfile), "--dry-run")
    assert code == 0, err
    assert squad in out and math in out


def test_demo_dry_run_merges_the_two_worker_checkpoint(run_cli):
    code, out, err = run_cli("run", str(ROOT / "jobs/pipelines/demo.yaml"), "--local", "--slots", "2", "--dry-run",
                             "--verbose")
    assert code == 0, err
    assert "checkpoint <- merge's last output: ~/alaunch/<train's job id>/output/merged/<job id>.ckpt" in out
    assert "--worker_num=2" in out


def test_multi_card_lora_without_the_full_strategy_is_refused():
    from launcher.core.spec import load_job
    from launcher.ops.pipeline import check_mergeable
    spec = load_job(ROOT / "jobs" / "tiny_lora_cpu.yaml")
    config = {"model": {"model_config": {"pet_config": {"pet_type": "lora"}}},
              "parallel": {"strategy_ckpt_config": {"only_trainable_params": True}}}
    with pytest.raises(InputError, match="only_trainable_params: False"):
        check_mergeable(spec, config, world=2)
    check_mergeable(spec, config, world=1)
    config["parallel"]["strategy_ckpt_config"]["only_trainable_params"] = False
    check_mergeable(spec, config, world=2)


def test_a_run_records_each_steps_needs(tmp_path):
    """The graph of a run does not depend on its file: the registry keeps each step's needs
    (older runs, recorded without them, read None and fall back to the file)."""
    from launcher.ops.registry import Registry
    from launcher.ui.data import recorded_needs
    with Registry(tmp_path / "r.sqlite3") as r:
        run = r.create_pipeline("demo", "gone.yaml", [("data", "data", []), ("train", "job", ["data"]),
                                                      ("score", "score", ["train", "data"])])
        assert [s.needs for s in run.steps] == [[], ["data"], ["train", "data"]]
        assert recorded_needs(r.pipeline(run.id)) == {"data": [], "train": ["data"], "score": ["train", "data"]}
        old = r.create_pipeline("old", "old.yaml", [("train", "job"), ("merge", "merge")])
        assert [s.needs for s in old.steps] == [None, None] and recorded_needs(old) is None


def test_a_squad_score_step_scores_the_eval_log_it_fetched(tmp_path):
    """The recipe pipeline ended at fetch: its score-squad step reads the eval's own log (the
    real SQuAD eval after fine-tuning: 2,067 examples) and saves EM/F1 beside it."""
    import json
    import os
    import shutil

    from launcher.cli.pipelineview import steps_table
    from launcher.ops.pipeline import PipelineRunner
    from launcher.ops.registry import PipelineRecord, StepRecord

    run_dir = tmp_path / "runs" / "squad-job"
    (run_dir / "ascend-0" / "msrun_log").mkdir(parents=True)
    (run_dir / "ascend-0" / "msrun_log" / "scheduler.log").write_text("no examples here\n")
    shutil.copy(ROOT / "tests/fixtures/real-ascend/train-run-1card/test_eval_finetune.log",
                run_dir / "ascend-0" / "msrun_log" / "worker_0.log")
    said: list[str] = []
    runner = PipelineRunner(None, None, [], say=said.append)
    runner.fetched = lambda step, group, remote_path=None: run_dir  # type: ignore[method-assign]
    step = pl.Step("score-squad", 5, builtin="score", options={"predictions": pl.Ref("squad"), "metric": "squad"})
    out = runner.builtin_score(step)
    scores = json.loads((run_dir / "scores.json").read_text())["squad"]
    assert scores["count"] == 2067 and scores["complete"] is True
    assert round(out["em"], 2) == round(scores["Em"], 2) and round(out["f1"], 2) == round(scores["F1"], 2)
    assert said == [f"  score-squad: squad: SQuAD EM {scores['Em']:.2f}, F1 {scores['F1']:.2f} over 2067 examples"]
    # the steps table says the scores
    from rich.console import Console
    run = PipelineRecord("p-1", "llama3-8b-math", "p.yaml", "succeeded", "", steps=(
        StepRecord("p-1", "squad", 2, "job", "succeeded", job_id="llama3-8b-squad-eval-20261206-013013-599d",
                   attempts=1),
        StepRecord("p-1", "score-squad", 5, "score", "succeeded", attempts=1, outputs=out)))
    console = Console(width=120, record=True, color_system=None, file=open(os.devnull, "w"))
    console.print(steps_table(run, 120))
    text = console.export_text()
    assert f"F1 {scores['F1']:.2f}, EM {scores['Em']:.2f} (SQuAD)" in text, text
    console = Console(width=80, record=True, color_system=None, file=open(os.devnull, "w"))
    console.print(steps_table(run, 80))
    assert f"F1 {scores['F1']:.2f}" in console.export_text()  # the value survives 80 columns
