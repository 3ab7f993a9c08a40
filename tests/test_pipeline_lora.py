"""A step that takes a training's LoRA delta plus a base checkpoint (``{from: train, output:
lora, base: PATH}``), without hosts: the spelling, its one-line refusals, an unchanged identity
for every other reference, the dry run. The real delta, moved and applied: test_tiny_cpu.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher.core import pipeline as pl
from launcher.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
TRAIN = {"job": "../tiny_lora_cpu.yaml"}
LORA = {"from": "train", "output": "lora", "base": "/models/base.ckpt"}


def parse(steps: dict) -> pl.Pipeline:
    text = yaml.safe_dump({"name": "p", "steps": steps}, sort_keys=False)
    return pl.parse_pipeline(yaml.safe_load(text), "p.yaml", str(ROOT / "jobs" / "pipelines"), text)


def test_a_lora_reference_needs_the_training_and_carries_its_base():
    p = parse({"train": TRAIN, "after": {"job": "../tiny_predict_cpu.yaml", "checkpoint": LORA},
               "eval": {"job": "../tiny_predict_cpu.yaml", "inputs": {"weights": LORA}}})
    ref = pl.Ref("train", "last", "lora", "/models/base.ckpt")
    assert p.step("after").checkpoint == ref and p.step("eval").inputs["weights"] == ref
    assert p.step("after").needs == ("train",) and p.step("eval").needs == ("train",)
    assert ref.canonical()["base"] == "/models/base.ckpt"
    assert "LoRA delta on base /models/base.ckpt" in ref.describe()


def test_other_references_hash_as_before():
    """A field added to Ref must not change the identity of every existing step (all would re-run)."""
    assert pl.Ref("train", "all", "checkpoints").canonical() == {"from": "train", "select": "all",
                                                                 "output": "checkpoints"}


@pytest.mark.parametrize("checkpoint, extra, key, message", [
    ({"from": "train", "output": "lora"}, {}, "steps.after.checkpoint", "output: lora needs base"),
    ({"from": "train", "output": "lora", "base": ""}, {}, "steps.after.checkpoint", "output: lora needs base"),
    ({"from": "train", "base": "/b.ckpt"}, {}, "steps.after.checkpoint.base", "goes with output: lora"),
    ({**LORA, "select": "all"}, {}, "steps.after.checkpoint.select", "select: last"),
    ({**LORA, "bsae": "/b"}, {}, "steps.after.checkpoint", "valid: from, select, output, base"),
    ({**LORA, "from": "merge"}, {"merge": {"builtin": "merge", "with": {"checkpoint": {"from": "train"}}}},
     "steps.after", "'merge' is the built-in merge"),
])
def test_bad_lora_references_are_refused_with_file_line_and_key(checkpoint, extra, key, message):
    with pytest.raises(InputError) as err:
        parse({"train": TRAIN, **extra, "after": {"job": "../tiny_predict_cpu.yaml", "checkpoint": checkpoint}})
    assert err.value.key == key and err.value.line is not None and message in str(err.value), str(err.value)


def test_a_builtin_does_not_take_a_lora_delta():
    with pytest.raises(InputError) as err:
        parse({"train": TRAIN, "merge": {"builtin": "merge", "with": {"checkpoint": LORA}}})
    assert err.value.key == "steps.merge.with" and "fetch takes what: lora" in str(err.value)


def test_dry_run_says_where_base_and_delta_meet(run_cli, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "p", "steps": {
        "train": {"job": str(ROOT / "jobs" / "tiny_lora_cpu.yaml")},
        "after": {"job": str(ROOT / "jobs" / "tiny_predict_cpu.yaml"), "checkpoint": LORA}}}))
    code, out, err = run_cli("run", str(path), "-H", str(ROOT / "hostfiles" / "one-card"), "--dry-run")
    assert code == 0, err
    applied = f"~/alaunch/<train's job id>/output/lora/<job id>-base-{pl.text_sha('/models/base.ckpt')[:12]}.ckpt"
    assert f"checkpoint <- train's LoRA delta on base /models/base.ckpt: {applied}" in out, out
    assert "checkpoint: train's LoRA delta cut on its node, written with /models/base.ckpt into one checkpoint" \
        in out, out


def test_apply_writes_base_then_delta_records_streaming_and_keeps_the_crc(tmp_path):
    """remote/collect.py APPLY on hand-made .ckpt records: the base's records the delta does not
    have, in order, then the delta's (one replaced, one added), copied byte for byte, with a
    fresh crc32 trailer because the base had one; a missing base is one line naming it."""
    import binascii
    import os

    from launcher.core.hostfile import Host
    from launcher.errors import RemoteError
    from launcher.runners import make_runner
    from tests.test_fetch import _record

    frozen = _record("model.tok_embeddings.embedding_weight", [256, 64], os.urandom(256 * 64 * 4))
    state = _record("global_step", [1], b"\1\0\0\0", dtype=b"Int32")
    old_a = _record("wq.lora_a", [4, 64], bytes(4 * 64 * 4))
    new_a, new_b = _record("wq.lora_a", [4, 64], os.urandom(1024)), _record("wq.lora_b", [64, 4], os.urandom(1024))
    body = frozen + old_a + state
    (tmp_path / "base.ckpt").write_bytes(body + b"crc_num" + binascii.crc32(body).to_bytes(10, "big"))
    (tmp_path / "delta.ckpt").write_bytes(new_a + new_b)
    out = tmp_path / "out" / "applied.ckpt"
    request = {"op": "apply", "base": str(tmp_path / "base.ckpt"), "delta": str(tmp_path / "delta.ckpt"),
               "out": str(out)}
    with make_runner(Host("localhost", 1)) as runner:
        made = runner.call("collect", request)
        want = frozen + state + new_a + new_b
        assert out.read_bytes() == want + b"crc_num" + binascii.crc32(want).to_bytes(10, "big")
        assert (made["kept"], made["replaced"], made["added"], made["size"]) == (2, 1, 1, out.stat().st_size)
        with pytest.raises(RemoteError) as err:
            runner.call("collect", {**request, "base": str(tmp_path / "nope.ckpt")})
    assert "nope.ckpt: No such file or directory" in str(err.value) and not list(out.parent.glob("*.tmp.*"))
