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
    ) -> None:
        """Compare runs side by side: LoRA, params, loss, EM/F1, math."""
        from launcher.metrics.runfacts import collect

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
