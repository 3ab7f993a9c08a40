"""The results views shared by ``alaunch results`` and the pipeline's ``results`` step: the
runs side by side (a rich Table of :func:`launcher.metrics.runfacts.cells`) and the loss plot.
The facts themselves are gathered by :mod:`launcher.metrics.runfacts`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.errors import AlaunchError, InputError

if TYPE_CHECKING:  # imported when a verb runs (cli/app.py)
    from rich.table import Table

    from launcher.metrics.runfacts import RunFacts


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


@contextmanager
def figure(out: Path, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """``(fig, axes)`` of a matplotlib figure written to ``out`` (PNG, SVG or PDF by suffix) when
    the block ends, closed in any case: the one place `--plot` imports matplotlib and maps a
    missing matplotlib or an unwritable ``out`` to one line."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise AlaunchError("--plot needs matplotlib: pip install 'alaunch[plot]'") from exc
    fig, axes = plt.subplots(**subplots)
    try:
        yield fig, axes
        fig.tight_layout()
        try:
            fig.savefig(out)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot write the plot: {exc}", source=str(out), key="--plot") from exc
    finally:
        plt.close(fig)


def plot_losses(runs: list[RunFacts], out: Path) -> int:
    """Draw every run's loss curve into ``out`` (PNG, SVG or PDF by suffix); returns curves."""
    curves = [f for f in runs if f.loss_curve]
    if not curves:
        raise AlaunchError("no loss lines in these runs' logs: nothing to plot")
    with figure(out, figsize=(8, 4.5)) as (_, ax):
        for f in curves:
            xs, ys = zip(*f.loss_curve, strict=True)
            ax.plot(xs, ys, label=f.job, linewidth=1)
        ax.set_xlabel("global step")
        ax.set_ylabel("loss")
        ax.set_title("training loss")
        ax.grid(alpha=0.3)
        ax.legend()
    return len(curves)
