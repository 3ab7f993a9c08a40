"""`alaunch data synth|prepare|tokenizer`: the math data recipe as reproducible steps."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from launcher.cli import environment
from launcher.errors import InputError

ORDER = 60
DEFAULT_RECIPE = Path("jobs/data/math_recipe.yaml")


def register(app: typer.Typer) -> None:
    data = typer.Typer(help="Build the math training data: synthesise, prepare, train a tokenizer.",
                       no_args_is_help=True)

    @data.command("synth")
    def synth_cmd(
        rows: int = typer.Option(809_993, "--rows", min=0, help="Rows to generate (the real set has 809,993)."),
        seed: int = typer.Option(0, "--seed", help="Random seed: same seed, byte-identical file."),
        out: Path = typer.Option(..., "-o", "--output", help="Raw JSON-lines file to write."),
    ) -> None:
        """Generate a raw math set of the real one's shape (families, duplicates, answers)."""
        from launcher.core.prune import human_bytes
        from launcher.data.synth import synthesise

        start = time.perf_counter()
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the output directory: {exc.strerror}", source=str(out.parent)) from None
        size = synthesise(rows, out, seed=seed)
        environment.current().stdout.print(
            f"wrote {rows:,} rows ({human_bytes(size)}) to {out} in {time.perf_counter() - start:.1f} s",
            markup=False)

    @data.command("prepare")
    def prepare_cmd(
        raw: Path = typer.Argument(..., help="Raw JSON lines of {problem, solution}."),
        recipe: Path = typer.Option(DEFAULT_RECIPE, "--recipe", help="Recipe YAML (quotas, templates, prompt)."),
        out_dir: Path = typer.Option(..., "-o", "--output", help="Directory for train.json, report.json, ..."),
        tokenizer: Path | None = typer.Option(None, "--tokenizer",
                                                 help="SentencePiece model: also write train.mindrecord."),
        seq_length: int = typer.Option(512, "--seq-length", min=2, help="Model sequence length (rows are +1)."),
        seed: int | None = typer.Option(None, "--seed", help="Sampling seed (default: the recipe's)."),
        test_rows: int = typer.Option(0, "--test-rows", min=0,
                                      help="Also write test.jsonl with this many held-out items."),
        skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip malformed lines (counted) instead of failing."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of tables."),
    ) -> None:
        """Dedup, classify, sample per quota and rewrite answers; write the training files."""
        from launcher.cli.dataview import render as render_report
        from launcher.data.prepare import PrepareOptions, prepare
        from launcher.data.recipe import load_recipe

        if tokenizer is not None and not tokenizer.is_file():
            raise InputError("no such tokenizer file", source=str(tokenizer))
        env = environment.current()
        report = prepare(PrepareOptions(raw=raw, recipe=load_recipe(recipe), out_dir=out_dir, seed=seed,
                                        tokenizer=tokenizer, seq_length=seq_length,
                                        test_rows=test_rows, skip_bad=skip_bad))
        if as_json:
            env.stdout.print(json.dumps(report, ensure_ascii=False, indent=2), markup=False,
                             highlight=False, soft_wrap=True)
        else:
            render_report(report, env.stdout)
            env.stdout.print(f"wrote {out_dir}", markup=False)

    @data.command("tokenizer")
    def tokenizer_cmd(
        source: Path = typer.Argument(..., help="train.json (conversations) or raw JSON lines."),
        out_prefix: Path = typer.Option(..., "-o", "--output", help="Model prefix: writes PREFIX.model."),
        vocab_size: int = typer.Option(1024, "--vocab-size", min=300, help="Upper bound of pieces."),
    ) -> None:
        """Train a small SentencePiece tokenizer (byte fallback) on prepared or raw data."""
        from launcher.data.tokenizer import texts_of, train_sentencepiece

        path = train_sentencepiece(texts_of(source), out_prefix, vocab_size=vocab_size)
        environment.current().stdout.print(f"wrote {path}", markup=False)

    app.add_typer(data, name="data", help="Build the math training data: synthesise, prepare, train a tokenizer.")
