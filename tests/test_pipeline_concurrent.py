"""Independent steps run at the same time: two 1-card predict steps (no needs between them)
of one pipeline on a 2-slot local host, real msrun on CPU. The card allocation (#14) must
give them different cards, their started/ended times must overlap, and both must succeed."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import yaml

from tests.test_tiny_cpu import toy_data  # noqa: F401 - the module fixture (64 rows, SentencePiece)

pytestmark = [pytest.mark.slow, pytest.mark.ms]


def _predict(name: str, prompts, tokenizer) -> dict:
    return {"name": name, "kind": "predict", "template": "tiny_llama_cpu/predict.yaml", "seed": 42,
            "nodes": 1, "cards_per_node": 1, "code": "installed",
            "entry": {"script": "alaunch:run_cpu",
                      "args": ["--predict_data", "data/prompts/p.jsonl", "--predict_batch_size", "4"]},
            "inputs": {"prompts": {"local": str(prompts)}}, "tokenizer": {"remote": str(tokenizer)},
            "outputs": {"predictions": ["output/predictions.jsonl"]}}


@pytest.mark.timeout(600)
def test_two_independent_one_card_steps_overlap(tmp_path, toy_data, run_cli):  # noqa: F811
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"problem": f"What is {i} plus {i}?"}) + "\n" for i in range(4)))
    pipeline = tmp_path / "two.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "two-at-once", "steps": {
        "eval": {"job": _predict("p-eval", prompts, toy_data["tokenizer"])},
        "predict": {"job": _predict("p-predict", prompts, toy_data["tokenizer"])}}}))
    code, out, err = run_cli("run", str(pipeline), "--local", "--slots", "2", "--dry-run")
    assert code == 0, err
    assert "# 2. predict (job); runs together with eval" in out, out
    code, out, err = run_cli("run", str(pipeline), "--local", "--slots", "2", "--runs", str(tmp_path / "runs"))
    assert code == 0, err[-3000:]
    from launcher.ops.registry import Registry
    with Registry.in_state_dir() as registry:
        run = registry.pipeline("two-at-once")
        steps = {s.step: s for s in run.steps}
        jobs = {name: registry.get(s.job_id) for name, s in steps.items()}
    assert {s.state for s in steps.values()} == {"succeeded"}, [(s.step, s.state, s.reason) for s in run.steps]
    cards = sorted(j.meta["devices"]["localhost"][0] for j in jobs.values())
    assert cards == [0, 1], cards  # one card each, not the same one
    # the two jobs' worker processes (not only the steps) lived at the same time
    t = {n: (datetime.fromisoformat(j.nodes[0].started_at), datetime.fromisoformat(j.nodes[0].ended_at))
         for n, j in jobs.items()}
    (a0, a1), (b0, b1) = t["eval"], t["predict"]
    assert a0 < b1 and b0 < a1, t  # the two intervals overlap
    for name, s in steps.items():  # and both really predicted, on the host
        (path,) = s.outputs["paths"]["predictions"]
        assert open(path).read().count("\n") >= 4, (name, path)
