"""A small SentencePiece model trained locally, for the tiny CPU demo model and the tests.

Trained with the settings MindFormers' ``LlamaTokenizer`` expects (unk 0, bos 1, eos 2,
no pad piece: LlamaTokenizer pads with <unk>), ``byte_fallback`` so any character
encodes, and identity normalisation so decoding gives back exactly the training text
(NFKC would turn "？" into "?" and the answers the scorer reads would change). One
thread and a fixed sentence order make the model file byte-identical run to run.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path

from launcher.errors import InputError

MAX_SENTENCES = 200_000


def train_sentencepiece(texts: Iterable[str], out_prefix: Path | str, vocab_size: int = 1024) -> Path:
    """Train a BPE-free unigram SentencePiece model on ``texts``; returns ``<prefix>.model``."""
    import sentencepiece as spm

    sentences = [t for t in texts if t]
    if not sentences:
        raise InputError("no text to train a tokenizer on")
    if len(sentences) > MAX_SENTENCES:  # an even, deterministic spread (no sampler randomness)
        step = len(sentences) / MAX_SENTENCES
        sentences = [sentences[int(i * step)] for i in range(MAX_SENTENCES)]
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", byte_fallback=True, character_coverage=0.9995,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
        max_sentence_length=16384, shuffle_input_sentence=False, hard_vocab_limit=False,
        minloglevel=2,
    )
    path = prefix.with_name(prefix.name + ".model")
    path.write_bytes(model.getvalue())
    return path


def texts_of(path: Path) -> list[str]:
    """The training text of a prepare output (train.json) or a raw set (JSON lines)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", source=source) from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg})", source=source, line=exc.lineno) from None
        out: list[str] = []
        for n, item in enumerate(items):
            turns = item.get("conversations") if isinstance(item, dict) else None
            if not isinstance(turns, list):
                raise InputError("expected conversation JSON: a list of {id, conversations}",
                                 source=source, key=f"[{n}]")
            out.extend(str(t.get("value", "")) for t in turns if isinstance(t, dict))
        return out
    from launcher.data.rawio import parse_line

    out = []
    for lineno, line in enumerate(text.encode("utf-8").splitlines(), 1):
        if line.strip():
            out.extend(parse_line(line, source, lineno))
    return out
