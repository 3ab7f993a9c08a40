"""The demo's data recipe and run_cpu.py's predict plumbing, without starting MindSpore.

The recipe must fit the tiny model: every prepared row (Alpaca prompt + answer + bos/eos)
within the tiny config's seq_length, so nothing the scorer reads is truncated away; the
test split must be held out and spread over the recipe's buckets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from launcher.data.families import classify_bucket, instruction_of
from launcher.entry.run_cpu import generated_texts, padded_inputs

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "jobs" / "data" / "demo_recipe.yaml"
SEQ = yaml.safe_load((ROOT / "configs" / "tiny_llama_cpu" / "finetune.yaml").read_text())["model"]["model_config"]["seq_length"]


def test_padded_inputs_fill_the_last_batch_only():
    assert padded_inputs(["a", "b", "c"], 2) == ["a", "b", "c", "c"]
    assert padded_inputs(["a", "b"], 2) == ["a", "b"]
    assert padded_inputs(["a", "b", "c"], None) == ["a", "b", "c"]
    assert padded_inputs("one prompt", 4) == "one prompt"


def test_generated_texts_flatten_batched_results():
    """MindFormers returns one dict per batch when batch_size > 1, one per prompt otherwise."""
    batched = [{"text_generation_text": ["p1 a", "p2 b"]}, {"text_generation_text": ["p3 c", "p3 c"]}]
    assert generated_texts(batched) == ["p1 a", "p2 b", "p3 c", "p3 c"]
    assert generated_texts([{"text_generation_text": ["x"]}, {"text_generation_text": ["y"]}]) == ["x", "y"]
    assert generated_texts(["plain"]) == ["plain"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from launcher.cli.app import main  # the CLI is what the demo runs

    out = tmp_path_factory.mktemp("demo")

    def run(*args: str) -> None:
        assert main(list(args)) == 0, args

    run("data", "synth", "--rows", "100000", "--seed", "3", "-o", str(out / "raw.jsonl"))
    run("data", "prepare", str(out / "raw.jsonl"), "--recipe", str(RECIPE), "-o", str(out), "--test-rows", "64")
    run("data", "tokenizer", str(out / "train.json"), "-o", str(out / "tokenizer"))
    return out


def test_demo_recipe_rows_fit_the_tiny_model(prepared):
    import sentencepiece as spm

    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    train = json.loads((prepared / "train.json").read_text(encoding="utf-8"))
    test = [json.loads(line) for line in (prepared / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(train) == sum(recipe["quotas"].values())
    assert len(test) == 64
    train_prompts = {item["conversations"][0]["value"] for item in train}
    assert not train_prompts & {row["problem"] for row in test}, "test rows must be held out"
    buckets = {classify_bucket(instruction_of(row["problem"]))[1] for row in test}
    assert buckets == set(recipe["quotas"]), "every bucket, and only those, in the test split"
    sp = spm.SentencePieceProcessor(model_file=str(prepared / "tokenizer.model"))
    longest = max(2 + len(sp.encode(row["problem"])) + len(sp.encode(row["solution"])) for row in test)
    assert longest <= SEQ + 1, f"a test row needs {longest} tokens; seq_length is {SEQ}"
