"""`alaunch results RUN_DIR...`: fetched runs side by side, and their loss curves.

A run directory is what fetch writes: ``runs/<job-id>/<host>/...`` (msrun and MindFormers
logs, the rendered config), plus, when present, ``runs/<job-id>/job.json`` (job metadata)
and ``scores.json`` (written by ``alaunch score ... --save RUN_DIR``). Every fact is taken
from the most direct source available and missing ones show as ``-``:

* job, template: job.json (``id``/``name``, ``template``), else the directory name;
* LoRA rank / alpha / targets: job.json ``lora`` {rank, alpha, targets}, else the
  ``model.model_config.pet_config`` of the first MindFormers YAML in the run;
* trainable parameters: the run's "Network Parameters" log line (exact in MindFormers 1.1,
  whole millions in 1.9), else counted from the config (launcher.core.lora);
* steps, duration, final loss, loss curve: the lowest rank's training log;
* EM, F1, math accuracy: scores.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from launcher.cli import environment
from launcher.cli.runfacts import plot_losses, results_rows, results_table  # noqa: F401 - shared with `run`
from launcher.errors import InputError

ORDER = 85
DEFAULT_RUNS = Path("runs")


def resolve_run_dir(arg: str) -> Path:
    """A run directory given as a path, or as a job under ./runs: its id, a unique id prefix or
    its name as ``jobs`` and ``status`` take them (tables show ids as their shortest unique
    prefix), or the one run directory there that starts with ``arg``."""
    path = Path(arg)
    if path.is_dir():
        return path
    candidate = DEFAULT_RUNS / arg
    if candidate.is_dir():
        return candidate
    from launcher.ops import registry as reg
    try:
        with reg.Registry.in_state_dir(environment.current().state_dir) as registry:
            known = DEFAULT_RUNS / registry.get(arg).id
        if known.is_dir():
            return known
    except InputError:
        pass
    if DEFAULT_RUNS.is_dir() and "/" not in arg:
        matches = sorted(p for p in DEFAULT_RUNS.iterdir() if p.is_dir() and p.name.startswith(arg))
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise InputError(f"{arg!r} matches {len(matches)} runs in {DEFAULT_RUNS}: "
                             + ", ".join(p.name for p in matches[:10]) + "; give more of the id", source=arg)
    raise InputError(f"no run directory {arg!r} (and no {candidate}); give a fetched run "
                     "directory or a job id fetched into ./runs", source=arg)


def register(app: typer.Typer) -> None:
    @app.command("results")
    def results(
        runs: list[str] = typer.Argument(..., metavar="RUN_DIR|JOB...",
                                         help="Fetched run directories, or job ids under ./runs."),
        plot: Path | None = typer.Option(None, "--plot", metavar="FILE",
                                            help="Also draw the loss curves into FILE (png/svg/pdf)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of the table."),
        as_csv: bool = typer.Option(False, "--csv", help="A sweep's leaderboard as CSV."),
        wide: bool = typer.Option(False, "--wide", help="A sweep's leaderboard with every column whole."),
    ) -> None:
        """Compare runs side by side: LoRA, params, loss, EM/F1, math; or a sweep's leaderboard."""
        from launcher.metrics.runfacts import collect

        if len(runs) == 1 and not Path(runs[0]).is_dir() and not (DEFAULT_RUNS / runs[0]).is_dir():
            if _sweep_results(runs[0], plot, as_json, as_csv, wide):
                return
        facts = [collect(resolve_run_dir(r)) for r in runs]
        env = environment.current()
        if as_json:
            env.stdout.file.write(json.dumps([asdict(f) | {"math_accuracy": f.math_accuracy}
                                              for f in facts], indent=2, ensure_ascii=False) + "\n")
        else:
            env.stdout.print(results_table(facts))
        if plot is not None:
            n = plot_losses(facts, plot)
            env.stderr.print(f"plotted {n} loss curve(s) to {plot}", markup=False, highlight=False)


def _sweep_results(ref: str, plot: Path | None, as_json: bool, as_csv: bool, wide: bool = False) -> bool:
    """``alaunch results SWEEP``: the trials best first (cli/sweepview.py), the best trial's
    overrides against the base, CSV/JSON, the plot. False: ``ref`` names no sweep."""
    from launcher.cli import sweepview as view
    from launcher.core import sweep as sw
    from launcher.ops import registry as reg

    env = environment.current()
    with reg.Registry.in_state_dir(env.state_dir) as registry:
        try:
            record = registry.sweep(ref)
        except InputError:
            return False
    rows = sw.leaderboard(record.trials, record.info)
    metric = (record.info.get("objective") or {}).get("metric", "objective")
    if as_json:
        env.stdout.file.write(json.dumps({"sweep": record.id, "name": record.name, "state": record.state,
                                          "objective": record.info.get("objective"), "trials": rows},
                                         indent=2, default=str) + "\n")
    elif as_csv:
        env.stdout.file.write(view.csv_text(rows))
    else:
        goal = (record.info.get("objective") or {}).get("goal", "min")
        env.stdout.print(f"sweep {record.name} ({record.state}): {len(rows)} trial(s), by {metric} ({goal})",
                         markup=False, highlight=False, soft_wrap=True)
        from launcher.cli.tables import print_table
        tab = view.leaderboard_table(rows, metric, env.stdout.width, wide)
        print_table(env.stdout, tab, wide=wide)
        for line in view.cut_overrides(tab, rows):
            env.stdout.print(line, markup=False, highlight=False, soft_wrap=True)
        for line in view.reasons(rows):
            env.stdout.print(line, markup=False, highlight=False, soft_wrap=True)
        diff = sw.best_diff(rows, record.trials, record.info.get("base_overrides") or {})
        if rows and rows[0].get("objective") is not None and not diff:
            env.stdout.print(f"best {rows[0]['trial'][:8]}: the base's own settings", markup=False, highlight=False)
        if diff:
            env.stdout.print(f"best {rows[0]['trial'][:8]} against the base:", markup=False, highlight=False)
            for key, old, new in diff:
                env.stdout.print(f"  {key}: {view.value_text(old)} -> {view.value_text(new)}", markup=False,
                                 highlight=False, soft_wrap=True)
    if plot is not None:
        curves = {t["trial"]: t["curve"] for t in record.trials}
        n = view.plot_sweep(rows, curves, metric, plot)
        env.stderr.print(f"plotted {n} panel(s) to {plot}", markup=False, highlight=False)
    return True
