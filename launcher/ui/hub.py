"""One follower per job, shared by every viewer of the dashboard.

:class:`JobWatch` is a :class:`launcher.ops.follow.Sink`: the job's one
:class:`~launcher.ops.follow.Follower` (the same loop ``logs -f`` runs) feeds it lines and
progress from a thread; it keeps them as plain data (a bounded line buffer with sequence
numbers, loss points per rank, the latest progress view, the follower's ``NodeView`` of each
node, the first failure explained by the signature table) and
pushes each change to the subscribed browsers' queues through their event loops. Viewers
come and go; the follower does not restart for them. A running job's watch follows it to its
end and settles the registry (as ``logs -f`` does); a finished job's watch reads its logs once.

Nothing here writes to a host: following only reads the job's log files (``remote/follow.py``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from launcher.core.hostfile import Host, parse_hostfile
from launcher.errors import AlaunchError
from launcher.metrics.logparse import Failure, JobLogs, parse_loss
from launcher.metrics.progress import ProgressView, build_view
from launcher.ops import registry as reg
from launcher.ops.engines import log_view
from launcher.ops.follow import Follower, NodeView
from launcher.ops.telemetry import telemetry_path
from launcher.ui.data import downsample, progress_dict, stream_key

MAX_LINES = 20_000  # lines kept in memory per job for the viewer (the host keeps them all)
MAX_BYTES = 16 * 2**20  # and at most this much of their text: 20,000 lines of a 1 MiB dump were 20 GB
MAX_LINE = 16 * 2**10  # one line's text kept for the page; the rest is counted ("... N more bytes")
IDLE_S = 60.0  # a finished job's watch no page subscribes to nor asked for this long is let go (read again if asked)
QUEUE_SIZE = 2_000  # per viewer; a viewer that falls this far behind is dropped and resyncs
START_POLL_S = 1.0  # how often a job not running yet (pending/staging/queued) is looked at
WAITING = (reg.PENDING, reg.STAGING, reg.QUEUED)


@dataclass
class Connection:
    """How the dashboard reaches a job's hosts: a runner per host and the job service
    (which settles the registry at the end and stops the gang on a failure, as logs -f)."""

    runner_for: Callable[[Host], Any]
    service: Any


def default_connect(registry: reg.Registry, state_dir: Path, record: reg.JobRecord) -> Connection:
    """The SSH files the job's submit used, as ``logs`` and ``cancel`` do."""
    from launcher.ops.collect import default_options
    from launcher.ops.engines import engine_of
    from launcher.runners import make_runner

    options = default_options(record)
    runner_for = partial(make_runner, options=options)
    return Connection(runner_for=runner_for, service=engine_of(record, registry, state_dir, exec_factory=runner_for))


class Frame(dict):
    """A message for the job's viewers, encoded once as its server-sent event (``sse``) on the
    follower's thread: every viewer of the job is sent the same bytes, and no JSON is encoded
    on the event loop (20 tabs on a 100 lines/s job each encoded every message there)."""

    __slots__ = ("sse",)

    def __init__(self, message: dict):
        super().__init__(message)
        self.sse = f"data: {json.dumps(message, default=str, separators=(',', ':'))}\n\n".encode()


@dataclass
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    dropped: bool = False


class JobWatch:
    """What the job's follower knows, kept for the dashboard (a Sink, thread-safe)."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        self.lock = threading.Lock()
        self.lines: deque[dict] = deque(maxlen=MAX_LINES)
        self.seq = 0
        self.curves: dict[str, list[tuple[int, float]]] = {}
        self.view: ProgressView | None = None
        self.node_views: dict[str, dict] = {}  # host -> the follower's NodeView as plain data (+ its label)
        self.notes: list[str] = []
        self.failure: Failure | None = None  # explained (cause, hint) on the follower's thread
        self.streams_status: list[dict] = []  # per rank at the end: ok | incomplete | failed (what the log shows)
        self.follower: Follower | None = None  # read for its first failure while it runs; dropped at its end
        self.stragglers: list = []  # the follower's last word on stragglers, kept when it is dropped
        self.following = False
        self.done = threading.Event()
        self.error: str | None = None
        self._subs: list[_Subscriber] = []
        self.bytes = 0  # text bytes held in ``lines``
        self.touched = time.monotonic()  # last asked for by a page
        self._last_progress = 0.0
        self._sent_view: ProgressView | None = None
        self._downsampled: tuple[Any, dict[str, list]] | None = None
        self._explained: Failure | None = None

    # -------------------------------------------------------------- Sink
    def _keep(self, item: dict) -> None:
        """Append under the lock, the oldest lines going first past MAX_LINES or MAX_BYTES."""
        if len(self.lines) == self.lines.maxlen:
            self.bytes -= len(self.lines[0]["text"])
        self.lines.append(item)
        self.bytes += len(item["text"])
        while self.bytes > MAX_BYTES and len(self.lines) > 1:
            self.bytes -= len(self.lines.popleft()["text"])

    @staticmethod
    def _cut(text: str) -> str:
        if len(text) <= MAX_LINE:
            return text
        return f"{text[:MAX_LINE]} ... ({len(text) - MAX_LINE:,} more characters)"

    def line(self, host: str, rank: int | None, text: str) -> None:
        point = parse_loss(text) if "loss" in text else None
        with self.lock:
            self.seq += 1
            item = {"seq": self.seq, "host": host, "rank": rank, "text": self._cut(text), "t": time.time()}
            self._keep(item)
            key = stream_key(host, rank)
            if point is not None and rank is not None:  # msrun's scheduler log repeats rank 0's losses
                self.curves.setdefault(key, []).append((point.global_step, point.loss))
        self._publish({"type": "line", **item})
        if point is not None and rank is not None:
            self._publish({"type": "loss", "stream": key, "step": point.global_step, "loss": point.loss})

    def progress(self, view: ProgressView) -> None:
        with self.lock:
            self.view = view
        self._explain()  # the follower reports progress right after it sees the first failure
        now = time.monotonic()
        if now - self._last_progress >= 0.25 and view is not self._sent_view:  # fed per line; the browser needs less
            self._last_progress, self._sent_view = now, view
            # the view itself, not a nudge to re-fetch the job (3-31 MB each time, ~1.6 times a second)
            self._publish({"type": "progress", "progress": progress_dict(view), "last_loss": view.loss})

    def note(self, text: str) -> None:
        with self.lock:
            self.notes.append(text)
        self._publish({"type": "note", "text": text})

    def msrun(self, host: str, text: str) -> None:
        """msrun's own output (its reports of a worker's or the scheduler's death): shown in the
        log viewer as the node's ``msrun`` stream."""
        with self.lock:
            self.seq += 1
            item = {"seq": self.seq, "host": host, "rank": None, "role": "msrun", "text": self._cut(text),
                    "t": time.time()}
            self._keep(item)
        self._publish({"type": "line", **item})
        self._explain()

    def nodes(self, views: list[NodeView]) -> None:
        """What the follower knows of each node (running | ended | unreachable since ...)."""
        with self.lock:
            for v in views:
                self.node_views[v.host] = {**asdict(v), "label": v.label}
        self._publish({"type": "node"})

    def _explain(self) -> None:
        """On the follower's thread: the first failure (a process fact), explained by the logs
        (``JobLogs.explain``: cause and hint from metrics/signatures.py), once it is known."""
        follower = self.follower
        first = follower.job.first_failure if follower is not None else None
        if follower is None or first is None or self._explained is first:
            return
        self._explained = first
        failure = follower.job.explain(first)
        with self.lock:
            self.failure = failure
        self._publish({"type": "failure"})

    # -------------------------------------------------------------- viewers
    def subscribe(self, loop: asyncio.AbstractEventLoop) -> _Subscriber:
        sub = _Subscriber(loop, asyncio.Queue(QUEUE_SIZE))
        with self.lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        with self.lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def _publish(self, message: dict) -> None:
        """Encode once (:class:`Frame`), hand it to each event loop once for all its viewers."""
        with self.lock:
            subs = list(self._subs)
        if not subs:
            return
        frame = Frame(message)
        loops: dict[asyncio.AbstractEventLoop, list[_Subscriber]] = {}
        for sub in subs:
            loops.setdefault(sub.loop, []).append(sub)
        for loop, group in loops.items():
            try:
                loop.call_soon_threadsafe(self._put_all, group, frame)
            except RuntimeError:  # its loop is closed: the viewers are gone
                for sub in group:
                    self.unsubscribe(sub)

    @classmethod
    def _put_all(cls, subs: list[_Subscriber], message: dict) -> None:
        for sub in subs:
            cls._put(sub, message)

    @staticmethod
    def _put(sub: _Subscriber, message: dict) -> None:
        if sub.dropped:
            return
        try:
            sub.queue.put_nowait(message)
        except asyncio.QueueFull:
            sub.dropped = True
            sub.queue = asyncio.Queue(1)
            sub.queue.put_nowait({"type": "resync"})

    # -------------------------------------------------------------- reading
    def downsampled(self, buckets: int, lo: float | None = None, hi: float | None = None) -> dict[str, list]:
        """Each curve as :func:`launcher.ui.data.downsample` draws it, kept until a curve grows
        or other buckets or another range are asked for: a finished 1M-point job's page is
        downsampled once (~0.3 s on this machine), not at every load."""
        with self.lock:
            sizes = tuple((k, len(v)) for k, v in self.curves.items())
            refs = dict(self.curves)
        key = (buckets, lo, hi, sizes)
        cached = self._downsampled
        if cached is not None and cached[0] == key:
            return cached[1]
        out = {k: downsample(refs[k][:n], buckets, lo, hi) for k, n in sizes}
        self._downsampled = (key, out)
        return out

    def snapshot(self, curves: bool | int = True) -> dict:
        """Plain data for :mod:`launcher.ui.data` (copies, so the follower may go on); without
        ``curves`` (the jobs list) the loss points are not copied; with a number, each curve is
        downsampled to that many buckets (:meth:`downsampled`)."""
        drawn = self.downsampled(curves) if not isinstance(curves, bool) else None
        with self.lock:
            view = self.view
            last = None
            for key in sorted(self.curves):
                if self.curves[key]:
                    last = self.curves[key][-1][1] if last is None else last
            if view is not None and view.loss is not None:
                last = view.loss
            return {"progress": view, "last_loss": last,
                    "curves": (drawn if drawn is not None else
                               {k: list(v) for k, v in self.curves.items()} if curves else {}),
                    "nodes": {k: dict(v) for k, v in self.node_views.items()},
                    "notes": list(self.notes) + ([f"follower: {self.error}"] if self.error else []),
                    "failure": self.failure,
                    "stragglers": [asdict(s) | {"text": s.text()}
                                   for s in (self.follower.stragglers.current if self.follower else self.stragglers)],
                    "streams": sorted({stream_key(ln["host"], ln["rank"]) for ln in self.lines
                                       if ln.get("role") != "msrun"}),
                    "stream_status": [dict(x) for x in self.streams_status],
                    "line_count": self.seq, "following": self.following and not self.done.is_set()}

    def settle(self, job: JobLogs, follower: Follower) -> None:
        """The follower ended: the failure to show (the process fact explained, else what the
        logs say, as ``logs`` reports it) and each rank's log status (``incomplete``: stopped
        short of its last step with no end marker)."""
        failure = job.verdict()
        status = [{"stream": stream_key(st.host, st.rank), "status": st.status,
                   "done": (st.progress() or (None, None))[0], "total": (st.progress() or (None, None))[1]}
                  for st in sorted(job.states.values(), key=lambda s: (s.host or "", s.rank is None, s.rank or 0))
                  if st.rank is not None]
        with self.lock:
            self.failure = failure
            self.streams_status = status
            if self.view is None or self.following:
                self.view = build_view(job, follower.clock)

    def lines_since(self, after: int = -1) -> list[dict]:
        with self.lock:
            return [ln for ln in self.lines if ln["seq"] > after]


class Hub:
    """The watches of one dashboard: created on first view, shared, one follower thread each."""

    def __init__(self, state_dir: Path,
                 connect: Callable[[reg.Registry, Path, reg.JobRecord], Connection] = default_connect):
        self.state_dir = Path(state_dir)
        self.connect = connect
        self._watches: dict[str, JobWatch] = {}
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None

    def registry(self) -> reg.Registry:
        """A registry connection of the caller's own (sqlite connections are not shared across threads)."""
        return reg.Registry.in_state_dir(self.state_dir)

    def get(self, job_id: str) -> JobWatch | None:
        with self._lock:
            w = self._watches.get(job_id)
            if w is not None:
                w.touched = time.monotonic()
            return w

    def release_idle(self, now: float | None = None) -> list[str]:
        """Let go of the watches of ended jobs that no page subscribes to and none asked for in
        IDLE_S seconds (a dashboard left open for days kept every job it ever showed, lines
        and all). A running job's watch stays: its follower settles the registry."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [j for j, w in self._watches.items()
                    if w.done.is_set() and not w._subs and now - w.touched > IDLE_S]
            for j in idle:
                del self._watches[j]
        return idle

    def _reap(self) -> None:
        """Let idle watches go even when no page asks for another (two 1M-line jobs held 1.35 GB)."""
        while True:
            time.sleep(IDLE_S / 4)
            self.release_idle()

    def watch(self, job_id: str) -> JobWatch:
        """The job's watch, starting its follower the first time it is asked for."""
        self.release_idle()
        with self._lock:
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="ui-reaper", daemon=True)
                self._reaper.start()
            w = self._watches.get(job_id)
            if w is not None:
                w.touched = time.monotonic()
                return w
            w = self._watches[job_id] = JobWatch(job_id)
        threading.Thread(target=self._run, args=(w,), name=f"ui-follow-{job_id}", daemon=True).start()
        return w

    def _run(self, w: JobWatch) -> None:
        try:
            with self.registry() as registry:
                record = registry.get(w.job_id)
                while record.state in WAITING:
                    time.sleep(START_POLL_S)
                    record = registry.get(w.job_id)
                if not record.nodes or not any(n.job_dir for n in record.nodes):
                    return  # ended before it was staged (or in a queue): nothing on the hosts to read
                conn = self.connect(registry, self.state_dir, record)
                record = log_view(record)  # the job dirs the engine's nodes write (Slurm: one, shared)
                hosts = {h.name: h for h in parse_hostfile(record.hostfile_text, f"registry:{record.id}")}
                follow = not record.terminal
                w.following = follow
                # the follower logs -f runs; no offsets file: the viewer wants every line from the start
                follower = Follower(record, conn.runner_for, hosts, w, conn.service if follow else None,
                                    follow=follow, gang_stop=follow,
                                    telemetry_path=telemetry_path(self.state_dir, record.id) if follow else None)
                w.follower = follower
                result = follower.run()
                w.settle(result.job, follower)
        except AlaunchError as exc:
            w.error = exc.message
        except Exception as exc:  # the dashboard stays up; the page shows why this job has no logs
            w.error = f"{type(exc).__name__}: {exc}"
        finally:
            ended, w.follower = w.follower, None  # its parsed logs (every loss point) are not needed now
            if ended is not None:
                w.stragglers = ended.stragglers.current
            w.done.set()
            w._publish({"type": "end"})
