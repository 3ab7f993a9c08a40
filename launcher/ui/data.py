"""The dashboard's data: plain dicts built from the registry, the follower and fetched runs.

This is the one thin adapter between the dashboard and the rest of alaunch. Everything the
browser sees is made here, from three sources, without I/O of its own (pure functions):

* :class:`launcher.ops.registry.JobRecord` — job and node state, config, reason;
* a :meth:`launcher.ui.hub.JobWatch.snapshot` — what the job's one follower knows (lines, loss
  points per rank, the progress view, its :class:`launcher.ops.follow.NodeView` per node, the
  first failure explained with cause and hint by :mod:`launcher.metrics.signatures`, each
  rank's log status at the end);
* :class:`launcher.metrics.runfacts.RunFacts` — a fetched run's facts and scores (EM/F1, math),
  shown as ``alaunch results`` prints them (:func:`launcher.metrics.runfacts.cells`);
* :class:`launcher.ops.registry.PipelineRecord` — a pipeline run and its steps, with the
  steps' needs read from the pipeline file's text (the registry keeps the steps in run order,
  not their needs).

When the follower or the registry grow new facts, this module is the place that maps them.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from launcher.errors import InputError
from launcher.ops import registry as reg

DEFAULT_SMOOTHING = 0.6  # TensorBoard's default EMA weight


def stream_key(host: str | None, rank: int | None) -> str:
    """``host/rank`` (``host/sched`` for msrun's scheduler), as ``logs`` tags lines."""
    return f"{host or 'local'}/{'sched' if rank is None else rank}"


def ema(values: Sequence[float], weight: float = DEFAULT_SMOOTHING) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing): the first points are not
    pulled towards 0, and NaN/inf points do not poison the rest (they pass through)."""
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out, last, n = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        last = last * weight + (1 - weight) * v
        n += 1
        out.append(last / (1 - weight ** n))
    return out


def age_seconds(iso: str | None, now: dt.datetime | None = None) -> float | None:
    if not iso:
        return None
    when = dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    now = now or dt.datetime.now(dt.timezone.utc)
    return max(0.0, (now - when).total_seconds())


def cards(record: reg.JobRecord) -> int | None:
    """Cards the job was given: its ranks (one process per card, the plan's ``ranks`` per node
    as submit recorded them), else the cards claimed per host (``devices``), else, for a
    record with neither, the hostfile's slots of its nodes. Why: the hostfile's slots said 16
    for a 2-node x 1-card job."""
    ranks = record.meta.get("ranks")
    if isinstance(ranks, Mapping) and ranks:
        return sum(len(v) for v in ranks.values() if isinstance(v, list)) or None
    devices = record.meta.get("devices")
    if isinstance(devices, Mapping) and devices:
        return sum(len(v) for v in devices.values() if isinstance(v, list)) or None
    from launcher.core.hostfile import parse_hostfile
    try:
        hosts = {h.name: h for h in parse_hostfile(record.hostfile_text, f"registry:{record.id}")}
    except Exception:  # an old or failed record without a readable hostfile
        return None
    total = 0
    for node in record.nodes:
        h = hosts.get(node.host)
        if h is None:
            return None
        total += len(h.slot_ids)
    return total or None


def node_state(node: reg.NodeRecord, record: reg.JobRecord, view: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """What the page shows for one node: (state, detail).

    * a job queued for cards or by Slurm whose node runs nothing yet: ``queued``, with the
      queue's reason;
    * the follower's word on a live job (:class:`launcher.ops.follow.NodeView`): ``unreachable
      since HH:MM:SS`` when its heartbeat stopped (the job is not touched), else what it saw;
    * else the registry's node state, with the ``unreachable since`` a status refresh noted
      (the job's meta ``unreachable_since``, kept until the node answers again).
    """
    view = view or {}
    if record.state == reg.QUEUED and node.pid is None:
        return "queued", record.reason or ""
    if record.terminal and node.state in (reg.PENDING, reg.STAGING, reg.QUEUED) and node.pid is None:
        # a job refused or cancelled before it started here: nothing is pending on this node
        return "not started", f"the job ended {record.state} before this node started"
    if not record.terminal:
        if view.get("state") == "unreachable":
            return "unreachable", view.get("label") or "unreachable"
        since = (record.meta.get("unreachable_since") or {}).get(node.host)
        if since and view.get("state") != "running":
            return "unreachable", f"unreachable since {since}"
    detail = str(view.get("label") or "") if view.get("state") == "ended" else ""
    if view.get("reconnects"):
        detail += f" (reconnected {view['reconnects']}x)"
    return node.state, detail.strip()


def progress_dict(view: Any) -> dict | None:
    """A :class:`launcher.metrics.progress.ProgressView` as JSON (None before the first step)."""
    if view is None:
        return None
    d = asdict(view)
    d["fraction"] = view.fraction
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def failure_dict(failure: Any, record: reg.JobRecord | None = None) -> dict | None:
    """The failure as cause + hint + where + traceback tail. The follower's failure is a process
    fact explained by the logs (``JobLogs.explain``: cause and hint from the signature table,
    launcher/metrics/signatures.py); without one, a failed job's registry reason (a failure seen
    by another process, e.g. ``submit`` or ``status``)."""
    if failure is not None:
        where = failure.host or "?"
        if failure.rank is not None:
            where += f" rank {failure.rank}"
        return {"kind": failure.kind, "cause": failure.cause or failure.message, "message": failure.message,
                "hint": failure.hint or None, "where": where, "host": failure.host, "rank": failure.rank,
                "line": failure.line, "traceback": list(failure.lines),
                "family": failure.family or None, "code": failure.code}
    if record is not None and record.state == reg.FAILED and record.reason:
        return {"kind": "job", "cause": record.reason, "message": record.reason, "hint": None, "where": "",
                "host": None, "rank": None, "line": None, "traceback": []}
    return None


def log_status(stream_status: Sequence[Mapping[str, Any]]) -> str | None:
    """What the ranks' logs show at the end, as ``logs`` sums it up: ``failed``, ``incomplete``
    (a rank stopped short of its last step with no end marker) or ``ok``; None while unknown."""
    statuses = {s["status"] for s in stream_status}
    if not statuses:
        return None
    return "failed" if "failed" in statuses else "incomplete" if "incomplete" in statuses else "ok"


def job_row(record: reg.JobRecord, live: Mapping[str, Any] | None = None,
            now: dt.datetime | None = None) -> dict:
    """One line of the jobs list."""
    live = live or {}
    view = live.get("progress")
    return {
        "id": record.id, "name": record.name, "kind": record.kind, "state": record.state,
        "nodes": [n.host for n in record.nodes], "node_count": len(record.nodes), "cards": cards(record),
        "created_at": record.created_at, "age_s": age_seconds(record.created_at, now),
        "last_loss": live.get("last_loss"),
        "progress": progress_dict(view),
        "reason": record.reason,
        "log_status": log_status(live.get("stream_status") or ()),
        "pipeline": record.meta.get("pipeline"), "pipeline_step": record.meta.get("pipeline_step"),
    }


def filter_rows(rows: Iterable[dict], state: str | None = None, text: str | None = None) -> list[dict]:
    """The list's filters: a state (or 'active' for not finished) and a substring of name or id."""
    out = []
    needle = (text or "").strip().lower()
    for r in rows:
        if state and state != "all":
            if state == "active" and r["state"] in reg.TERMINAL:
                continue
            if state != "active" and r["state"] != state:
                continue
        if needle and needle not in r["name"].lower() and needle not in r["id"].lower():
            continue
        out.append(r)
    return sorted(out, key=lambda r: (r["created_at"], r["id"]), reverse=True)


def list_query(params: Mapping[str, str], page: int, most: int = 200) -> tuple[list[str] | None, str, int, int]:
    """The jobs list's query string -> (states or None for all, text, offset, limit): ``state``
    is a job state, ``active`` (not finished) or ``all``; ``q`` a substring of name or id;
    ``offset`` and ``limit`` (at most ``most``) page it."""
    state = (params.get("state") or "all").strip()
    if state == "all":
        states = None
    elif state == "active":
        states = [s for s in reg.JOB_STATES if s not in reg.TERMINAL]
    elif state in reg.JOB_STATES:
        states = [state]
    else:
        raise InputError(f"state={state!r} is not a job state; valid: all, active, {', '.join(reg.JOB_STATES)}",
                         key="state")
    try:
        offset, limit = int(params.get("offset") or 0), int(params.get("limit") or page)
    except ValueError:
        raise InputError("offset and limit are whole numbers", key="offset") from None
    return states, (params.get("q") or "").strip(), max(0, offset), max(1, min(most, limit))


CURVE_POINTS = 1000  # buckets per curve when the page does not say (a chart ~1000 px wide)


def downsample(points: Sequence[tuple[int, float]], buckets: int = CURVE_POINTS,
               lo: float | None = None, hi: float | None = None) -> list[tuple[int, float]]:
    """The points a chart ``buckets`` pixels wide needs: those with ``lo <= step <= hi`` (a
    zoomed range; all without), and past ``2 * buckets`` of them, per bucket of consecutive
    points its lowest and highest loss in their order (min/max decimation: every spike and dip
    stays visible), its non-finite ones (a NaN loss is news), and the first and last point.
    Why: a 1M-point job's detail was 31 MB of JSON and its chart drew after 2.2-2.7 s."""
    if lo is not None or hi is not None:
        a = -math.inf if lo is None else lo
        b = math.inf if hi is None else hi
        points = [p for p in points if a <= p[0] <= b]
    n = len(points)
    if n <= 2 * max(1, buckets):
        return list(points)
    losses = [p[1] for p in points]
    odd = set() if math.isfinite(sum(losses)) else {i for i, v in enumerate(losses) if not math.isfinite(v)}
    low = losses if not odd else [v if i not in odd else math.inf for i, v in enumerate(losses)]
    high = losses if not odd else [v if i not in odd else -math.inf for i, v in enumerate(losses)]
    keep = {0, n - 1} | odd
    for b in range(buckets):
        i0, i1 = b * n // buckets, (b + 1) * n // buckets
        if i1 > i0:
            span = range(i0, i1)
            keep.add(min(span, key=low.__getitem__))
            keep.add(max(span, key=high.__getitem__))
    return [points[i] for i in sorted(keep)]


def curves_dict(points: Mapping[str, Sequence[tuple[int, float]]], weight: float = DEFAULT_SMOOTHING,
                buckets: int | None = CURVE_POINTS, lo: float | None = None, hi: float | None = None) -> dict:
    """Per stream: steps, raw losses and their smoothed line, downsampled (:func:`downsample`;
    ``buckets`` None: every point). The smoothed line is over the points sent, as the page
    smooths them with its own slider."""
    out = {}
    for key in sorted(points, key=_rank_order):
        pts = list(points[key]) if buckets is None else downsample(points[key], buckets, lo, hi)
        losses = [p[1] for p in pts]
        out[key] = {"steps": [p[0] for p in pts], "loss": [_finite(v) for v in losses],
                    "smooth": [_finite(v) for v in ema(losses, weight)]}
    return out


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _rank_order(key: str) -> tuple:
    host, _, rank = key.rpartition("/")
    return (not rank.isdigit(), int(rank) if rank.isdigit() else 0, host)


def lead_curve(points: Mapping[str, Sequence[tuple[int, float]]]) -> tuple[str, list] | None:
    """The curve compare shows for a job: its lowest rank's (as ``results`` does)."""
    keys = [k for k in points if points[k]]
    if not keys:
        return None
    key = min(keys, key=_rank_order)
    return key, list(points[key])


def job_detail(record: reg.JobRecord, live: Mapping[str, Any] | None = None,
               now: dt.datetime | None = None, points: int = CURVE_POINTS) -> dict:
    """The job page: the row, per-node state, curves (``points`` buckets each), failure, notes, config."""
    live = live or {}
    views = live.get("nodes") or {}
    row = job_row(record, live, now)
    row["nodes"] = []
    for n in record.nodes:
        state, detail = node_state(n, record, views.get(n.host))
        row["nodes"].append({"rank": n.node_rank, "host": n.host, "state": state, "detail": detail,
                             "registry_state": n.state, "exit_code": n.exit_code, "pid": n.pid,
                             "job_dir": n.job_dir})
    row.update({
        "reason": record.reason, "started_at": record.started_at, "ended_at": record.ended_at,
        "curves": curves_dict(live.get("curves") or {}, buckets=points),
        "failure": failure_dict(live.get("failure"), record),
        "notes": list(live.get("notes") or []),
        "stragglers": list(live.get("stragglers") or []),  # {rank, host, slower_pct, steps, text}
        "streams": sorted(live.get("streams") or [], key=_rank_order),
        "stream_status": list(live.get("stream_status") or []),
        "lines": live.get("line_count", 0),
        "following": bool(live.get("following")),
        "config_sha256": record.config_sha256,
    })
    return row


def telemetry_field(state_dir: Path, job_id: str) -> dict | None:
    """The job page's ``telemetry``: each card's last/min/max and chart points, as the job's
    follower keeps them (:mod:`launcher.ops.telemetry`); None when none was sampled."""
    from launcher.metrics.telemetry import chart_json
    from launcher.ops.telemetry import load_telemetry, telemetry_path

    kept = load_telemetry(telemetry_path(state_dir, job_id))
    return chart_json(kept) if kept is not None and kept.cards else None


# ---------------------------------------------------------------- compare
def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> dotted keys (lists are leaves), for a key-level config diff."""
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


JOB_DIR = "<job dir>"
JOB_ID = "<job id>"


def normalised_config(record: reg.JobRecord) -> str:
    """The job's config with its own job dirs and id replaced by placeholders, so two jobs'
    configs differ only where their settings do (output_dir, load paths and the like hold the
    job's own dir: the diff listed only those)."""
    text = record.config_text
    for d in sorted({n.job_dir for n in record.nodes if n.job_dir}, key=len, reverse=True):
        text = text.replace(d.rstrip("/"), JOB_DIR)
    return text.replace(record.id, JOB_ID) if record.id else text


def config_changes(a_text: str, b_text: str) -> list[dict]:
    """Keys whose values differ between two rendered configs (compare passes them through
    :func:`normalised_config`)."""
    try:
        a, b = flatten(yaml.safe_load(a_text) or {}), flatten(yaml.safe_load(b_text) or {})
    except yaml.YAMLError:
        return []
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, _MISSING) != b.get(key, _MISSING):
            out.append({"key": key, "a": _show(a.get(key, _MISSING)), "b": _show(b.get(key, _MISSING))})
    return out


_MISSING = object()


def _show(v: Any) -> str:
    if v is _MISSING:
        return "(absent)"
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def config_diff(a_text: str, b_text: str, a_name: str, b_name: str) -> str:
    return "".join(difflib.unified_diff(a_text.splitlines(True), b_text.splitlines(True),
                                        fromfile=a_name, tofile=b_name, n=2))


def scores_dict(facts: Any) -> dict | None:
    """A fetched run's facts: the cells ``alaunch results`` prints (``cells``: template, LoRA,
    trainable params, steps, duration, final loss, EM, F1, math accuracy) and the raw numbers
    (None: not fetched)."""
    if facts is None:
        return None
    from launcher.metrics.runfacts import cells
    return {"cells": cells(facts), "em": facts.em, "f1": facts.f1, "math_correct": facts.math_correct,
            "math_total": facts.math_total, "math_accuracy": facts.math_accuracy, "final_loss": facts.final_loss,
            "steps": facts.steps, "duration_s": facts.duration_s, "path": facts.path}


def compare(records: Sequence[reg.JobRecord], lives: Sequence[Mapping[str, Any]],
            facts: Sequence[Any]) -> dict:
    """Two or more jobs: one curve each, the config of each against the first, scores."""
    base = records[0]
    jobs = []
    for record, live, f in zip(records, lives, facts, strict=False):
        lead = lead_curve(live.get("curves") or {})
        if lead is not None:
            lead = lead[0], downsample(lead[1])
        jobs.append({"id": record.id, "name": record.name, "state": record.state,
                     "curve": None if lead is None else {"stream": lead[0], "steps": [p[0] for p in lead[1]],
                                                         "loss": [_finite(p[1]) for p in lead[1]],
                                                         "smooth": [_finite(v) for v in ema([p[1] for p in lead[1]])]},
                     "scores": scores_dict(f)})
    texts = {r.id: normalised_config(r) for r in records}
    diffs = [{"a": base.id, "b": r.id, "changes": config_changes(texts[base.id], texts[r.id]),
              "diff": config_diff(texts[base.id], texts[r.id], base.id, r.id),
              "placeholders": {JOB_DIR: "each job's own directory", JOB_ID: "each job's own id"}}
             for r in records[1:]]
    return {"jobs": jobs, "diffs": diffs}


PREDICTIONS_SHOWN = 50


def predictions_page(items: Sequence[Mapping[str, Any]], q: str | None = None,
                     limit: int = PREDICTIONS_SHOWN) -> dict:
    """A predict or eval job's predictions ({i, prediction, reference?}) whose text contains
    ``q`` (case-insensitive), the first ``limit`` of them, and how many there are and match."""
    needle = (q or "").strip().lower()
    hits = [it for it in items if not needle or needle in str(it.get("prediction", "")).lower()
            or needle in str(it.get("reference") or "").lower()]
    return {"total": len(items), "matches": len(hits), "items": [dict(it) for it in hits[:max(1, limit)]]}


def log_filter(lines: Iterable[dict], *, rank: int | None = None, node: str | None = None,
               grep: Any = None, after: int = -1, limit: int | None = 2000) -> list[dict]:
    """The log viewer's filters over buffered lines ({seq, host, rank, text}); the last ``limit``
    (all with None)."""
    out = [ln for ln in lines if ln["seq"] > after
           and (rank is None or ln["rank"] == rank) and (node is None or ln["host"] == node)
           and (grep is None or grep.search(ln["text"]))]
    return out[-limit:] if limit else out


# ---------------------------------------------------------------- pipelines
def recorded_needs(run: reg.PipelineRecord) -> dict[str, list[str]] | None:
    """Each step's needs as the run recorded them (registry migration 5), or None when the run
    predates that record (then :func:`pipeline_needs` reads them from the file)."""
    if not run.steps or any(s.needs is None for s in run.steps):
        return None
    return {s.step: list(s.needs or ()) for s in run.steps}


def pipeline_needs(text: str, source: str, steps: Iterable[str]) -> dict[str, list[str]] | None:
    """Each step's needs (explicit and from ``{from: STEP}`` references), parsed from the pipeline
    file's ``text`` as ``alaunch run`` parses it. None when the text does not parse or names other
    steps than the run recorded (the file was edited since): the page then says the needs are
    unknown rather than draw edges the run did not have."""
    from launcher.core import pipeline as pl
    from launcher.core import yamlio
    try:
        parsed = pl.parse_pipeline(yamlio.loads(text, source), source, None, text)
    except Exception:  # noqa: BLE001 - any unreadable file means: needs unknown
        return None
    if sorted(parsed.names()) != sorted(steps):
        return None
    return {s.name: list(s.needs) for s in parsed.steps}


def step_levels(names: Sequence[str], needs: Mapping[str, Sequence[str]] | None) -> dict[str, int]:
    """The graph's columns: one more than the step's highest need's (0 with none), as
    :func:`launcher.core.pipeline.levels`; without the needs, one column per step in run order."""
    if needs is None:
        return {n: i for i, n in enumerate(names)}
    level: dict[str, int] = {}
    for n in names:  # run order: a step's needs come before it
        level[n] = 1 + max((level.get(m, 0) for m in needs.get(n, ())), default=-1)
    return level


def _reused_from(step: reg.StepRecord) -> str | None:
    """The earlier run a skipped step took its outputs from (``unchanged since RUN`` or
    ``not selected: reused run RUN``, as ops/pipeline.py records it)."""
    if step.state != "skipped" or not step.reason:
        return None
    return step.reason.rsplit(" ", 1)[-1]


def _span(start: str | None, end: str | None, now: dt.datetime | None) -> float | None:
    if not start:
        return None
    a = age_seconds(start, now)
    b = age_seconds(end, now) if end else 0.0
    return None if a is None or b is None else max(0.0, a - b)


def step_dict(step: reg.StepRecord, needs: Sequence[str] | None, level: int,
              job: Mapping[str, Any] | None = None, attempts: Sequence[reg.JobRecord] = (),
              now: dt.datetime | None = None) -> dict:
    """One step of a pipeline run: state, needs, identity, its job (the row of the jobs list, with
    the follower's progress while it runs), every job an attempt of it submitted, whether it was
    skipped because unchanged (identity equal to a finished earlier run's, outputs present) or
    reused because not selected (``--from``/``--only``), and its outputs."""
    unchanged = step.state == "skipped" and (step.reason or "").startswith("unchanged")
    return {"step": step.step, "kind": step.kind, "position": step.position, "level": level,
            "state": step.state, "needs": None if needs is None else list(needs),
            "identity": step.identity, "job_id": step.job_id, "job": dict(job) if job else None,
            "attempts": step.attempts,
            "attempt_jobs": [{"id": r.id, "state": r.state, "created_at": r.created_at, "reason": r.reason}
                             for r in sorted(attempts, key=lambda r: (r.created_at, r.id))],
            "skipped_unchanged": unchanged, "reused": step.state == "skipped" and not unchanged,
            "reused_from": _reused_from(step),  # what a step left; how its identity was made stays out
            "outputs": {k: v for k, v in step.outputs.items() if k not in ("identity_parts", "digest", "files")},
            "reason": step.reason,
            "started_at": step.started_at, "ended_at": step.ended_at,
            "duration_s": _span(step.started_at, step.ended_at, now)}


def pipeline_row(run: reg.PipelineRecord, now: dt.datetime | None = None) -> dict:
    """One line of the pipelines list: the run and its steps' states in run order."""
    counts: dict[str, int] = {}
    for s in run.steps:
        counts[s.state] = counts.get(s.state, 0) + 1
    return {"id": run.id, "name": run.name, "source": run.source, "state": run.state, "reason": run.reason,
            "created_at": run.created_at, "ended_at": run.ended_at, "age_s": age_seconds(run.created_at, now),
            "duration_s": _span(run.created_at, run.ended_at, now),
            "steps": [{"step": s.step, "state": s.state, "job_id": s.job_id} for s in run.steps],
            "counts": counts}


def pipeline_detail(run: reg.PipelineRecord, needs: Mapping[str, Sequence[str]] | None,
                    jobs: Mapping[str, Mapping[str, Any]], attempts: Iterable[reg.JobRecord] = (),
                    now: dt.datetime | None = None) -> dict:
    """The pipeline page: the row, and each step (:func:`step_dict`) in run order with its graph
    column. ``jobs``: job id -> its :func:`job_row`; ``attempts``: the jobs whose meta names this
    run (``pipeline``) and a step (``pipeline_step``), as ``run_job`` submits them."""
    names = [s.step for s in run.steps]
    levels = step_levels(names, needs)
    by_step: dict[str, list[reg.JobRecord]] = {}
    for r in attempts:
        if r.meta.get("pipeline") == run.id and r.meta.get("pipeline_step"):
            by_step.setdefault(r.meta["pipeline_step"], []).append(r)
    row = pipeline_row(run, now)
    row["needs_known"] = needs is not None
    row["steps"] = [step_dict(s, None if needs is None else needs.get(s.step, []), levels[s.step],
                              jobs.get(s.job_id) if s.job_id else None, by_step.get(s.step, ()), now)
                    for s in run.steps]
    return row


# ------------------------------------------------------------------ sweeps

def _json_finite(value: Any) -> Any:
    """JSON has no NaN or inf (a diverged trial's loss): they become None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_finite(v) for v in value]
    return value


def sweep_row(record: reg.SweepRecord, now: dt.datetime | None = None) -> dict:
    """One line of the sweeps list: the sweep, its trials' states, and its best trial as
    ``alaunch results SWEEP`` ranks them (``core.sweep.summary``; None until one succeeded)."""
    from launcher.core import sweep as sw
    return _json_finite({"id": record.id, "name": record.name, "state": record.state, "reason": record.reason,
                         "source": record.source, "created_at": record.created_at, "ended_at": record.ended_at,
                         "age_s": age_seconds(record.created_at, now), **sw.summary(record.trials, record.info)})


def sweep_detail(record: reg.SweepRecord, now: dt.datetime | None = None) -> dict:
    """The sweep page: the leaderboard's rows as ``alaunch results SWEEP`` ranks them
    (``core.sweep.leaderboard``), each with its loss curve, and the swept keys for the scatter."""
    from launcher.core import sweep as sw
    rows = sw.leaderboard(record.trials, record.info)
    curves = {t["trial"]: t.get("curve") or [] for t in record.trials}
    for r in rows:
        r["curve"] = curves.get(r["trial"], [])
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    return _json_finite({"id": record.id, "name": record.name, "state": record.state, "reason": record.reason,
                    "source": record.source, "created_at": record.created_at, "ended_at": record.ended_at,
                    "age_s": age_seconds(record.created_at, now), "objective": record.info.get("objective") or {},
                    "keys": keys, "trials": rows})
