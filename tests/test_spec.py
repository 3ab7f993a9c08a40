"""Job files -> JobSpec: shipped jobs load, errors name file:line and key, paths and secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.core import yamlio
from launcher.errors import InputError
from launcher.core.spec import BUILTIN_ENTRY, load_job

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("job", sorted((ROOT / "jobs").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_jobs_load(job):
    spec = load_job(job)
    assert spec.template_path().is_file()
    assert spec.kind in job.stem or spec.kind == "finetune" and "lora" in job.stem


def test_error_names_file_line_and_key(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: a\nkind: finetune\ntemplate: x\ninputs:\n  train:\n    local: a\n    fils: b\n")
    with pytest.raises(InputError) as info:
        load_job(path)
    assert str(info.value).startswith(f"{path}:7: inputs.train.fils: unknown key; did you mean 'fills'?")


def test_local_paths_are_relative_to_the_job_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "job.yaml"
    path.write_text("name: a\nkind: predict\ntemplate: tiny_llama_cpu/predict.yaml\n"
                    f"entry: {{script: '{BUILTIN_ENTRY}'}}\n"
                    "checkpoint: {local: ../ck/x.ckpt}\ntokenizer: {remote: /opt/tok.model}\n")
    spec = load_job(path)
    assert spec.checkpoint.local == str(tmp_path / "ck" / "x.ckpt")
    assert spec.tokenizer.remote == "/opt/tok.model" and not spec.tokenizer.is_local
    assert spec.template_path() == ROOT / "configs" / "tiny_llama_cpu" / "predict.yaml"


def test_spec_is_frozen():
    spec = load_job(ROOT / "jobs" / "tiny_lora_cpu.yaml")
    with pytest.raises(Exception):
        spec.name = "other"  # type: ignore[misc]


def test_from_local_env_must_exist_at_launch():
    from launcher.core.spec import parse_job
    spec = parse_job({"name": "a", "kind": "eval", "template": "x", "entry": {"script": BUILTIN_ENTRY},
                      "env": {"TOKEN": {"from_local": "ALAUNCH_TEST_NOPE"}}})
    with pytest.raises(InputError, match="ALAUNCH_TEST_NOPE is not set on this machine"):
        spec.env_values()["TOKEN"].resolve({})
    assert spec.env_values()["TOKEN"].resolve({"ALAUNCH_TEST_NOPE": "s3"}) == "s3"
    assert spec.env_display() == {"TOKEN": "***"}


def test_templates_may_alias_but_not_bomb():
    ok = yamlio.loads("a: &x {b: 1}\nc: *x\n", "t.yaml", allow_aliases=True)
    assert ok["c"] == {"b": 1}
    bomb = "a: &a [1]\n" + "".join(f"b{i}: [*a, *a]\n" for i in range(20))
    with pytest.raises(InputError, match="more than 32 YAML aliases"):
        yamlio.loads(bomb, "t.yaml", allow_aliases=True)


def test_duplicate_key_nested_names_line():
    with pytest.raises(InputError, match=r"t.yaml:4: epochs: duplicate key 'epochs' \(first at line 3\)"):
        yamlio.loads("runner_config:\n  batch_size: 1\n  epochs: 1\n  epochs: 2\n", "t.yaml")


def _with_secret(tmp_path, value="s3cr3t-token"):
    """The tiny CPU job with a literal secret in its env, written next to a copy of it."""
    import yaml
    data = yaml.safe_load(Path("jobs/tiny_lora_cpu.yaml").read_text())
    data["env"] = {**(data.get("env") or {}), "API_KEY": {"value": value, "secret": True}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_resume_gets_the_secret_back_from_the_job_file_not_the_mask(tmp_path):
    """The registry stores ``***`` for a literal secret; attempt 2 (resume, a step's retries)
    must run with the real value from the job file, and refuse when the file is gone."""
    from launcher.core.spec import SECRET_MASK, masked_secrets, parse_job, redacted_text, restore_secrets
    path = _with_secret(tmp_path)
    original = load_job(path)
    stored_text = redacted_text(original, path.read_text())
    assert "s3cr3t-token" not in stored_text
    stored = parse_job(yamlio.loads(stored_text, "registry:x"), str(path), str(tmp_path))
    assert masked_secrets(stored) == ["API_KEY"] and stored.env["API_KEY"].value == SECRET_MASK
    restored = restore_secrets(stored, original, str(path))
    assert restored.env["API_KEY"].value == "s3cr3t-token" and restored.env["API_KEY"].secret
    with pytest.raises(InputError) as info:
        restore_secrets(stored, None, str(path))
    assert "env.API_KEY" in str(info.value) and str(path) in str(info.value)
    assert "s3cr3t-token" not in str(info.value)
