"""The story of a job's log (pure): which lines a person reads in the default view.

:func:`story_kind` sorts one log line: a milestone (cluster formed, compiling, checkpoint saved,
eval done), progress, a warning (keyed by where it comes from, so repeats are counted, not
repeated), an error or a traceback, or quiet. Measured reason: ``make demo`` printed 5,500
lines, 5,300 of them raw MindFormers output (config dumps, deprecation warnings, progress
bars). The terminal's :class:`launcher.cli.live.StorySink` and anything else that tells the
story (a diagnosis line) read it from here; a fatal signature of
:mod:`launcher.metrics.signatures` is an error even when the line does not say ERROR.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from launcher.metrics import signatures
from launcher.metrics.logparse import parse_timestamp

#: Lines worth a line of their own in the default view: (pattern, what happened). Not msrun's
#: "This log means the cluster is successfully created": its scheduler says it at *finalize*,
#: when the job ends (real-world msrun_time_out_nodes_excerpt.log).
MILESTONES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Cluster is successfully initialized"), "cluster formed"),
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


#: MindSpore's normal sound of a cluster forming: every process asks the scheduler (the meta
#: server) again every 0.5-3 s until each node has registered. Measured on the tiny CPU job
#: (2 workers, MindSpore 2.9): 6 "Topology build timed out., retry(k/1200)", 11 "Failed to
#: connect to the meta server", 11 "Failed to register and try to reconnect", 26 TCP
#: "Connect] Connection N source: ..." warnings in worker_0.log before "Cluster is successfully
#: initialized" 6.4 s later — all WARNING lines that read as a failure; real Ascend runs print
#: the same (real-ascend worker_0.log: 2 retries).
_FORMING = re.compile(r"Topology build timed out\.?,? ?retry\(\d+/\d+\)|Failed to connect to the meta server|"
                      r"Failed to register and try to reconnect to the meta server|"
                      r"tcp_comm\.cc:\d+\] Connect\] Connection \d+ source: ")
#: The scheduler's side of a worker's retry while the cluster forms: the socket the worker gave
#: up on closes, and it says "please check remote peer address ... which worker disconnected"
#: (tiny CPU job, scheduler.log: between its retry 1 and 2; the story's only warning left after
#: the routine ones were folded). Forming while the stream's cluster has not formed; after
#: that a worker did disconnect, and it stays a warning.
_PEER_CLOSED = re.compile(r"SocketEventHandler\] Event value fd: \d+, .*please check remote peer address")
_RETRY = re.compile(r"Topology build timed out\.?,? ?retry\((\d+)/(\d+)\)")
#: msrun's scheduler (the meta server) on a healthy run: each node registering, then, while the
#: workers run, "Cluster currently has 2 alive nodes." every few seconds (x41 in a 3-minute tiny
#: job), each node unregistering at the end. Quiet in the story (--verbose shows them).
_ROUTINE = re.compile(r"Cluster currently has \d+ alive nodes|Node \d+ has unregistered|"
                      r"is registered successfully\. Currently registered node number")


#: Warnings MindSpore 2.9 / MindFormers 1.9 print on every healthy run: (where it comes from, its
#: words). Measured on the tiny CPU job (tests/fixtures/real-cpu/tiny-2workers): 25 distinct
#: warnings, 41 lines in worker_0.log and 11 in scheduler.log, every one of them routine — the
#: story printed each as a ``warning`` line. They are counted into one line ("N routine
#: MindSpore warnings (--verbose shows them)"); a warning not listed here stays visible, and a
#: line naming a failure signature (:mod:`launcher.metrics.signatures`) is never folded.
ROUTINE_WARNINGS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((where, re.compile(words)) for where, words in (
    # library plumbing: deprecated modules, optional models without their package, thread binding
    ("_mark_deprecated.py", r"^Module '[\w.]+' is deprecated from version"),
    ("/models/", r"^Import PyNative\w+ failed: No module named 'hyper_parallel'"),
    ("thread_bind_core.py", r"^Module bind core policy generated"),
    ("async_rqueue.cc", r"Skip to bind thread core for .* as no available core assigned"),
    ("graph_scheduler.cc", r"Skip to bind thread core for .* as no available core assigned"),
    # the collective group and the cluster's bookkeeping once it formed
    ("cluster_context.cc", r"This node \d+ rank id: \d+$"),
    ("ms_collective_comm_lib.cc", r"has already been initialized|The group \w+ has already existed"),
    ("collective_manager.cc", r"Create collective communication group: "),
    ("libevent_tcp_server.h", r"TcpConnection is constructed! fd is \d+$"),
    ("meta_server_node.cc", r"(?:Begin|Finish) to Initialize MetaServerNode|Rank ids are already set by numeric"),
    # MindFormers reading any config: every deprecated key is named even when the yaml does not
    # set it (trainer/utils.py compatible_with_both_old_new_config, 11 lines), empty sections,
    # keys this task does not use, the general task's model-name notice
    ("trainer/utils.py", r"^The config \w+ is deprecated\. Please use config \w+ in `checkpoint_config`"),
    ("trainer/utils.py", r"^Sink mode is False, per epoch size is invalid"),
    ("register/template.py", r"^The input config \w+ is empty\.$|^Some configs in yaml are useless for \w+: "),
    ("base_trainer.py", r"^Input model name is not in the supported list|^See the list of supported task and model"
                        r"|^The default model config: .* will now be used|^`full_batch` will be deprecated"
                        r"|^The Lazy Inline compilation acceleration feature only works"),
    ("trainer.py", r"^The config `check_for_global_norm` and `global_norm_spike_threshold` is deprecated"
                   r"|^The functionality of setting `resume_training` to a weight filename will be deprecated"),
    ("check_rules.py", r"^full_batch could only be used under semi_auto_parallel or auto_parallel, but get "
                       r"data_parallel, full_batch has been forced to False"),
    ("callback/callback.py", r"^print_separate_loss = True, is not supported when use_legacy = True"),
    ("train/model.py", r"^For CheckpointMonitor callback, .* methods may not be supported in later version"),
))


def routine_warning(text: str, key: str) -> bool:
    """Is this warning (``key`` from :func:`warning_key`) one of :data:`ROUTINE_WARNINGS`? Never
    when the line names a failure signature, whatever its severity."""
    said = None
    for where, words in ROUTINE_WARNINGS:
        if where in key:
            said = said if said is not None else _message(text)
            if words.search(said):
                return signatures.match(text) is None
    return False


def _message(text: str) -> str:
    """The warning's own words, after MindSpore's or MindFormers' prefix (and its ``Func]``)."""
    m = _MS_PREFIX.match(text) or _MF_PREFIX.match(text)
    return text[m.end():].strip() if m else text.strip()


@dataclass
class ClusterForming:
    """One stream's cluster forming, from its lines: retries, when it began, whether it formed.
    The story says it once as a milestone ("cluster formed after 6 retries, 6 s"); retries that
    never end in a formed cluster are the explanation of a failure (:meth:`failed_text`)."""

    retries: int = 0
    of: int | None = None  # the retry budget MindSpore prints (retry(k/N))
    lines: int = 0
    first: datetime | None = None
    last: datetime | None = None
    formed_at: datetime | None = None
    formed: bool = False

    def feed(self, text: str) -> None:
        """A line that :func:`story_kind` called "forming" or the "cluster formed" milestone."""
        at = parse_timestamp(text)
        if _FORMING.search(text) or _PEER_CLOSED.search(text):
            self.lines += 1
            m = _RETRY.search(text)
            if m:
                self.retries, self.of = max(self.retries, int(m.group(1))), int(m.group(2))
            self.first = self.first or at
            self.last = at or self.last
        elif MILESTONES[0][0].search(text):
            self.formed, self.formed_at = True, at

    def _took(self, end: datetime | None) -> str:
        if self.first is None or end is None:
            return ""
        return f", {max(0.0, (end - self.first).total_seconds()):.0f} s"

    def milestone(self) -> str:
        """'cluster formed', or with what it took: 'cluster formed after 6 retries, 6 s'."""
        if not self.lines:
            return "cluster formed"
        tries = f"{self.retries} retries" if self.retries else f"{self.lines} reconnects"
        return f"cluster formed after {tries}{self._took(self.formed_at)}"

    def failed_text(self) -> str | None:
        """Said when the stream ended without a formed cluster (None: formed, or never tried)."""
        if self.formed or not self.lines:
            return None
        budget = f" of {self.of}" if self.of else ""
        tries = f"{self.retries}{budget} retries" if self.retries else f"{self.lines} reconnects"
        return (f"cluster not formed: {tries}{self._took(self.last)} without every node joining "
                "(a node did not start or cannot reach master_addr:master_port; docs/troubleshooting.md)")


def story_kind(text: str, forming: bool = False) -> tuple[str, str]:
    """How the default view treats one log line: ("milestone", what) | ("progress", "") |
    ("forming", "") (a cluster-forming retry: counted, not shown, see :class:`ClusterForming`) |
    ("warning", key) | ("routine", key) (a warning of :data:`ROUTINE_WARNINGS`: counted, not shown) |
    ("error", "") | ("traceback", "") | ("quiet", ""). ``forming``: this stream's cluster has not
    formed yet (a peer's closed socket is then part of the forming)."""
    if "Epoch:[" in text or "Step[" in text or "samples/s/p" in text:
        return "progress", ""
    if _FORMING.search(text) or (forming and _PEER_CLOSED.search(text)):
        return "forming", ""
    if _ROUTINE.search(text):
        return "quiet", ""
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
        key = warning_key(text)
        return ("routine" if routine_warning(text, key) else "warning"), key
    return "quiet", ""
