"""Pipelines you can trust (issue 32), without hosts: identity by content (a re-made input
re-runs its consumers, a second checkout is not skipped with the first one's outputs), the
dry run's "skip/run (what changed)", checkpoints by global step (the issue's real names),
checked reuse for --from/--only, ``with:`` validation, one-line built-in errors that end the
run failed, a cancel never retried, one resume at a time."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from launcher.core import pipeline as pl
from launcher.errors import InputError, ResumeBusy
from launcher.ops import registry as reg
from launcher.ops.pipeline import PipelineRunner, local_digest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "ckpt" / "tiny_rank_0_1-4_50.ckpt"


# ---------------------------------------------------------------- checkpoints by global step

def test_last_checkpoint_is_the_highest_global_step_not_the_newest_name():
    """The issue's resume: step 200 saved as ``_1-2_50``, 350 as ``_1-4_100``, 400 as ``_1-4_50``."""
    d = "/j/output/checkpoint/rank_0/"
    ckpts = [pl.Checkpoint(d + "tiny_rank_0-2_50.ckpt", 0, 100, 1),  # attempt 1
             pl.Checkpoint(d + "tiny_rank_0_1-2_50.ckpt", 0, 200, 2),
             pl.Checkpoint(d + "tiny_rank_0_1-4_100.ckpt", 0, 350, 3),
             pl.Checkpoint(d + "tiny_rank_0_1-4_50.ckpt", 0, 400, 4)]
    assert pl.last_checkpoint(ckpts).path.endswith("_1-4_50.ckpt")
    assert pl.last_checkpoint(list(reversed(ckpts))).step == 400  # listing order does not matter


def test_merge_takes_the_newest_step_every_rank_has_from_the_latest_attempt():
    d = "/j/output/checkpoint/rank_{}/t-{}.ckpt"
    ckpts = [pl.Checkpoint(d.format(0, "2_50"), 0, 200, 10, attempt=1),  # same name as attempt 2's
             pl.Checkpoint(d.format(1, "2_50"), 1, 200, 11, attempt=1),
             pl.Checkpoint(d.format(0, "2_50a"), 0, 200, 30, attempt=2),  # attempt 2 wrote step 200 again
             pl.Checkpoint(d.format(1, "2_50a"), 1, 200, 31, attempt=2),
             pl.Checkpoint(d.format(0, "4_50"), 0, 400, 40, attempt=2)]  # rank 1 died before saving 400
    step, files = pl.common_last_step(ckpts)
    assert step == 200 and {r: c.attempt for r, c in files.items()} == {0: 2, 1: 2}
    # step 300: rank 0 has it from attempt 3 only, rank 1 from attempt 2 only: never mixed
    mixed = ckpts + [pl.Checkpoint(d.format(0, "3_50"), 0, 300, 50, attempt=3),
                     pl.Checkpoint(d.format(1, "3_50"), 1, 300, 35, attempt=2)]
    assert pl.common_last_step(mixed)[0] == 200
    assert pl.common_last_step([pl.Checkpoint("/rank_0/a.ckpt", 0, 1), pl.Checkpoint("/rank_1/a.ckpt", 1, 2)]) is None


def test_the_host_reads_the_global_step_from_the_checkpoint_itself():
    """entry/merge_ckpt.py walks the MindSpore protobuf (a file saved by mindspore 2.9 with
    MindFormers' append_dict), no mindspore import, no name parsing."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("merge_ckpt", ROOT / "launcher" / "entry" / "merge_ckpt.py")
    merge_ckpt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge_ckpt)
    info = merge_ckpt.inspect([str(FIXTURE)], [str(FIXTURE)])[str(FIXTURE)]
    assert (info["step"], info["epoch"]) == (400, 4) and len(info["sha256"]) == 64


# ---------------------------------------------------------------- identity by content (fake built-ins)

class Counter:
    """Fake ``data`` (writes a file whose bytes change each time it runs: a re-made model) and
    a fake consumer (``fetch``) that records that it ran."""

    def __init__(self):
        self.ran: list[str] = []

    def data(self, runner, step) -> dict:
        self.ran.append(step.name)
        out = runner.local_path(step.options.get("out", "out"))
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.bin").write_text(f"made {len(self.ran)} from {runner.local_path(step.options['recipe']).read_text()}")
        local = {"model": [str(out / "model.bin")]}
        return {"local": local, "default": "model", "digest": local_digest(local)}

    def fetch(self, runner, step) -> dict:
        self.ran.append(step.name)
        return {"local": {}, "default": "runs"}


def write_pipeline(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "recipe.yaml").write_text("families: [a]\n")
    path = where / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "trust", "steps": {
        "data": {"builtin": "data", "with": {"recipe": "recipe.yaml", "out": "build"}},
        "use": {"builtin": "fetch", "with": {"steps": [{"from": "data"}]}}}}))
    return path


def run(tmp_path, path: Path, fake: Counter, **kw) -> tuple[reg.PipelineRecord, list[str]]:
    said: list[str] = []
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        runner = PipelineRunner(r, None, [], say=said.append, runs_dir=tmp_path / "runs",
                                builtins={"data": fake.data, "fetch": fake.fetch},
                                force_reuse=kw.pop("force_reuse", False))
        return runner.run(pl.load_pipeline(path), **kw), said


def dry(tmp_path, path: Path) -> dict[str, str]:
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        views = PipelineRunner(r, None, [], builtins={}).describe(pl.load_pipeline(path))
    return {v.name: f"{v.action} ({v.why})" for v in views}


def test_a_remade_input_reruns_its_consumers_and_the_recipe_is_part_of_the_identity(tmp_path):
    path = write_pipeline(tmp_path / "a")
    fake = Counter()
    first, _ = run(tmp_path, path, fake)
    assert first.state == "succeeded" and fake.ran == ["data", "use"]
    second, said = run(tmp_path, path, fake)
    assert fake.ran == ["data", "use"] and f"  use: unchanged since run {first.id}, outputs present: skipped" in said
    assert dry(tmp_path, path) == {"data": f"skip (unchanged since {second.id})",
                                   "use": f"skip (unchanged since {second.id})"}
    # the output is gone: data runs again and makes other bytes; its consumer must run too
    (tmp_path / "a" / "build" / "model.bin").unlink()
    assert dry(tmp_path, path)["data"] == f"run (the outputs of {second.id} are gone)"
    run(tmp_path, path, fake)
    assert fake.ran == ["data", "use", "data", "use"]
    # the recipe's content (not its name) is part of data's identity
    (tmp_path / "a" / "recipe.yaml").write_text("families: [b]\n")
    views = dry(tmp_path, path)
    assert views["data"].startswith("run (recipe file changed since ") and views["use"] == "run (data runs first (new outputs))"
    run(tmp_path, path, fake)
    assert fake.ran[-2:] == ["data", "use"]


def test_a_second_checkout_is_not_skipped_with_the_first_ones_outputs(tmp_path):
    """issue 30's `make demo` in a second clone: data was skipped (the first clone's outputs
    exist) and the next step read the second clone's missing files."""
    fake = Counter()
    run(tmp_path, write_pipeline(tmp_path / "clone1"), fake)
    second, said = run(tmp_path, write_pipeline(tmp_path / "clone2"), fake)
    assert fake.ran == ["data", "use", "data", "use"], said
    assert (tmp_path / "clone2" / "build" / "model.bin").exists()
    assert all(p.startswith(str(tmp_path / "clone2")) for p in
               {s.step: s for s in second.steps}["data"].outputs["local"]["model"])


def test_from_and_only_refuse_a_reused_step_that_is_not_current_or_lost(tmp_path):
    path = write_pipeline(tmp_path / "a")
    fake = Counter()
    run(tmp_path, path, fake)
    (tmp_path / "a" / "recipe.yaml").write_text("families: [b]\n")
    with pytest.raises(InputError, match=r"step 'data' is not current \(recipe file changed since run"):
        run(tmp_path, path, fake, only=["use"])
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        assert r.pipeline("trust").state == "failed"  # ended, not left to read "interrupted"
    forced, said = run(tmp_path, path, fake, only=["use"], force_reuse=True)
    assert forced.state == "succeeded" and any("WARNING: it is not current" in s for s in said)
    (tmp_path / "a" / "recipe.yaml").write_text("families: [a]\n")
    (tmp_path / "a" / "build" / "model.bin").unlink()
    with pytest.raises(InputError, match="has lost its outputs"):
        run(tmp_path, path, fake, only=["use"])


def test_a_builtin_bug_is_one_line_and_ends_the_run_failed(tmp_path):
    path = write_pipeline(tmp_path / "a")

    def broken(runner, step):
        return {}["recipe"]

    with reg.Registry(tmp_path / "r.sqlite3") as r:
        got = PipelineRunner(r, None, [], builtins={"data": broken}).run(pl.load_pipeline(path))
    steps = {s.step: s for s in got.steps}
    assert got.state == "failed" and steps["data"].reason == "KeyError: 'recipe'" and steps["use"].state == "blocked"


def test_runs_dir_is_absolute_not_the_cwd():
    assert PipelineRunner(None, None, [], runs_dir=Path("runs")).runs_dir.is_absolute()


@pytest.mark.parametrize("options, message", [
    ({"predictions": {"from": "t"}, "reference": "r.jsonl", "metrc": "squad"}, "did you mean 'metric'"),
    ({"predictions": {"from": "t"}, "reference": "r.jsonl", "metric": "bleu"}, "a pipeline scores math, squad"),
    ({"predictions": "after"}, "predictions: must be a reference"),
])
def test_with_keys_are_checked_per_builtin(options, message):
    text = yaml.safe_dump({"name": "p", "steps": {"t": {"job": "x.yaml"}, "s": {"builtin": "score", "with": options}}})
    with pytest.raises(InputError, match=message):
        pl.parse_pipeline(yaml.safe_load(text), "p.yaml", str(ROOT), text)


def test_a_math_score_without_a_reference_is_refused_before_it_runs():
    text = yaml.safe_dump({"name": "p", "steps": {"t": {"job": "x.yaml"},
                                                  "s": {"builtin": "score", "with": {"predictions": {"from": "t"}}}}})
    pipeline = pl.parse_pipeline(yaml.safe_load(text), "p.yaml", str(ROOT), text)
    with pytest.raises(InputError, match="a math score needs 'reference'"):
        pl.missing_options(pipeline)


def test_a_data_step_without_a_recipe_is_one_line_before_anything_runs(tmp_path):
    """It was a bare KeyError mid-run that left the run "interrupted"."""
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nsteps:\n  d: {builtin: data, with: {rows: 3}}\n")
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        with pytest.raises(InputError, match=r"p.yaml:3: steps.d.with: data needs 'recipe' \(options: recipe, out"):
            PipelineRunner(r, None, []).run(pl.load_pipeline(path))
        assert r.pipelines() == []  # refused before a run is recorded


# ---------------------------------------------------------------- cancel, resume lock

def test_a_cancelled_step_job_is_never_retried(tmp_path):
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        job = r.create_job("t", "finetune", nodes=[("localhost", str(tmp_path))], state="running")
        run_rec = r.create_pipeline("p", "p.yaml", [("train", "job")])

        def follow(record):
            r.set_state(record.id, "cancelled", "cancelled by the user")  # `alaunch cancel` meanwhile

        runner = PipelineRunner(r, None, [], follow=follow)
        step = pl.Step("train", 0, inline={}, retries=3)
        result = runner.watch(run_rec.id, step, None, job)
    assert result.state == "failed" and "never retried" in result.reason and result.attempts == 1


def test_two_resumes_at_once_one_wins_the_other_is_told_and_changes_nothing(tmp_path):
    from launcher.ops.resume import resume_job
    entered, release = threading.Event(), threading.Event()

    class Blocking:
        """Plays the host: the winner's first call waits here while the loser tries."""
        name = "localhost"

        def exec(self, *a, **k):
            entered.set()
            release.wait(10)
            raise InputError("host gone (test)")

        call = exec  # the one host call

        def using(self, python):
            return self

        def close(self):
            pass

    class Service:
        def __init__(self, registry):
            self.registry, self.exec_factory = registry, lambda host: Blocking()

    spec = "name: t\nkind: finetune\ntemplate: tiny_llama_cpu/finetune.yaml\nentry: {script: \"alaunch:run_cpu\"}\n"
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        job = r.create_job("t", "finetune", spec_text=spec, hostfile_text="localhost slots=1\n",
                           nodes=[("localhost", str(tmp_path))], state="failed")
    errors: list = []

    def winner():
        with reg.Registry(tmp_path / "r.sqlite3") as r2:
            try:
                resume_job(Service(r2), job.id)
            except Exception as exc:  # noqa: BLE001 - what the winner met, said by the asserts
                errors.append(exc)

    t = threading.Thread(target=winner)
    t.start()
    assert entered.wait(10), errors
    with reg.Registry(tmp_path / "r.sqlite3") as r3:
        with pytest.raises(ResumeBusy, match="one attempt at a time"):
            resume_job(Service(r3), job.id)
        assert r3.get(job.id).state == "staging"  # the loser marked nothing FAILED
    release.set()
    t.join(10)
    with reg.Registry(tmp_path / "r.sqlite3") as r4:
        assert r4.get(job.id).state == "failed"  # the winner could not start: the job is as it was


# ---------------------------------------------------------------- Ctrl-C, retries that help

def test_ctrl_c_ends_the_run_at_once_while_a_step_still_runs(tmp_path):
    """The driver's loop sees Ctrl-C between two short waits; the step's thread is left running
    (a job step's job runs on, on its host). Before, it waited for the running step to end."""
    import os
    import signal
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nsteps:\n  slow: {builtin: fetch, with: {steps: [{from: first}]}}\n"
                    "  first: {builtin: data, with: {recipe: r.yaml}}\n")
    started, finished = threading.Event(), threading.Event()

    def slow(runner, step):
        started.set()
        threading.Event().wait(20)
        finished.set()
        return {"local": {}}

    def interrupt():
        started.wait(10)
        os.kill(os.getpid(), signal.SIGINT)

    said: list[str] = []
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        runner = PipelineRunner(r, None, [], say=said.append, builtins={"data": lambda rn, s: {"local": {}},
                                                                          "fetch": slow})
        threading.Thread(target=interrupt, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            runner.run(pl.load_pipeline(path))
        assert not finished.is_set()  # the step was still running when the driver stopped
        got = r.pipeline("p")
    assert got.state == "failed" and got.reason.startswith("interrupted"), got.reason
    assert {s.step: s.state for s in got.steps}["slow"] == "failed" and "interrupted" in said[-1]


def test_cancel_on_interrupt_cancels_the_running_steps_jobs(tmp_path):
    cancelled: list[str] = []

    class Service:
        def cancel(self, job_id):
            cancelled.append(job_id)

    with reg.Registry(tmp_path / "r.sqlite3") as r:
        run_rec = r.create_pipeline("p", "p.yaml", [("train", "job"), ("eval", "job")])
        r.set_step(run_rec.id, "train", state="running", job_id="job-1")
        r.set_step(run_rec.id, "eval", state="succeeded", job_id="job-0")
        runner = PipelineRunner(r, Service(), [], cancel_on_interrupt=True)
        runner.interrupted(run_rec.id, pl.parse_pipeline({"name": "p", "steps": {"t": {"job": "x.yaml"}}}))
        got = r.pipeline(run_rec.id)
    assert cancelled == ["job-1"]
    assert [(s.step, s.state) for s in got.steps] == [("train", "cancelled"), ("eval", "succeeded")]
    assert got.state == "failed" and got.reason == "interrupted: its jobs were cancelled"


@pytest.mark.parametrize("kind, said_what", [("finetune", ("no checkpoint that every rank saved: submitting again "
                                                           "from scratch, attempt 2 of 2")),
                                             ("predict", "(transient): running it again, attempt 2 of 2")])
def test_a_retry_without_a_checkpoint_submits_again_and_a_predict_reruns(tmp_path, monkeypatch, kind, said_what):
    """The demo's `train: retries: 1` could never help (no checkpoint before the end) and a
    retried predict failed with "only training jobs resume"."""
    from types import SimpleNamespace

    from launcher.errors import NothingToResume

    def no_checkpoint(ref, say, original=None):  # the engine's resume, finding no checkpoint
        raise NothingToResume(f"job {ref} has no checkpoint that every rank saved")

    engine = SimpleNamespace(resume=no_checkpoint)
    said: list[str] = []
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        first = r.create_job("t", kind, nodes=[("localhost", str(tmp_path))], state="running")
        run_rec = r.create_pipeline("p", "p.yaml", [("train", "job")])

        def follow(record):
            if record.id == first.id:
                r.set_node(record.id, 0, exit_code=-9)
                r.set_state(record.id, "failed", "node 0 killed by signal 9")
            else:
                r.set_state(record.id, "succeeded")

        runner = PipelineRunner(r, engine, [], say=said.append, follow=follow)
        monkeypatch.setattr(runner, "submit", lambda run_id, step, spec: r.create_job(
            "t", kind, nodes=[("localhost", str(tmp_path))], state="running"))
        monkeypatch.setattr(runner, "job_outputs", lambda record: {"job_id": record.id})
        result = runner.watch(run_rec.id, pl.Step("train", 0, inline={}, retries=1), None, first)
    assert result.state == "succeeded" and result.job_id != first.id and result.attempts == 2, said
    assert any(said_what in s for s in said), said


def test_a_job_that_succeeded_after_its_driver_died_is_reused_a_running_one_reattached(tmp_path):
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        done = r.create_job("t", "finetune", nodes=[("localhost", str(tmp_path))], state="succeeded")
        live = r.create_job("t", "finetune", nodes=[("localhost", str(tmp_path))], state="running")
        old = r.create_pipeline("p", "p.yaml", [("train", "job"), ("eval", "job"), ("other", "job")])
        r.set_step(old.id, "train", state="failed", identity="i1", job_id=done.id, started_at="2026-01-01T00:00:00",
                   reason="interrupted: the `alaunch run` process (pid 1 on this machine) is gone")
        r.set_step(old.id, "eval", state="failed", identity="i2", job_id=live.id, started_at="2026-01-01T00:00:00")
        r.set_step(old.id, "other", state="succeeded", identity="i3", job_id=done.id)
        said: list[str] = []
        runner = PipelineRunner(r, None, [], say=said.append)
        p = pl.parse_pipeline({"name": "p", "steps": {"t": {"job": "x.yaml"}}})
        now = r.create_pipeline("p", "p.yaml", [("train", "job"), ("eval", "job"), ("other", "job"), ("late", "job")])
        assert runner.earlier_job(p, now.id, pl.Step("train", 0), "i1", force=False).id == done.id
        assert runner.earlier_job(p, now.id, pl.Step("train", 0), "i1", force=True) is None  # --from: run it again
        assert runner.earlier_job(p, now.id, pl.Step("train", 0), "other-identity", force=False) is None
        assert runner.earlier_job(p, now.id, pl.Step("eval", 1), "i2", force=True).id == live.id  # never train twice
        assert runner.earlier_job(p, now.id, pl.Step("other", 2), "i3", force=False) is None  # finished: skip or re-run
        # the driver died between the submit and recording the job id: the job's own meta finds it
        lost = r.create_pipeline("p", "p.yaml", [("late", "job")])
        r.set_step(lost.id, "late", state="failed", identity="i4", started_at="2026-01-02T00:00:00")
        late = r.create_job("t", "finetune", nodes=[("localhost", str(tmp_path))], state="running",
                            meta={"pipeline": lost.id, "pipeline_step": "late"})
        assert runner.earlier_job(p, now.id, pl.Step("late", 0), "i4", force=False).id == late.id
        assert {s.step: s.job_id for s in r.pipeline(now.id).steps}["late"] == late.id  # recorded before it is said
    assert f"train: {done.id} of run {old.id} succeeded after its driver stopped: reused" in said[0]


def test_a_job_steps_identity_covers_its_code_tree_entry_scripts_and_alaunch(tmp_path, monkeypatch):
    """Changing any of them re-ran nothing before (issue 32)."""
    from launcher.core.hostfile import Host
    from launcher.ops import pipeline as ops_pipeline
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "pkg" / "train.py").write_text("print('v1')\n")
    (code / "__pycache__").mkdir()
    job = tmp_path / "j.yaml"
    job.write_text(yaml.safe_dump({"name": "t", "kind": "finetune", "template": "tiny_llama_cpu/finetune.yaml",
                                   "code": {"local": str(code)}, "entry": {"script": "pkg/train.py"}}))
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "steps": {"t": {"job": "j.yaml"},
                                                           "m": {"builtin": "merge", "with": {"checkpoint": {"from": "t"}}}}}))
    p = pl.load_pipeline(path)
    runner = PipelineRunner(None, None, [Host("localhost", 1, slot_ids=(0,))])
    runner.base_dir = tmp_path

    def parts():
        return runner.step_parts(p.step("t"), runner.job_spec(p.step("t")))

    before = parts()
    (code / "__pycache__" / "x.pyc").write_bytes(b"\0")  # excluded, as staging excludes it
    assert parts() == before
    (code / "pkg" / "train.py").write_text("print('v2')\n")
    assert pl.changed(before, parts()) == ["code tree"]
    monkeypatch.setattr(ops_pipeline, "__version__", "9.9")
    assert "alaunch" in pl.changed(before, parts())
    assert "merge script" in runner.step_parts(p.step("m"), None)
    cpu = tmp_path / "cpu.yaml"
    cpu.write_text(yaml.safe_dump({"name": "c", "kind": "finetune", "template": "tiny_llama_cpu/finetune.yaml",
                                   "entry": {"script": "alaunch:run_cpu"}}))
    step = pl.Step("c", 0, job=str(cpu))
    assert "entry scripts" in runner.step_parts(step, runner.job_spec(step))


def test_merge_of_a_multi_node_job_says_it_saw_part_of_the_ranks_or_refuses_a_sharded_one(tmp_path):
    """A 2-node training without a shared workdir: node 0's filesystem holds rank 0's files only.
    Data parallel (no strategy file): rank 0's checkpoint is the model, and the answer says it
    came from 1 of 2 ranks (it read "single-rank: 1 rank(s)"); sharded: refused, saying why."""
    import importlib.util
    import shutil

    import pytest
    spec = importlib.util.spec_from_file_location("merge_ckpt", ROOT / "launcher" / "entry" / "merge_ckpt.py")
    merge_ckpt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge_ckpt)
    job = tmp_path / "job"
    ckpt = job / "output" / "checkpoint" / "rank_0" / FIXTURE.name
    ckpt.parent.mkdir(parents=True)
    shutil.copyfile(FIXTURE, ckpt)
    out = job / "output" / "merged" / "m.ckpt"
    result = merge_ckpt.merge(str(job), str(out), {"0": str(ckpt)}, 400, world=2)
    assert result["mode"].startswith("data-parallel") and "ranks 0 of 2" in result["mode"]
    assert out.read_bytes() == FIXTURE.read_bytes()
    assert merge_ckpt.merge(str(job), str(out), {"0": str(ckpt)}, 400, world=1)["mode"] == "single-rank"
    (job / "output" / "strategy").mkdir(parents=True)
    (job / "output" / "strategy" / "ckpt_strategy_rank_0.ckpt").write_bytes(b"s")
    with pytest.raises(SystemExit) as info:
        merge_ckpt.merge(str(job), str(out), {"0": str(ckpt)}, 400, world=2)
    assert "only rank(s) 0 of the job's 2 ranks" in str(info.value) and "shared" in str(info.value)
