"""Follow a running job live: one channel per node, lines merged in arrival order, progress,
end detection, and gang stop on the first failure.

Pieces, each with one job:

* :func:`follow_argv` / :func:`parse_message`: what runs on a node (the fixed script of
  ``launcher/remote/follow.py``, its request one quoted argv element) and how one line it
  prints becomes an :class:`Event` (pure).
* :class:`NodeLog` (no I/O): one node's state whatever carries its bytes: each file's byte
  offset, the last sign of life, the end, the backoff. When the node's heartbeat stops (no
  message for ``unreachable_after`` s: the host writes one every second) the attempt is dropped
  and a new one starts with backoff, resuming every file at its offset: a link that drops never
  stops the job and never loses or doubles a line.
* :class:`PipeHub`: the transport. ONE thread owns every node's follow process (the runner's
  ``process_argv``: an ``ssh`` client riding the host's master when one is up, else on its own
  connection; a reconnect always on a fresh one; or the script itself for a local node) and reads all their stdouts with :mod:`selectors`, putting events on
  one queue, so lines from every node come out in the order they arrived. :class:`NodeStream`
  (a thread per node over the runner's ``stream``) is the fallback for paramiko-only runners.
* :class:`ProgressView` (pure) and :func:`progress_renderable`: epoch, step/total, loss and
  its trend, per-step time, samples/s, ETA, from the :class:`~launcher.metrics.logparse.JobLogs`.
* :class:`Follower`: the loop. Feeds lines to ``JobLogs`` and the printer, keeps the live
  bar, knows which nodes ended, and on the first failure records the job FAILED and
  stops every node (``JobService.fail``) — the gang semantics of a distributed job, where
  one dead rank leaves the others hanging in a collective. A failure is a process fact only:
  a node's msrun exit code, or msrun's report of a worker's or the scheduler's death. Log text
  never stops a job (real healthy runs print handled tracebacks and HCCL warnings); it
  explains the failure (cause and hint from :mod:`launcher.metrics.signatures`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import selectors
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
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
from launcher.metrics import signatures
from launcher.metrics.logparse import Failure, JobLogs, LogState
from launcher.metrics.stragglers import StragglerWatch
from launcher.ops.fanout import run_parallel
from launcher.runners import CommandRunner

GANG_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when stopping the other nodes
DRAIN_AFTER_STOP = 8.0  # seconds to keep reading the nodes' last lines after a gang stop
UNREACHABLE_AFTER = 10.0  # seconds without a message (the host beats every 1 s) -> unreachable
RECONNECT_BACKOFF = (1.0, 2.0, 4.0, 8.0)  # seconds between reconnects, the last repeats


# ---------------------------------------------------------------- the wire protocol
@dataclass(frozen=True)
class Event:
    """One message from a node: a log line, a worker's pid, its end, or the channel lost."""

    host: str
    kind: str  # "line" | "pid" | "end" | "lost" | "beat" | "file" | "unreachable" | "back"
    rank: int | None = None
    role: str = ""
    text: str = ""
    at: float = 0.0  # time.monotonic() on arrival
    fid: str = ""  # line: which file (declared by a "file" event) ...
    end: int = 0  # ... and the byte offset just after this line in it

    @property
    def exit_code(self) -> int | None:
        return int(self.text) if self.kind == "end" and self.text.lstrip("-").isdigit() else None


def follow_argv(python: str, root: str, follow: bool = True, node_rank: int | None = None,
                ranks: Sequence[int] | None = None, offsets: dict[str, list[int]] | None = None) -> list[str]:
    """The argv that follows one node's job directory (every element is quoted by the runner).

    ``node_rank``: read that node's state (``JobLayout.node_state``); ``ranks``: follow only
    these workers' logs (and the scheduler's only on node 0), so nodes that share one job dir
    (NFS) do not each report every node's logs. ``offsets`` {path: [inode, byte offset]}
    resumes each file where it was left."""
    req = {"op": "follow", "root": root, "follow": follow, "offsets": offsets or {}}
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
        role, _, rest = rest.partition("\t")
        where, _, text = rest.partition("\t")
        fid, _, end = where.partition(":")
        return Event(host, "line", int(rank) if rank.isdigit() else None, role, text, at, fid,
                     int(end) if end.isdigit() else 0)
    if kind == "F":
        fid, _, rest = rest.partition("\t")
        ino, _, path = rest.partition("\t")
        return Event(host, "file", text=path, at=at, fid=fid, end=int(ino) if ino.isdigit() else 0)
    if kind == "X":
        return Event(host, "end", text=rest, at=at)
    if kind == "H":
        return Event(host, "beat", at=at)
    if kind == "P":
        pid, _, rank = rest.partition("\t")
        if pid.isdigit() and rank.isdigit():
            return Event(host, "pid", int(rank), text=pid, at=at)
    return None


# ---------------------------------------------------------------- one node's state (no I/O)
class NodeLog:
    """What the follower keeps of one node, whatever carries its bytes: each file's byte offset,
    the files of the current attempt, the last sign of life, the end, and the backoff.

    Shared by both transports (:class:`NodeStream`, a thread per node over paramiko, and
    :class:`PipeHub`, one thread reading every node's ``ssh`` process), so reconnect, offsets and
    ``unreachable since`` behave the same on either."""

    def __init__(self, host: str, offsets: dict[str, list[int]] | None = None,
                 backoff: tuple[float, ...] = RECONNECT_BACKOFF):
        self.host = host
        self.offsets: dict[str, list[int]] = dict(offsets or {})  # path -> [inode, offset]
        self.files: dict[str, tuple[str, int]] = {}  # fid -> (path, inode), this attempt
        self.backoff = backoff
        self.ended = False
        self.last_seen = time.monotonic()
        self.attempts = 0
        self.tries = 0  # reconnects in a row without a sign of life in between
        self._lock = threading.Lock()  # offsets are read by the follower's thread

    def begin(self) -> None:
        """A new attempt: the script numbers its files afresh."""
        self.files = {}
        self.attempts += 1

    def take(self, raw: str, at: float) -> Event | None:
        """One line of the FOLLOW script -> the event to publish (None: nothing to publish)."""
        event = parse_message(self.host, raw, at)
        if event is None:
            return None
        self.last_seen = event.at
        if event.kind == "file":
            self.files[event.fid] = (event.text, event.end)
            return None
        if event.kind == "line" and event.fid in self.files:
            path, ino = self.files[event.fid]
            with self._lock:
                self.offsets[path] = [ino, event.end]
        if event.kind == "end":
            self.ended = True
        return None if event.kind == "beat" else event

    def offsets_copy(self) -> dict[str, list[int]]:
        with self._lock:
            return {k: list(v) for k, v in self.offsets.items()}

    def retry_delay(self, now: float) -> float:
        """Seconds to wait before the next attempt: the backoff grows while attempts bring no
        message, and starts over once one did."""
        delay = self.backoff[min(self.tries, len(self.backoff) - 1)]
        self.tries = 0 if now - self.last_seen < delay + 1 else self.tries + 1
        return delay


# ---------------------------------------------------------------- one thread per node (paramiko)
class NodeFacts:
    """What the follower reads of one node's stream, whichever transport carries it: the
    facts of its :class:`NodeLog` (``self.node``) and its runner's name."""

    node: NodeLog
    runner: CommandRunner

    @property
    def host(self) -> str:
        return self.runner.name

    @property
    def last_seen(self) -> float:
        return self.node.last_seen

    @property
    def ended(self) -> bool:
        return self.node.ended

    @property
    def attempts(self) -> int:
        return self.node.attempts

    def offsets_copy(self) -> dict[str, list[int]]:
        return self.node.offsets_copy()


class NodeStream(NodeFacts, threading.Thread):
    """Runs the FOLLOW script on one node and puts its events on the shared queue: the fallback
    for runners without a local process to read (paramiko's :class:`~launcher.runners.SSHRunner`
    when there is no ``ssh`` binary). :class:`PipeHub` is the path otherwise.

    Survives links: every message (a heartbeat too) is a sign of life; when none came for
    ``unreachable_after`` s the follower calls :meth:`give_up`, which ends this attempt (the
    runner's stream stops, the connection is dropped: a blackholed TCP link would otherwise hang
    until TCP gives up, minutes later), and the thread reconnects with backoff, passing the
    byte offset of each file it had read so the new script resumes exactly there."""

    def __init__(self, runner: CommandRunner, argv: list[str] | Callable[[dict], list[str]],
                 out: "queue.Queue[Event]", stop: threading.Event, *,
                 offsets: dict[str, list[int]] | None = None, reconnect: bool = True,
                 backoff: tuple[float, ...] = RECONNECT_BACKOFF):
        super().__init__(name=f"follow-{runner.name}", daemon=True)
        self.runner, self.out, self.stop = runner, out, stop
        self.argv_for = argv if callable(argv) else (lambda _offsets: argv)
        self.node = NodeLog(runner.name, offsets, backoff)
        self.reconnect = reconnect
        self._attempt_stop = threading.Event()

    def give_up(self) -> None:
        """End the current attempt (the follower saw no heartbeat); the thread reconnects."""
        self._attempt_stop.set()

    def _on_line(self, raw: str) -> bool | None:
        if self._attempt_stop.is_set():
            return False
        event = self.node.take(raw, time.monotonic())
        if event is not None:
            self.out.put(event)
        return None

    def _once(self) -> str:
        """One connection; returns why it ended ('' when the node ended or we were stopped)."""
        self._attempt_stop.clear()
        self.node.begin()
        detail: list[str] = []
        watcher = threading.Thread(target=self._relay_stop, daemon=True)
        watcher.start()
        try:
            result = self.runner.stream(self.argv_for(self.offsets_copy()), self._on_line,
                                        stop=self._attempt_stop)
            detail = result.stderr.strip().splitlines()[-1:] if result.exit_code else []
        except (AlaunchError, OSError) as exc:
            detail = [getattr(exc, "message", str(exc))]
        finally:
            self._attempt_stop.set()
            self.runner.close()
        if self.node.ended or self.stop.is_set():
            return ""
        return "; ".join(detail) or "channel closed"

    def _relay_stop(self) -> None:
        while not self._attempt_stop.is_set():
            if self.stop.wait(0.2):
                self._attempt_stop.set()

    def run(self) -> None:
        while True:
            why = self._once()
            if not why:
                return
            self.out.put(Event(self.runner.name, "lost", text=why, at=time.monotonic()))
            if not self.reconnect:
                return
            if self.stop.wait(self.node.retry_delay(time.monotonic())):
                return


# ---------------------------------------------------------------- one thread for every node's process
def split_lines(pending: bytes, data: bytes) -> tuple[list[str], bytes]:
    """Bytes read from a pipe -> (complete lines, the unfinished rest to keep): a message may
    arrive in several reads and several messages in one (pure)."""
    *complete, rest = (pending + data).split(b"\n")
    return [raw.decode("utf-8", "replace") for raw in complete], rest


def process_argv(runner: CommandRunner, argv: Sequence[str], fresh: bool = False) -> list[str] | None:
    """The argv of a process on this machine that runs ``argv`` on the runner's host (its stdout
    the command's), or None: no such process (paramiko), follow through :class:`NodeStream`.
    ``fresh``: a reconnect, over a new connection (see ``OpenSSHRunner.process_argv``)."""
    return runner.process_argv(argv, fresh=fresh)


class PipeNode(NodeFacts):
    """One node as :class:`PipeHub` runs it: the argv of its current process, that process and
    its pipes, and the node's :class:`NodeLog`. The follower's thread calls :meth:`give_up`;
    everything else runs on the hub's thread."""

    def __init__(self, hub: "PipeHub", runner: CommandRunner, argv_for: Callable[[dict], list[str]],
                 offsets: dict[str, list[int]] | None, reconnect: bool, backoff: tuple[float, ...]):
        self.hub, self.runner, self.argv_for, self.reconnect = hub, runner, argv_for, reconnect
        self.node = NodeLog(runner.name, offsets, backoff)
        self.proc: subprocess.Popen | None = None
        self.pending = b""
        self.err = bytearray()
        self.out_open = False
        self.cut = False  # this attempt was given up: its remaining output is not read
        self.killed_at: float | None = None
        self.retry_at: float | None = 0.0  # when to start the next attempt (None: none planned)
        self.done = False
        self._give_up = threading.Event()

    def give_up(self) -> None:
        """End the current attempt (no heartbeat): the process is killed, the node reconnects."""
        self._give_up.set()
        self.hub.wake()


class PipeHub(threading.Thread):
    """One thread that owns the follow processes of every node (an ``ssh`` client each, see
    ``OpenSSHRunner.process_argv``, or the script itself for a local node) and reads all their
    stdouts with :mod:`selectors`, handing each line to that node's :class:`NodeLog`.

    Why (``benchmarks/bench_follow_scale.py``, 64 test hosts, both in one run; docs/performance.md):
    a paramiko :class:`NodeStream` per node (a thread plus its stop watcher, packet handling in
    Python under one GIL) cost 3.6 CPU-s per minute with idle logs and 8.0 at 10 lines/s/node;
    this hub (crypto in C in the ssh processes, one Python thread) 0.4 and 3.6, counting its
    64 ssh clients, with the same p95 latency (48 ms both: the host's 50 ms poll).

    Each attempt is a process; its end (EOF and exit) is the channel's end: a ``lost`` event and
    a new process after the node's backoff, started with the byte offsets read so far. Stopping
    (``stop`` set, :meth:`close`) kills every process and waits for it: nothing is left behind
    here, and the host script ends at its next heartbeat, when its channel is gone."""

    KILL_AFTER = 2.0  # seconds between SIGTERM and SIGKILL of a follow process

    def __init__(self, out: "queue.Queue[Event]", stop: threading.Event):
        super().__init__(name="follow-pipes", daemon=True)
        self.out, self.stop = out, stop
        self.error: BaseException | None = None  # what ended the loop unexpectedly
        self.nodes: list[PipeNode] = []
        self.sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._kill_lock = threading.Lock()
        self._closed = False

    def add(self, runner: CommandRunner, argv_for: Callable[[dict], list[str]], *,
            offsets: dict[str, list[int]] | None = None, reconnect: bool = True,
            backoff: tuple[float, ...] = RECONNECT_BACKOFF) -> PipeNode:
        node = PipeNode(self, runner, argv_for, offsets, reconnect, backoff)
        self.nodes.append(node)
        return node

    def wake(self) -> None:
        if self._closed:
            return
        with contextlib.suppress(OSError):  # a full pipe: it is awake already; closed: it is stopping
            os.write(self._wake_w, b"x")

    def close(self, timeout: float = 10.0) -> None:
        """Stop: every process killed and reaped before this returns, then each runner closed
        (its own ControlMaster ended; a shared one is left to its ControlPersist)."""
        self.stop.set()
        self.wake()
        if self.is_alive():
            self.join(timeout)
        self._kill_all()
        if self._closed:
            return
        self._closed = True
        run_parallel(self.nodes, lambda n: n.runner.close())
        self.sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # --- the loop (hub thread)
    def run(self) -> None:
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                for n in self.nodes:
                    self._tend(n, now)
                if all(n.done for n in self.nodes):
                    return
                waits = [n.retry_at - now for n in self.nodes
                         if n.proc is None and not n.done and n.retry_at is not None]
                for key, _ in self.sel.select(max(0.0, min([0.2, *waits]))):
                    if key.data is None:
                        self._drain_wake()
                    else:
                        self._read(key.data[0], key.data[1], key.fileobj)
        except BaseException as exc:  # a bug here would silently stop every node's stream:
            self.error = exc           # the follower raises it on its own thread instead
        finally:
            self._kill_all()

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _tend(self, n: PipeNode, now: float) -> None:
        """Start a due attempt, kill a given-up one, finish one whose process has ended."""
        if n.done:
            return
        if n.proc is None:
            if n.retry_at is not None and now >= n.retry_at:
                self._spawn(n)
            return
        if n._give_up.is_set() and not n.cut:
            n.cut = True
            self._signal(n, signal.SIGTERM)
            n.killed_at = now
        elif n.killed_at is not None and now - n.killed_at > self.KILL_AFTER:
            self._signal(n, signal.SIGKILL)
            n.killed_at = float("inf")
        if not n.out_open and n.proc.poll() is not None:
            self._finish(n, now)

    def _spawn(self, n: PipeNode) -> None:
        n._give_up.clear()
        n.cut, n.killed_at, n.pending, n.err, n.retry_at = False, None, b"", bytearray(), None
        n.node.begin()
        try:
            argv = process_argv(n.runner, n.argv_for(n.offsets_copy()), fresh=n.node.attempts > 1)
            n.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, start_new_session=True)
        except (AlaunchError, OSError, TypeError) as exc:
            n.proc = None
            self._lost(n, getattr(exc, "message", None) or str(exc), time.monotonic())
            return
        for f, kind in ((n.proc.stdout, "out"), (n.proc.stderr, "err")):
            os.set_blocking(f.fileno(), False)
            self.sel.register(f, selectors.EVENT_READ, (n, kind))
        n.out_open = True

    def _read(self, n: PipeNode, kind: str, f) -> None:
        if f.closed:
            return  # its attempt was finished earlier in this turn
        try:
            data = os.read(f.fileno(), 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(f)
            f.close()
            if kind == "out":
                # an unfinished message at the end (killed mid-write) is dropped: its offset would
                # claim text that did not arrive; the next attempt resends that line whole
                n.out_open, n.pending = False, b""
                self._tend(n, time.monotonic())
            return
        if kind == "err":
            n.err += data
            del n.err[:-4096]
            return
        if n.cut:
            return  # given up: resumed from the offsets by the next attempt
        lines, n.pending = split_lines(n.pending, data)
        at = time.monotonic()
        for raw in lines:
            event = n.node.take(raw, at)
            if event is not None:
                self.out.put(event)

    def _finish(self, n: PipeNode, now: float) -> None:
        """The attempt's process has ended: say why (unless the node ended) and plan the next."""
        proc, n.proc = n.proc, None
        self._close_err(proc)
        code = proc.returncode
        if n.node.ended or self.stop.is_set():
            n.done = True
            return
        detail = n.err.decode("utf-8", "replace").strip().splitlines()[-1:] if code and not n.cut else []
        self._lost(n, "; ".join(detail) or "channel closed", now)

    def _lost(self, n: PipeNode, why: str, now: float) -> None:
        self.out.put(Event(n.host, "lost", text=why, at=now))
        if not n.reconnect:
            n.done = True
            return
        n.retry_at = now + n.node.retry_delay(now)

    def _close_err(self, proc: subprocess.Popen) -> None:
        for f in (proc.stdout, proc.stderr):
            if f is not None and not f.closed:
                try:
                    self.sel.unregister(f)
                except (KeyError, ValueError):
                    pass
                f.close()

    @staticmethod
    def _signal(n: PipeNode, sig: int) -> None:
        """The attempt's process and its session (the local script, or the ssh client; a shared
        ControlMaster daemonized into a session of its own and is not touched)."""
        if n.proc is None or n.proc.poll() is not None:
            return
        try:
            os.killpg(n.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill_all(self) -> None:
        with self._kill_lock:
            self._kill_all_locked()

    def _kill_all_locked(self) -> None:
        live = [n for n in self.nodes if n.proc is not None]
        for n in live:
            self._signal(n, signal.SIGTERM)
        deadline = time.monotonic() + self.KILL_AFTER
        for n in live:
            proc = n.proc
            if proc is None:
                continue
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(n, signal.SIGKILL)
                proc.wait()
            self._close_err(proc)
            n.proc, n.done = None, True
        for n in self.nodes:
            n.done = True


def load_offsets(path: Path | None) -> dict[str, dict[str, list[int]]]:
    """host -> {file: [inode, offset]} saved by an earlier follower of the same job."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_offsets(path: Path | None, offsets: dict[str, dict[str, list[int]]]) -> None:
    """Atomically (a killed follower leaves the old file or the new one, never half)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.{threading.get_ident()}.tmp")  # per thread too
    tmp.write_text(json.dumps(offsets, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


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


def loss_trend(losses: list[float], window: int = 50, tolerance: float = 0.01) -> str:
    """Mean of the last ``window`` losses against the ``window`` before: falling, rising or flat.

    Why 50: per-step losses are noisy at small batches. On the demo's 400 steps (batch 4), read
    every 40 steps, a window of 5 said ``↓↑↓↓↑↓↑↓↓↑`` while the loss fell from 6.9 to 0.96; 20 said
    ``↓↓↑↓↓↓↓↓↓→``, 50 said ``↓`` every time. Short runs use half of what they have."""
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
        what = f.cause or f.message
        failed = f"{f.host}/rank {f.rank}: {what}" if f.rank is not None else f"{f.host}: {what}"
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


# ---------------------------------------------------------------- the story (pure)
#: Lines worth a line of their own in the default view: (pattern, what happened).
MILESTONES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Cluster is successfully initialized|This log means the cluster is successfully created"),
     "cluster built"),
    (re.compile(r"Model Compiling, Please Wait|Start compiling|compile the network"), "compiling the graph"),
    (re.compile(r"\.{3,}Saving ckpt\.{3,}|checkpoint successfully saved at|saved checkpoint from step"),
     "checkpoint saved"),
    (re.compile(r"Training Over|Training completed"), "training over"),
    (re.compile(r"Evaluate Over"), "eval done"),
    (re.compile(r"Predict Over"), "predict done"),
)
_WARNING = re.compile(r"^\s*\[WARNING\]| - WARNING - |\b\w*Warning: ")
_ERROR = re.compile(r"^\s*\[(?:ERROR|CRITICAL|EXCEPTION)\]| - (?:ERROR|CRITICAL) - ")
_WHERE = re.compile(r"\[([\w./-]+\.(?:py|cc|cpp|h):\d+)\]|mindformers\[([^\]]+)\]|([\w./-]+\.py):\d+: \w*Warning")
_DIGITS = re.compile(r"\d+")


def warning_key(text: str) -> str:
    """Which warning this is, for counting repeats: its source location, else its words."""
    m = _WHERE.search(text)
    if m:
        return next(g for g in m.groups() if g)
    return _DIGITS.sub("#", text.strip())[:120]


_MS_PREFIX = re.compile(r"^\s*\[(?:WARNING|ERROR|INFO)\] \w+\([^)]*\):\S+ \[([^\]]+)\] (?:\w+\] )?")
_MF_PREFIX = re.compile(r"^.*?mindformers\S*?\[([^\]]+)\] - (?:WARNING|ERROR|INFO) - ")


def short_warning(text: str) -> str:
    """A warning without its timestamp/pid prefix: ``(file.py:84) the message`` (what a person reads)."""
    m = _MS_PREFIX.match(text) or _MF_PREFIX.match(text)
    if m:
        where = m.group(1).rsplit("/", 1)[-1]
        return f"({where}) {text[m.end():].strip()}"
    return text.strip()


def story_kind(text: str) -> tuple[str, str]:
    """How the default view treats one log line: ("milestone", what) | ("progress", "") |
    ("warning", key) | ("error", "") | ("traceback", "") | ("quiet", "")."""
    if "Epoch:[" in text or "Step[" in text or "samples/s/p" in text:
        return "progress", ""
    for rx, what in MILESTONES:
        if rx.search(text):
            return "milestone", what
    if text.startswith("Traceback (most recent call last)"):
        return "traceback", ""
    if _ERROR.search(text):
        return "error", ""
    found = signatures.match(text)
    if found is not None and found.severity == signatures.FATAL:
        return "error", ""
    if _WARNING.search(text):
        return "warning", warning_key(text)
    return "quiet", ""


# ---------------------------------------------------------------- the loop
class Sink(Protocol):
    """Where lines and progress go: a live terminal display or plain lines."""

    def line(self, host: str, rank: int | None, text: str) -> None: ...

    def progress(self, view: ProgressView) -> None: ...

    def note(self, text: str) -> None: ...

    def msrun(self, host: str, text: str) -> None: ...

    def nodes(self, views: list["NodeView"]) -> None: ...


class Stopper(Protocol):
    """What the follower needs from the job service."""

    def fail(self, ref: str, reason: str, grace: float = GANG_GRACE) -> reg.JobRecord: ...

    def refresh(self, ref: str): ...


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


class Follower:
    """Follow every node of one job until each has ended (or, without ``follow``, one snapshot).

    ``offsets_path``: where each file's byte offset is kept (the state dir), so a later follower
    of the same job reads only what is new."""

    def __init__(self, record: reg.JobRecord, runner_for: Callable[[Host], CommandRunner],
                 hosts: dict[str, Host], sink: Sink, service: Stopper | None = None, *,
                 follow: bool = True, gang_stop: bool = True, unreachable_after: float = UNREACHABLE_AFTER,
                 offsets_path: Path | None = None, backoff: tuple[float, ...] = RECONNECT_BACKOFF):
        self.record, self.runner_for, self.hosts, self.sink = record, runner_for, hosts, sink
        self.service, self.follow, self.gang_stop = service, follow, gang_stop
        self.unreachable_after, self.offsets_path, self.backoff = unreachable_after, offsets_path, backoff
        self.job = JobLogs()
        self.clock = StepClock()
        self.stragglers = StragglerWatch()  # .current: read by the dashboard's hub
        self.queue: "queue.Queue[Event]" = queue.Queue()
        self.stop = threading.Event()
        self.nodes = {n.host: NodeView(n.host, n.node_rank) for n in record.nodes}
        self.streams: dict[str, NodeStream | PipeNode] = {}
        self.hub: PipeHub | None = None
        self._offsets_unsaved = False  # said once that the offsets file cannot be written

    def _start(self) -> dict[str, NodeStream | PipeNode]:
        """Every node whose runner has a local process for it (an ``ssh`` client, or the script
        itself on this machine) goes to one :class:`PipeHub`; the others (paramiko only) get a
        :class:`NodeStream` thread each."""
        pythons = self.record.meta.get("pythons") or {}
        saved = load_offsets(self.offsets_path) if self.follow else {}
        streams: dict[str, NodeStream | PipeNode] = {}
        hub = PipeHub(self.queue, self.stop)
        for node in self.record.nodes:
            runner = self.runner_for(self.hosts[node.host])
            ranks = (self.record.meta.get("ranks") or {}).get(str(node.node_rank))
            # SSH jobs keep per-node state (state/node-<rank>); a Slurm job's one batch script its state/
            rank = node.node_rank if self.record.meta.get("state_per_node", True) else None
            python, root, follow = pythons.get(node.host, "python3"), node.job_dir, self.follow

            def argv_for(offsets, p=python, r=root, n=rank, k=ranks):
                return follow_argv(p, r, follow, n, k, offsets)

            kw = dict(offsets=saved.get(node.host), reconnect=self.follow, backoff=self.backoff)
            if process_argv(runner, ["true"]) is not None:
                streams[node.host] = hub.add(runner, argv_for, **kw)
            else:
                streams[node.host] = NodeStream(runner, argv_for, self.queue, self.stop, **kw)
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
                save_offsets(self.offsets_path, {h: st.offsets_copy() for h, st in self.streams.items()})
            except OSError as exc:  # a convenience for the next follower, never worth failing for: said once
                if not self._offsets_unsaved:
                    self._offsets_unsaved = True
                    self.sink.note(f"cannot keep the read offsets in {self.offsets_path} ({exc.strerror or exc}); "
                                   "a later logs -f reads every file from the start")

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
                        last_save = time.monotonic()
                try:
                    event = self.queue.get(timeout=0.25)
                except queue.Empty:
                    if self.hub is not None and self.hub.error is not None:
                        raise self.hub.error
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
        self.job.finish()
        record = self.record
        if self.service is not None and self.follow:
            record = self._settle(codes)
        return FollowResult(record, self.job, self.job.first_failure, codes, failed_at, stopped_at,
                            dict(self.nodes))

    def _handle(self, event: Event, pending: set[str], codes: dict[str, int | None]) -> Failure | None:
        view = self.nodes.get(event.host)
        if view is not None and view.state == "unreachable" and event.kind not in ("lost",):
            view.state, view.unreachable_since = "running", None
            view.reconnects += 1
            self.sink.note(f"{event.host}: reachable again; resuming its logs where they were left")
            self.sink.nodes(list(self.nodes.values()))
        if event.kind == "pid":
            self.job.note_worker(event.host, int(event.text), event.rank)
            return None
        if event.kind == "line" and event.role == "msrun":
            # msrun's own output: the worker and scheduler exits it reports are process facts
            failure = self.job.feed_msrun(event.host, event.text)
            self.sink.msrun(event.host, event.text)
            return failure
        if event.kind == "line":
            self.job.feed(event.host, event.rank, event.text)
            self.sink.line(event.host, event.rank, event.text)
            lead = lead_state(self.job)
            if lead is not None:
                self.clock.note(lead.progress()[0], event.at)
            self.sink.progress(build_view(self.job, self.clock))
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
        try:
            record, _ = self.service.refresh(self.record.id)
        except AlaunchError as exc:
            self.sink.note(f"could not refresh the job's state: {exc.message}")
            return self.record
        return record


def node_progress(host: str, tail_json: str) -> str:
    """The TAIL script's output -> 'rank 0: epoch 1/5 step 12/234, loss 1.29' per rank (pure)."""
    from launcher.metrics.logparse import tails_progress
    try:
        tails = wire.answer(tail_json) if tail_json else {}
    except ValueError:
        return ""
    return tails_progress(host, tails)
