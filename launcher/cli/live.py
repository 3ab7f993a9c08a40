"""The terminal side of following a job (``logs JOB [-f]`` and ``submit --follow``).

Two sinks for :class:`launcher.ops.follow.Follower`: :class:`LiveSink` (a rich Live bar under
the scrolling, rank-coloured log on a terminal) and :class:`PlainSink` (plain tagged lines
for pipes and ``--raw``; notes on stderr). :func:`follow_job` wires a registry record to
a Follower and prints the end report; :func:`parse_since` reads ``--since``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Callable

from rich.live import Live

from launcher.cli import environment

from launcher.ops import registry as reg
from launcher.cli.logview import LinePrinter, compile_grep, summary_payload, summary_table
from launcher.errors import ExitCode, InputError
from launcher.ops.follow import Follower, FollowResult, ProgressView, progress_renderable
from launcher.core.hostfile import Host, parse_hostfile
from launcher.ops.service import STATE_EXIT, JobService

_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """``30s``, ``10m``, ``2h``, ``1d`` ago, or a time ``2025-01-01 10:00[:00]`` / ``10:00``."""
    if text is None:
        return None
    now = now or datetime.now()
    m = _AGO.match(text.strip())
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text.strip(), fmt)
        except ValueError:
            pass
    for fmt in ("%H:%M:%S", "%H:%M"):
        try:
            t = datetime.strptime(text.strip(), fmt).time()
            return datetime.combine(now.date(), t)
        except ValueError:
            pass
    raise InputError(f"cannot read {text!r}; give a duration (30s, 10m, 2h, 1d) or a time "
                     "(10:00, 2025-01-01 10:00:00)", key="--since")


class PlainSink:
    """Lines as they come; no bar; notes to stderr."""

    def __init__(self, printer: LinePrinter):
        self.printer = printer

    def line(self, host: str, rank: int | None, text: str) -> None:
        self.printer.emit(host, rank, text)

    def progress(self, view: ProgressView) -> None:
        pass

    def note(self, text: str) -> None:
        environment.current().stderr.print(f"alaunch: {text}", markup=False, highlight=False, soft_wrap=True)


class LiveSink(PlainSink):
    """A progress bar kept under the scrolling log (rich Live); lines printed through it."""

    def __init__(self, printer: LinePrinter):
        super().__init__(printer)
        self.console = environment.current().stdout
        self.live = Live(progress_renderable(ProgressView("unknown")), console=self.console,
                         refresh_per_second=8, transient=True, redirect_stdout=False, redirect_stderr=False)
        printer.console = self.console

    def __enter__(self) -> "LiveSink":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    def progress(self, view: ProgressView) -> None:
        self.live.update(progress_renderable(view))

    def note(self, text: str) -> None:
        self.console.print(f"alaunch: {text}", style="bold", markup=False, highlight=False, soft_wrap=True)


def report(result: FollowResult, *, raw: bool, follow: bool) -> int:
    """The end of a follow on stderr: summary, the first failure with its traceback, the state."""
    err = environment.current().stderr
    say = lambda text: err.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    if not raw and result.job.states:
        streams = sorted(result.job.states.values(), key=lambda s: (s.host or "", s.rank is None, s.rank or 0))
        err.print(summary_table([s.summary() for s in streams]))
    first = summary_payload(result.job)["first_failure"]
    if first is not None:
        where = f"{first['host']}" + (f" rank {first['rank']}" if first["rank"] is not None else "")
        say(f"first failure: {where} ({first['kind']}): {first['message']}")
        for line in first["traceback"]:
            say(f"  {line}")
    record = result.record
    if follow:
        say(f"{record.id}: {record.state}" + (f" ({record.reason})" if record.reason else ""))
        return int(STATE_EXIT[record.state])
    return int(ExitCode.JOB_FAILED) if first is not None else int(ExitCode.OK)


def follow_job(record: reg.JobRecord, service: JobService, runner_for: Callable[[Host], object], *,
               follow: bool = True, raw: bool = False, grep: str | None = None, rank: int | None = None,
               node: str | None = None, since: str | None = None) -> int:
    """Follow (or, without ``follow``, print once) every node's logs; returns the exit code."""
    env = environment.current()
    from launcher.ops.slurm import is_slurm, login_view
    stop_watch = None
    if is_slurm(record):  # one shared job dir, read through the login node
        if follow and record.state == reg.QUEUED:
            note = lambda text: env.stderr.print(f"alaunch: {text}", markup=False, highlight=False)  # noqa: E731
            record = service.wait_started(record.id, note)
            if record.terminal and record.started_at is None:  # ended in the queue: no logs
                note(f"{record.id}: {record.state}" + (f" ({record.reason})" if record.reason else ""))
                return int(STATE_EXIT[record.state])
        record = login_view(record)
        if follow and not record.terminal:  # Slurm may end a job whose script never says so
            import threading
            stop_watch = threading.Event()
            threading.Thread(target=service.watch, args=(record.id, stop_watch), daemon=True).start()
    hosts = {h.name: h for h in parse_hostfile(record.hostfile_text, f"registry:{record.id}")}
    if node is not None and node not in hosts:
        raise InputError(f"job {record.id} has no node {node!r}; its nodes: {', '.join(hosts)}", key="--node")
    printer = LinePrinter(tagged=True, raw=raw, grep=compile_grep(grep), rank=rank, node=node,
                          since=parse_since(since))
    live = follow and not raw and env.stdout.is_terminal
    sink = LiveSink(printer) if live else PlainSink(printer)
    follower = Follower(record, runner_for, hosts, sink, service if follow else None, follow=follow,
                        gang_stop=not record.terminal)
    try:
        if live:
            with sink:
                result = follower.run()
        else:
            result = follower.run()
    finally:
        if stop_watch is not None:
            stop_watch.set()
    return report(result, raw=raw, follow=follow)
