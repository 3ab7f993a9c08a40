"""Log lines and summaries on the terminal: tag, filter and colour a line; the summary table.

Used by ``logs`` (files and jobs), ``submit --follow`` (through :mod:`launcher.cli.live`)
and ``results``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from datetime import datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

from launcher.cli import environment
from launcher.core.units import count, millions
from launcher.errors import InputError
from launcher.metrics.logfiles import LOCAL_HOST
from launcher.metrics.logparse import JobLogs, Summary, parse_timestamp
from launcher.metrics.stragglers import find_stragglers

RANK_COLOURS = ("cyan", "green", "yellow", "magenta", "blue", "red", "bright_cyan", "bright_green")


def label(host: str, rank: int | None) -> str:
    return f"{host}/{'sched' if rank is None else rank}"


class LinePrinter:
    """Filters one line by rank/host/regex and prints it, tagged with host/rank when the job
    has more than one stream; coloured per rank unless raw."""

    def __init__(self, *, tagged: bool, raw: bool, grep: re.Pattern[str] | None = None,
                 rank: int | None = None, node: str | None = None, since: datetime | None = None):
        self.tagged = tagged
        self.raw = raw
        self.grep = grep
        self.rank = rank
        self.node = node
        self.since = since
        self.console: Console | None = None  # a live display's console while one is up
        self._recent: dict[tuple[str, int | None], bool] = {}  # per stream: last timestamp >= since
        self.printed = 0

    def _is_recent(self, host: str, rank: int | None, line: str) -> bool:
        """--since: a line's own timestamp decides; lines without one go with their stream's last."""
        if self.since is None:
            return True
        ts = parse_timestamp(line) if line[:1] in "[0123456789" else None
        key = (host, rank)
        if ts is not None:
            self._recent[key] = ts >= self.since
        return self._recent.get(key, False)

    def wants(self, host: str, rank: int | None) -> bool:
        return (self.rank is None or rank == self.rank) and (self.node is None or host == self.node)

    def emit(self, host: str, rank: int | None, line: str) -> None:
        if not self._is_recent(host, rank, line) or not self.wants(host, rank) \
                or (self.grep is not None and not self.grep.search(line)):
            return
        console = self.console or environment.current().stdout
        tag = f"{label(host, rank):<12} | " if self.tagged else ""
        if self.raw or console.no_color:
            console.file.write(tag + line + "\n")
        else:
            colour = "bright_black" if rank is None else RANK_COLOURS[rank % len(RANK_COLOURS)]
            console.print(Text(tag, style=colour) + Text(line), soft_wrap=True, highlight=False)
        self.printed += 1


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def summary_payload(job: JobLogs) -> dict:
    streams = [s.summary().as_dict() for s in job.states.values()]
    first = job.verdict()
    tb = job.best_traceback()
    statuses = [s["status"] for s in streams]
    payload = {
        "status": "failed" if first is not None else "incomplete" if "incomplete" in statuses else "ok",
        "streams": streams,
        "first_failure": None if first is None else {
            "host": first.host, "rank": first.rank, "kind": first.kind, "line": first.line,
            "message": first.message, "cause": first.cause, "hint": first.hint,
            "family": first.family, "code": first.code, "at": _iso(first.at),
            "traceback": list(tb.lines) if tb is not None else list(first.lines),
            "consequences": [{"host": f.host, "rank": f.rank, "at": _iso(f.at), "kind": f.kind,
                              "family": f.family, "code": f.code, "cause": f.cause}
                             for f in job.consequences(first)],
        },
    }
    stragglers = find_stragglers(job)
    payload["stragglers"] = [asdict(s) | {"text": s.text()} for s in stragglers]
    return payload


def _iso(at: datetime | None) -> str | None:
    return at.isoformat(sep=" ", timespec="milliseconds") if at is not None else None


def summary_rows(s: Summary) -> dict[str, str]:
    """The summary of one stream as (field, text) pairs, in reading order."""
    rows = {"kind": "-" if s.kind == "unknown" else s.kind}  # a scheduler's stream read "unknown"
    if s.steps_done is not None:
        unit = "steps" if s.kind == "train" else "examples"
        rows["progress"] = f"{s.steps_done}/{s.steps_total} {unit}"
    if s.epoch is not None:
        rows["epoch"] = f"{s.epoch}/{s.epochs}"
    if s.first_loss is not None:
        rows["loss first/last/min"] = f"{s.first_loss:.4g} / {s.last_loss:.4g} / {s.min_loss:.4g}"
        rows["loss lines"] = str(s.loss_lines)
    if s.mean_step_ms is not None:
        rows["step time"] = f"{s.mean_step_ms:.0f} ms"
    if s.samples_per_s is not None:
        rows["samples/s per process"] = _fmt(s.samples_per_s)
    rows["duration"] = fmt_duration(s.duration_s)
    if s.network_params is not None:
        rows["trainable params"] = (millions(s.network_params) if s.network_params_millions
                                    else count(s.network_params))
    if s.checkpoints:
        rows["checkpoints"] = ", ".join(f"step {c['step']}" if c["path"] is None else c["path"]
                                        for c in s.checkpoints)
    if s.cluster_retries and not s.cluster_formed:  # formed: MindSpore's normal forming, no alarm
        rows["cluster build retries"] = f"{s.cluster_retries}, never formed"
    if s.errors:
        rows["ERROR lines"] = str(s.errors)
    if s.handled:
        rows["handled errors"] = str(s.handled)
    if s.failure is not None:
        rows["status"] = f"FAILED: {s.failure['cause'] or s.failure['kind']}"
    elif s.status == "incomplete":
        rows["status"] = f"incomplete: stopped at {s.steps_done} of {s.steps_total} with no end marker"
    else:
        rows["status"] = "ok"
    return rows


WIDE_STREAMS = 4  # up to this many streams: one column each; more: one row each
LISTED_STREAMS = 16  # past this many rows, the streams that ended well are counted, not listed


def summary_table(summaries: list[Summary]) -> Table:
    """One column per stream, one row per fact: every fact of a few streams side by side. More
    streams (a 64-node job has 64 and a scheduler) would be 64 columns of 1 character in 80:
    then :func:`streams_table`."""
    if len(summaries) > WIDE_STREAMS:
        return streams_table(summaries)
    table = Table(title="Log summary", show_header=True)
    table.add_column("")
    rows = [summary_rows(s) for s in summaries]
    for s in summaries:
        table.add_column(label(s.host or LOCAL_HOST, s.rank))
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    for key in keys:
        table.add_row(key, *(r.get(key, "-") for r in rows))
    return table


def streams_table(summaries: list[Summary], listed: int = LISTED_STREAMS) -> Table:
    """One row per stream with the facts that differ between ranks (progress, last loss, step
    time, duration, status in a word). Past ``listed`` rows, every FAILED stream is listed and
    the others fill what is left in rank order; the rest are counted by status in a last row
    (a gang-stopped 64-node job has 63 incomplete streams: their count says it; ``logs JOB
    --summary --json`` after a fetch has every one)."""
    rows = [(s, summary_rows(s)) for s in summaries]
    word = [r["status"].split(":", 1)[0] for _, r in rows]  # ok | incomplete | FAILED
    failed = [i for i, w in enumerate(word) if w == "FAILED"]
    others = [i for i, w in enumerate(word) if w != "FAILED"]
    keep = set(range(len(rows))) if len(rows) <= listed else set(failed) | set(others[:max(0, listed - len(failed))])
    counts: dict[str, int] = {}
    for w in word:
        counts[w] = counts.get(w, 0) + 1
    table = Table(title=f"Log summary: {len(summaries)} streams, "
                        + ", ".join(f"{n} {w}" for w, n in sorted(counts.items())), show_header=True)
    for name in ("stream", "progress", "loss last", "step time", "duration", "status"):
        table.add_column(name, overflow="fold")
    for i in sorted(keep):
        s, r = rows[i]
        last = f"{s.last_loss:.4g}" if s.last_loss is not None else "-"
        status = r["status"] if word[i] == "FAILED" else word[i]
        table.add_row(label(s.host or LOCAL_HOST, s.rank), r.get("progress", "-"), last,
                      r.get("step time", "-"), r["duration"], status)
    hidden: dict[str, int] = {}
    for i in range(len(rows)):
        if i not in keep:
            hidden[word[i]] = hidden.get(word[i], 0) + 1
    if hidden:
        table.add_row(f"... {sum(hidden.values())} more", "", "", "", "",
                      ", ".join(f"{n} {w}" for w, n in sorted(hidden.items())))
    return table


def print_summary(job: JobLogs, *, as_json: bool, to_stderr: bool = False) -> None:
    """The end-of-run summary (also what ``logs JOB -f`` prints when the job ends)."""
    env = environment.current()
    console = env.stderr if to_stderr else env.stdout
    payload = summary_payload(job)
    if as_json:
        console.file.write(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
        return
    console.print(summary_table([s.summary() for s in job.states.values()]))
    first = payload["first_failure"]
    for text in (failure_lines(first) if first is not None else []) + straggler_lines(payload):
        console.print(text, markup=False, highlight=False, soft_wrap=True)


def straggler_lines(payload: dict) -> list[str]:
    return [f"straggler: {s['text']}" for s in payload.get("stragglers", [])]


def failure_lines(first: dict) -> list[str]:
    """The first failure in words: where, the cause, the hint, the traceback's last lines."""
    where = first["host"] + (f" rank {first['rank']}" if first["rank"] is not None else "")
    out = [f"first failure: {where} ({first['kind']}): {first['message']}"]
    if first.get("cause") and first["cause"] != first["message"]:
        out.append(f"  cause: {first['cause']}")
    if first.get("family"):
        out.append(f"  family: {first['family']}" + (f", at {first['at'][11:19]}" if first.get("at") else ""))
    if first.get("hint"):
        out.append(f"  hint: {first['hint']}")
    out += [f"  {line}" for line in first["traceback"]]
    for c in first.get("consequences", [])[:CONSEQUENCES_SHOWN]:
        who = c["host"] + (f" rank {c['rank']}" if c["rank"] is not None else "")
        when = f" at {c['at'][11:19]}" if c.get("at") else ""
        out.append(f"  then {who}{when}: {c['cause']}")
    more = len(first.get("consequences", [])) - CONSEQUENCES_SHOWN
    if more > 0:
        out.append(f"  ... and {more} more streams failed after it (--json lists them)")
    return out


CONSEQUENCES_SHOWN = 8


def compile_grep(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InputError(f"not a valid regular expression ({exc}); e.g. --grep 'loss|ERROR'",
                         key="--grep") from None
