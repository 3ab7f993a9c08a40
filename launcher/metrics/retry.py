"""Is a failed job worth resuming by itself? ``classify(failure) -> Verdict(transient, cause)``.

Transient (the same job, resumed from its last checkpoint, may well succeed): a node lost, an
HCCL timeout, a worker killed by a signal. Not transient (the next attempt fails the same way):
a config error, a Python exception in the user's code, a bad input. Unknown failures are not
retried: retrying a deterministic error wastes the cards for as long as it takes to fail again.

The facts come from the job's processes (exit codes; a negative code or 128+N is signal N) and
from its log lines. The log patterns are a small interim table; the judge issue (#19) brings
``metrics.signatures`` (cause/severity/hint per Ascend failure signature), and TRANSIENT names
the rows of that table that are transient, so the switch is one import.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from typing import Iterable, Sequence

#: signature name -> transient? (names as in metrics.signatures of issue #19)
TRANSIENT = {
    "node_lost": True, "nodes_timed_out": True, "cluster_build_timeout": True, "ring_allreduce": True,
    "hccl_notify_timeout": True, "hccl_exec_timeout": True, "hccl_connect_timeout": True,
    "signal": True, "main_process_gone": True, "worker_exit_signal": True,
    "device_oom": False, "python_exception": False, "config_error": False, "input_error": False,
}

# The interim table: (name, pattern). First match wins; permanent causes first, because a
# Python traceback usually ends a run that msrun then reports as a dead worker.
_PATTERNS: Sequence[tuple[str, re.Pattern[str]]] = (
    ("config_error", re.compile(r"(?:KeyError|ValueError|TypeError|AttributeError|FileNotFoundError|"
                                r"ModuleNotFoundError|ImportError|NameError|SyntaxError|AssertionError)\b.*")),
    ("device_oom", re.compile(r"(?i)out of memory|Malloc device memory failed")),
    ("node_lost", re.compile(r"The node: \S+ is timed out|Time out nodes are|Timed out node list")),
    ("hccl_exec_timeout", re.compile(r"EI0002|(?i:hccl.*time(?:d)? ?out)|EI0006")),
    ("main_process_gone", re.compile(r"(?i)main process disappeared")),
    ("worker_exit_signal", re.compile(r"Worker process \d+ exit with exception\. Error code: -(?:9|15|6|11)\b")),
    ("signal", re.compile(r"(?:[Kk]illed by|[Rr]eceived) signal|^Killed$")),
)


@dataclass(frozen=True)
class Verdict:
    transient: bool
    cause: str  # a signature name, or 'signal N' / 'exit code N'


def _signal_of(code: int | None) -> int | None:
    if code is None:
        return None
    if code < 0:
        return -code
    if 128 < code < 160:
        return code - 128
    return None


def classify(exit_codes: Iterable[int | None] = (), lines: Iterable[str] = ()) -> Verdict:
    """The verdict on one failure: log lines first (the permanent causes win), then exit codes."""
    exit_codes = list(exit_codes)
    found = None
    for line in lines:
        for name, pattern in _PATTERNS:
            if pattern.search(line):
                if not TRANSIENT[name]:
                    return Verdict(False, name)  # a Python/config error anywhere: not transient
                found = found or name
    if found:
        return Verdict(True, found)
    for code in exit_codes:
        sig = _signal_of(code)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT):
            return Verdict(True, f"signal {sig}")
    codes = [c for c in exit_codes if c]
    return Verdict(False, f"exit code {codes[0]}" if codes else "unknown")
