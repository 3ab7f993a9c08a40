"""A pipeline run as a table of steps (``alaunch run``'s end, ``status PIPELINE``, ``jobs``)."""

from __future__ import annotations

from rich.table import Table

from launcher.ops import registry as reg


def steps_table(run: reg.PipelineRecord) -> StepsTable:
    """The steps of a run: step, state (with the tries past the first), job, note. Job ids are
    whole (never "…": they are copied into ``logs``/``status``), and so are step names and
    states; the note wraps, and below the table when it would get fewer than
    :data:`NOTE_MIN` columns. At 80 columns the six columns it had cut a job id to
    "llama3-8b-…"."""
    return StepsTable(run)


NOTE_MIN = 24  # narrower than this, a note ("SQuAD EM 54.67, F1 70.46") goes below the table


class StepsTable:
    """The steps table, laid out when the width is known (a rich renderable)."""

    def __init__(self, run: reg.PipelineRecord):
        self.run = run

    def notes(self) -> list[str]:
        out = []
        for s in self.run.steps:
            note = s.reason or ""
            if s.state == "succeeded" and s.outputs.get("accuracy") is not None:
                note = f"math accuracy {100 * s.outputs['accuracy']:.1f}%"
            if s.state == "succeeded" and s.outputs.get("f1") is not None:
                note = f"SQuAD EM {s.outputs['em']:.2f}, F1 {s.outputs['f1']:.2f}"
            out.append(note)
        return out

    def table(self, with_notes: bool) -> Table:
        from rich import box
        run = self.run
        table = Table(title=f"pipeline {run.name} ({run.id}): {run.state}", box=box.SIMPLE_HEAD)
        columns = {"step": [s.step for s in run.steps], "state": [_state(s) for s in run.steps],
                   "job": [s.job_id or ("" if s.kind == "job" else f"({s.kind})") for s in run.steps]}
        for name, cells in columns.items():
            table.add_column(name, no_wrap=True, min_width=max(map(len, cells), default=len(name)))
        if with_notes:
            table.add_column("note")
        for i, note in enumerate(self.notes()):
            table.add_row(*(cells[i] for cells in columns.values()), *([note] if with_notes else []))
        return table

    def fixed_width(self) -> int:
        """The width of every column but the note's, with the padding (2 a column) and edges."""
        run = self.run
        cells = ([s.step for s in run.steps], [_state(s) for s in run.steps],
                 [s.job_id or f"({s.kind})" for s in run.steps])
        return sum(max(map(len, c), default=5) + 2 for c in cells) + 2 + 2

    def __rich_console__(self, console, options):
        notes = self.notes()
        fits = options.max_width - self.fixed_width() >= NOTE_MIN or not any(notes)
        yield self.table(with_notes=fits)
        if not fits:
            from rich.text import Text
            for s, note in zip(self.run.steps, notes, strict=True):
                if note:
                    yield Text(f"  {s.step}: {note}")


def _state(s) -> str:
    return s.state + (f" ({s.attempts} tries)" if (s.attempts or 0) > 1 else "")


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
