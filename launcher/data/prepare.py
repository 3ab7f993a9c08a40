"""`data prepare` end to end: read -> pipeline -> write train.json / test.jsonl / report.json.

The I/O edge around the pure pipeline. The conversation JSON is the layout MindFormers'
alpaca converter writes (``id`` + ``conversations`` of human/gpt turns), one example per
line inside the list so diffs and ``head`` stay readable. With a tokenizer, the same
examples also go to ``train.mindrecord`` (see :mod:`launcher.data.mindrecord`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.data import pipeline
from launcher.data import report as report_mod
from launcher.data.pipeline import Example
from launcher.data.rawio import read_raw
from launcher.data.recipe import Recipe


@dataclass(frozen=True)
class PrepareOptions:
    raw: Path
    recipe: Recipe
    out_dir: Path
    seed: int | None = None
    tokenizer: Path | None = None
    seq_length: int = 512
    test_rows: int = 0
    skip_bad: bool = False


def conversation(example_id: int, ex: Example) -> dict[str, Any]:
    return {"id": str(example_id), "conversations": [
        {"from": "human", "value": ex.prompt},
        {"from": "gpt", "value": ex.answer},
    ]}


def write_train_json(examples: list[Example], path: Path) -> None:
    dumps = json.dumps
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write("[\n")
        out.write(",\n".join(dumps(conversation(i + 1, ex), ensure_ascii=False)
                             for i, ex in enumerate(examples)))
        out.write("\n]\n" if examples else "]\n")


def write_test_jsonl(examples: list[Example], path: Path) -> None:
    """The math_test_200 layout: the problem already wrapped in the prompt, and the solution."""
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for ex in examples:
            out.write(json.dumps({"problem": ex.prompt, "solution": ex.answer}, ensure_ascii=False))
            out.write("\n")


def prepare(opts: PrepareOptions) -> dict[str, Any]:
    """Run the recipe and write OUTDIR; returns the report (also saved as report.json)."""
    raw = read_raw(opts.raw, skip_bad=opts.skip_bad)
    seed = opts.recipe.seed if opts.seed is None else opts.seed
    outcome = pipeline.run(raw, opts.recipe, seed=seed, test_rows=opts.test_rows)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    write_train_json(outcome.train, opts.out_dir / "train.json")
    if opts.test_rows:
        write_test_jsonl(outcome.test, opts.out_dir / "test.jsonl")
    tokens = None
    if opts.tokenizer is not None:
        from launcher.data.mindrecord import write_mindrecord  # imports mindspore: only when asked

        tokens = write_mindrecord(outcome.train, opts.tokenizer, opts.out_dir / "train.mindrecord",
                                  seq_length=opts.seq_length)
    report = report_mod.build(raw, opts.recipe, outcome, seed=seed, tokens=tokens)
    (opts.out_dir / "report.json").write_text(
        json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return report
