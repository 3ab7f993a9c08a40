"""Follow a running job live: every node's lines merged in arrival order, progress, end
detection, and gang stop on the first failure.

:class:`Follower` is the loop. It starts each node's stream (:mod:`launcher.ops.follow_transport`:
one :class:`~launcher.ops.follow_transport.PipeHub` thread for every node with a local process,
a paramiko thread per node otherwise), keeps each file's offset between runs
(:mod:`launcher.ops.follow_offsets`), feeds lines to ``JobLogs`` and the :class:`Sink`, the
progress (:mod:`launcher.metrics.progress`) to the live bar, knows which nodes ended, and on
the first failure records the job FAILED and stops every node (``JobService.fail``) — the gang
semantics of a distributed job, where one dead rank leaves the others hanging in a collective.
A failure is a process fact only: a node's msrun exit code, or msrun's report of a worker's or
the scheduler's death. Log text never stops a job (real healthy runs print handled tracebacks
and HCCL warnings); it explains the failure (cause and hint from
:mod:`launcher.metrics.signatures`). What a person reads of the lines is the terminal's choice
(``cli/live.py``, with :mod:`launcher.metrics.story`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from launcher.core.hostfile import Host
from launcher.core.layout import JobLayout
from launcher.errors import AlaunchError
from launcher.metrics.logparse import Failure, JobLogs
from launcher.metrics.progress import ProgressView, StepClock, build_view, lead_state
from launcher.metrics.stragglers import StragglerWatch
from launcher.metrics.telemetry import JobTelemetry, TelemetryWatch
from launcher.ops import registry as reg
from launcher.ops import telemetry
from launcher.ops.fanout import run_parallel
from launcher.ops.follow_offsets import load_offsets, save_offsets
from launcher.ops.follow_transport import (
    READ_AHEAD,
    RECONNECT_BACKOFF,
    UNREACHABLE_AFTER,
    Event,
    NodeStream,
    PipeHub,
    PipeNode,
    follow_argv,
    process_argv,
)
from launcher.runners import CommandRunner, LineStreamer

if TYPE_CHECKING:
    from launcher.ops.launch import NodeStatus

GANG_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when stopping the other nodes
DRAIN_AFTER_STOP = 8.0  # seconds to keep reading the nodes' last lines after a gang stop


GREP_TIMEOUT = 20.0  # seconds a host may grep its logs (its script ends itself then too)


def grep_job(record: reg.JobRecord, runner_for: Callable[[Host], CommandRunner], hosts: dict[str, Host],
             pattern: str, *, limit: int = 2000, rank: int | None = None,
             timeout: float = GREP_TIMEOUT) -> list[dict]:
    """Every node greps the whole of the logs the follower reads (``remote/follow.py``'s GREP,
    each node its own ranks, as :class:`Follower` splits them): the lines matching ``pattern``,
    as {host, rank, role, line, text}, by host, rank and line number, the last ``limit`` of
    each file. Why: the dashboard grepped the 20,000 lines it holds, not the log. A node that
    fails raises its :class:`~launcher.errors.RemoteError` (the caller falls back)."""
    pythons = record.meta.get("pythons") or {}
    nodes = [n for n in record.nodes if n.job_dir]

    def one(node: reg.NodeRecord) -> list[dict]:
        runner = runner_for(hosts[node.host]).using(pythons.get(node.host))
        req: dict[str, Any] = {"op": "grep", "root": node.job_dir, "pattern": pattern, "limit": limit,
                               "timeout": int(timeout)}
        state_rank = node.node_rank if record.meta.get("state_per_node", True) else None
        if state_rank is not None:
            req.update(state=JobLayout(node.job_dir).node_state(state_rank), scheduler=state_rank == 0)
        ranks = (record.meta.get("ranks") or {}).get(str(node.node_rank))
        if ranks is not None:
            req["ranks"] = [str(r) for r in ranks]
        if rank is not None:
            req["rank"] = str(rank)
        got = runner.call("follow", req, timeout=timeout + 5, what="grep of the job's logs")
        return [{"host": node.host, "rank": int(f["rank"]) if f["rank"] else None, "role": f["role"],
                 "line": n, "text": text} for f in got["files"] for n, text in f["lines"]]

    results = run_parallel(nodes, one)
    out: list[dict] = []
    for node in nodes:
        got = results[node]
        if isinstance(got, BaseException):
            raise got
        out.extend(got)
    return sorted(out, key=lambda x: (x["host"], x["rank"] is None, x["rank"] or 0, x["role"], x["line"]))


class Sink(Protocol):
    """Where lines and progress go: a live terminal display or plain lines."""

    def line(self, host: str, rank: int | None, text: str) -> None: ...

    def progress(self, view: ProgressView) -> None: ...

    def note(self, text: str) -> None: ...

    def msrun(self, host: str, text: str) -> None: ...

    def nodes(self, views: list[NodeView]) -> None: ...


class Stopper(Protocol):
    """What the follower needs from the job service."""

    def fail(self, ref: str, reason: str, grace: float = GANG_GRACE) -> reg.JobRecord: ...

    def refresh(self, ref: str) -> tuple[reg.JobRecord, list[NodeStatus]]: ...


@dataclass
class NodeView:
    """What the follower knows of one node, as plain data (the live view and the dashboard)."""

    host: str
    node_rank: int | None
    state: str = "running"  # running | ended | unreachable
    exit_code: int | None = None
    unreachable_since: float | None = None  # time.time() of the last message before the silence
    reconnects: int = 0

    @property
    def label(self) -> str:
        if self.state == "unreachable" and self.unreachable_since is not None:
            return f"unreachable since {datetime.fromtimestamp(self.unreachable_since):%H:%M:%S}"
        if self.state == "ended":
            return "ended" if self.exit_code is None else f"ended (exit {self.exit_code})"
        return self.state


@dataclass
class FollowResult:
    record: reg.JobRecord
    job: JobLogs
    failure: Failure | None
    node_codes: dict[str, int | None]
    failed_at: float | None = None  # monotonic time the first failure was seen
    stopped_at: float | None = None  # monotonic time the gang stop returned
    nodes: dict[str, NodeView] = field(default_factory=dict)


class NodeTelemetry:
    """What the follower does with the nodes' ``npu-smi`` tables (``smi`` events): the job's
    cards parsed and kept (:mod:`launcher.ops.telemetry`, continuing what an earlier follower
    of the job kept), the story rules (:class:`~launcher.metrics.telemetry.TelemetryWatch`) told.

    ``every``: seconds between samples: the caller's (``logs -f --telemetry-every``), else the
    job file's ``telemetry_every`` (record meta), else 5; 0 turns sampling off. A job followed
    through one login host (Slurm's view, ``state_per_node`` false) is not sampled there (the
    login host's cards are not the job's): its nodes sample themselves into the shared job dir
    (``remote/follow.py`` SAMPLE, at the job file's period) and the follower reads those files
    (``read_files``; ``every`` 0 still turns it off)."""

    def __init__(self, record: reg.JobRecord, hosts: dict[str, Host], every: float | None,
                 path: Path | None):
        meta = record.meta.get("telemetry_every")
        self.every = float(every if every is not None else meta if meta is not None else telemetry.DEFAULT_EVERY)
        per_node = record.meta.get("state_per_node", True)
        self.sample_every = self.every if per_node else 0.0  # the follow script runs npu-smi itself
        self.read_files = not per_node and self.every > 0  # ... or reads the Slurm nodes' sample files
        self.cards_per_node = int((record.meta.get("target") or {}).get("cards_per_node") or 1)
        self.path = path
        self.data = (telemetry.load_telemetry(path) if path is not None else None) or JobTelemetry()
        self.data.every = self.every
        self.watch = TelemetryWatch()
        # the job's cards per host: what the submit claimed (the hostfile text keeps only slots=N)
        devices = record.meta.get("devices") or {}
        self.cards = {name: list(devices.get(name) or h.slot_ids) for name, h in hosts.items()}
        self.ranks = telemetry.card_ranks({name: replace(h, slot_ids=tuple(self.cards[name]))
                                           for name, h in hosts.items()},
                                          {n.host: n.node_rank for n in record.nodes}, record.meta.get("ranks") or {})
        self.dirty = False
        self.unsaved = False

    def take(self, event: Event, job: JobLogs) -> list[str]:
        """One table: every job card's sample kept; what the story rules say about them."""
        if event.role == "smi":  # a Slurm node's sample line, read from the shared job dir
            got = telemetry.node_sample(event.text, self.cards_per_node)
            if got is None:
                return []
            return self._keep(got.node, got.table, got.t, list(got.ranks) or None, got.ranks, event.host, job)
        wall = time.time() - (time.monotonic() - event.at)
        ranks = {card: rank for (host, card), rank in self.ranks.items() if host == event.host}
        return self._keep(event.host, event.text, wall, self.cards.get(event.host), ranks, event.host, job)

    def _keep(self, host: str, table: str, wall: float, cards: list[int] | None,
              ranks: Mapping[int, int | None], log_host: str, job: JobLogs) -> list[str]:
        """``host``'s table kept; ``log_host``: where its ranks' lines come from (the node
        itself, or the login host a Slurm job is followed through)."""
        if table.startswith("!"):  # npu-smi failed there (the host says it once)
            return [f"{host}: no NPU telemetry: npu-smi info failed ({table[1:]})"]
        said: list[str] = []
        for card, sample in telemetry.samples(table, cards, wall).items():
            self.data.add(host, card, sample)
            rank = ranks.get(card)
            state = job.states.get((log_host, rank)) if rank is not None else None
            done = state.progress() if state is not None else None
            mid_step = done is not None and 0 < done[0] < done[1]
            said += self.watch.update(host, card, sample, rank, mid_step)
            self.dirty = True
        return said

    def save(self) -> None:
        if self.dirty and self.path is not None:
            telemetry.save_telemetry(self.path, self.data)
            self.dirty = False


class Follower:
    """Follow every node of one job until each has ended (or, without ``follow``, one snapshot).

    ``offsets_path``: where each file's byte offset is kept (the state dir), so a later follower
    of the same job prints only what is new. It still reads every file from its start: the lines
    an earlier follower printed are *replayed* — fed to ``JobLogs`` (the summary covers the whole
    run: a reattach summarised only what it read, first loss 1.962 and 0:00:23 where the run's
    were 6.933 and 0:00:47), not to the sink — and the sink's ``resumed(view, skipped)`` (when it
    has one) hears once where the new lines start."""

    def __init__(self, record: reg.JobRecord, runner_for: Callable[[Host], CommandRunner],
                 hosts: dict[str, Host], sink: Sink, service: Stopper | None = None, *,
                 follow: bool = True, gang_stop: bool = True, unreachable_after: float = UNREACHABLE_AFTER,
                 offsets_path: Path | None = None, backoff: tuple[float, ...] = RECONNECT_BACKOFF,
                 telemetry_every: float | None = None, telemetry_path: Path | None = None):
        self.record, self.runner_for, self.hosts, self.sink = record, runner_for, hosts, sink
        self.service, self.follow, self.gang_stop = service, follow, gang_stop
        self.unreachable_after, self.offsets_path, self.backoff = unreachable_after, offsets_path, backoff
        self.job = JobLogs()
        self.clock = StepClock()
        self.stragglers = StragglerWatch()  # .current: read by the dashboard's hub
        self.queue: queue.Queue[Event] = queue.Queue(READ_AHEAD)  # bounded: see put_bounded
        self.stop = threading.Event()
        self.nodes = {n.host: NodeView(n.host, n.node_rank) for n in record.nodes}
        self.streams: dict[str, NodeStream | PipeNode] = {}
        self.hub: PipeHub | None = None
        self._offsets_unsaved = False  # said once that the offsets file cannot be written
        self.resume_at: dict[str, dict[str, list[int]]] = {}  # host -> {path: [inode, end]} already shown
        self.handled: dict[str, dict[str, list[int]]] = {}  # host -> {path: [inode, end]} handled here
        self.skipped = 0  # replayed lines: read for the summary, not shown again
        self._resumed = False
        self.telemetry = NodeTelemetry(record, hosts, telemetry_every if follow else 0.0, telemetry_path)
        self._last_view: tuple[Any, ProgressView] | None = None  # (what it depends on, the view)

    def _start(self) -> dict[str, NodeStream | PipeNode]:
        """Every node whose runner has a local process for it (an ``ssh`` client, or the script
        itself on this machine) goes to one :class:`PipeHub`; the others (paramiko only) get a
        :class:`NodeStream` thread each."""
        pythons = self.record.meta.get("pythons") or {}
        saved = load_offsets(self.offsets_path) if self.follow else {}
        streams: dict[str, NodeStream | PipeNode] = {}
        hub = PipeHub(self.queue, self.stop)
        for node in self.record.nodes:
            runner = self.runner_for(self.hosts[node.host]).using(pythons.get(node.host))
            ranks = (self.record.meta.get("ranks") or {}).get(str(node.node_rank))
            # SSH jobs keep per-node state (state/node-<rank>); a Slurm job's one batch script its state/
            rank = node.node_rank if self.record.meta.get("state_per_node", True) else None
            python, root, follow = runner.python, node.job_dir, self.follow

            def argv_for(offsets: dict[str, list[int]] | None, p: str = python, r: str = root,
                         n: int | None = rank, k: Sequence[int] | None = ranks, f: bool = follow,
                         e: float = self.telemetry.sample_every,
                         sf: bool = self.telemetry.read_files and follow) -> list[str]:
                return follow_argv(p, r, f, n, k, offsets, e, sf)

            if saved.get(node.host):
                self.resume_at[node.host] = saved[node.host]
            kw: dict[str, Any] = dict(offsets=None, reconnect=self.follow, backoff=self.backoff)
            if process_argv(runner, ["true"]) is not None:
                streams[node.host] = hub.add(runner, argv_for, **kw)
            elif isinstance(runner, LineStreamer):
                streams[node.host] = NodeStream(runner, argv_for, self.queue, self.stop, **kw)
            else:
                raise AlaunchError(f"{node.host}: {type(runner).__name__} can neither give a local process "
                                   "to read nor stream lines: it cannot be followed")
        self.streams = streams
        if hub.nodes:
            self.hub = hub
            hub.start()
        for st in streams.values():
            if isinstance(st, NodeStream):
                st.start()
        return streams

    def _stop(self) -> None:
        """Every node's attempt ends: the hub's processes are killed and reaped here (a Ctrl-C
        leaves no ssh client behind); the paramiko threads see ``stop`` within 0.2 s."""
        self.stop.set()
        if self.hub is not None:
            self.hub.close()

    def _save(self) -> None:
        if self.follow and self.offsets_path is not None:
            try:
                save_offsets(self.offsets_path, {h: self._shown(h, self.handled.get(h, {}))
                                                 for h in self.streams})
            except OSError as exc:  # a convenience for the next follower, never worth failing for: said once
                if not self._offsets_unsaved:
                    self._offsets_unsaved = True
                    self.sink.note(f"cannot keep the read offsets in {self.offsets_path} ({exc.strerror or exc}); "
                                   "a later logs -f reads every file from the start")

    def _shown(self, host: str, handled: dict[str, list[int]]) -> dict[str, list[int]]:
        """What has been shown of each file: what this follower handled, never less than what an
        earlier one had shown (a follower stopped mid-replay must not hand its replay on).

        Handled, not read: the readers run up to READ_AHEAD events ahead of this loop, and
        offsets saved as lines were read let a follower stopped with lines queued (Ctrl-C, a
        kill) hand them on as shown: the next ``logs -f`` skipped them (up to 10,000 lines)."""
        merged = {k: list(v) for k, v in self.resume_at.get(host, {}).items()}
        for path, (ino, end) in handled.items():
            if path not in merged or merged[path][0] != ino or merged[path][1] < end:
                merged[path] = [ino, end]
        return merged

    def _save_telemetry(self) -> None:
        try:
            self.telemetry.save()
        except OSError as exc:  # the job is not touched: said once, the samples stay in memory
            if not self.telemetry.unsaved:
                self.telemetry.unsaved = True
                self.sink.note(f"cannot keep the job's telemetry in {self.telemetry.path} ({exc.strerror or exc})")

    def _watch_links(self, pending: set[str]) -> None:
        """No message from a node for ``unreachable_after`` s: say so once, drop that connection
        (the stream thread reconnects with backoff). Never a reason to stop the job."""
        now = time.monotonic()
        for host in pending:
            st, view = self.streams[host], self.nodes[host]
            if view.state == "unreachable" or now - st.last_seen < self.unreachable_after:
                continue
            view.state = "unreachable"
            view.unreachable_since = time.time() - (now - st.last_seen)
            self.sink.note(f"{host}: {view.label} (no heartbeat for {self.unreachable_after:g} s); "
                           "the job is not touched, reconnecting")
            self.sink.nodes(list(self.nodes.values()))
            st.give_up()

    def _replayed(self, event: Event) -> bool:
        """Was this line shown by an earlier follower (at or before its saved offset, same inode)?"""
        marks = self.resume_at.get(event.host)
        mark = marks.get(event.path) if marks and event.path else None
        return mark is not None and mark[0] == event.ino and event.end <= mark[1]

    def _handled(self, event: Event) -> None:
        """The line is in the sink's hands (or the summary's, replayed): the offset to save."""
        if event.path:
            self.handled.setdefault(event.host, {})[event.path] = [event.ino, event.end]

    def _say_resumed(self) -> None:
        """Once, before the first new line (or at the end): where the new lines start."""
        if self._resumed or not self.resume_at:
            return
        self._resumed = True
        resumed = getattr(self.sink, "resumed", None)
        if resumed is not None:
            resumed(build_view(self.job, self.clock), self.skipped)

    def run(self) -> FollowResult:
        streams = self._start()
        pending = set(streams)
        codes: dict[str, int | None] = {}
        failed_at = stopped_at = None
        drain_until = None
        last_save = time.monotonic()
        try:
            while pending:
                if drain_until is not None and time.monotonic() > drain_until:
                    break
                if self.follow:
                    self._watch_links(pending)
                    if time.monotonic() - last_save > 2.0:
                        self._save()
                        self._save_telemetry()
                        last_save = time.monotonic()
                try:
                    event = self.queue.get(timeout=0.25)
                except queue.Empty:
                    if self.hub is not None and self.hub.error is not None:
                        raise self.hub.error from None  # the hub's bug, not the empty queue
                    continue
                failure = self._handle(event, pending, codes)
                if failure is not None and failed_at is None and self.follow:
                    failed_at = time.monotonic()
                    self._gang_stop(failure)
                    stopped_at = time.monotonic()
                    drain_until = stopped_at + DRAIN_AFTER_STOP
        finally:
            self._stop()
            self._save()
            self._save_telemetry()
        self._say_resumed()
        self.job.finish()
        record = self.record
        if self.service is not None and self.follow:
            record = self._settle(codes)
        return FollowResult(record, self.job, self.job.first_failure, codes, failed_at, stopped_at,
                            dict(self.nodes))

    def _view(self, at: float) -> ProgressView:
        """The bar's view after a line: rebuilt only when what it shows can have changed (the
        lead stream's progress, loss count, rates, the first failure), else the last one — most
        lines are not progress, and rebuilding it for each was a fifth of the follower's CPU."""
        lead = lead_state(self.job)
        progress = lead.progress() if lead is not None else None
        if progress is not None:
            self.clock.note(progress[0], at)
        key = None if lead is None else (id(lead), progress, len(lead.losses), lead.eval_step, lead.eta_s,
                                         lead.samples_per_s, id(self.job.first_failure))
        if self._last_view is None or key is None or key != self._last_view[0]:
            self._last_view = (key, build_view(self.job, self.clock))
        return self._last_view[1]

    def _handle(self, event: Event, pending: set[str], codes: dict[str, int | None]) -> Failure | None:
        view = self.nodes.get(event.host)
        if view is not None and view.state == "unreachable" and event.kind not in ("lost",):
            view.state, view.unreachable_since = "running", None
            view.reconnects += 1
            self.sink.note(f"{event.host}: reachable again; resuming its logs where they were left")
            self.sink.nodes(list(self.nodes.values()))
        if event.kind == "smi":
            if not (event.fid and self.resume_at and self._replayed(event)):  # else an earlier follower kept it
                for text in self.telemetry.take(event, self.job):
                    self.sink.note(text)
            self._handled(event)
            return None
        if event.kind == "pid":  # "P <pid> <rank>": always a rank
            if event.rank is not None:
                self.job.note_worker(event.host, int(event.text), event.rank)
            return None
        if event.kind == "line" and self.resume_at and self._replayed(event):
            self.skipped += 1  # shown before: the summary reads it, the sink does not
            self._handled(event)
            if event.role == "msrun":
                return self.job.feed_msrun(event.host, event.text)
            self.job.feed(event.host, event.rank, event.text)
            return None
        if event.kind == "line":
            self._say_resumed()
        if event.kind == "line" and event.role == "msrun":
            # msrun's own output: the worker and scheduler exits it reports are process facts
            failure = self.job.feed_msrun(event.host, event.text)
            self.sink.msrun(event.host, event.text)
            self._handled(event)
            return failure
        if event.kind == "line":
            self.job.feed(event.host, event.rank, event.text)
            self.sink.line(event.host, event.rank, event.text)
            self._handled(event)  # after the sink: a Ctrl-C inside it shows the line again, never loses it
            self.sink.progress(self._view(event.at))
            for text in self.stragglers.update(self.job, event.at):
                self.sink.note(text)
            return None
        if event.kind == "lost":
            if not self.follow:
                pending.discard(event.host)
                codes[event.host] = None
            self.sink.note(f"{event.host}: lost the log channel ({event.text})"
                           + ("; reconnecting" if self.follow else ""))
            return None
        if event.kind != "end":
            return None
        pending.discard(event.host)
        codes[event.host] = event.exit_code
        if view is not None:
            view.state, view.exit_code = "ended", event.exit_code
            self.sink.nodes(list(self.nodes.values()))
        if event.text.startswith("!"):
            self.sink.note(f"{event.host}: {event.text[1:]}")
        if not self.follow:
            return None
        rank = next((n.node_rank for n in self.record.nodes if n.host == event.host), None)
        return self.job.note_exit(event.host, rank, event.exit_code)

    def _gang_stop(self, failure: Failure) -> None:
        who = f"rank {failure.rank} on {failure.host}" if failure.rank is not None else failure.host
        reason = f"{who} failed ({failure.kind}): {failure.cause or failure.message}"
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
        assert self.service is not None  # run() settles only with a service
        try:
            record, _ = self.service.refresh(self.record.id)
        except AlaunchError as exc:
            self.sink.note(f"could not refresh the job's state: {exc.message}")
            return self.record
        return record
