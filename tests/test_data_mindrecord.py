"""Tokenizer and MindRecord: the model loads in MindFormers' LlamaTokenizer, rows decode back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.data import synth
from launcher.data.prepare import PrepareOptions, prepare
from launcher.data.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "jobs" / "data" / "math_recipe.yaml"

pytestmark = pytest.mark.ms


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from launcher.data.tokenizer import texts_of, train_sentencepiece

    base = tmp_path_factory.mktemp("mr")
    raw = base / "raw.jsonl"
    synth.synthesise(6000, raw, seed=4)
    recipe = load_recipe(RECIPE)
    recipe = recipe.model_copy(update={"quotas": {k: min(v, 60) for k, v in recipe.quotas.items()}})
    first = prepare(PrepareOptions(raw=raw, recipe=recipe, out_dir=base / "plain"))
    assert first["tokens"] is None
    model = train_sentencepiece(texts_of(base / "plain" / "train.json"), base / "tok", vocab_size=1024)
    outs = []
    for name in ("a", "b"):
        outs.append(prepare(PrepareOptions(raw=raw, recipe=recipe, out_dir=base / name, tokenizer=model,
                                           seq_length=96)))
    return base, model, outs


def test_tokenizer_is_deterministic_and_covers_any_character(prepared, tmp_path):
    import sentencepiece as spm

    from launcher.data.tokenizer import texts_of, train_sentencepiece

    base, model, _ = prepared
    again = train_sentencepiece(texts_of(base / "plain" / "train.json"), tmp_path / "tok2")
    assert again.read_bytes() == model.read_bytes()
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert sp.get_piece_size() <= 1024 and (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)
    odd = "未见过的字：龘 ✓ ？ 0.5\n\n### Response:"
    assert sp.decode(sp.encode(odd)) == odd and sp.unk_id() not in sp.encode(odd)


def test_model_loads_in_mindformers_llama_tokenizer_with_the_same_ids(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # importing mindformers writes output/log into the cwd
    import sentencepiece as spm
    from mindformers import LlamaTokenizer

    _, model, _ = prepared
    tok = LlamaTokenizer(vocab_file=str(model))
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 0)
    text = "计算 -1552.54 / 6004.21 等于多少？"
    assert tok(text)["input_ids"] == [1] + sp.encode(text)


def test_mindrecord_rows_decode_back_and_are_identical_per_seed(prepared):
    import sentencepiece as spm

    from launcher.data.mindrecord import IGNORE, read_mindrecord

    base, model, (ra, rb) = prepared
    sp = spm.SentencePieceProcessor(model_file=str(model))
    train = json.loads((base / "a" / "train.json").read_text(encoding="utf-8"))
    rows_a = read_mindrecord(base / "a" / "train.mindrecord")
    rows_b = read_mindrecord(base / "b" / "train.mindrecord")
    assert len(rows_a) == len(train) == ra["tokens"]["rows"] and (base / "a" / "train.mindrecord.db").exists()
    truncated = 0
    for row_a, row_b, item in zip(rows_a, rows_b, train, strict=True):
        ids, labels = row_a["input_ids"].tolist(), row_a["labels"].tolist()
        assert ids == row_b["input_ids"].tolist() and labels == row_b["labels"].tolist()
        assert row_a["input_ids"].dtype.name == "int32" and len(ids) == len(labels) == 97
        prompt, answer = (t["value"] for t in item["conversations"])
        n_prompt = next((k for k, x in enumerate(labels) if x != IGNORE), None)
        if n_prompt is None:  # the prompt alone filled the row
            truncated += 1
            # a cut can fall inside a character written as byte pieces: it decodes to U+FFFD
            assert prompt.startswith(sp.decode(ids[1:]).rstrip("\ufffd"))
            continue
        assert ids[0] == 1 and sp.decode(ids[1:n_prompt]) == prompt
        answer_ids = [x for x in labels if x != IGNORE]
        assert answer_ids == ids[n_prompt:n_prompt + len(answer_ids)]
        if answer_ids[-1] == 2:
            assert sp.decode(answer_ids[:-1]) == answer
            assert set(ids[n_prompt + len(answer_ids):]) <= {0}
        else:
            truncated += 1
            assert answer.startswith(sp.decode(answer_ids).rstrip("\ufffd"))
    assert truncated == ra["tokens"]["truncated_rows"] > 0  # seq 96 is short for the templates
