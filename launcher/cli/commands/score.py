"""`alaunch score squad|math`: score what a run produced, on the laptop, without MindFormers.

I/O edge only: files are read here and handed as strings to the pure scorers in
``launcher.metrics``; results go to the console (or ``--json``) and, with ``--save``,
into the run directory's ``scores.json`` for ``alaunch results``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from launcher.cli import environment
from launcher.errors import InputError
from launcher.metrics.mathrule import RULE

if TYPE_CHECKING:  # the stacks load when a verb runs, not for `alaunch --help` (bench_cli.py)
    from rich.table import Table

    from launcher.metrics import mathacc, predictions

ORDER = 80

MATH_HELP = "Math accuracy of predictions against reference solutions. Rule: " + RULE


def _emit_json(payload: dict) -> None:
    environment.current().stdout.file.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def read_squad_pairs(path: Path) -> list[predictions.EvalPair]:
    """Pairs from an eval log (``pred is:`` / ``label is:``) or JSON lines with references."""
    return _read_squad(path)[0]


def _read_squad(path: Path) -> tuple[list[predictions.EvalPair], int | None]:
    """The pairs, and for an eval log the number of examples its ``Step[i/N]`` lines promise
    (None for JSON lines: nothing says how many there should be)."""
    from launcher.metrics import predictions

    text = predictions.read_text(path)
    expected = None
    if predictions.looks_like_eval_log(text):
        pairs, expected = predictions.eval_log_pairs(text, str(path))
    else:
        pairs = predictions.parse_prediction_pairs(text, str(path))
    if not pairs:
        raise InputError("no examples found: expected an eval log with `pred is:` / `label is:` "
                         'blocks or JSON lines {"prediction": ..., "reference": ...}', source=str(path))
    return pairs, expected


def squad_command(input_path: Path, as_json: bool, save: Path | None) -> None:
    from launcher.metrics import scorefile, squad

    pairs, expected = _read_squad(input_path)
    result = squad.score((p.prediction, p.reference) for p in pairs)
    complete = expected is None or result.count >= expected
    payload = {"input": str(input_path), **result.as_dict(), "complete": complete, "expected": expected}
    if save is not None:
        scorefile.save(save, "squad", payload)
    if as_json:
        _emit_json(payload)
        return
    out = environment.current().stdout
    out.print(f"F1 {result.f1!r}  EM {result.em!r}  over {result.count} examples", highlight=False)
    if not complete:
        out.print(f"incomplete: {result.count} of {expected} examples (the eval log stops before its "
                  "last Step[i/N]; these scores cover only the examples it reached)", markup=False, highlight=False)
    if save is not None:
        out.print(f"saved to {save / scorefile.SCORES_NAME}", markup=False, highlight=False)


def math_table(report: mathacc.MathReport) -> Table:
    from rich.table import Table

    table = Table(title="Math accuracy")
    for col, justify in (("family", "left"), ("correct", "right"), ("total", "right"), ("accuracy", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for family, c in report.per_family().items():
        table.add_row(family, str(c.correct), str(c.total), f"{100 * c.accuracy:.1f}%")
    table.add_row("overall", str(report.correct), str(report.total), f"{100 * report.accuracy:.1f}%",
                  style="bold")
    return table


def math_command(preds_path: Path, reference: Path, as_json: bool, save: Path | None) -> None:
    from launcher.metrics import mathacc, predictions, scorefile

    preds = predictions.parse_generation_result(predictions.read_text(preds_path), str(preds_path))
    refs = predictions.parse_math_reference(predictions.read_text(reference), str(reference))
    if len(preds) != len(refs):
        raise InputError(f"{len(preds)} predictions but {len(refs)} reference items in "
                         f"{reference}; they are paired by position, so both must list the "
                         "same problems in the same order", source=str(preds_path))
    report = mathacc.score(preds, [r.problem for r in refs], [r.solution for r in refs])
    payload = {"input": str(preds_path), "reference": str(reference), **report.as_dict()}
    if save is not None:
        slim = {k: v for k, v in payload.items() if k != "items"}
        scorefile.save(save, "math", slim)
    if as_json:
        _emit_json(payload)
        return
    out = environment.current().stdout
    out.print(math_table(report))
    out.print(f"{report.correct} of {report.total} correct ({100 * report.accuracy:.1f}%)",
              highlight=False)
    if save is not None:
        out.print(f"saved to {save / scorefile.SCORES_NAME}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="Score predictions: SQuAD EM/F1 or math accuracy.", no_args_is_help=True)

    @sub.command("squad")
    def squad_cmd(
        input_path: Path = typer.Argument(..., metavar="INPUT",
                                          help="A MindFormers eval log, or JSON lines of prediction/reference."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        save: Path | None = typer.Option(None, "--save", metavar="RUN_DIR",
                                            help="Also record the scores in RUN_DIR/scores.json."),
    ) -> None:
        """EM and F1 exactly as MindFormers' EmF1Metric computes them."""
        squad_command(input_path, as_json, save)

    @sub.command("math", help=MATH_HELP)
    def math_cmd(
        preds_path: Path = typer.Argument(..., metavar="PREDICTIONS",
                                          help="text_generation_result.txt or JSON lines of predictions."),
        reference: Path = typer.Option(..., "--reference", "-r", metavar="REF.jsonl",
                                       help="JSON lines of {problem, solution}, in prediction order."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON, with every item's verdict."),
        save: Path | None = typer.Option(None, "--save", metavar="RUN_DIR",
                                            help="Also record the scores in RUN_DIR/scores.json."),
    ) -> None:
        math_command(preds_path, reference, as_json, save)

    app.add_typer(sub, name="score", help="Score predictions: SQuAD EM/F1 or math accuracy.")
