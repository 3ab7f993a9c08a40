"""The follower's transport: what runs on each node and how its bytes reach one queue.

* :func:`follow_argv` / :func:`parse_message`: what runs on a node (the fixed script of
  ``launcher/remote/follow.py``, its request one quoted argv element) and how one line it
  prints becomes an :class:`Event` (pure).
* :class:`NodeLog` (no I/O): one node's state whatever carries its bytes: each file's byte
  offset, the last sign of life, the end, the backoff. When the node's heartbeat stops (no
  bytes for ``unreachable_after`` s: the host writes one every second) the attempt is dropped
  and a new one starts with backoff, resuming every file at its offset: a link that drops never
  stops the job and never loses or doubles a line.
* :class:`PipeHub`: ONE thread owns every node's follow process (the runner's
  ``process_argv``: an ``ssh`` client riding the host's master when one is up, else on its own
  connection; a reconnect always on a fresh one; or the script itself for a local node) and
  reads all their stdouts with :mod:`selectors`, putting events on one queue, so lines from
  every node come out in the order they arrived. Lines are split by the host scripts' own
  :class:`~launcher.remote._prelude.Lines`: linear, each line capped.
* :class:`NodeStream` (a thread per node over the runner's ``stream``): the fallback for
  paramiko-only runners.

The loop that reads the queue is :class:`launcher.ops.follow.Follower`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from launcher.core.layout import JobLayout
from launcher.errors import AlaunchError
from launcher.ops.fanout import run_parallel
from launcher.remote import wire
from launcher.remote._prelude import LINE_CAP, Lines
from launcher.runners import CommandRunner, LineStreamer

UNREACHABLE_AFTER = 10.0  # seconds without a byte (the host beats every 1 s) -> unreachable
RECONNECT_BACKOFF = (1.0, 2.0, 4.0, 8.0)  # seconds between reconnects, the last repeats
MESSAGE_CAP = LINE_CAP + 4096  # one message of the host script: a capped line, its prefix and cut note
READ_AHEAD = 10_000  # events queued ahead of the follower's loop; then the readers wait (see put_bounded)


def put_bounded(out: queue.Queue[Event], event: Event, stop: threading.Event,
                alive: Callable[[float], None] | None = None) -> bool:
    """Put ``event`` on the follower's bounded queue, waiting while it is full (False: stopped
    first, the event dropped). Why: the readers ran ahead of the loop and queued a whole file
    (605 MB after 30 s of a 1M-line log); a full queue now stops the reading, the pipe fills
    and the host script waits on its write. While waiting the node counts as alive (``alive``):
    its bytes are here, the loop is what is behind."""
    while True:
        try:
            out.put(event, timeout=0.2)
            return True
        except queue.Full:
            if stop.is_set():
                return False
            if alive is not None:
                alive(time.monotonic())


# ---------------------------------------------------------------- the wire protocol
@dataclass(frozen=True)
class Event:
    """One message from a node: a log line, a worker's pid, its end, or the channel lost."""

    host: str
    kind: str  # "line" | "pid" | "end" | "lost" | "beat" | "file" | "unreachable" | "back" | "smi"
    rank: int | None = None
    role: str = ""
    text: str = ""
    at: float = 0.0  # time.monotonic() on arrival
    fid: str = ""  # line: which file (declared by a "file" event) ...
    end: int = 0  # ... and the byte offset just after this line in it
    path: str = ""  # line: that file's path and inode, as its attempt declared them ("": undeclared),
    ino: int = 0  # so the loop that handles it keeps the offset of what it handled (Follower._save)

    @property
    def exit_code(self) -> int | None:
        return int(self.text) if self.kind == "end" and self.text.lstrip("-").isdigit() else None


def follow_argv(python: str, root: str, follow: bool = True, node_rank: int | None = None,
                ranks: Sequence[int] | None = None, offsets: dict[str, list[int]] | None = None,
                smi_every: float = 0.0, smi_files: bool = False) -> list[str]:
    """The argv that follows one node's job directory (every element is quoted by the runner).

    ``node_rank``: read that node's state (``JobLayout.node_state``); ``ranks``: follow only
    these workers' logs (and the scheduler's only on node 0), so nodes that share one job dir
    (NFS) do not each report every node's logs. ``offsets`` {path: [inode, byte offset]}
    resumes each file where it was left. ``smi_every`` > 0: the node also sends its ``npu-smi
    info`` table every that many seconds (a ``smi`` event, see :func:`parse_smi`); ``smi_files``:
    the node follows the samples a Slurm job's nodes write into ``state/telemetry/`` instead
    (``smi`` events with role ``smi``, their text the sample's JSON line)."""
    req: dict[str, Any] = {"op": "follow", "root": root, "follow": follow, "offsets": offsets or {}}
    if smi_every > 0:
        req["smi_every"] = float(smi_every)
    if smi_files:
        req["smi_files"] = True
    if node_rank is not None:
        req.update(state=JobLayout(root).node_state(node_rank), scheduler=node_rank == 0)
    if ranks is not None:
        req["ranks"] = [str(r) for r in ranks]
    request = wire.request_arg(req)
    return [python, "-c", wire.program("follow", "follow"), request]


def tail_argv(python: str, root: str) -> list[str]:
    return [python, "-c", wire.program("follow", "tail"), wire.request_arg({"op": "tail", "root": root})]


def parse_message(host: str, raw: str, at: float = 0.0,
                  files: dict[str, tuple[str, int]] | None = None) -> Event | None:
    """One line printed by the FOLLOW script -> an Event (None for anything else). ``files``:
    the attempt's declared files (fid -> (path, inode)), named in each line event."""
    kind, _, rest = raw.partition("\t")
    if kind == "L":
        rank, _, rest = rest.partition("\t")
        role, _, rest = rest.partition("\t")
        where, _, text = rest.partition("\t")
        fid, _, end = where.partition(":")
        src = (files or {}).get(fid, ("", 0))
        # role smi: a Slurm node's npu-smi sample, a line of the shared job dir's state/telemetry/
        return Event(host, "smi" if role == "smi" else "line", int(rank) if rank.isdigit() else None, role,
                     text, at, fid, int(end) if end.isdigit() else 0, src[0], src[1])
    if kind == "F":
        fid, _, rest = rest.partition("\t")
        ino, _, path = rest.partition("\t")
        return Event(host, "file", text=path, at=at, fid=fid, end=int(ino) if ino.isdigit() else 0)
    if kind == "X":
        return Event(host, "end", text=rest, at=at)
    if kind == "H":
        return Event(host, "beat", at=at)
    if kind == "T":
        return parse_smi(host, rest, at)
    if kind == "P":
        pid, _, rank = rest.partition("\t")
        if pid.isdigit() and rank.isdigit():
            return Event(host, "pid", int(rank), text=pid, at=at)
    return None


def parse_smi(host: str, rest: str, at: float) -> Event | None:
    """``T <json string>``: one ``npu-smi info`` table of the node, as text (an Event ``smi``);
    a message cut by the line cap is not JSON and is dropped (one sample less, nothing else)."""
    try:
        text = json.loads(rest)
    except ValueError:
        return None
    return Event(host, "smi", text=text, at=at) if isinstance(text, str) else None


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

    def alive(self, at: float) -> None:
        """Bytes arrived (a whole message or not): the node is alive."""
        self.last_seen = max(self.last_seen, at)

    def begin(self) -> None:
        """A new attempt: the script numbers its files afresh."""
        self.files = {}
        self.attempts += 1

    def take(self, raw: str, at: float) -> Event | None:
        """One line of the FOLLOW script -> the event to publish (None: nothing to publish)."""
        event = parse_message(self.host, raw, at, self.files)
        if event is None:
            return None
        self.last_seen = event.at
        if event.kind == "file":
            self.files[event.fid] = (event.text, event.end)
            return None
        if event.kind in ("line", "smi") and event.path:
            with self._lock:  # what was READ: where a reconnect resumes (the queue still holds the rest)
                self.offsets[event.path] = [event.ino, event.end]
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
    facts of its :class:`NodeLog` (``self.node``, which holds the host's name too)."""

    node: NodeLog

    @property
    def host(self) -> str:
        return self.node.host

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

    def __init__(self, runner: LineStreamer, argv: list[str] | Callable[[dict], list[str]],
                 out: queue.Queue[Event], stop: threading.Event, *,
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
        if event is not None and not put_bounded(self.out, event, self.stop, self.node.alive):
            return False
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
            put_bounded(self.out, Event(self.runner.name, "lost", text=why, at=time.monotonic()), self.stop)
            if not self.reconnect:
                return
            if self.stop.wait(self.node.retry_delay(time.monotonic())):
                return


# ---------------------------------------------------------------- one thread for every node's process
def message_splitter() -> Lines:
    """What splits one follow process's stdout into messages: the host already caps each log
    line, so a message past :data:`MESSAGE_CAP` only comes from something else printing (a
    shell's banner); it is cut the same way, never re-joined."""
    return Lines(MESSAGE_CAP)


def process_argv(runner: CommandRunner, argv: Sequence[str], fresh: bool = False) -> list[str] | None:
    """The argv of a process on this machine that runs ``argv`` on the runner's host (its stdout
    the command's), or None: no such process (paramiko), follow through :class:`NodeStream`.
    ``fresh``: a reconnect, over a new connection (see ``OpenSSHRunner.process_argv``)."""
    return runner.process_argv(argv, fresh=fresh)


class PipeNode(NodeFacts):
    """One node as :class:`PipeHub` runs it: the argv of its current process, that process and
    its pipes, and the node's :class:`NodeLog`. The follower's thread calls :meth:`give_up`;
    everything else runs on the hub's thread."""

    def __init__(self, hub: PipeHub, runner: CommandRunner, argv_for: Callable[[dict], list[str]],
                 offsets: dict[str, list[int]] | None, reconnect: bool, backoff: tuple[float, ...]):
        self.hub, self.runner, self.argv_for, self.reconnect = hub, runner, argv_for, reconnect
        self.node = NodeLog(runner.name, offsets, backoff)
        self.proc: subprocess.Popen | None = None
        self.lines = message_splitter()
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

    def __init__(self, out: queue.Queue[Event], stop: threading.Event):
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
        n.cut, n.killed_at, n.lines, n.err, n.retry_at = False, None, message_splitter(), bytearray(), None
        n.node.begin()
        try:
            argv = process_argv(n.runner, n.argv_for(n.offsets_copy()), fresh=n.node.attempts > 1)
            if argv is None:
                raise TypeError(f"{n.runner.name} has no ssh client process to follow it with")
            n.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, start_new_session=True)
        except (AlaunchError, OSError, TypeError) as exc:
            n.proc = None
            self._lost(n, getattr(exc, "message", None) or str(exc), time.monotonic())
            return
        out, err = n.proc.stdout, n.proc.stderr
        assert out is not None and err is not None  # both PIPE
        for f, kind in ((out, "out"), (err, "err")):
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
                n.out_open, n.lines = False, message_splitter()
                self._tend(n, time.monotonic())
            return
        if kind == "err":
            n.err += data
            del n.err[:-4096]
            return
        if n.cut:
            return  # given up: resumed from the offsets by the next attempt
        at = time.monotonic()
        n.node.alive(at)  # any bytes are life: a long line's pieces too, not only whole messages
        for raw, _ in n.lines.feed(data):
            event = n.node.take(raw.decode("utf-8", "replace"), at)
            if event is not None and not put_bounded(self.out, event, self.stop, n.node.alive):
                return  # stopped while the loop was behind

    def _finish(self, n: PipeNode, now: float) -> None:
        """The attempt's process has ended: say why (unless the node ended) and plan the next."""
        proc, n.proc = n.proc, None
        assert proc is not None  # called for a node whose process has ended
        self._close_err(proc)
        code = proc.returncode
        if n.node.ended or self.stop.is_set():
            n.done = True
            return
        detail = n.err.decode("utf-8", "replace").strip().splitlines()[-1:] if code and not n.cut else []
        self._lost(n, "; ".join(detail) or "channel closed", now)

    def _lost(self, n: PipeNode, why: str, now: float) -> None:
        put_bounded(self.out, Event(n.host, "lost", text=why, at=now), self.stop)
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
