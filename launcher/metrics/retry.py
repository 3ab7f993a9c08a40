"""Is a failed job worth resuming by itself? ``classify(failure) -> Verdict(transient, cause)``.

Transient (the same job, resumed from its last checkpoint, may well succeed): a node lost, an
HCCL timeout, a worker killed by a signal. Not transient (the next attempt fails the same way):
a config error, a Python exception in the user's code, a bad input. Unknown failures are not
retried: retrying a deterministic error wastes the cards for as long as it takes to fail again.

The facts come from the job's processes (exit codes; a negative code or 128+N is signal N) and
from its log lines. The lines are read with the table of Ascend failure signatures
(``metrics.signatures``): its *fatal* findings are the causes, and TRANSIENT says which of its
rows are transient (msrun's ``worker_exit`` is transient when its error code is a signal). A
Python exception in the user's code is not an Ascend signature, so that rule stays here and is
checked first.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from launcher.metrics import signatures as _signatures

#: signature name -> transient? (the row names of metrics.signatures)
TRANSIENT = {
    "node_lost": True, "nodes_timed_out": True, "cluster_build_timeout": True, "ring_allreduce": True,
    "hccl_notify_timeout": True, "hccl_exec_timeout": True, "hccl_connect_timeout": True,
    "signal": True, "main_process_gone": True, "worker_exit_signal": True,
    "device_oom": False, "python_exception": False, "config_error": False, "input_error": False,
    # rows of metrics.signatures that are not transient (a deterministic device or CANN error)
    "stream_sync": False, "cann_error": False, "scheduler_exit": False, "hccl_error": True,
}
_PYTHON_ERROR = re.compile(r"(?:KeyError|ValueError|TypeError|AttributeError|FileNotFoundError|"
                           r"ModuleNotFoundError|ImportError|NameError|SyntaxError|AssertionError)\b.*")
_EXIT_CODE = re.compile(r"Error code: (-?\d+)")

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
    return _classify_with_signatures(list(exit_codes), list(lines))


def _by_codes(exit_codes: Sequence[int | None]) -> Verdict:
    for code in exit_codes:
        sig = _signal_of(code)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT):
            return Verdict(True, f"signal {sig}")
    codes = [c for c in exit_codes if c]
    return Verdict(False, f"exit code {codes[0]}" if codes else "unknown")


def _classify_with_signatures(exit_codes: Sequence[int | None], lines: Sequence[str]) -> Verdict:
    """metrics.signatures' table: a Python exception anywhere wins (not transient); else the first fatal
    finding that names a transient cause; else a fatal non-transient one; else the exit codes."""
    if any(_PYTHON_ERROR.search(line) for line in lines):
        return Verdict(False, "config_error")
    transient, permanent = None, None
    for line in lines:
        finding = _signatures.match(line)
        if finding is None or finding.severity != _signatures.FATAL:
            continue
        name = finding.name
        if name == "worker_exit":
            m = _EXIT_CODE.search(line)
            code = int(m.group(1)) if m else None
            ok = _by_codes([code]).transient if code is not None else False
        else:
            ok = TRANSIENT.get(name, False)
        if ok:
            transient = transient or name
        else:
            permanent = permanent or name
    if permanent:  # a device or CANN error next to a dead worker: the worker died of it
        return Verdict(False, permanent)
    if transient:
        return Verdict(True, transient)
    return _by_codes(exit_codes)
