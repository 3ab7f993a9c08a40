"""`alaunch logs PATH`: read a log file or a fetched run directory, tagged by host and rank.

The pieces are kept apart so the live mode (``logs JOB -f``, lines arriving over SSH)
reuses them unchanged: :func:`discover` (local files -> streams), :class:`LinePrinter`
(filter, tag, colour and print one line), :func:`print_summary` (the end table or JSON),
all fed through one :class:`launcher.metrics.logparse.JobLogs`.

Which file is which rank: ``worker_N.log`` (msrun) and ``.../rank_N/info.log`` or
``error.log`` (MindFormers) are rank N; ``scheduler.log`` is msrun's scheduler. In a run
directory ``runs/<job-id>/<host>/...`` the first directory level is the host. The same
MindFormers lines reach both ``worker_N.log`` (stdout) and ``rank_N/info.log``, so each
(host, rank) is read from one file: the worker log when fetched, else info.log.
"""

from __future__ import annotations

import heapq
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Iterator, Optional

import typer
from rich.table import Table
from rich.text import Text

from launcher.cli import environment
from launcher.errors import ExitCode, InputError
from launcher.metrics.logparse import JobLogs, Summary, parse_timestamp

ORDER = 60
LOCAL_HOST = "local"
SCHEDULER = "scheduler"
_WORKER = re.compile(r"^worker_(\d+)\.log$")
_RANK_DIR = re.compile(r"^rank_(\d+)$")
_LAYOUT_DIRS = {"msrun_log", "output", "log", "checkpoint", "strategy", "config", "state"}
RANK_COLOURS = ("cyan", "green", "yellow", "magenta", "blue", "red", "bright_cyan", "bright_green")


@dataclass(frozen=True)
class LogFile:
    """One local log file and the stream it belongs to."""

    path: Path
    host: str
    rank: int | None  # None: scheduler or a file we cannot place
    role: str  # "worker", "info", "error", "scheduler", "file"

    @property
    def priority(self) -> int:
        """Lower is preferred when two files carry the same rank's lines."""
        return {"worker": 0, "info": 1, "file": 2, "error": 3, "scheduler": 4}[self.role]


def classify_file(path: Path, host: str) -> LogFile:
    m = _WORKER.match(path.name)
    if m:
        return LogFile(path, host, int(m.group(1)), "worker")
    if path.name == "scheduler.log":
        return LogFile(path, host, None, "scheduler")
    if path.name in ("info.log", "error.log"):
        m = _RANK_DIR.match(path.parent.name)
        return LogFile(path, host, int(m.group(1)) if m else None, path.name[:-4])
    return LogFile(path, host, None, "file")


def _host_of(rel: Path) -> str:
    parts = rel.parts
    if len(parts) >= 2 and parts[0] not in _LAYOUT_DIRS and not _RANK_DIR.match(parts[0]):
        return parts[0]
    return LOCAL_HOST


def discover(path: Path) -> list[LogFile]:
    """The log files under ``path`` (or ``path`` itself), one per stream, sorted by host/rank."""
    if not path.exists():
        raise InputError("no such file or directory (give a log file or a fetched run "
                         "directory such as runs/<job-id>)", source=str(path))
    if path.is_file():
        return [classify_file(path, LOCAL_HOST)]
    found: dict[tuple[str, int | None, str], LogFile] = {}
    for file in sorted(path.rglob("*.log")):
        if not file.is_file():
            continue
        lf = classify_file(file, _host_of(file.relative_to(path)))
        if lf.role == "file":
            continue  # stray .log files (e.g. test_eval.log) only when named explicitly
        key = (lf.host, lf.rank, lf.role if lf.rank is None else "rank")
        if key not in found or lf.priority < found[key].priority:
            found[key] = lf
    if not found:
        raise InputError("no worker_N.log, scheduler.log or rank_N/info.log under this "
                         "directory", source=str(path))
    return sorted(found.values(), key=lambda f: (f.host, f.rank is None, f.rank or 0, f.role))


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
        self.console = None  # a live display's console while one is up
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


def _read_lines(lf: LogFile) -> Iterator[str]:
    try:
        with lf.path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                yield line.rstrip("\r\n")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", source=str(lf.path)) from exc


def _timed(lf: LogFile, order: int) -> Iterator[tuple[str, int, int, LogFile, str]]:
    """Lines keyed by the latest timestamp seen in this file, for a time-ordered merge."""
    last = ""
    for n, line in enumerate(_read_lines(lf)):
        ts = parse_timestamp(line) if line[:1] in "[0123456789" else None
        if ts is not None:
            last = ts.isoformat()
        yield last, order, n, lf, line


def merged_lines(files: list[LogFile]) -> Iterator[tuple[LogFile, str]]:
    """All lines of all files, merged by timestamp (lines without one follow their file's
    previous line): the local stand-in for "arrival order"."""
    for _, _, _, lf, line in heapq.merge(*(_timed(f, i) for i, f in enumerate(files))):
        yield lf, line


def parse_files(files: Iterable[LogFile]) -> JobLogs:
    job = JobLogs()
    for lf in files:
        for line in _read_lines(lf):
            job.feed(lf.host, lf.rank, line)
    job.finish()
    return job


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def summary_payload(job: JobLogs) -> dict:
    streams = [s.summary().as_dict() for s in job.states.values()]
    first = job.first_failure
    tb = job.best_traceback()
    return {
        "streams": streams,
        "first_failure": None if first is None else {
            "host": first.host, "rank": first.rank, "kind": first.kind, "line": first.line,
            "message": first.message,
            "traceback": list(tb.lines) if tb is not None else list(first.lines),
        },
    }


def summary_rows(s: Summary) -> dict[str, str]:
    """The summary of one stream as (field, text) pairs, in reading order."""
    rows = {"kind": s.kind}
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
    rows["duration"] = _fmt_duration(s.duration_s)
    if s.network_params is not None:
        rows["trainable params"] = (f"{s.network_params} M" if s.network_params_millions
                                    else f"{s.network_params:,}")
    if s.checkpoints:
        rows["checkpoints"] = ", ".join(f"step {c['step']}" if c["path"] is None else c["path"]
                                        for c in s.checkpoints)
    if s.cluster_retries:
        rows["cluster build retries"] = str(s.cluster_retries)
    if s.errors:
        rows["ERROR lines"] = str(s.errors)
    rows["status"] = "ok" if s.failure is None else f"FAILED ({s.failure['kind']})"
    return rows


def summary_table(summaries: list[Summary]) -> Table:
    """One column per stream, one row per fact: narrow enough for many streams' facts."""
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
    if first is not None:
        console.print(f"first failure: {label(first['host'], first['rank'])} line {first['line']}: "
                      f"{first['message']}", markup=False, highlight=False, soft_wrap=True)
        for line in first["traceback"]:
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


def compile_grep(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InputError(f"not a valid regular expression ({exc}); e.g. --grep 'loss|ERROR'",
                         key="--grep") from None


def show_local(path: Path, *, summary: bool, as_json: bool, grep: str | None, rank: int | None,
               node: str | None, raw: bool, since: str | None = None) -> int:
    """The local mode; returns the exit code (JOB_FAILED when a failure was recognised)."""
    files = discover(path)
    regex = compile_grep(grep)
    if rank is not None or node is not None:
        files = [f for f in files if (rank is None or f.rank == rank) and (node is None or f.host == node)]
        if not files:
            raise InputError(f"no log for {'rank ' + str(rank) if rank is not None else ''}"
                             f"{' on ' + node if node else ''} here", source=str(path))
    if summary or as_json:
        job = parse_files(files)
        print_summary(job, as_json=as_json)
    else:
        from launcher.cli.live import parse_since
        printer = LinePrinter(tagged=len(files) > 1, raw=raw, grep=regex, since=parse_since(since))
        job = JobLogs()
        for lf, line in merged_lines(files):
            job.feed(lf.host, lf.rank, line)
            printer.emit(lf.host, lf.rank, line)
        job.finish()
        if not raw:
            print_summary(job, as_json=False, to_stderr=True)
    return int(ExitCode.JOB_FAILED) if job.first_failure is not None else int(ExitCode.OK)


def show_job(ref: str, *, follow: bool, grep: str | None, rank: int | None, node: str | None, raw: bool,
             since: str | None, known_hosts: Optional[Path], ssh_config: Optional[Path], accept_new: bool) -> int:
    """The job mode: every node's logs over one channel each (see launcher.ops.follow)."""
    from launcher.ops import registry as reg
    from launcher.cli.live import follow_job, runner_factory
    from launcher.cli.commands.jobs import _service

    env = environment.current()
    registry, service = _service(env, known_hosts, ssh_config, accept_new, ref)
    with registry:
        record = registry.get(ref)
        saved = record.meta.get("ssh") or {}
        runner_for = runner_factory(known_hosts or (Path(saved["known_hosts"]) if "known_hosts" in saved else None),
                                    ssh_config or (Path(saved["ssh_config"]) if "ssh_config" in saved else None),
                                    accept_new)
        if not record.nodes or (record.state in (reg.PENDING, reg.STAGING)):
            raise InputError(f"job {record.id} is {record.state}: it has no logs on its hosts yet")
        return follow_job(record, service, runner_for, follow=follow, raw=raw, grep=grep, rank=rank,
                          node=node, since=since)


def register(app: typer.Typer) -> None:
    from launcher.cli.commands.submit import ssh_options
    s = ssh_options()

    @app.command("logs")
    def logs(
        target: str = typer.Argument(..., help="A job (id, prefix or name), a log file or a fetched run directory."),
        follow: bool = typer.Option(False, "--follow", "-f", help="Follow the job until it ends; exit with its status code."),
        summary: bool = typer.Option(False, "--summary", help="Print only the summary (log files)."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (log files)."),
        grep: Optional[str] = typer.Option(None, "--grep", help="Only lines matching this regex."),
        rank: Optional[int] = typer.Option(None, "--rank", help="Only this rank."),
        node: Optional[str] = typer.Option(None, "--node", help="Only this host."),
        raw: bool = typer.Option(False, "--raw", help="Plain lines, no colour, no summary (pipes)."),
        since: Optional[str] = typer.Option(None, "--since", help="Only lines since: 30s, 10m, 2h or a time."),
        known_hosts: Optional[Path] = s["known_hosts"], ssh_config: Optional[Path] = s["ssh_config"],
        accept_new: bool = s["accept_new"],
    ) -> None:
        """Show a job's or a log's lines tagged by host/rank, or their summary (exit 100 on a failure)."""
        path = Path(target)
        if path.exists() or any(sep in target for sep in ("/", "\\")) or target.endswith(".log"):
            if follow:
                raise InputError("-f follows a job from the registry, not a local file", key="--follow")
            code = show_local(path, summary=summary, as_json=as_json, grep=grep, rank=rank,
                              node=node, raw=raw, since=since)
        else:
            if summary or as_json:
                raise InputError("--summary/--json read local logs; fetch the job first "
                                 "(alaunch fetch JOB) or drop them", key="--summary")
            code = show_job(target, follow=follow, grep=grep, rank=rank, node=node, raw=raw, since=since,
                            known_hosts=known_hosts, ssh_config=ssh_config, accept_new=accept_new)
        if code:
            raise typer.Exit(code)
