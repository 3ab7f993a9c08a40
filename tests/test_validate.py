"""Refusals before anything is sent: each bad job or override gets its own one-line message,
exit code 2 (USAGE) and no output file."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

REFERENCE = yaml.safe_load((ROOT / "jobs" / "llama3_8b_lora_math.yaml").read_text())
TINY = yaml.safe_load((ROOT / "jobs" / "tiny_lora_cpu.yaml").read_text())


def _job(base: dict, tmp_path: Path, **changes) -> dict:
    job = copy.deepcopy(base)
    job["template"] = str(ROOT / "configs" / job["template"])
    if base is TINY:
        (tmp_path / "train.mindrecord").write_bytes(b"x")
        (tmp_path / "tok.model").write_bytes(b"x")
        job["inputs"]["train_data"]["local"] = str(tmp_path / "train.mindrecord")
        job["tokenizer"]["local"] = str(tmp_path / "tok.model")
    for key, value in changes.items():
        if value is None:
            job.pop(key, None)
        else:
            job[key] = value
    return job


def _ov(base: dict, **extra) -> dict:
    out = dict(base["overrides"])
    out.update(extra)
    return out


# (id, job builder or raw text, extra CLI args, expected fragment of the message)
CASES = [
    ("duplicate-key", "name: a\nkind: finetune\nname: b\ntemplate: x\n", [], "job.yaml:3: name: duplicate key 'name'"),
    ("anchor", "name: &n a\nkind: finetune\ntemplate: x\n", [], "YAML anchor &n is not allowed"),
    ("alias-bomb", "a: &a [1, 1]\nb: [*a, *a]\nname: x\n", [], "YAML anchor &a is not allowed"),
    ("not-a-mapping", "- name: a\n- kind: finetune\n", [], "expected a mapping"),
    ("empty-file", "", [], "got empty"),
    ("bad-yaml", "name: [a\n", [], "not valid YAML"),
    ("typo-top-key", lambda t: _job(REFERENCE, t, templte="x"), [], "did you mean 'template'?"),
    ("shell-in-name", lambda t: _job(REFERENCE, t, name="x;rm -rf /"), [], "name: must be 1-64 letters"),
    ("bad-kind", lambda t: _job(REFERENCE, t, kind="train"), [], "kind: must be 'finetune', 'eval' or 'predict'"),
    ("unknown-override", lambda t: _job(REFERENCE, t, overrides=_ov(REFERENCE, **{"runner_config.epoch": 2})), [],
     "no such key in the template (under runner_config); did you mean 'runner_config.epochs'?"),
    ("set-unknown", lambda t: _job(REFERENCE, t), ["--set", "model.model_config.seq_lenght=4"],
     "did you mean 'model.model_config.seq_length'?"),
    ("set-no-equals", lambda t: _job(REFERENCE, t), ["--set", "seed"], "expected key=value"),
    ("set-bad-yaml", lambda t: _job(REFERENCE, t), ["--set", "seed=[1,"], "the value is not valid YAML"),
    ("dp-mp-pp", lambda t: _job(REFERENCE, t, overrides=_ov(REFERENCE, **{"parallel_config.data_parallel": 2})), [],
     "= 2, but the job runs on 1 card(s)"),
    ("world-not-divisible", lambda t: _job(REFERENCE, t, cards_per_node=3,
                                           overrides=_ov(REFERENCE, **{"parallel_config.model_parallel": 2})),
     ["--slots", "3"], "world size 3 is not divisible by model_parallel x pipeline_stage = 2 x 1"),
    ("heads-mp", lambda t: _job(REFERENCE, t, cards_per_node=3,
                                overrides=_ov(REFERENCE, **{"parallel_config.model_parallel": 3})),
     ["--slots", "3"], "num_heads 32 is not divisible by model_parallel 3"),
    ("kv-heads-mp", lambda t: _job(REFERENCE, t, cards_per_node=16,
                                   overrides=_ov(REFERENCE, **{"parallel_config.model_parallel": 16})),
     ["--slots", "16"], "n_kv_heads 8 is not divisible by model_parallel 16"),
    ("micro-batch-pp", lambda t: _job(REFERENCE, t, cards_per_node=2,
                                      overrides=_ov(REFERENCE, **{"parallel_config.pipeline_stage": 2})),
     ["--slots", "2"], "micro_batch_num 1 is smaller than pipeline_stage 2"),
    ("target-nothing", lambda t: _job(REFERENCE, t, overrides=_ov(
        REFERENCE, **{"model.model_config.pet_config.target_modules": ".*wz"})), [], "matches no projection"),
    ("target-bad-regex", lambda t: _job(REFERENCE, t, overrides=_ov(
        REFERENCE, **{"model.model_config.pet_config.target_modules": "(wq"})), [], "not a valid regular expression"),
    ("seq-too-long", lambda t: _job(REFERENCE, t, overrides=_ov(REFERENCE, **{"model.model_config.seq_length": 16384})),
     [], "seq_length 16384 is beyond the llama3_8b model's context length (8192)"),
    ("tiny-seq-too-long", lambda t: _job(TINY, t), ["--set", "model.model_config.seq_length=256"],
     "seq_length 256 is beyond model.model_config.max_position_embedding (128)"),
    ("multi-card-no-parallel", lambda t: _job(TINY, t), ["--slots", "2", "--set", "use_parallel=false"],
     "use_parallel: False but the job runs on 2 card(s)"),
    ("run-mode-vs-kind", lambda t: _job(REFERENCE, t, overrides=_ov(REFERENCE, run_mode="predict")), [],
     "run_mode 'predict' contradicts the job kind 'finetune'"),
    ("missing-dataset", lambda t: {**_job(TINY, t), "inputs": {"train_data": {"local": str(t / "nope.mindrecord"),
                                                                            "fills": "train_dataset.data_loader.dataset_dir"}}},
     [], "inputs.train_data.local: local path"),
    ("missing-tokenizer", lambda t: {**_job(TINY, t), "tokenizer": {"local": str(t / "none.model")}}, [],
     "tokenizer.local: local path"),
    ("missing-checkpoint", lambda t: {**_job(TINY, t), "checkpoint": {"local": "no_such.ckpt"}}, [],
     "checkpoint.local: local path"),
    ("checkpoint-both", lambda t: {**_job(REFERENCE, t), "checkpoint": {"local": "a", "remote": "/b"}}, [],
     "give exactly one of 'local'"),
    ("too-many-nodes", lambda t: _job(REFERENCE, t, nodes=2), [], "asks for 2 node(s) but the hostfile has 1"),
    ("too-many-cards", lambda t: _job(REFERENCE, t, cards_per_node=4), ["--slots", "2"], "has fewer slots"),
    ("no-template", lambda t: _job(REFERENCE, t, template="nope/x.yaml"), [], "template 'nope/x.yaml' not found"),
    ("relative-entry-installed", lambda t: _job(REFERENCE, t, entry={"script": "run_mindformer.py"}), [],
     "is relative but code is 'installed'"),
    ("env-typo", lambda t: _job(REFERENCE, t, env={"TOKEN": {"value": "x", "secrte": True}}), [],
     "did you mean 'secret'?"),
    ("cpu-float16", lambda t: _job(TINY, t), ["--set", "model.model_config.compute_dtype=float16"],
     "float16 does not train on CPU"),
    ("cpu-semi-auto", lambda t: _job(TINY, t), ["--slots", "2", "--set", "parallel.parallel_mode=1"],
     "parallel_mode 1 does not run on CPU"),
    ("lora-rank", lambda t: _job(REFERENCE, t, overrides=_ov(
        REFERENCE, **{"model.model_config.pet_config.lora_rank": 0})), [], "pet_config.lora_rank: needs a positive integer, got 0"),
    ("nodes-zero", lambda t: _job(REFERENCE, t, nodes=0), [], "nodes: must be a positive integer or 'all', got 0"),
]


def test_dataset_batch_differs_warns_and_renders(tmp_path, run_cli, monkeypatch):
    """MindFormers' check_dataset_config sets train_dataset.batch_size = runner_config.batch_size:
    a difference runs (a real Llama2-7B config had 4 vs 2), so it is a warning naming the value used."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(_job(REFERENCE, tmp_path, overrides=_ov(REFERENCE, **{"train_dataset.batch_size": 8})),
                                   sort_keys=False))
    out_file = tmp_path / "rendered.yaml"
    code, out, err = run_cli("render", str(path), "--no-mindformers", "-o", str(out_file))
    assert code == 0, err
    assert ("warning: train_dataset.batch_size 8 differs from runner_config.batch_size 4: "
            "MindFormers overwrites it and uses 4") in err
    assert out_file.exists()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_job_refused_nothing_written(case, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, job, args, expected = case
    path = tmp_path / "job.yaml"
    path.write_text(job if isinstance(job, str) else yaml.safe_dump(job(tmp_path), sort_keys=False))
    out_file = tmp_path / "out" / "rendered.yaml"
    code, out, err = run_cli("render", str(path), "--no-mindformers", "-o", str(out_file), *args)
    assert code == 2, (out, err)
    assert expected in err, err
    assert err.count("\n") == 1 and err.startswith("alaunch: error: ")  # one clear line
    assert not out_file.exists() and not out_file.parent.exists()


def test_every_refusal_has_its_own_message(tmp_path, run_cli, monkeypatch):
    messages = set()
    for case in CASES:
        sub = tmp_path / case[0]
        sub.mkdir()
        monkeypatch.chdir(sub)
        _, job, args, _ = case
        path = sub / "job.yaml"
        path.write_text(job if isinstance(job, str) else yaml.safe_dump(job(sub), sort_keys=False))
        _, _, err = run_cli("render", str(path), "--no-mindformers", *args)
        messages.add(err.replace(str(sub), "<dir>"))
    assert len(CASES) >= 20 and len(messages) == len(CASES)


def test_secret_env_is_masked():
    from launcher.core.spec import parse_job
    spec = parse_job({"name": "a", "kind": "finetune", "template": "x", "entry": {"script": "alaunch:run_cpu"},
                      "env": {"TOKEN": {"value": "hunter2", "secret": True}, "HOME_TOKEN": {"from_local": "HOME"},
                              "GLOG_v": 2}})
    shown = spec.env_display()
    assert shown == {"TOKEN": "***", "HOME_TOKEN": "***", "GLOG_v": "2"}
    assert "hunter2" not in repr(shown)
    assert spec.env_values()["TOKEN"].resolve({}) == "hunter2"


@pytest.mark.parametrize("job", sorted(p.name for p in (ROOT / "jobs").glob("llama3_*.yaml")))  # tiny: need build/demo
def test_the_shipped_jobs_render_without_a_warning_of_their_own(job, run_cli, tmp_path):
    """The recipe's training drew `warning: train_dataset.batch_size 1 differs from
    runner_config.batch_size 4` on every render, plan and submit."""
    code, out, err = run_cli("render", str(ROOT / "jobs" / job), "-H", str(ROOT / "hostfiles" / "one-card"),
                             "--no-mindformers", "-o", str(tmp_path / "r.yaml"))
    said = [ln for ln in err.splitlines() if ln.startswith("warning:") and "validation not requested" not in ln]
    assert code == 0 and said == [], err
