"""Follow a running job live: one channel per node, lines merged in arrival order, progress,
end detection, and gang stop on the first failure.

Pieces, each with one job:

* :func:`follow_argv` / :func:`parse_message`: what runs on a node (the fixed script of
  ``launcher/remote/follow.py``, its request one quoted argv element) and how one line it
  prints becomes an :class:`Event` (pure).
* :class:`NodeStream`: a thread per node that runs that script through the node's
  :class:`~launcher.runners.CommandRunner` ``stream`` and puts events on one queue, so lines
  from every node come out in the order they arrived.
* :class:`ProgressView` (pure) and :func:`progress_renderable`: epoch, step/total, loss and
  its trend, per-step time, samples/s, ETA, from the :class:`~launcher.metrics.logparse.JobLogs`.
* :class:`Follower`: the loop. Feeds lines to ``JobLogs`` and the printer, keeps the live
  bar, knows which nodes ended, and on the first fatal failure records the job FAILED and
  stops every node (``JobService.fail``) — the gang semantics of a distributed job, where
  one dead rank leaves the others hanging in a collective.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from launcher.remote import wire
from launcher.ops import registry as reg
from launcher.errors import AlaunchError
from launcher.core.hostfile import Host
from launcher.core.layout import JobLayout
from launcher.metrics.logparse import Failure, JobLogs, LogState, exit_status_text, match_failure
from launcher.runners import CommandRunner

GANG_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when stopping the other nodes
DRAIN_AFTER_STOP = 8.0  # seconds to keep reading the nodes' last lines after a gang stop


# ---------------------------------------------------------------- the wire protocol
@dataclass(frozen=True)
class Event:
    """One message from a node: a log line, a worker's pid, its end, or the channel lost."""

    host: str
    kind: str  # "line" | "pid" | "end" | "lost" | "beat"
    rank: int | None = None
    role: str = ""
    text: str = ""
    at: float = 0.0  # time.monotonic() on arrival

    @property
    def exit_code(self) -> int | None:
        return int(self.text) if self.kind == "end" and self.text.lstrip("-").isdigit() else None


def follow_argv(python: str, root: str, follow: bool = True, node_rank: int | None = None,
                ranks: Sequence[int] | None = None) -> list[str]:
    """The argv that follows one node's job directory (every element is quoted by the runner).

    ``node_rank``: read that node's state (``JobLayout.node_state``); ``ranks``: follow only
    these workers' logs (and the scheduler's only on node 0), so nodes that share one job dir
    (NFS) do not each report every node's logs."""
    req = {"op": "follow", "root": root, "follow": follow}
    if node_rank is not None:
        req.update(state=JobLayout(root).node_state(node_rank), scheduler=node_rank == 0)
    if ranks is not None:
        req["ranks"] = [str(r) for r in ranks]
    request = wire.request_arg(req)
    return [python, "-c", wire.program("follow", "follow"), request]


def tail_argv(python: str, root: str) -> list[str]:
    return [python, "-c", wire.program("follow", "tail"), wire.request_arg({"op": "tail", "root": root})]


def parse_message(host: str, raw: str, at: float = 0.0) -> Event | None:
    """One line printed by the FOLLOW script -> an Event (None for anything else)."""
    kind, _, rest = raw.partition("\t")
    if kind == "L":
        rank, _, rest = rest.partition("\t")
        role, _, text = rest.partition("\t")
        return Event(host, "line", int(rank) if rank.isdigit() else None, role, text, at)
    if kind == "X":
        return Event(host, "end", text=rest, at=at)
    if kind == "H":
        return Event(host, "beat", at=at)
    if kind == "P":
        pid, _, rank = rest.partition("\t")
        if pid.isdigit() and rank.isdigit():
            return Event(host, "pid", int(rank), text=pid, at=at)
    return None


# ---------------------------------------------------------------- one thread per node
class NodeStream(threading.Thread):
    """Runs the FOLLOW script on one node and puts its events on the shared queue."""

    def __init__(self, runner: CommandRunner, argv: list[str], out: "queue.Queue[Event]",
                 stop: threading.Event):
        super().__init__(name=f"follow-{runner.name}", daemon=True)
        self.runner, self.argv, self.out, self.stop = runner, argv, out, stop
        self.ended = False

    def _on_line(self, raw: str) -> bool | None:
        event = parse_message(self.runner.name, raw, time.monotonic())
        if event is None:
            return None
        if event.kind == "end":
            self.ended = True
        if event.kind != "beat":
            self.out.put(event)
        return None

    def run(self) -> None:
        try:
            result = self.runner.stream(self.argv, self._on_line, stop=self.stop)
            detail = result.stderr.strip().splitlines()[-1:] if result.exit_code else []
        except (AlaunchError, OSError) as exc:
            detail = [getattr(exc, "message", str(exc))]
        finally:
            self.runner.close()
        if not self.ended and not self.stop.is_set():
            self.out.put(Event(self.runner.name, "lost", text="; ".join(detail) or "channel closed",
                               at=time.monotonic()))


# ---------------------------------------------------------------- progress (pure)
@dataclass(frozen=True)
class ProgressView:
    """What the live bar shows; built from the parsed logs and arrival times, no I/O."""

    kind: str  # "train" | "eval" | "unknown"
    done: int | None = None
    total: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    trend: str = ""  # "↓" falling, "↑" rising, "→" flat, "" too few points
    step_s: float | None = None
    samples_s: float | None = None
    eta_s: float | None = None
    failed: str | None = None

    @property
    def fraction(self) -> float:
        return 0.0 if not self.total or self.done is None else min(1.0, self.done / self.total)


def loss_trend(losses: list[float], window: int = 5, tolerance: float = 0.01) -> str:
    """Mean of the last ``window`` losses against the ``window`` before: falling, rising or flat."""
    if len(losses) < 2:
        return ""
    k = min(window, len(losses) // 2)
    recent, before = losses[-k:], losses[-2 * k:-k]
    a, b = sum(recent) / k, sum(before) / k
    if abs(a - b) <= tolerance * max(abs(b), 1e-12):
        return "→"
    return "↓" if a < b else "↑"


def lead_state(job: JobLogs) -> LogState | None:
    """The stream the bar follows: the furthest one with progress, rank 0 on a tie."""
    streams = [s for s in job.states.values() if s.progress() is not None]
    if not streams:
        return None
    return max(streams, key=lambda s: (s.progress()[0], -(s.rank if s.rank is not None else 1 << 30)))


@dataclass
class StepClock:
    """Arrival times of progress, for per-step time and ETA when the log does not print them."""

    points: deque = field(default_factory=lambda: deque(maxlen=20))

    def note(self, done: int, at: float) -> None:
        if not self.points or self.points[-1][0] != done:
            self.points.append((done, at))

    def seconds_per_step(self) -> float | None:
        if len(self.points) < 2:
            return None
        (d0, t0), (d1, t1) = self.points[0], self.points[-1]
        return (t1 - t0) / (d1 - d0) if d1 > d0 else None


def build_view(job: JobLogs, clock: StepClock | None = None) -> ProgressView:
    lead = lead_state(job)
    failed = None
    if job.first_failure is not None:
        f = job.first_failure
        failed = f"{f.host}/rank {f.rank}: {f.message}" if f.rank is not None else f"{f.host}: {f.message}"
    if lead is None:
        return ProgressView("unknown", failed=failed)
    done, total = lead.progress()
    measured = clock.seconds_per_step() if clock else None
    if lead.losses:
        last = lead.losses[-1]
        workers = sum(1 for s in job.states.values() if s.rank is not None and s.losses)
        step_s = last.per_step_ms / 1000 if last.per_step_ms else measured
        eta = lead.eta_s if lead.eta_s is not None else (
            (total - done) * step_s if step_s is not None else None)
        return ProgressView("train", done, total, last.epoch, last.epochs, last.loss,
                            loss_trend([p.loss for p in lead.losses]), step_s,
                            lead.samples_per_s * workers if lead.samples_per_s else None, eta, failed)
    step = lead.eval_step
    step_s = step.cost_s if step and step.cost_s else measured
    eta = lead.eta_s if lead.eta_s is not None else ((total - done) * step_s if step_s else None)
    return ProgressView("eval", done, total, step_s=step_s,
                        samples_s=(1 / step_s) if step_s else None, eta_s=eta, failed=failed)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def view_text(v: ProgressView) -> str:
    """The facts of the bar as one plain line (also what the bar shows next to itself)."""
    if v.done is None:
        parts = ["waiting for the first step"]
    else:
        unit = "step" if v.kind == "train" else "example"
        parts = [f"{unit} {v.done}/{v.total}"]
        if v.epoch is not None:
            parts[0] = f"epoch {v.epoch}/{v.epochs} " + parts[0]
        if v.loss is not None:
            parts.append(f"loss {v.loss:.4g} {v.trend}".rstrip())
        if v.step_s is not None:
            parts.append(f"{v.step_s * 1000:.0f} ms/step" if v.step_s < 10 else f"{v.step_s:.1f} s/step")
        if v.samples_s is not None:
            parts.append(f"{v.samples_s:.3g} samples/s")
        parts.append(f"ETA {_clock(v.eta_s)}")
    return " | ".join(parts)


def progress_renderable(v: ProgressView):
    """A bar with the facts beside it; a red line under it once something failed."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=20, no_wrap=True)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_row(ProgressBar(total=1.0, completed=v.fraction, width=20), Text(view_text(v)))
    if v.failed:
        return Group(grid, Text(f"FAILED {v.failed}", style="bold red", no_wrap=True, overflow="ellipsis"))
    return grid


# ---------------------------------------------------------------- the loop
class Sink(Protocol):
    """Where lines and progress go: a live terminal display or plain lines."""

    def line(self, host: str, rank: int | None, text: str) -> None: ...

    def progress(self, view: ProgressView) -> None: ...

    def note(self, text: str) -> None: ...


class Stopper(Protocol):
    """What the follower needs from the job service."""

    def fail(self, ref: str, reason: str, grace: float = GANG_GRACE) -> reg.JobRecord: ...

    def refresh(self, ref: str): ...


@dataclass
class FollowResult:
    record: reg.JobRecord
    job: JobLogs
    failure: Failure | None
    node_codes: dict[str, int | None]
    failed_at: float | None = None  # monotonic time the first failure was seen
    stopped_at: float | None = None  # monotonic time the gang stop returned


class Follower:
    """Follow every node of one job until each has ended (or, without ``follow``, one snapshot)."""

    def __init__(self, record: reg.JobRecord, runner_for: Callable[[Host], CommandRunner],
                 hosts: dict[str, Host], sink: Sink, service: Stopper | None = None, *,
                 follow: bool = True, gang_stop: bool = True):
        self.record, self.runner_for, self.hosts, self.sink = record, runner_for, hosts, sink
        self.service, self.follow, self.gang_stop = service, follow, gang_stop
        self.job = JobLogs()
        self.clock = StepClock()
        self.queue: "queue.Queue[Event]" = queue.Queue()
        self.stop = threading.Event()

    def _start(self) -> dict[str, NodeStream]:
        pythons = self.record.meta.get("pythons") or {}
        streams = {}
        for node in self.record.nodes:
            runner = self.runner_for(self.hosts[node.host])
            ranks = (self.record.meta.get("ranks") or {}).get(str(node.node_rank))
            # SSH jobs keep per-node state (state/node-<rank>); a Slurm job's one batch script its state/
            rank = None if self.record.meta.get("backend") == "slurm" else node.node_rank
            argv = follow_argv(pythons.get(node.host, "python3"), node.job_dir, self.follow, rank, ranks)
            streams[node.host] = NodeStream(runner, argv, self.queue, self.stop)
        for s in streams.values():
            s.start()
        return streams

    def run(self) -> FollowResult:
        streams = self._start()
        pending = set(streams)
        codes: dict[str, int | None] = {}
        failed_at = stopped_at = None
        drain_until = None
        try:
            while pending:
                if drain_until is not None and time.monotonic() > drain_until:
                    break
                try:
                    event = self.queue.get(timeout=0.25)
                except queue.Empty:
                    continue
                failure = self._handle(event, pending, codes)
                if failure is not None and failed_at is None and self.follow:
                    failed_at = time.monotonic()
                    self._gang_stop(failure)
                    stopped_at = time.monotonic()
                    drain_until = stopped_at + DRAIN_AFTER_STOP
        finally:
            self.stop.set()
        self.job.finish()
        record = self.record
        if self.service is not None and self.follow:
            record = self._settle(codes)
        return FollowResult(record, self.job, self.job.first_failure, codes, failed_at, stopped_at)

    def _handle(self, event: Event, pending: set[str], codes: dict[str, int | None]) -> Failure | None:
        if event.kind == "pid":
            self.job.note_worker(event.host, int(event.text), event.rank)
            return None
        if event.kind == "line" and event.role == "msrun":
            # msrun's own output: not a rank's stream; its failure lines are worth a note
            if match_failure(event.text) and not event.text[:1].isspace():  # not traceback source
                self.sink.note(f"{event.host}: msrun: {event.text.strip()}")
            return self.job.feed_msrun(event.host, event.text)
        if event.kind == "line":
            failure = self.job.feed(event.host, event.rank, event.text)
            self.sink.line(event.host, event.rank, event.text)
            lead = lead_state(self.job)
            if lead is not None:
                self.clock.note(lead.progress()[0], event.at)
            self.sink.progress(build_view(self.job, self.clock))
            return failure
        pending.discard(event.host)
        if event.kind == "lost":
            codes[event.host] = None
            self.sink.note(f"{event.host}: lost the log channel ({event.text})")
            return None
        codes[event.host] = event.exit_code
        if event.text.startswith("!"):
            self.sink.note(f"{event.host}: {event.text[1:]}")
        if event.exit_code not in (None, 0) and self.job.first_failure is None:
            # msrun exited non-zero and no log line said why: that is the failure
            rank = next((n.node_rank for n in self.record.nodes if n.host == event.host), None)
            failure = Failure("node_exit", True, 0,
                              f"msrun on node {rank} {exit_status_text(event.exit_code, shell=True)}",
                              host=event.host)
            self.job.first_failure = failure
            return failure
        return None

    def _gang_stop(self, failure: Failure) -> None:
        who = f"rank {failure.rank} on {failure.host}" if failure.rank is not None else failure.host
        reason = f"{who} failed ({failure.kind}): {failure.message}"
        self.sink.progress(build_view(self.job, self.clock))
        if self.service is None or not self.gang_stop:
            return
        self.sink.note(f"first failure: {who}; stopping every node")
        try:
            self.record = self.service.fail(self.record.id, reason, GANG_GRACE)
        except AlaunchError as exc:
            self.sink.note(f"gang stop incomplete: {exc.message}")

    def _settle(self, codes: dict[str, int | None]) -> reg.JobRecord:
        """The registry's final word: refresh from the hosts unless the follower already decided."""
        try:
            record, _ = self.service.refresh(self.record.id)
        except AlaunchError as exc:
            self.sink.note(f"could not refresh the job's state: {exc.message}")
            return self.record
        return record


def node_progress(host: str, tail_json: str) -> str:
    """The TAIL script's output -> 'rank 0: epoch 1/5 step 12/234, loss 1.29' per rank (pure)."""
    try:
        tails = wire.answer(tail_json) if tail_json else {}
    except ValueError:
        return ""
    parts = []
    for rank in sorted(tails, key=int):
        state = LogState(host=host, rank=int(rank)).feed_lines(tails[rank])
        progress = state.progress()
        if progress is None:
            continue
        text = f"step {progress[0]}/{progress[1]}" if state.losses else f"example {progress[0]}/{progress[1]}"
        if state.losses:
            text += f", loss {state.losses[-1].loss:.4g}"
        parts.append(f"rank {rank}: {text}" if len(tails) > 1 else text)
    return "; ".join(parts)
