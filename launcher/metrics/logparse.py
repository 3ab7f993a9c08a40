"""Read MindSpore / MindFormers / msrun log lines into progress, failures and a summary.

Pure: no files, no terminals, no clocks. The same :class:`LogState` is fed the lines of
a fetched ``worker_0.log`` (``alaunch logs PATH``) and, line by line, a live stream
(``alaunch logs JOB -f``); :class:`JobLogs` keeps one state per (host, rank) and names
the first failure across all of them, in arrival order.

Formats recognised (all taken from real logs or the installed sources):

* MFLossMonitor, MindFormers 1.1 sink mode: ``{ Epoch:[  1/  5], step:[    2/  234],
  loss: 1.292, per_step_time: 383209ms, lr: ..., overflow cond: False, loss_scale: 1.0``;
  the non-sink ``loss:[x/y]`` form; 1.9's ``loss: %5.6f`` / ``loss:[%5.6f/%5.6f]`` with
  ``global_norm: [..]`` and an optional ``train_throughput_per_npu: 0.001T``; and the
  progress bar line after each (``96.9% |███| 5.03999 samples/s/p  0:01:54 }``).
* Eval / predict progress: ``Step[2/2067], cost time 1.1210s, ..., remaining time:
  0:19:17`` (1.1) and ``Step[2 / 2067]`` (1.9).
* ``Network Parameters: 3407872.`` (1.1: a count) and ``Network Parameters: 3 M.`` (1.9).
* Checkpoints: ``......Saving ckpt......``, ``Finish saving ckpt of epoch E step S``,
  1.9's ``... successfully saved at '<path>'`` and ``saved checkpoint from step 'N' to``.
* Failures: :mod:`launcher.metrics.signatures` (the table) and the traceback reader in
  :class:`LogState`; they explain a failure, they never make one (see :class:`JobLogs`).
"""

from __future__ import annotations

import functools
import re
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from launcher.metrics import signatures
from launcher.metrics.signatures import FATAL

T = TypeVar("T")

# ---------------------------------------------------------------- line patterns
_FLOAT = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)"
_NUM = r"(?P<{}>" + _FLOAT + r")"


@dataclass(frozen=True)
class LossFormat:
    """One generation's loss line: a name and a regex with named groups ``step``/``steps``/``loss``
    (and ``epoch``/``epochs``, ``avg``, ``ms`` when that generation prints them)."""

    generation: str
    pattern: re.Pattern[str]


#: Every MindFormers loss-line generation, newest first (all from real logs or installed sources).
LOSS_FORMATS: tuple[LossFormat, ...] = (
    # 2.x dynamic graph, mindformers/pynative/callback/loss_callback.py _print_log: no epoch,
    # ``{ step:[    1/   10], loss:  11.813965, per_step_time:  13570ms, lr: .., grad_norm: .., throughput: 1.36T }``
    LossFormat("2.x", re.compile(r"\{ step:\[\s*(?P<step>\d+)/\s*(?P<steps>\d+)\], loss:\s*" + _NUM.format("loss"))),
    # 1.1 - 1.9 MFLossMonitor (core/callback/callback.py print_output_info), sink and non-sink forms; 1.5+
    # drops the ``mindformers[`` logger prefix and the closing ``}``, adds global_norm / throughput
    LossFormat("1.x", re.compile(
        r"\{ Epoch:\[\s*(?P<epoch>\d+)/\s*(?P<epochs>\d+)\], step:\[\s*(?P<step>\d+)/\s*(?P<steps>\d+)\], "
        r"loss:\s*(?:\[\s*" + _NUM.format("loss_b") + r"/\s*" + _NUM.format("avg") + r"\]|"
        + _NUM.format("loss") + ")")),
    # 0.x ``print_output_info: Epoch:[  1/  1], step:[  124/  125], loss:[2.346/2.346], time:1949.995 ms, ..``
    LossFormat("0.x", re.compile(
        r"Epoch:\[\s*(?P<epoch>\d+)/\s*(?P<epochs>\d+)\], step:\[\s*(?P<step>\d+)/\s*(?P<steps>\d+)\], "
        r"loss:\s*\[\s*" + _NUM.format("loss_b") + r"/\s*" + _NUM.format("avg") + r"\], time:\s*(?P<ms>[\d.]+) ?ms")),
)

#: (kind, pattern) of the lines each generation writes when a run ends normally
#: (trainer/base_trainer.py: ``.........Training Over!.............`` since 0.x; Evaluate / Predict).
#: The 2.x dynamic-graph trainer prints no end line: its run is complete when step == steps.
END_MARKERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("train", re.compile(r"\.{3,}Training Over!")),
    ("eval", re.compile(r"Evaluate Over!")),
    ("predict", re.compile(r"\.{3,}Predict Over!")),
    # 1.9's "Training completed. Final checkpoint saved." (a train log whose last step is short of
    # its total and that has no marker is "incomplete"; with sink_size 2 the last *logged* step of a
    # finished run is 3124/3125: real-world dian-team_worker_0.log, so the marker decides)
    ("train", re.compile(r"Training completed\.")),
)

_PER_STEP = re.compile(r"per_step_time:\s*(\d+)ms")
_LR = re.compile(r"\blr: \[?\s*(" + _FLOAT + r")")
_GNORM = re.compile(r"(?:global|grad)_norm:? \[?\s*(" + _FLOAT + r"|NaN)")
_TFLOPS = re.compile(r"(?:train_throughput_per_npu|throughput):\s*(" + _FLOAT + r")T")
_DURATION = r"(?:\d+ days?, )?\d+:\d\d:\d\d"
_BAR = re.compile(r"(\d+(?:\.\d+)?)% \|[^|]*\| (" + _FLOAT + r") samples/s/p\s+(" + _DURATION + r")")
_EVAL_STEP = re.compile(r"Step\[\s*(\d+)\s*/\s*(\d+)\s*\], cost time (" + _FLOAT + r")s"
                        r"(?:.*remaining time: (" + _DURATION + r"))?")
_PARAMS = re.compile(r"Network Parameters: (\d+)(\s*M)?")
_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\d)[ -](\d\d:\d\d:\d\d)(?:[,.](\d{1,6}))?")
_CKPT_SAVING = re.compile(r"\.{3,}Saving ckpt\.{3,}")
_CKPT_FINISH = re.compile(r"Finish saving ckpt of epoch (\d+) step (\d+)")
_CKPT_PATH = re.compile(r"(?:Model|Optimizer) checkpoint successfully saved at '([^']+)'"
                        r"|saved checkpoint from step '(\d+)' to '([^']+)'")

_WORKER_EXIT = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)")
_SCHEDULER_EXIT = re.compile(r"Scheduler process (\d+) exit with exception")
_TRACEBACK_START = "Traceback (most recent call last):"
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
TRACEBACK_TAIL = 10  # lines of a traceback kept for the report
#: An error this long before a timeout, with no progress between, is why the stream hung; closer
#: than this it is part of the same report (CANN prints a burst of lines within a second or two).
EXPLAIN_GAP = timedelta(seconds=30)


@dataclass(frozen=True)
class LossPoint:
    """One MFLossMonitor line."""

    epoch: int
    epochs: int
    step: int  # step within the epoch
    steps: int  # steps per epoch
    loss: float
    per_step_ms: int | None = None
    lr: float | None = None
    global_norm: float | None = None
    tflops_per_npu: float | None = None
    avg_loss: float | None = None  # the non-sink form prints the running mean too
    generation: str = "1.x"  # which of LOSS_FORMATS printed it

    @property
    def global_step(self) -> int:
        return (self.epoch - 1) * self.steps + self.step

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps


@dataclass(frozen=True)
class EvalStep:
    step: int
    total: int
    cost_s: float
    remaining_s: int | None


@dataclass(frozen=True)
class Failure:
    """A recognised failure: its kind, the line (1-based) it starts on, its text, and — from the
    signature table — its cause in words and a hint."""

    kind: str
    fatal: bool
    line: int
    message: str
    lines: tuple[str, ...] = ()  # traceback tail (last TRACEBACK_TAIL lines)
    host: str | None = None
    rank: int | None = None
    cause: str = ""
    hint: str = ""
    family: str = ""  # the part of the stack (HCCL, runtime, native crash, ...): signatures.py
    code: str | None = None  # a CANN code (EI0002) or a runtime result number (507046)
    role: str = signatures.CAUSE  # cause | effect | generic (signatures.py)
    remote: int | None = None  # the remote rank a timeout names
    at: datetime | None = None  # the line's own timestamp, else the stream's last one before it
    final: bool = False  # the process stopped right after this line (a crash, a monitor's stop)
    remote_host: str | None = None  # the server a heartbeat-lost report names

    @property
    def where(self) -> str:
        """``rank 3 on h1`` / ``h1`` / ``rank 3``: the stream in words."""
        rank = f"rank {self.rank}" if self.rank is not None else ""
        host = self.host if self.host not in (None, "local") else ""
        return f"{rank} on {host}" if rank and host else rank or host or "the log"


@dataclass
class Checkpoint:
    step: int | None
    epoch: int | None = None
    path: str | None = None
    done: bool = False


def parse_duration(text: str) -> int:
    """Seconds of a ``datetime.timedelta`` string: ``0:19:17``, ``1 day, 2:03:04``."""
    days = 0
    if "day" in text:
        head, text = text.split(",", 1)
        days = int(head.split()[0])
    h, m, s = (int(x) for x in text.strip().split(":"))
    return days * 86400 + h * 3600 + m * 60 + s


def parse_timestamp(line: str) -> datetime | None:
    """The first timestamp of a line, in the MindFormers or MindSpore format."""
    m = _TIMESTAMP.search(line)
    if not m:
        return None
    frac = (m.group(3) or "0")[:3].ljust(3, "0")
    second = _second(m.group(1), m.group(2))
    return None if second is None else second + timedelta(milliseconds=int(frac))


@functools.lru_cache(maxsize=256)
def _second(day: str, clock: str) -> datetime | None:
    """One second's ``datetime`` from ``YYYY-MM-DD`` and ``HH:MM:SS`` (the pattern fixed their
    digits), by slicing, and cached: strptime was 15 % of the follower's CPU."""
    try:
        return datetime(int(day[:4]), int(day[5:7]), int(day[8:10]), int(clock[:2]), int(clock[3:5]), int(clock[6:8]))
    except ValueError:  # a 13th month, a 61st second: not a time
        return None


def parse_loss(line: str) -> LossPoint | None:
    for fmt in LOSS_FORMATS:
        m = fmt.pattern.search(line)
        if m:
            break
    else:
        return None
    groups = m.groupdict()
    loss = groups["loss"] if groups.get("loss") is not None else groups["loss_b"]
    def opt(rx: re.Pattern[str], conv: Callable[[str], T]) -> T | None:
        found = rx.search(line, m.end())
        return conv(found.group(1)) if found else None

    per_step = opt(_PER_STEP, int)
    if per_step is None and groups.get("ms"):
        per_step = int(float(groups["ms"]))
    gnorm = opt(_GNORM, float)
    return LossPoint(
        epoch=int(groups.get("epoch") or 1), epochs=int(groups.get("epochs") or 1),
        step=int(m.group("step")), steps=int(m.group("steps")), loss=float(loss),
        per_step_ms=per_step, lr=opt(_LR, float), global_norm=gnorm,
        tflops_per_npu=opt(_TFLOPS, float),
        avg_loss=float(groups["avg"]) if groups.get("avg") is not None else None,
        generation=fmt.generation,
    )


def parse_eval_step(line: str) -> EvalStep | None:
    m = _EVAL_STEP.search(line)
    if not m:
        return None
    return EvalStep(int(m.group(1)), int(m.group(2)), float(m.group(3)),
                    parse_duration(m.group(4)) if m.group(4) else None)


def signal_text(number: int) -> str:
    """``signal 9 (SIGKILL)``: the number a user can look up and the name they know."""
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def exit_status_text(code: int, *, shell: bool = False) -> str:
    """A process's end in words. ``Popen`` reports death by signal N as ``-N``; a shell (and
    the launcher's supervisor) as ``128 + N`` (``shell``)."""
    if code < 0:
        return f"was killed by {signal_text(-code)}"
    if shell and 128 < code < 128 + 65:
        return f"exited with code {code} (killed by {signal_text(code - 128)})"
    return f"exited with code {code}"


def match_failure(line: str) -> tuple[str, bool, str] | None:
    """(kind, fatal, message) of a one-line failure signature, or None (benign lines: None)."""
    found = signatures.match(line)
    if found is None or found.severity == signatures.BENIGN:
        return None
    return found.name, found.severity == FATAL, found.line


def _is_exception_line(line: str) -> bool:
    return bool(line) and not line[0].isspace()


#: Prefixes users' tools put before every line: OpenMPI ``--tag-output`` (``[1,0]<stderr>:``),
#: torchrun / MindSpore ``[rank0]:``, Ray ``(Worker pid=12) ``, pdsh / ``mpirun -H``'s
#: ``host: `` (a name with a letter and a digit, a dot or a hyphen: not a CANN code, not an
#: exception's name, not ``Note:``).
_PREFIX = re.compile(
    r"^(?:\[(?P<mpijob>\d+),(?P<mpirank>\d+)\]<std(?:out|err)>:\s?"
    r"|\[rank(?P<trank>\d+)\]:\s?"
    r"|\((?P<actor>[\w ]+?) pid=\d+\)\s"
    r"|(?P<host>(?![EW][0-9A-Z]\d{4}:)(?=[\w.-]*[A-Za-z])(?=[\w.-]*[\d.-])[A-Za-z0-9][\w.-]{0,62}"
    r"|\d{1,3}(?:\.\d{1,3}){3}): )")


def split_prefix(line: str) -> tuple[str | None, int | None, str] | None:
    """(host, rank, the line without it) of a line a tool prefixed, or None. The host is the
    prefix's name (``worker-1``); the rank is only what the tool numbers as one."""
    m = _PREFIX.match(line)
    if m is None:
        return None
    rank = m.group("mpirank") or m.group("trank")
    return m.group("host") or m.group("actor"), int(rank) if rank is not None else None, line[m.end():]


_SO_FRAME = re.compile(r"(lib[\w+.-]*?\.so)(?:\.[\d.]+)?\b|\b((?:hccl|hcom|hccp|ge|acl|rtsp?|mindspore)::)")
_SYSTEM_LIBS = ("libc.so", "libc-", "libpthread", "libstdc++", "libgcc", "libpython", "libdl", "ld-linux",
                "libprotobuf", "libglog", "libunwind")
CRASH_FRAMES = 40  # lines after a crash report read for the library that crashed


# ---------------------------------------------------------------- per-stream state
@dataclass
class LogState:
    """What one log stream (one host, one rank) has said so far. Feed it lines in order.

    ``failure`` is evidence, not state: the stream's last words when they explain a death — a
    fatal signature or a traceback with no progress after it. Progress (a loss line, an eval
    step, a checkpoint, an end marker) after a traceback or a fatal-looking line means it was
    handled: it is counted in ``handled`` and explains nothing."""

    host: str | None = None
    rank: int | None = None
    lines: int = 0
    losses: list[LossPoint] = field(default_factory=list)
    eval_step: EvalStep | None = None
    samples_per_s: float | None = None  # per process, from the progress bar
    eta_s: int | None = None
    network_params: int | None = None
    network_params_millions: bool = False
    checkpoints: list[Checkpoint] = field(default_factory=list)
    errors: list[Failure] = field(default_factory=list)  # non-fatal ERROR lines (first 20)
    cluster_retries: int = 0
    cluster_formed: bool = False  # "Cluster is successfully initialized": the retries were the normal forming
    ended: str | None = None  # the END_MARKERS kind seen ("train", "eval", "predict")
    handled: int = 0  # tracebacks / fatal-looking lines followed by progress
    _evidence: list[Failure] = field(default_factory=list)  # since the last progress
    _errors_since: list[Failure] = field(default_factory=list)  # ERROR lines since the last progress
    first_time: datetime | None = None
    last_time: datetime | None = None
    _traceback: list[str] | None = None
    _traceback_line: int = 0
    _crash: int = -1  # index in _evidence of a native crash still looking for its library
    _crash_lines: int = 0
    step_marks: list[tuple[int, datetime | None, int | None]] = field(default_factory=list)
    # (global step, the loss line's time, its per_step_time ms): step times for stragglers

    # -- feeding
    def feed_lines(self, lines: Iterable[str]) -> LogState:
        for line in lines:
            self.feed(line)
        return self

    def feed(self, line: str) -> None:
        line = line.rstrip("\r\n")
        prefixed = split_prefix(line)
        self.feed_stripped(prefixed[2] if prefixed else line)

    def feed_stripped(self, line: str) -> None:
        """One line whose tool prefix (:func:`split_prefix`) is already gone."""
        self.lines += 1
        if self._crash_lines > 0:
            self._crash_frame(line)
        if self._traceback is not None and self._feed_traceback(line):
            return
        if _TRACEBACK_START in line:
            self._traceback = [line]
            self._traceback_line = self.lines
            return
        ts = parse_timestamp(line) if line[:1] in "[0123456789-\\|/" else None
        if ts is not None:
            self.first_time = self.first_time or ts
            self.last_time = ts
        if "step:[" in line:
            point = parse_loss(line)
            if point is not None:
                self.losses.append(point)
                self.step_marks.append((point.global_step, ts, point.per_step_ms))
                self.eta_s = None
                self._progressed()
                return
        if "samples/s/p" in line:
            m = _BAR.search(line)
            if m:
                self.samples_per_s = float(m.group(2))
                self.eta_s = parse_duration(m.group(3))
                return
        if "Step[" in line:
            step = parse_eval_step(line)
            if step is not None:
                self.eval_step = step
                self.eta_s = step.remaining_s
                self._progressed()
                return
        if "Network Parameters" in line:
            m = _PARAMS.search(line)
            if m:
                self.network_params = int(m.group(1))
                self.network_params_millions = bool(m.group(2))
                return
        if "ckpt" in line or "checkpoint" in line:
            if self._feed_checkpoint(line):
                self._progressed()
                return
        if "Over!" in line or "completed" in line:
            for kind, rx in END_MARKERS:
                if rx.search(line):
                    self.ended = kind
                    self._progressed()
                    return
        self._match(line)

    def _match(self, line: str) -> None:
        if "Cluster is successfully initialized" in line:
            self.cluster_formed = True
            return
        found = signatures.match(line)
        if found is None:
            return
        if found.name == "cluster_retry":
            self.cluster_retries += 1
            return
        if found.severity == signatures.BENIGN:
            return
        if found.severity == FATAL and found.family == "native crash":
            if self._crash_lines > 0:
                return  # the same crash report, one more of its lines
            self._crash, self._crash_lines = len(self._evidence), CRASH_FRAMES
        self._record(self._failure_of(found, self.lines, found.line))

    def _failure_of(self, found: signatures.Finding, line_no: int, message: str,
                    lines: tuple[str, ...] = ()) -> Failure:
        return Failure(found.name, found.severity == FATAL, line_no, message, lines, self.host, self.rank,
                       found.cause, found.hint, found.family, found.code, found.role, found.remote,
                       self._time_of(found.line), found.final, found.remote_host)

    def _time_of(self, line: str) -> datetime | None:
        """A failure line's own timestamp (CANN puts it after the code: ``EI0002: [PID: 1] 2025-...``),
        else the last one the stream printed before it."""
        return (parse_timestamp(line) if _TIMESTAMP.search(line) else None) or self.last_time

    def _crash_frame(self, line: str) -> None:
        """A backtrace line after a native crash: the first library not the system's names it."""
        self._crash_lines -= 1
        m = _SO_FRAME.search(line)
        where = m and (m.group(1) or m.group(2))
        if not where or any(where.startswith(s) for s in _SYSTEM_LIBS) or self._crash >= len(self._evidence):
            return
        f = self._evidence[self._crash]
        self._evidence[self._crash] = replace(f, cause=f"{f.cause} in {where}")
        self._crash_lines = 0

    def _progressed(self) -> None:
        """Progress after fatal-looking lines: they were handled (the run went on). A crash or a
        monitor's stop (``final``) stays: the process that wrote it is gone; lines after it in the
        same stream are another process's (a combined console log)."""
        self._errors_since.clear()
        if self._evidence:
            kept = [f for f in self._evidence if f.final]
            self.handled += len(self._evidence) - len(kept)
            self._evidence[:] = kept
            self._crash = -1

    def finish(self) -> None:
        """End of stream: a traceback still open is complete now."""
        if self._traceback is not None:
            self._close_traceback(self._traceback[-1])

    def _feed_traceback(self, line: str) -> bool:
        """Collect a traceback block; True when the line belonged to it."""
        block = self._traceback
        assert block is not None
        if not line.strip():
            return True
        if any(line.startswith(c) for c in _CHAINED) or line.startswith(_TRACEBACK_START):
            block.append(line)
            return True
        block.append(line)
        if _is_exception_line(line) and not line.startswith("Traceback"):
            self._close_traceback(line.strip())
        return True

    def _close_traceback(self, message: str) -> None:
        block = self._traceback or []
        self._traceback = None
        found = signatures.match(message)  # "RuntimeError: ... EE9999 ..." names its cause
        tail = tuple(block[-TRACEBACK_TAIL:])
        if found is not None and found.severity == FATAL:
            self._record(replace(self._failure_of(found, self._traceback_line, message, tail), kind="traceback"))
            return
        self._record(Failure("traceback", True, self._traceback_line, message, tail, self.host, self.rank,
                             f"Python exception on this rank: {message}",
                             "the traceback shows where; fix the error or the input it names",
                             "python", at=self.last_time))

    def _record(self, failure: Failure) -> None:
        if failure.fatal:
            if len(self._evidence) < 50:
                self._evidence.append(failure)
            return
        if len(self.errors) < 20:
            self.errors.append(failure)
        if len(self._errors_since) < 20:
            self._errors_since.append(failure)

    @property
    def failure(self) -> Failure | None:
        """What the log says killed this stream, or None. Of the fatal findings since the last
        progress: the first that says what went wrong (a ``cause`` line before a traceback that
        names one, a plain Python exception after them), else the first timeout or death
        (``effect``), else the first generic error line; within each, a line with a CANN code or
        a runtime result (EE1002, 507046) before one without; with the last traceback's lines.
        Measured reasons (real logs): EJ0001's line says what to do, the generic ``[ERROR]
        HCCL`` line before it does not; a data-queue error ten minutes before EE9999 / 507011
        is why the stream stopped; msrun's "worker exit" is the effect of the rank's own words.
        After an end marker only a cause counts (teardown lines of a finished run are noise)."""
        evidence = self._evidence
        if self.ended:
            evidence = [f for f in evidence if f.role == signatures.CAUSE and (f.final or f.kind != "traceback")]
        if not evidence:
            return None
        tracebacks = [f for f in evidence if f.kind == "traceback"]
        lines = tracebacks[-1].lines if tracebacks else ()

        def rank(i_f: tuple[int, Failure]) -> tuple[int, int, int, int]:
            i, f = i_f
            plain = f.kind == "traceback" and f.family == "python"
            # MindSpore raises a bare RuntimeError and prints the CANN block that explains it after
            tier = 1 if plain and f.message.startswith("RuntimeError") else signatures.ROLE_ORDER[f.role]
            return tier, int(plain), int(f.code is None), i

        first = min(enumerate(evidence), key=rank)[1]
        earlier = self._explaining(first, evidence)
        if earlier is not None:
            first = earlier
        elif first.role == signatures.EFFECT and first.remote is None and first.remote_host is None:
            # EI0002 says "remote rank [unknown]"; HCCL's next line names the server that went silent
            named = next((f for f in evidence if f.remote is not None or f.remote_host is not None), None)
            if named is not None:
                first = replace(first, remote=named.remote, remote_host=named.remote_host)
        return first if first.lines or not lines else replace(first, lines=lines)

    def _explaining(self, first: Failure, evidence: list[Failure]) -> Failure | None:
        """An error well before a timeout or a generic failure, with no progress between, after
        the run had made progress: the earliest such line is why the stream hung (a real log: a
        data-queue ``ParseType`` error ten minutes before the EE9999 / 507011 it caused). Within
        ``EXPLAIN_GAP`` of it, a line is part of the same report, not its cause."""
        if first.role == signatures.CAUSE or first.at is None or not (self.losses or self.eval_step):
            return None
        found = [f for f in evidence + self._errors_since
                 if f.at is not None and f.role != signatures.EFFECT and f.at <= first.at - EXPLAIN_GAP]
        if not found:
            return None
        cand = min(found, key=lambda f: f.at)  # type: ignore[arg-type,return-value]
        ago = int((first.at - cand.at).total_seconds())  # type: ignore[operator]
        base = cand.cause if cand.kind != "error_line" else f"an error: {cand.message[:200]}"
        later = f"{first.code} " if first.code else ""
        return replace(cand, fatal=True, cause=f"{base} ({ago // 60} min {ago % 60} s before the {later}"
                                                f"failure it explains: {first.cause})",
                       hint=cand.hint or f"the later failure is its consequence; {first.hint}")

    @property
    def complete(self) -> bool | None:
        """True: reached its last step or an end marker; False: stopped short (incomplete);
        None: no progress to judge by."""
        if self.ended:
            return True
        progress = self.progress()
        if progress is None:
            return None
        return progress[0] >= progress[1]

    @property
    def status(self) -> str:
        """``failed`` (the log explains a death), ``incomplete`` or ``ok``."""
        if self.failure is not None:
            return "failed"
        return "incomplete" if self.complete is False else "ok"

    def _feed_checkpoint(self, line: str) -> bool:
        last = self.losses[-1] if self.losses else None
        if _CKPT_SAVING.search(line):
            self.checkpoints.append(Checkpoint(last.global_step if last else None,
                                               last.epoch if last else None))
            return True
        m = _CKPT_FINISH.search(line)
        if m:
            epoch = int(m.group(1))
            if self.checkpoints and not self.checkpoints[-1].done:
                self.checkpoints[-1].done = True
                self.checkpoints[-1].epoch = epoch
            else:
                self.checkpoints.append(Checkpoint(None, epoch, done=True))
            return True
        m = _CKPT_PATH.search(line)
        if m:
            path = m.group(1) or m.group(3)
            at: int | None = int(m.group(2)) if m.group(2) else (last.global_step if last else None)
            if self.checkpoints and self.checkpoints[-1].path is None and not self.checkpoints[-1].done:
                self.checkpoints[-1].path = path
            else:
                self.checkpoints.append(Checkpoint(at, last.epoch if last else None, path))
            return True
        return False

    # -- reading
    @property
    def kind(self) -> str:
        if self.losses:
            return "train"
        if self.eval_step is not None:
            return "eval"
        return "unknown"

    def progress(self) -> tuple[int, int] | None:
        """(done, total) steps: global train steps, or eval/predict examples."""
        if self.losses:
            last = self.losses[-1]
            return last.global_step, last.total_steps
        if self.eval_step is not None:
            return self.eval_step.step, self.eval_step.total
        return None

    def summary(self) -> Summary:
        losses = [p.loss for p in self.losses]
        progress = self.progress()
        duration = ((self.last_time - self.first_time).total_seconds()
                    if self.first_time and self.last_time else None)
        per_step = [p.per_step_ms for p in self.losses[1:] if p.per_step_ms]  # first includes compile
        last = self.losses[-1] if self.losses else None
        return Summary(
            host=self.host, rank=self.rank, kind=self.kind,
            steps_done=progress[0] if progress else None, steps_total=progress[1] if progress else None,
            epoch=last.epoch if last else None, epochs=last.epochs if last else None,
            loss_lines=len(losses),
            first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None,
            min_loss=min(losses) if losses else None,
            mean_step_ms=(sum(per_step) / len(per_step)) if per_step else None,
            samples_per_s=self.samples_per_s, eta_s=self.eta_s, duration_s=duration,
            network_params=self.network_params, network_params_millions=self.network_params_millions,
            checkpoints=[asdict(c) for c in self.checkpoints],
            failure=asdict(self.failure) if self.failure else None,
            errors=len(self.errors), cluster_retries=self.cluster_retries, ended=self.ended,
            status=self.status, complete=self.complete, handled=self.handled, cluster_formed=self.cluster_formed,
        )


@dataclass(frozen=True)
class Summary:
    """The end-of-run facts of one stream, ready for a table or ``--json``."""

    host: str | None
    rank: int | None
    kind: str
    steps_done: int | None
    steps_total: int | None
    epoch: int | None
    epochs: int | None
    loss_lines: int
    first_loss: float | None
    last_loss: float | None
    min_loss: float | None
    mean_step_ms: float | None
    samples_per_s: float | None
    eta_s: int | None
    duration_s: float | None
    network_params: int | None
    network_params_millions: bool
    checkpoints: list[dict[str, Any]]
    failure: dict[str, Any] | None
    errors: int
    cluster_retries: int
    ended: str | None = None
    status: str = "ok"  # ok | incomplete | failed (what the log shows)
    complete: bool | None = None
    handled: int = 0  # tracebacks / fatal-looking lines the run went on after
    cluster_formed: bool = False  # retries that ended in a formed cluster are no alarm

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["failure"] is not None:
            d["failure"]["lines"] = list(d["failure"]["lines"])
            at = d["failure"]["at"]
            d["failure"]["at"] = at.isoformat(sep=" ", timespec="milliseconds") if at is not None else None
        return d


# ---------------------------------------------------------------- all streams of a job
_CLUSTER_CAUSES = ("node_lost", "nodes_timed_out", "cluster_build_timeout", "ring_allreduce")
#: Two failures this close are one moment: hosts' clocks differ by about this much (NTP) and a
#: burst of lines spans it; within it the one that says what went wrong is the first failure.
SAME_MOMENT = timedelta(seconds=5)


def _is_echo(f: Failure) -> bool:
    """A rank's failure that only echoes a broken cluster: a signal, a failed host all-reduce."""
    words = f.message + " " + f.cause
    return f.kind in ("signal", "ring_allreduce") or "SIGTERM" in words or "all-reduce" in words \
        or "RingAllReduce" in words


@dataclass
class JobLogs:
    """One :class:`LogState` per (host, rank), and the job's first failure.

    ``first_failure`` comes only from process facts: msrun's report of a dead worker or
    scheduler (:meth:`feed_msrun`) and a node's msrun exit code (:meth:`note_exit`). Log lines
    never set it; they explain it (:meth:`explain`): the failing rank's own last words, else
    the cluster's (a scheduler's ``The node: 1 is timed out``), else the exit status in words."""

    states: dict[tuple[str, int | None], LogState] = field(default_factory=dict)
    first_failure: Failure | None = None
    worker_pids: dict[tuple[str, int], int] = field(default_factory=dict)  # (host, pid) -> rank
    msrun: dict[str, list[Failure]] = field(default_factory=dict)  # host -> msrun's own findings
    exits: dict[tuple[str, int], Failure] = field(default_factory=dict)  # every worker exit msrun reported
    _first_fact: Failure | None = field(default=None, repr=False)  # first_failure before explaining

    def note_worker(self, host: str, pid: int, rank: int) -> None:
        """Remember which rank a worker process of ``host`` is (msrun names the dead by pid)."""
        self.worker_pids[(host, pid)] = rank

    def feed_msrun(self, host: str, line: str) -> Failure | None:
        """One line of msrun's own output on ``host``. A worker that died without a word (SIGKILL,
        the OOM killer) leaves nothing in its log: msrun's ``Worker process <pid> exit with
        exception. Error code: <code>`` is the only trace, and it names a pid, not a rank. The
        rank comes from :meth:`note_worker`, or is the host's only worker rank. Returns the
        job's first failure when this line revealed it (a process fact, as msrun saw it)."""
        m = _WORKER_EXIT.search(line)
        if m is None:
            found = signatures.match(line)
            if found is not None and found.severity == FATAL:
                self.msrun.setdefault(host, []).append(
                    Failure(found.name, True, 0, found.line, host=host, cause=found.cause, hint=found.hint))
            if _SCHEDULER_EXIT.search(line):
                return self._first(Failure("scheduler_exit", True, 0, line.strip(), (line.strip(),), host,
                                           cause=found.cause if found else "", hint=found.hint if found else ""))
            return None
        pid, code = int(m.group(1)), int(m.group(2))
        rank = self.worker_pids.get((host, pid))
        if rank is None:
            ranks = {r for (h, r) in self.states if h == host and r is not None}
            rank = ranks.pop() if len(ranks) == 1 else None
        who = f"worker process {pid}" + (f" (rank {rank})" if rank is not None else "")
        failure = Failure("worker_exit", True, 0, f"{who} {exit_status_text(code)}, as msrun reported",
                          lines=(line.strip(),), host=host, rank=rank,
                          cause=f"{who} {exit_status_text(code)}", family="msrun", role=signatures.EFFECT,
                          at=parse_timestamp(line))
        if rank is not None:
            self.exits.setdefault((host, rank), failure)
        return self._first(failure)

    def note_exit(self, host: str, node_rank: int | None, code: int | None) -> Failure | None:
        """A node's msrun ended with ``code`` (the supervisor's record; shell style 128+N)."""
        if code in (None, 0):
            return None
        text = f"msrun on node {node_rank} {exit_status_text(code, shell=True)}"
        return self._first(Failure("node_exit", True, 0, text, host=host, cause=text))

    def _first(self, failure: Failure) -> Failure | None:
        if self.first_failure is not None:
            return None
        self._first_fact = failure
        self.first_failure = self.explain(failure)
        return self.first_failure

    def state(self, host: str, rank: int | None) -> LogState:
        key = (host, rank)
        if key not in self.states:
            self.states[key] = LogState(host=host, rank=rank)
        return self.states[key]

    def feed(self, host: str, rank: int | None, line: str) -> None:
        """Feed one line of a rank's (or the scheduler's) log. Never a failure by itself. A line a
        tool prefixed (``worker-1: ``, ``[1,0]<stderr>:``) loses the prefix; in a file not placed
        on a rank (a console log of several) the prefix names the stream."""
        line = line.rstrip("\r\n")
        prefixed = split_prefix(line)
        if prefixed is not None:
            p_host, p_rank, line = prefixed
            if (rank is None and p_host is not None) or p_rank is not None:
                host = p_host or host
                rank = p_rank if p_rank is not None else rank
        self.state(host, rank).feed_stripped(line)

    def finish(self) -> Failure | None:
        for st in self.states.values():
            st.finish()
        if self.first_failure is not None:
            self.first_failure = self.explain(self._first_fact or self.first_failure)
        return self.first_failure

    # -- explaining
    def explain(self, failure: Failure, _follow: bool = True) -> Failure:
        """``failure`` (a process fact) with the cause and hint the logs give, and the rank's
        traceback lines: its own stream's evidence first, then the cluster's. When the rank's
        own words are a timeout naming its remote rank (EI0002 ``remote rank: [1]``), that rank
        failed first: the answer is its failure (its own words, msrun's report of its death, or
        that it went silent), whichever process msrun happened to report first."""
        own, rank = None, failure.rank
        if failure.rank is not None and failure.host is not None:
            st = self.states.get((failure.host, failure.rank))
            own = st.failure if st is not None else None
            if _follow and own is not None and own.role == signatures.EFFECT:
                root = self._remote_of(own)
                if root is not None:
                    return root if root.kind in ("rank_silent", "worker_exit") else self.explain(root, False)
        elif failure.host is not None:  # a node's msrun failed: the rank whose log says why is named
            rank, own = next(((r, s.failure) for (h, r), s in sorted(self.states.items(), key=lambda kv: str(kv[0]))
                              if h == failure.host and r is not None and s.failure is not None), (None, None))
        cluster = self.cluster_cause()
        pick = own
        if pick is None or (cluster is not None and _is_echo(pick)):
            # a lost node is the root cause; a rank's SIGTERM or a failed all-reduce is its echo
            # (MindSpore fails the other ranks by itself ~30 s after a node drops off the network).
            # A rank's own exception (FileNotFoundError, ...) stays its cause.
            pick = cluster or own
        if pick is None:
            pick = next((f for f in self.msrun.get(failure.host or "", [])), None)
        if pick is None:
            return failure
        lines = pick.lines or (own.lines if own is not None else ()) or failure.lines
        return replace(failure, fatal=True, lines=lines,
                       rank=failure.rank if failure.rank is not None or pick is not own else rank,
                       cause=pick.cause or failure.cause, hint=pick.hint or failure.hint,
                       family=pick.family or failure.family, code=pick.code or failure.code,
                       at=failure.at or pick.at)

    def cluster_cause(self) -> Failure | None:
        """A cluster-level cause anywhere (scheduler log, msrun's output): a node lost or missing.
        The root cause wins over its echo whatever stream was read first: a lost node (the
        scheduler's word) before a rank's failed all-reduce (``_CLUSTER_CAUSES`` is in that order)."""
        found = [f for st in self.states.values() for f in st._evidence if f.kind in _CLUSTER_CAUSES]
        found += [f for fs in self.msrun.values() for f in fs if f.kind in _CLUSTER_CAUSES]
        return min(found, key=lambda f: _CLUSTER_CAUSES.index(f.kind), default=None)

    def stream_failures(self) -> list[Failure]:
        """Every stream's own failure (its log's word on why it stopped), in stream order."""
        return [st.failure for st in self.states.values() if st.failure is not None]

    def root(self) -> Failure | None:
        """The failure that came first across the ranks, by time: the earliest stream failure
        (within ``SAME_MOMENT`` of it, one that says what went wrong beats a timeout or a generic
        line: clocks of two hosts differ by that much); a timeout naming its remote rank points at
        that rank's own failure, or at the rank itself when its log says nothing (SIGKILL)."""
        found = self.stream_failures()
        if not found:
            return None
        times = [f.at for f in found if f.at is not None]
        pool = found
        if times:  # a failure with no time at all cannot be placed: it stays a candidate
            t0 = min(times)
            pool = [f for f in found if f.at is None or f.at - t0 <= SAME_MOMENT]
        first = min(pool, key=lambda f: (signatures.ROLE_ORDER[f.role], f.at or datetime.max, found.index(f)))
        return self._remote_of(first) or first

    def _remote_of(self, failure: Failure) -> Failure | None:
        """The remote a timeout names (a rank, or a server a heartbeat-lost report names): its own
        failure, else a stand-in saying it went silent."""
        if failure.remote is not None and failure.remote != failure.rank:
            states = [s for (h, r), s in self.states.items() if r == failure.remote]
        elif failure.remote_host is not None and failure.remote_host != failure.host:
            states = [s for (h, r), s in self.states.items() if h == failure.remote_host and r is not None]
        else:
            return None
        if not states:
            return None
        own = [s.failure for s in states if s.failure is not None and s.failure.role != signatures.EFFECT]
        if own:
            return min(own, key=lambda f: (f.at is None, f.at or datetime.max))
        st = min(states, key=lambda s: (s.last_time is None, s.last_time or datetime.max))
        fact = self.exits.get((st.host, st.rank))  # type: ignore[arg-type]
        if fact is not None:  # msrun saw it die: its words (killed by signal 9) say how
            return replace(fact, cause=f"{fact.cause}; {failure.where} timed out waiting for it")
        last = f" after {st.last_time:%H:%M:%S}" if st.last_time else ""
        return Failure("rank_silent", True, st.lines, f"rank {st.rank} stopped logging{last}",
                       host=st.host, rank=st.rank,
                       cause=f"rank {st.rank} stopped without a word{last} (killed, or its node lost): "
                             f"{failure.where} timed out waiting for it",
                       hint="read dmesg / the OOM killer's log on its host; msrun's log names its exit",
                       family="signal", role=signatures.CAUSE, at=st.last_time)

    def consequences(self, root: Failure | None = None) -> list[Failure]:
        """The other streams' failures, in time order: what followed the root cause."""
        root = root if root is not None else self.verdict()
        if root is None:
            return []
        others = [f for f in self.stream_failures() if (f.host, f.rank) != (root.host, root.rank)]
        return sorted(others, key=lambda f: (f.at is None, f.at or datetime.max))

    def log_failure(self) -> Failure | None:
        """Without process facts (fetched files read locally): the stream whose log explains the
        first death (:meth:`root`), explained like a process fact would be."""
        first = self.root()
        if first is not None:
            return self.explain(first) if first.kind != "rank_silent" else first
        for found in self.msrun.values():
            if found:
                return found[0]
        return None

    def verdict(self) -> Failure | None:
        """The failure to report: the process fact when there is one (explained again with every
        line read so far: the scheduler's word on a lost node may arrive after the rank's death),
        else the logs' word."""
        if self.first_failure is not None:
            return self.explain(self._first_fact or self.first_failure)
        return self.log_failure()

    def best_traceback(self) -> Failure | None:
        """The traceback to show: of the failing rank if it has one, else the first one."""
        tracebacks = [s.failure for s in self.states.values()
                      if s.failure is not None and s.failure.kind == "traceback"]
        first = self.verdict()
        for tb in tracebacks:
            if first is not None and tb.host == first.host and tb.rank == first.rank:
                return tb
        return tracebacks[0] if tracebacks else None


def tails_progress(host: str, tails: Mapping[str, list[str]]) -> str:
    """{rank: last lines of its log} (the host's ``log_tails``) -> 'rank 0: step 12/234, loss
    1.29; rank 1: ...' ('step' while training, 'example' while predicting; one rank: no prefix)."""
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
