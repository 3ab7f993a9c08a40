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

import re
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
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
    try:
        return datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H:%M:%S") + \
            timedelta(milliseconds=int(frac))
    except ValueError:
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
    ended: str | None = None  # the END_MARKERS kind seen ("train", "eval", "predict")
    handled: int = 0  # tracebacks / fatal-looking lines followed by progress
    _evidence: list[Failure] = field(default_factory=list)  # since the last progress
    first_time: datetime | None = None
    last_time: datetime | None = None
    _traceback: list[str] | None = None
    _traceback_line: int = 0

    # -- feeding
    def feed_lines(self, lines: Iterable[str]) -> LogState:
        for line in lines:
            self.feed(line)
        return self

    def feed(self, line: str) -> None:
        line = line.rstrip("\r\n")
        self.lines += 1
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
        found = signatures.match(line)
        if found is None:
            return
        if found.name == "cluster_retry":
            self.cluster_retries += 1
            return
        if found.severity == signatures.BENIGN:
            return
        self._record(Failure(found.name, found.severity == FATAL, self.lines, found.line,
                             host=self.host, rank=self.rank, cause=found.cause, hint=found.hint))

    def _progressed(self) -> None:
        """Progress after fatal-looking lines: they were handled (the run went on)."""
        if self._evidence:
            self.handled += len(self._evidence)
            self._evidence.clear()

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
        cause, hint = f"Python exception on this rank: {message}", \
            "the traceback shows where; fix the error or the input it names"
        if found is not None and found.severity == FATAL:
            cause, hint = found.cause, found.hint
        self._record(Failure("traceback", True, self._traceback_line, message,
                             lines=tuple(block[-TRACEBACK_TAIL:]), host=self.host, rank=self.rank,
                             cause=cause, hint=hint))

    def _record(self, failure: Failure) -> None:
        if failure.fatal:
            if len(self._evidence) < 50:
                self._evidence.append(failure)
        elif len(self.errors) < 20:
            self.errors.append(failure)

    @property
    def failure(self) -> Failure | None:
        """What the log says killed this stream, or None: the first fatal signature since the
        last progress (the earliest line is the cause, later ones its echo), with the last
        traceback's lines; else that traceback."""
        if not self._evidence:
            return None
        tracebacks = [f for f in self._evidence if f.kind == "traceback"]
        lines = tracebacks[-1].lines if tracebacks else ()
        # msrun's "worker/scheduler exit" lines are the effect; a cause line (nodes timed out) wins
        signs = sorted((f for f in self._evidence if f.kind != "traceback"),
                       key=lambda f: f.kind in ("worker_exit", "scheduler_exit"))
        if signs:
            first = signs[0]
            return first if first.lines or not lines else Failure(
                first.kind, True, first.line, first.message, lines, first.host, first.rank,
                first.cause, first.hint)
        return tracebacks[-1]

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
            status=self.status, complete=self.complete, handled=self.handled,
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

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["failure"] is not None:
            d["failure"]["lines"] = list(d["failure"]["lines"])
        return d


# ---------------------------------------------------------------- all streams of a job
_CLUSTER_CAUSES = ("node_lost", "nodes_timed_out", "cluster_build_timeout", "ring_allreduce")


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
                          cause=f"{who} {exit_status_text(code)}")
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
        self.first_failure = self.explain(failure)
        return self.first_failure

    def state(self, host: str, rank: int | None) -> LogState:
        key = (host, rank)
        if key not in self.states:
            self.states[key] = LogState(host=host, rank=rank)
        return self.states[key]

    def feed(self, host: str, rank: int | None, line: str) -> None:
        """Feed one line of a rank's (or the scheduler's) log. Never a failure by itself."""
        self.state(host, rank).feed(line)

    def finish(self) -> Failure | None:
        for st in self.states.values():
            st.finish()
        if self.first_failure is not None:
            self.first_failure = self.explain(self.first_failure)
        return self.first_failure

    # -- explaining
    def explain(self, failure: Failure) -> Failure:
        """``failure`` (a process fact) with the cause and hint the logs give, and the rank's
        traceback lines: its own stream's evidence first, then the cluster's."""
        own, rank = None, failure.rank
        if failure.rank is not None and failure.host is not None:
            st = self.states.get((failure.host, failure.rank))
            own = st.failure if st is not None else None
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
        return Failure(failure.kind, True, failure.line, failure.message, lines, failure.host,
                       failure.rank if failure.rank is not None or pick is not own else rank,
                       cause=pick.cause or failure.cause, hint=pick.hint or failure.hint)

    def cluster_cause(self) -> Failure | None:
        """A cluster-level cause anywhere (scheduler log, msrun's output): a node lost or missing.
        The root cause wins over its echo whatever stream was read first: a lost node (the
        scheduler's word) before a rank's failed all-reduce (``_CLUSTER_CAUSES`` is in that order)."""
        found = [f for st in self.states.values() for f in st._evidence if f.kind in _CLUSTER_CAUSES]
        found += [f for fs in self.msrun.values() for f in fs if f.kind in _CLUSTER_CAUSES]
        return min(found, key=lambda f: _CLUSTER_CAUSES.index(f.kind), default=None)

    def log_failure(self) -> Failure | None:
        """Without process facts (fetched files read locally): the first stream whose log
        explains a death, explained like a process fact would be."""
        for st in self.states.values():
            if st.failure is not None:
                return self.explain(st.failure)
        for found in self.msrun.values():
            if found:
                return found[0]
        return None

    def verdict(self) -> Failure | None:
        """The failure to report: the process fact when there is one (explained again with every
        line read so far: the scheduler's word on a lost node may arrive after the rank's death),
        else the logs' word."""
        if self.first_failure is not None:
            return self.explain(self.first_failure)
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
