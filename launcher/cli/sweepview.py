"""The sweep views shared by ``alaunch sweep`` (the dry run's trials) and ``alaunch results
SWEEP`` (the leaderboard, CSV, JSON, the plot). The rows are ``core.sweep.leaderboard``'s plain
values; only the drawing is here. The overrides are one column (``rank=8 alpha=16 ...``)
rather than a column per key, whose headers and values (a target regex is 20 characters) made
the 16-trial shape sweep 130 columns wide; the dry run folds that column, the leaderboard keeps
one line per trial (``cli/tables.py``) and prints a cut one under the table."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table


def value_text(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def params_text(params: Mapping[str, Any]) -> str:
    from launcher.core.sweep import short
    return " ".join(f"{short(k)}={value_text(v)}" for k, v in params.items())


def count_text(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def plan_table(plans: Sequence[Any], schedule: Sequence[tuple[int, tuple[str, ...]]] | None = None) -> Table:
    """The dry run: every trial, its overrides, LoRA trainable count and cards, and (on a
    hostfile) its wave and hosts as the driver would place them."""
    from rich.table import Table
    table = Table(box=None, pad_edge=False, show_edge=False)
    heads = [("#", "right"), ("trial", "left"), ("trainable", "right"), ("cards", "right")]
    if schedule is not None:
        heads += [("wave", "right"), ("on", "left")]
    for name, justify in (*heads, ("overrides", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "overrides",  # type: ignore[arg-type]
                         overflow="fold")
    for i, p in enumerate(plans, 1):
        cards = f"{p.nodes}x{p.cards_per_node}" if p.nodes > 1 else str(p.cards)
        where = [str(schedule[i - 1][0]), ",".join(schedule[i - 1][1])] if schedule is not None else []
        table.add_row(str(i), p.trial.id, count_text(p.trainable), cards, *where, params_text(p.trial.params))
    return table


def leaderboard_table(rows: Sequence[Mapping[str, Any]], metric: str, width: int = 80, wide: bool = False) -> Table:
    """Best first: objective, final loss, steps, time, card-hours, trainable, every score, the
    overrides; one line per trial at any ``width`` (``cli/tables.py``: the rank, trial, state
    and numbers whole; trainable, then card-hours dropped first, the overrides cut last, a cut
    one printed whole under the table by the caller: :func:`cut_overrides`)."""
    from launcher.cli.tables import ID, KEEP, TEXT, Column, table
    scores = list(dict.fromkeys(k for r in rows for k in (r.get("scores") or {})))
    loss = metric != "final_loss"  # else the objective column is the final loss already
    columns = [Column("#", KEEP), Column("trial", ID), Column("state", KEEP),
               Column(metric if len(metric) <= 12 else "objective", KEEP), *([Column("loss", KEEP)] if loss else []),
               Column("steps", KEEP), Column("time", KEEP), Column("card-h", TEXT, 2, 6),
               Column("params", TEXT, 1, 6), *(Column(s, KEEP) for s in scores), Column("overrides", TEXT, 9, 12)]
    cells = []
    for i, r in enumerate(rows, 1):
        card_hours = r.get("card_hours")
        cells.append([str(i), r["trial"][:8], r["state"], value_text(r.get("objective")),
                      *([value_text(r.get("final_loss"))] if loss else []), value_text(r.get("steps")),
                      duration_text(r.get("duration_s")), "-" if card_hours is None else f"{card_hours:.2g}",
                      count_text(r.get("trainable")), *(value_text((r.get("scores") or {}).get(s)) for s in scores),
                      params_text(r["params"])])
    return table(columns, cells, width, wide=wide)


def sweeps_table(rows: Sequence[Mapping[str, Any]], ages: Sequence[str], width: int = 80, wide: bool = False) -> Table:
    """``alaunch sweeps``: one line per sweep (``core.sweep.summary``'s rows with name, state),
    newest first; its name, state, best trial and objective whole; the trials' states, then the
    best's overrides cut or dropped first (``cli/tables.py``)."""
    from launcher.cli.tables import KEEP, TEXT, Column, table
    columns = [Column("sweep", KEEP), Column("state", KEEP), Column("objective", TEXT, 1, 10),
               Column("best", KEEP), Column("value", KEEP), Column("trials", TEXT, 2, 8),
               Column("age", KEEP), Column("best's overrides", TEXT, 0, 10)]
    cells = []
    for r, age in zip(rows, ages, strict=True):
        best, objective = r.get("best"), r.get("objective") or {}
        states = ", ".join(f"{n} {s}" for s, n in (r.get("counts") or {}).items())
        metric = f"{objective.get('metric', 'final_loss')} ({objective.get('goal', 'min')})"
        cells.append([r["name"], r["state"], metric,
                      best["trial"][:8] if best else "-", value_text(best["objective"]) if best else "-",
                      f"{r.get('trials', 0)}" + (f": {states}" if states else ""), age,
                      params_text(best["params"]) if best else ""])
    return table(columns, cells, width, wide=wide)


def cut_overrides(tab: Table, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The trials whose overrides the table could not show whole, with them in full."""
    from launcher.cli.tables import cut_rows
    full = [params_text(r["params"]) for r in rows]
    return [f"{rows[n]['trial'][:8]}: {full[n]}" for n in cut_rows(tab, "overrides", full)]


def reasons(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"{r['trial'][:8]} {r['state']}: {r['reason']}" for r in rows
            if r.get("reason") and r["state"] in ("pruned", "failed", "cancelled", "skipped")]


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """One row per trial, a column per swept key and per score (a spreadsheet's input)."""
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    scores = list(dict.fromkeys(k for r in rows for k in (r.get("scores") or {})))
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["rank", "trial", "state", "objective", "final_loss", "steps", "duration_s", "card_hours",
                "trainable", "seed", *keys, *scores, "job_id", "reason"])
    for i, r in enumerate(rows, 1):
        w.writerow([i, r["trial"], r["state"], r.get("objective"), r.get("final_loss"), r.get("steps"),
                    r.get("duration_s"), r.get("card_hours"), r.get("trainable"), r.get("seed"),
                    *(r["params"].get(k) for k in keys), *((r.get("scores") or {}).get(s) for s in scores),
                    r.get("job_id"), r.get("reason")])
    return out.getvalue()


def plot_sweep(rows: Sequence[Mapping[str, Any]], curves: Mapping[str, Sequence[Sequence[float]]], metric: str,
               out: Path) -> int:
    """The objective against each swept key (one panel each) and every trial's loss curve
    overlaid, into ``out`` (PNG, SVG or PDF by suffix). Returns the panels drawn."""
    from launcher.core.sweep import short
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    from launcher.cli.runfacts import figure
    panels = len(keys) + 1
    with figure(out, nrows=1, ncols=panels, figsize=(4 * panels, 3.5), squeeze=False) as (_, axes):
        for ax, key in zip(axes[0], keys, strict=False):
            pts = [(r["params"].get(key), r["objective"]) for r in rows if r.get("objective") is not None]
            numeric = all(isinstance(x, (int, float)) for x, _ in pts)
            xs = [x if numeric else str(x) for x, _ in pts]
            ax.scatter(xs, [y for _, y in pts])
            if numeric and pts and all(x > 0 for x, _ in pts) and max(x for x, _ in pts) > 50 * min(x for x, _ in pts):
                ax.set_xscale("log")
            ax.set_xlabel(short(key))
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        ax = axes[0][-1]
        for r in rows:
            curve = curves.get(r["trial"]) or []
            finite = [(s, v) for s, v in curve if math.isfinite(v)]
            if finite:
                ax.plot([s for s, _ in finite], [v for _, v in finite], label=f"{r['trial'][:8]} ({r['state']})",
                        linewidth=1)
        ax.set_xlabel("global step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return panels
