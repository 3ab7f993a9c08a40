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
from typing import TYPE_CHECKING, Optional

import typer

from launcher.cli import environment
from launcher.errors import AlaunchError, InputError

if TYPE_CHECKING:  # imported when the verb runs (cli/app.py)
    from rich.table import Table

    from launcher.metrics.runfacts import RunFacts

ORDER = 85
DEFAULT_RUNS = Path("runs")


def resolve_run_dir(arg: str) -> Path:
    """A run directory given as a path, or as a job id under ./runs."""
    path = Path(arg)
    if path.is_dir():
        return path
    candidate = DEFAULT_RUNS / arg
    if candidate.is_dir():
        return candidate
    raise InputError(f"no run directory {arg!r} (and no {candidate}); give a fetched run "
                     "directory or a job id fetched into ./runs", source=arg)


def results_rows(f: RunFacts) -> dict[str, str]:
    from launcher.metrics.runfacts import cells

    return cells(f)


def results_table(runs: list[RunFacts]) -> Table:
    """Runs as columns, facts as rows: side by side, readable in 80 columns for a few runs."""
    from rich.table import Table

    table = Table(title="Runs")
    table.add_column("job")
    rows = [results_rows(f) for f in runs]
    for f in runs:
        table.add_column(f.job)
    for key in rows[0]:
        table.add_row(key, *(r[key] for r in rows))
    return table


def plot_losses(runs: list[RunFacts], out: Path) -> int:
    """Draw every run's loss curve into ``out`` (PNG, SVG or PDF by suffix); returns curves."""
    curves = [f for f in runs if f.loss_curve]
    if not curves:
        raise AlaunchError("no loss lines in these runs' logs: nothing to plot")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise AlaunchError("--plot needs matplotlib: pip install 'alaunch[plot]'") from exc
    fig, ax = plt.subplots(figsize=(8, 4.5))
    try:
        for f in curves:
            xs, ys = zip(*f.loss_curve)
            ax.plot(xs, ys, label=f.job, linewidth=1)
        ax.set_xlabel("global step")
        ax.set_ylabel("loss")
        ax.set_title("training loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        try:
            fig.savefig(out)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot write the plot: {exc}", source=str(out), key="--plot") from exc
    finally:
        plt.close(fig)
    return len(curves)


def register(app: typer.Typer) -> None:
    @app.command("results")
    def results(
        runs: list[str] = typer.Argument(..., metavar="RUN_DIR|JOB...",
                                         help="Fetched run directories, or job ids under ./runs."),
        plot: Optional[Path] = typer.Option(None, "--plot", metavar="FILE",
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
