"""Which local file is which log stream, and reading them: shared by `logs`, `results` and follow.

Which file is which rank: ``worker_N.log`` (msrun) and ``.../rank_N/info.log`` or
``error.log`` (MindFormers) are rank N; ``scheduler.log`` is msrun's scheduler. In a run
directory ``runs/<job-id>/<host>/...`` the first directory level is the host. The same
MindFormers lines reach both ``worker_N.log`` (stdout) and ``rank_N/info.log``, so each
(host, rank) is read from one file: the worker log when fetched, else info.log.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import InputError
from launcher.metrics.logparse import JobLogs, parse_timestamp

LOCAL_HOST = "local"


SCHEDULER = "scheduler"


_WORKER = re.compile(r"^worker_(\d+)\.log$")


_RANK_DIR = re.compile(r"^rank_(\d+)$")


_LAYOUT_DIRS = {"msrun_log", "output", "log", "checkpoint", "strategy", "config", "state"}


@dataclass(frozen=True)
class LogFile:
    """One local log file and the stream it belongs to."""

    path: Path
    host: str
    rank: int | None  # None: scheduler or a file we cannot place
    role: str  # "worker", "info", "error", "scheduler", "msrun", "file"

    @property
    def priority(self) -> int:
        """Lower is preferred when two files carry the same rank's lines."""
        return {"worker": 0, "info": 1, "file": 2, "error": 3, "scheduler": 4, "msrun": 5}[self.role]


def classify_file(path: Path, host: str) -> LogFile:
    m = _WORKER.match(path.name)
    if m:
        return LogFile(path, host, int(m.group(1)), "worker")
    if path.name == "scheduler.log":
        return LogFile(path, host, None, "scheduler")
    if path.name == "launcher.log" and path.parent.name == "state":
        return LogFile(path, host, None, "msrun")  # msrun's own output: the worker exits it saw
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


def feed_file_line(job: JobLogs, lf: LogFile, line: str) -> None:
    """msrun's own output goes to :meth:`JobLogs.feed_msrun` (its reports are process facts)."""
    if lf.role == "msrun":
        job.feed_msrun(lf.host, line)
    else:
        job.feed(lf.host, lf.rank, line)


def parse_files(files: Iterable[LogFile]) -> JobLogs:
    job = JobLogs()
    for lf in files:
        for line in _read_lines(lf):
            feed_file_line(job, lf, line)
    job.finish()
    return job
