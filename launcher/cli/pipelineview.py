"""A pipeline run as a table of steps (``alaunch run``'s end, ``status PIPELINE``, ``jobs``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from launcher.ops import registry as reg

if TYPE_CHECKING:
    from rich.table import Table


def steps_table(run: reg.PipelineRecord, width: int = 80, *, wide: bool = False,
                ids: tuple[list[str], list[str]] | None = None) -> Table:
    """One line per step at any width (:mod:`launcher.cli.tables`); a job id too long for the
    width shows its shortest unique prefix (``ids``: the registry's ids and names), which every
    command takes, never an id cut with "…" that cannot be copied."""
    from launcher.cli import tables as t

    jobs = [s.job_id for s in run.steps if s.job_id]
    all_ids, names = ids if ids is not None else (jobs, [])
    prefixes = t.unique_prefixes(jobs, all_ids, names)
    columns = [t.Column("step", t.KEEP), t.Column("kind", t.KEEP), t.Column("state", t.KEEP),
               t.Column("job", t.ID, short=lambda v: prefixes.get(v, v), min_width=12),
               t.Column("tries", t.KEEP), t.Column("note", priority=1, min_width=12)]
    rows = []
    for s in run.steps:
        note = s.reason or ""
        # a score's value first: at 80 columns the note is cut to ~14 characters, and
        # "math accuracy…" (the demo's, before) said everything but the number
        if s.state == "succeeded" and s.outputs.get("accuracy") is not None:
            note = f"{100 * s.outputs['accuracy']:.1f}% math accuracy"
        if s.state == "succeeded" and s.outputs.get("f1") is not None:
            note = f"F1 {s.outputs['f1']:.2f}, EM {s.outputs['em']:.2f} (SQuAD)"
        rows.append([s.step, s.kind, s.state, s.job_id or "", str(s.attempts or ""), note])
    return t.table(columns, rows, width, wide=wide, title=f"pipeline {run.name} ({run.id}): {run.state}")


def dry_head(i: int, view) -> str:
    """A dry run's step line: ``# 3. train (job), needs data: skip (unchanged since RUN)`` or
    ``...: run (template, input train_data changed since RUN)``."""
    head = f"# {i}. {view.name} ({view.kind})" + (f", needs {', '.join(view.needs)}" if view.needs else "")
    if view.together:
        head += f"; runs together with {', '.join(view.together)}"
    if view.waits_for:
        head += f"; waits for the cards of {', '.join(view.waits_for)}"
    what = {"reuse": "reuse", "missing": "missing"}.get(view.action, view.action)
    return head + f": {what} ({view.why})" if view.why else head


def dry_facts(view) -> list[str]:
    """What matters of a job step in a dry run, before where its inputs come from: the job,
    its hosts and cards, its LoRA trainable count. The exact commands (a 600-character
    env-script wrapper per node per step) are ``--verbose``'s."""
    if not view.job:
        return []
    out = [f"job: {view.job}"]
    if view.cards:
        cards = sum(view.cards.values())
        out.append(f"hosts: {', '.join(view.cards)} ({cards} card{'s' if cards != 1 else ''})")
    if view.trainable is not None:
        out.append(f"LoRA: {view.trainable:,} trainable parameters")
    return out


def as_data(run: reg.PipelineRecord) -> dict:
    """Plain data (what ``--json`` prints and a dashboard reads)."""
    return {"id": run.id, "name": run.name, "state": run.state, "created_at": run.created_at,
            "ended_at": run.ended_at, "reason": run.reason,
            "steps": [{"step": s.step, "kind": s.kind, "state": s.state, "job_id": s.job_id,
                       "attempts": s.attempts, "identity": s.identity, "reason": s.reason} for s in run.steps]}


def pipeline_ref(state_dir, ref: str) -> reg.PipelineRecord | None:
    """The newest run of a pipeline given as its file, name or run id (None: not a pipeline)."""
    from pathlib import Path
    with reg.Registry.in_state_dir(state_dir) as registry:
        name = ref
        if ref.endswith((".yaml", ".yml")) and Path(ref).is_file():
            from launcher.core.pipeline import load_pipeline
            name = load_pipeline(ref).name
        try:
            registry.get(name)
            if name == ref:
                return None  # a job id or job name wins
        except Exception:  # noqa: BLE001 - not a job: try the pipelines
            pass
        try:
            return registry.pipeline(name)
        except Exception:  # noqa: BLE001
            return None
