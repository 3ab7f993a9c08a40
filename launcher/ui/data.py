"""The dashboard's data: plain dicts built from the registry, the follower and fetched runs.

This is the one thin adapter between the dashboard and the rest of alaunch. Everything the
browser sees is made here, from three sources, without I/O of its own (pure functions):

* :class:`launcher.ops.registry.JobRecord` — job and node state, config, reason;
* a :meth:`launcher.ui.hub.JobWatch.snapshot` — what the job's one follower knows (lines, loss
  points per rank, the progress view, its :class:`launcher.ops.follow.NodeView` per node, the
  first failure explained with cause and hint by :mod:`launcher.metrics.signatures`, each
  rank's log status at the end);
* :class:`launcher.metrics.runfacts.RunFacts` — a fetched run's facts and scores (EM/F1, math),
  shown as ``alaunch results`` prints them (:func:`launcher.metrics.runfacts.cells`).

When the follower or the registry grow new facts, this module is the place that maps them.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
from dataclasses import asdict
from typing import Any, Iterable, Mapping, Sequence

import yaml

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
    """Cards (processes) of the job: the sum of the hostfile's slots of its nodes."""
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

    * a job queued for cards (#14) or by Slurm whose node runs nothing yet: ``queued``, with the
      queue's reason;
    * the follower's word on a live job (:class:`launcher.ops.follow.NodeView`): ``unreachable
      since HH:MM:SS`` when its heartbeat stopped (the job is not touched), else what it saw;
    * else the registry's node state, with the ``unreachable since`` a status refresh noted
      (the job's meta ``unreachable_since``, kept until the node answers again).
    """
    view = view or {}
    if record.state == reg.QUEUED and node.pid is None:
        return "queued", record.reason or ""
    if not record.terminal:
        if view.get("state") == "unreachable":
            return "unreachable", view.get("label") or "unreachable"
        since = (record.meta.get("unreachable_since") or {}).get(node.host)
        if since and view.get("state") != "running":
            return "unreachable", f"unreachable since {since}"
    detail = view.get("label") if view.get("state") == "ended" else ""
    if view.get("reconnects"):
        detail += f" (reconnected {view['reconnects']}x)"
    return node.state, detail.strip()


def progress_dict(view: Any) -> dict | None:
    """A :class:`launcher.ops.follow.ProgressView` as JSON (None before the first step)."""
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
                "line": failure.line, "traceback": list(failure.lines)}
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


def curves_dict(points: Mapping[str, Sequence[tuple[int, float]]], weight: float = DEFAULT_SMOOTHING) -> dict:
    """Per stream: steps, raw losses and their smoothed line."""
    out = {}
    for key in sorted(points, key=_rank_order):
        pts = list(points[key])
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
               now: dt.datetime | None = None) -> dict:
    """The job page: the row, per-node state, curves, failure, notes, config."""
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
        "curves": curves_dict(live.get("curves") or {}),
        "failure": failure_dict(live.get("failure"), record),
        "notes": list(live.get("notes") or []),
        "streams": sorted(live.get("streams") or [], key=_rank_order),
        "stream_status": list(live.get("stream_status") or []),
        "lines": live.get("line_count", 0),
        "following": bool(live.get("following")),
        "config_sha256": record.config_sha256,
    })
    return row


# ---------------------------------------------------------------- compare
def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> dotted keys (lists are leaves), for a key-level config diff."""
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def config_changes(a_text: str, b_text: str) -> list[dict]:
    """Keys whose values differ between two rendered configs (paths that only hold the job id,
    e.g. output_dir, differ too: they are shown, as they are real differences)."""
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
    return "(absent)" if v is _MISSING else yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


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
    for record, live, f in zip(records, lives, facts):
        lead = lead_curve(live.get("curves") or {})
        jobs.append({"id": record.id, "name": record.name, "state": record.state,
                     "curve": None if lead is None else {"stream": lead[0], "steps": [p[0] for p in lead[1]],
                                                         "loss": [_finite(p[1]) for p in lead[1]],
                                                         "smooth": [_finite(v) for v in ema([p[1] for p in lead[1]])]},
                     "scores": scores_dict(f)})
    diffs = [{"a": base.id, "b": r.id, "changes": config_changes(base.config_text, r.config_text),
              "diff": config_diff(base.config_text, r.config_text, base.id, r.id)} for r in records[1:]]
    return {"jobs": jobs, "diffs": diffs}


def log_filter(lines: Iterable[dict], *, rank: int | None = None, node: str | None = None,
               grep: Any = None, after: int = -1, limit: int = 2000) -> list[dict]:
    """The log viewer's filters over buffered lines ({seq, host, rank, text}); the last ``limit``."""
    out = [ln for ln in lines if ln["seq"] > after
           and (rank is None or ln["rank"] == rank) and (node is None or ln["host"] == node)
           and (grep is None or grep.search(ln["text"]))]
    return out[-limit:]
