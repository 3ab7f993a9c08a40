"""The terminal side of following a job (``logs JOB [-f]`` and ``submit --follow``).

Sinks for :class:`launcher.ops.follow.Follower` (and the live bar, :func:`progress_renderable`):

* :class:`StorySink`, the default: what a person reads. Milestones (cluster formed — its
  retries counted into it, not shown as warnings —, compiling, checkpoint saved, eval done),
  each warning once, whole and wrapped at word boundaries, with its repeats counted, errors and
  tracebacks in full, and the progress — on a terminal one live line for the job plus one per
  node that is not simply running (``unreachable since 10:02:03``); in a pipe a plain progress
  line every ``--progress-every`` seconds. Measured reason: ``make demo`` printed 5,500 lines,
  5,300 of them raw MindFormers output (config dumps, deprecation warnings, progress bars).
* ``--verbose`` (or ``--raw``, ``--grep``, ``--since``, which filter lines): every line, tagged
  host/rank — :class:`LiveSink` (a rich Live bar under the scrolling, rank-coloured log) on a
  terminal, :class:`PlainSink` (plain tagged lines, notes on stderr) in a pipe.
  :func:`follow_job` wires a registry record to a Follower and prints the end report;
  :func:`parse_since` reads ``--since``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from launcher.cli import environment
from launcher.cli.logview import (
    LinePrinter,
    compile_grep,
    failure_lines,
    label,
    print_summary,
    straggler_lines,
    summary_payload,
    summary_table,
)
from launcher.cli.tables import wrap_words
from launcher.core.hostfile import Host
from launcher.errors import ExitCode, InputError
from launcher.metrics.progress import ProgressView, view_text
from launcher.metrics.story import ClusterForming, short_warning, story_kind
from launcher.ops import registry as reg
from launcher.ops.follow import FollowResult, NodeView
from launcher.ops.follow_transport import UNREACHABLE_AFTER
from launcher.ops.service import STATE_EXIT

if TYPE_CHECKING:
    from launcher.ops.engine import Engine
    from launcher.runners import CommandRunner

_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def progress_renderable(v: ProgressView) -> Table | Group:
    """A bar with the facts beside it; a red line under it once something failed."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=20, no_wrap=True)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_row(ProgressBar(total=1.0, completed=v.fraction, width=20), Text(view_text(v)))
    if v.failed:
        return Group(grid, Text(f"FAILED {v.failed}", style="bold red", no_wrap=True, overflow="ellipsis"))
    return grid


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

    def msrun(self, host: str, text: str) -> None:
        if story_kind(text)[0] == "error":
            self.note(f"{host}: msrun: {text.strip()}")

    def nodes(self, views: list[NodeView]) -> None:
        pass

    def resumed(self, view: ProgressView, skipped: int) -> None:
        self.note(resumed_text(view, skipped))

    def finish(self) -> None:
        pass


def resumed_text(view: ProgressView, skipped: int) -> str:
    """Where a reattached follower starts: 'resuming at step 32/400, 1,234 lines skipped
    (shown before); --from-start for all'."""
    unit = "step" if view.kind == "train" else "example"
    at = f"at {unit} {view.done}/{view.total}, " if view.done is not None else ""
    return f"resuming {at}{skipped:,} lines skipped (shown before); --from-start for all"


class SummarySink(PlainSink):
    """``logs JOB --summary``: every line goes to the summary, none to the terminal."""

    def line(self, host: str, rank: int | None, text: str) -> None:
        pass


class StorySink:
    """The default view: a short story of the job, not a dump of its logs (see the module doc)."""

    def __init__(self, printer: LinePrinter, *, live: bool, every: float = 10.0):
        self.printer = printer
        self.console = environment.current().stdout
        self.every = every
        self.warnings: dict[str, list] = {}  # key -> [count, first text, host/rank, distinct texts (capped)]
        self.routine: dict[str, int] = {}  # key -> count: MindSpore's routine warnings, one line at the end
        self.milestones: set[tuple[str, int | None]] = set()
        self.in_traceback: set[tuple[str, int | None]] = set()
        self.view = ProgressView("unknown")
        self.node_views: list[NodeView] = []
        self.last_progress = 0.0
        self.printed_progress: tuple | None = None
        self.first_step = False
        self.forming: dict[tuple[str, int | None], ClusterForming] = {}
        self.live = Live(self._renderable(), console=self.console, refresh_per_second=4, transient=True,
                         redirect_stdout=False, redirect_stderr=False) if live else None

    def __enter__(self) -> StorySink:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.live is not None:
            self.live.__exit__(exc_type, exc, tb)

    # -- output
    def _say(self, text: str, style: str = "", indent: int = 0) -> None:
        """One story line; on a terminal wrapped at word boundaries (a word is split only when it
        is wider than the line), continuation lines indented by ``indent``: rich's soft wrap
        left the terminal to cut words in half. In a pipe the line stays whole."""
        text = wrap_words(self.console, text, indent)
        if self.console.no_color or not style:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.console.print(Text(text, style=style), soft_wrap=True, highlight=False)
        self.printer.printed += 1

    def _renderable(self) -> Group:
        parts: list[RenderableType] = [progress_renderable(self.view)]
        for v in self.node_views:
            if v.state != "running":
                parts.append(Text(f"  {v.host} (node {v.node_rank}): {v.label}",
                                  style="bold yellow" if v.state == "unreachable" else ""))
        return Group(*parts)

    # -- the sink protocol
    def line(self, host: str, rank: int | None, text: str) -> None:
        if not self.printer.wants(host, rank):
            return
        who = label(host, rank)
        key = (host, rank)
        if key in self.in_traceback:
            self._say(f"{who:<12} | {text}", "red")
            if text[:1] and not text[:1].isspace() and not text.startswith(("Traceback", "During handling",
                                                                            "The above exception")):
                self.in_traceback.discard(key)
            return
        formed = self.forming.get(key)
        kind, what = story_kind(text, forming=formed is None or not formed.formed)
        if kind == "forming" or (kind == "milestone" and what == "cluster formed"):
            forming = self.forming.setdefault(key, ClusterForming())
            forming.feed(text)
            if kind == "forming" or ("cluster formed", None) in self.milestones:
                return
            self.milestones.add(("cluster formed", None))  # once for the job: the first stream says it
            self._say(f"{time.strftime('%H:%M:%S')} {who}: {forming.milestone()}", "bold")
        elif kind == "milestone" and what in ONCE_PER_JOB:
            if (what, None) not in self.milestones:
                self.milestones.add((what, None))
                self._say(f"{time.strftime('%H:%M:%S')} {who}: {what}", "bold")
        elif kind == "milestone":
            done = self.view.done
            if (what, done) not in self.milestones:
                self.milestones.add((what, done))
                at = f" at {'step' if self.view.kind == 'train' else 'example'} {done}/{self.view.total}" \
                    if done is not None else ""
                self._say(f"{time.strftime('%H:%M:%S')} {who}: {what}{at}", "bold")
        elif kind == "traceback":
            self.in_traceback.add(key)
            self._say(f"{who:<12} | {text}", "red")
        elif kind == "error":
            self._say(f"{who:<12} | {text}", "red")
        elif kind == "warning":
            seen = self.warnings.get(what)
            short = short_warning(text)
            if seen is None:
                self.warnings[what] = [1, short, who, {short}]
                self._say(f"{who:<12} | warning {short}", "yellow", indent=15)
            else:
                seen[0] += 1
                if len(seen[3]) < 100:
                    seen[3].add(short)
        elif kind == "routine":
            self.routine[what] = self.routine.get(what, 0) + 1

    def progress(self, view: ProgressView) -> None:
        self.view = view
        if view.done is not None and not self.first_step:
            self.first_step = True
            self._say(f"{time.strftime('%H:%M:%S')} {first_step_text(view)}", "bold")
            self.last_progress = time.monotonic()
        if self.live is not None:
            self.live.update(self._renderable())
            return
        now = time.monotonic()
        facts = (view.done, view.total)
        if view.done is not None and now - self.last_progress >= self.every and facts != self.printed_progress:
            self.last_progress, self.printed_progress = now, facts
            self._say(f"{time.strftime('%H:%M:%S')} {progress_text(view)}")

    def note(self, text: str) -> None:
        self._say(f"alaunch: {text}", "bold")

    def msrun(self, host: str, text: str) -> None:
        if story_kind(text)[0] == "error":
            self._say(f"{host}: msrun: {text.strip()}", "red")

    def nodes(self, views: list[NodeView]) -> None:
        self.node_views = views
        if self.live is not None:
            self.live.update(self._renderable())

    def resumed(self, view: ProgressView, skipped: int) -> None:
        """A reattach: where the new lines start. The first step (and what came before) was shown
        by an earlier follower: never announced again as if it just happened."""
        self.view = view
        self.first_step = self.first_step or view.done is not None
        self.printed_progress = (view.done, view.total)
        self.last_progress = time.monotonic()
        self._say(f"alaunch: {resumed_text(view, skipped)}", "bold")

    def finish(self) -> None:
        """The last progress line, a cluster that never formed, and the warnings with their counts."""
        if self.view.done is not None and (self.view.done, self.view.total) != self.printed_progress:
            self._say(f"{time.strftime('%H:%M:%S')} {progress_text(self.view)}")
        for key, forming in sorted(self.forming.items(), key=lambda kv: (kv[0][0], kv[0][1] or -1)):
            failed = forming.failed_text()
            if failed is not None:
                self._say(f"{label(*key):<12} | {failed}", "red", indent=15)
        if self.routine:
            self._say(routine_text(self.routine))
        repeated = sorted(((v[0], k, v) for k, v in self.warnings.items() if v[0] > 1), reverse=True)
        if self.warnings:
            total = sum(v[0] for v in self.warnings.values())
            self._say(f"warnings: {len(self.warnings)} distinct, {total} in all"
                      + (" (--verbose shows every line)" if repeated else ""))
        for count, _, (_n, text, who, texts) in repeated[:5]:
            # one place, different words: MindFormers' 11 "The config X is deprecated" read as
            # "x22 ... load_checkpoint is deprecated" (2 ranks), as if one key were at fault
            others = f" (and {len(texts) - 1} other message(s) from there)" if len(texts) > 1 else ""
            self._say(f"  x{count}  {who}: {text}{others}", indent=8)


#: Milestones said once for the job, with no step: every rank compiles before its first step,
#: and a log read file by file (an ended job, ``--from-start``) had rank 0's compile say "at
#: step 400/400", the step rank 1's file had reached.
ONCE_PER_JOB = frozenset({"compiling the graph"})


def progress_text(view: ProgressView) -> str:
    """A plain progress line; at the last step without its "ETA 0:00:00" (at 80 columns the
    last line of a run wrapped for it)."""
    text = view_text(view)
    if view.done is not None and view.total and view.done >= view.total:
        text = text.rsplit(" | ETA ", 1)[0]
    return text


def first_step_text(view: ProgressView) -> str:
    """The first step's line: its time is the compile's, so no step time, rate or ETA from it (the
    tiny CPU job's read "7131 ms/step | ETA 0:47:25" for a run that took 3 minutes)."""
    unit = "step" if view.kind == "train" else "example"
    facts = view_text(replace(view, step_s=None, samples_s=None, eta_s=None)).rsplit(" | ETA ", 1)[0]
    took = f" | {view.step_s:.1f} s with the compile" if view.step_s is not None else ""
    return f"first {unit} done (graph compiled): {facts}{took}"


def routine_text(counts: dict[str, int]) -> str:
    """The one line a healthy run's routine warnings get (:data:`launcher.metrics.story.ROUTINE_WARNINGS`):
    the tiny CPU job printed 25 of them, each a ``warning`` line of the story."""
    n = sum(counts.values())
    kinds = f"{len(counts)} kinds; " if len(counts) > 1 else ""
    return f"{n:,} routine MindSpore warning{'s' if n != 1 else ''} ({kinds}--verbose shows them)"


class LiveSink(PlainSink):
    """A progress bar kept under the scrolling log (rich Live); lines printed through it."""

    def __init__(self, printer: LinePrinter):
        super().__init__(printer)
        self.console = environment.current().stdout
        self.live = Live(progress_renderable(ProgressView("unknown")), console=self.console,
                         refresh_per_second=8, transient=True, redirect_stdout=False, redirect_stderr=False)
        printer.console = self.console

    def __enter__(self) -> LiveSink:
        self.live.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.live.__exit__(exc_type, exc, tb)

    def progress(self, view: ProgressView) -> None:
        self.live.update(progress_renderable(view))

    def note(self, text: str) -> None:
        self.console.print(f"alaunch: {text}", style="bold", markup=False, highlight=False, soft_wrap=True)

    def msrun(self, host: str, text: str) -> None:
        if story_kind(text)[0] == "error":
            self.note(f"{host}: msrun: {text.strip()}")


def report(result: FollowResult, *, raw: bool, follow: bool) -> int:
    """The end of a follow on stderr: summary, the first failure with its traceback, the state."""
    err = environment.current().stderr
    say = lambda text: err.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    if not raw and result.job.states:
        streams = sorted(result.job.states.values(), key=lambda s: (s.host or "", s.rank is None, s.rank or 0))
        err.print(summary_table([s.summary() for s in streams]))
    payload = summary_payload(result.job)
    first = payload["first_failure"]
    if first is not None and (follow or result.failure is not None or not raw):
        for line in failure_lines(first):
            say(line)
    for line in straggler_lines(payload) if not raw else []:
        say(line)
    record = result.record
    if follow:
        say(f"{record.id}: {record.state}" + (f" ({record.reason})" if record.reason else ""))
        return int(STATE_EXIT[record.state])
    return int(ExitCode.JOB_FAILED) if first is not None else int(ExitCode.OK)


def follow_job(record: reg.JobRecord, service: Engine, runner_for: Callable[[Host], CommandRunner], *,
               follow: bool = True, raw: bool = False, grep: str | None = None, rank: int | None = None,
               node: str | None = None, since: str | None = None, verbose: bool = False,
               progress_every: float = 10.0, unreachable_after: float = UNREACHABLE_AFTER,
               resume: bool = True, summary: str | None = None, telemetry_every: float | None = None) -> int:
    """Follow (or, without ``follow``, print once) every node's logs; returns the exit code.

    Ctrl-C while following stops the follower, not the job: it says so, with the command that
    reattaches (Ctrl-C printed nothing, and ``submit --follow`` had not yet said the id)."""
    env = environment.current()
    note = lambda text: env.stderr.print(wrap_words(env.stderr, f"alaunch: {text}"), markup=False,  # noqa: E731
                                         highlight=False, soft_wrap=True)
    try:
        return _follow_job(record, service, runner_for, note, follow=follow, raw=raw, grep=grep, rank=rank,
                           node=node, since=since, verbose=verbose, progress_every=progress_every,
                           unreachable_after=unreachable_after, resume=resume, summary=summary,
                           telemetry_every=telemetry_every)
    except KeyboardInterrupt:
        if follow:
            note(detached_text(record.id, queued=record.state == reg.QUEUED))
        raise


def detached_text(job_id: str, *, queued: bool = False) -> str:
    """What Ctrl-C while following says (the job is not touched)."""
    where = "stays in its queue" if queued else "keeps running on its hosts"
    return (f"stopped following; {job_id} {where}. Reattach: alaunch logs {job_id} -f "
            f"(stop it: alaunch cancel {job_id})")


def _follow_job(record: reg.JobRecord, service: Engine, runner_for: Callable[[Host], CommandRunner],
                note: Callable[[str], None], *, follow: bool, raw: bool, grep: str | None, rank: int | None,
                node: str | None, since: str | None, verbose: bool, progress_every: float,
                unreachable_after: float, resume: bool, summary: str | None,
                telemetry_every: float | None) -> int:
    env = environment.current()
    printer = LinePrinter(tagged=True, raw=raw, grep=compile_grep(grep), rank=rank, node=node,
                          since=parse_since(since))
    live = follow and not raw and env.stdout.is_terminal
    every_line = verbose or raw or grep is not None or since is not None or not follow
    sink: PlainSink | StorySink
    if summary is not None:  # ``logs JOB --summary|--json``: the hosts read every line, none printed
        sink = SummarySink(printer)
    elif every_line:
        sink = LiveSink(printer) if live else PlainSink(printer)
    else:
        sink = StorySink(printer, live=live, every=progress_every)
    if follow and record.terminal:
        shown = resume and service.offsets_path(record.id).exists()
        note(f"{record.id} has ended ({record.state}): nothing to follow"
             + (f"; showing what an earlier follower had not shown (every line: alaunch logs {record.id} -f "
                "--from-start)" if shown else "; its logs from the start"))
    # the engine waits while it queues the job, then reads its job dirs (ops.engine.Engine.follow)
    result = service.follow(record, runner_for, sink, note, follow=follow, node=node, resume=resume,
                            unreachable_after=unreachable_after, telemetry_every=telemetry_every,
                            display=sink if isinstance(sink, (LiveSink, StorySink)) else None)
    if result is None:  # ended in the queue: no logs
        record = service.registry.get(record.id)
        note(f"{record.id}: {record.state}" + (f" ({record.reason})" if record.reason else ""))
        return int(STATE_EXIT[record.state])
    if isinstance(sink, StorySink):
        sink.finish()
    if summary is not None:
        print_summary(result.job, as_json=summary == "json")
        return int(ExitCode.JOB_FAILED) if result.job.verdict() is not None else int(ExitCode.OK)
    return report(result, raw=raw, follow=follow)


def finish_submit(registry: reg.Registry, record: reg.JobRecord, service: Engine,
                  runner_for: Callable[[Host], CommandRunner], *,
                  follow: bool, fetch: bool, fetch_dest: Path, accept_new: bool, verbose: bool = False) -> int:
    """The tail of ``submit`` (hostfile and Slurm alike): follow the logs to the end when asked
    (``--fetch`` implies it), then fetch the outputs into ``fetch_dest/<job-id>/``, then print the
    job id last on stdout. Returns the exit code (the job's state when followed, else 0); the
    caller raises it once the registry is closed."""
    env = environment.current()
    code = 0
    if follow or fetch:
        code = follow_job(record, service, runner_for, raw=env.raw, verbose=verbose)
        record = registry.get(record.id)
    if fetch:
        from launcher.cli.progress import fetch_with_progress
        from launcher.ops.collect import default_options
        options = default_options(record)
        options.accept_new_host_keys = accept_new
        fetched = fetch_with_progress(env, registry, record.id, "all", fetch_dest, options)
        env.stderr.print(f"fetched into {fetched.run_dir}", markup=False, highlight=False, soft_wrap=True)
    env.stdout.print(record.id, markup=False, highlight=False)
    return code
