"""A pipeline run as a table of steps (``alaunch run``'s end, ``status PIPELINE``, ``jobs``)."""

from __future__ import annotations

from rich.table import Table

from launcher.ops import registry as reg


def steps_table(run: reg.PipelineRecord) -> Table:
    table = Table("step", "kind", "state", "job", "tries", "note",
                  title=f"pipeline {run.name} ({run.id}): {run.state}")
    for s in run.steps:
        note = s.reason or ""
        if s.state == "succeeded" and s.outputs.get("accuracy") is not None:
            note = f"math accuracy {100 * s.outputs['accuracy']:.1f}%"
        table.add_row(s.step, s.kind, s.state, s.job_id or "", str(s.attempts or ""), note)
    return table


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
