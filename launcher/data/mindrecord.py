"""Tokenise the prepared examples and write them as MindRecord for MindFormers' llama training.

Layout, as MindFormers' llama fine-tuning preprocessing writes it: two int32 columns
``input_ids`` and ``labels`` of length seq_length + 1 (the model shifts by one itself);
``<s>`` + prompt + answer + ``</s>``, padded with the tokenizer's pad id (LlamaTokenizer
pads with ``<unk>``, id 0); labels repeat the answer and ``</s>`` and hold -100 (the
ignored label) for ``<s>``, the prompt and the padding, so only the answer is learnt.
Token ids come from the SentencePiece model directly: the same ids LlamaTokenizer gives
(a test checks that), in one batched C++ call instead of 40k Python calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launcher.data.pipeline import Example
from launcher.errors import InputError

IGNORE = -100
SCHEMA = {"input_ids": {"type": "int32", "shape": [-1]}, "labels": {"type": "int32", "shape": [-1]}}


class SpmTokenizer:
    """The SentencePiece model file, with the special ids LlamaTokenizer would use."""

    def __init__(self, path: Path):
        import sentencepiece as spm

        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(path))
        except (OSError, RuntimeError) as exc:
            raise InputError(f"not a SentencePiece model ({exc}); give the tokenizer.model of a "
                             "SentencePiece (Llama 2 style) tokenizer, e.g. one from "
                             "`alaunch data tokenizer`", source=str(path)) from None
        self.bos = self.sp.bos_id()
        self.eos = self.sp.eos_id()
        self.pad = self.sp.pad_id() if self.sp.pad_id() >= 0 else self.sp.unk_id()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode(list(ids))


def encode_example(prompt_ids: list[int], answer_ids: list[int], tok: SpmTokenizer,
                   length: int) -> tuple[list[int], list[int], bool]:
    """(input_ids, labels, truncated) of one example, both exactly ``length`` long."""
    ids = [tok.bos] + prompt_ids + answer_ids + [tok.eos]
    labels = [IGNORE] * (1 + len(prompt_ids)) + answer_ids + [tok.eos]
    truncated = len(ids) > length
    if truncated:
        ids, labels = ids[:length], labels[:length]
    pad = length - len(ids)
    return ids + [tok.pad] * pad, labels + [IGNORE] * pad, truncated


def write_mindrecord(examples: list[Example], tokenizer: Path, path: Path, *,
                     seq_length: int = 512) -> dict[str, Any]:
    """Write ``path`` (+ ``.db``); returns the token stats for the report."""
    import numpy as np
    from mindspore.mindrecord import FileWriter

    if seq_length < 2:
        raise InputError(f"must be at least 2, got {seq_length}", key="--seq-length")
    tok = SpmTokenizer(tokenizer)
    prompts = tok.encode([ex.prompt for ex in examples])
    answers = tok.encode([ex.answer for ex in examples])
    length = seq_length + 1
    for old in (path, path.with_name(path.name + ".db")):
        old.unlink(missing_ok=True)
    writer = FileWriter(file_name=str(path), shard_num=1, overwrite=True)
    writer.add_schema(SCHEMA, "math_recipe")
    truncated = longest = total = 0
    batch: list[dict[str, Any]] = []
    for p, a in zip(prompts, answers, strict=True):
        ids, labels, cut = encode_example(p, a, tok, length)
        n = len(p) + len(a) + 2
        longest = max(longest, n)
        total += n
        truncated += cut
        batch.append({"input_ids": np.asarray(ids, dtype=np.int32),
                      "labels": np.asarray(labels, dtype=np.int32)})
        if len(batch) == 4096:
            writer.write_raw_data(batch)
            batch = []
    if batch:
        writer.write_raw_data(batch)
    writer.commit()
    return {"seq_length": seq_length, "rows": len(examples), "longest": longest,
            "mean": round(total / len(examples), 1) if examples else 0,
            "truncated_rows": truncated, "tokenizer": str(tokenizer),
            "pad_id": tok.pad, "bos_id": tok.bos, "eos_id": tok.eos}


def read_mindrecord(path: Path) -> list[dict[str, Any]]:
    """All rows of a MindRecord file (tests and `data` checks)."""
    from mindspore.mindrecord import FileReader

    reader = FileReader(str(path))
    try:
        return [dict(row) for row in reader.get_next()]
    finally:
        reader.close()
