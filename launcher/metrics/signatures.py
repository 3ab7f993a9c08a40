"""The failure signatures of the Ascend stack, kept as data: pattern, cause in words, severity, hint.

Why a table and not ``if`` chains: a signature is a fact about someone else's software (CANN,
HCCL, MindSpore's msrun), found in someone else's log; it is added or corrected in one row,
tested on the real text it came from (tests/test_signatures.py, one test per row).

What a match means: **nothing about the job's state**. A job's and a node's state come only
from process facts (msrun's exit code, the worker exits msrun reports, the supervisor's
record). A signature *explains* a failure that the processes already showed; it never causes
one. Measured reason: real healthy runs print lines that look fatal to a naive matcher —
``Topology build timed out., retry(1/200)`` then success (real-ascend worker_0.log, twice),
``[WARNING] ... HcclInit failed ..., use default``, handled tracebacks — and stopping a job on
them killed healthy jobs (issue #19).

Severity, in the order :func:`best` ranks explanations:

* ``fatal``: the line names why a process died (a CANN error code, an HCCL timeout, device
  out of memory, msrun's own report of a dead worker / scheduler / missing nodes).
* ``error``: an ERROR line that may or may not matter.
* ``benign``: looks alarming, is not (retries, INFO/WARNING lines that mention HCCL).

A line logged at INFO / WARNING / DEBUG level never rates above ``error``: the software that
wrote it did not think it fatal (``hccl comm init: no error`` is an INFO line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FATAL, ERROR, BENIGN = "fatal", "error", "benign"
_RANK = {FATAL: 2, ERROR: 1, BENIGN: 0}

#: What each CANN error-code family is about (the second letter names the component).
CANN_FAMILIES = {
    "EE": "the CANN runtime (device execution)",
    "EI": "HCCL (collective communication)",
    "EJ": "HCCL / the device network",
    "EL": "the driver / device resources",
    "EZ": "an operator (kernel compile or launch)",
}


@dataclass(frozen=True)
class Signature:
    """One known failure text. ``cause`` and ``hint`` may use the pattern's named groups."""

    name: str
    pattern: re.Pattern[str]
    cause: str
    severity: str
    hint: str = ""


@dataclass(frozen=True)
class Finding:
    """A signature matched on one line: the words filled in from the line."""

    name: str
    severity: str
    cause: str
    hint: str
    line: str


def _rx(text: str) -> re.Pattern[str]:
    return re.compile(text)


_HCCL_EXEC_HINT = ("a peer rank failed or stalled first: read the other ranks' first error; if the step is "
                   "legitimately slow raise HCCL_EXEC_TIMEOUT (default 1800 s)")
_HCCL_CONNECT_HINT = ("a peer rank did not come up or cannot be reached: check that every node started and the "
                      "device network (hccn_tool -i N -net_health -g); raise HCCL_CONNECT_TIMEOUT (default 120 s) "
                      "if nodes start far apart")

#: The table. First match wins, so specific rows come before the family rows they refine.
SIGNATURES: tuple[Signature, ...] = (
    # ---- benign look-alikes first: they must never explain a failure
    Signature("cluster_retry", _rx(r"Topology build timed out\.?,? ?retry\((?P<k>\d+)/(?P<n>\d+)\)"),
              "cluster build retry {k} of {n} (normal while the other nodes start)", BENIGN),
    # ---- msrun's own reports (mindspore/parallel/cluster/process_entity/_api.py)
    Signature("worker_exit",
              _rx(r"Worker process (?P<pid>\d+) exit with exception(?:\. Error code: (?P<code>-?\d+))?"),
              "worker process {pid} exited abnormally (code {code}), as msrun reported", FATAL,
              "msrun stops the node's other workers after this; the worker's own log says why"),
    Signature("scheduler_exit", _rx(r"Scheduler process (?P<pid>\d+) exit with exception"),
              "msrun's scheduler (process {pid}) exited abnormally", FATAL,
              "read msrun_log/scheduler.log on node 0: usually a node never joined or one was lost"),
    Signature("nodes_timed_out", _rx(r"Time out nodes are:?\s*(?P<nodes>.*?)\s*$"),
              "node(s) {nodes} never joined the cluster or dropped out of it", FATAL,
              "check that those nodes started, and that they reach master_addr:master_port "
              "(address, port, firewall)"),
    Signature("nodes_timed_out", _rx(r"Timed out node list is:?\s*(?P<nodes>.*?)(?:,|$)"),
              "node(s) {nodes} never joined the cluster or dropped out of it", FATAL,
              "check that those nodes started, and that they reach master_addr:master_port "
              "(address, port, firewall)"),
    Signature("node_lost", _rx(r"The node: (?P<node>\S+) is timed out"),
              "node {node} lost from the cluster network (its heartbeat to the scheduler stopped)", FATAL,
              "the node died or its network to node 0 broke: check that host and the link between the nodes"),
    Signature("cluster_build_timeout", _rx(r"Topology build timed out\.?\s*$"),
              "the cluster was not built in time: not every node joined", FATAL,
              "check that every node started and reaches master_addr:master_port; "
              "raise --cluster-time-out if nodes start far apart"),
    Signature("main_process_gone", _rx(r"(?i)main process disappeared"),
              "the worker's parent (msrun) disappeared, so the worker stopped mid-run", FATAL,
              "msrun was killed (OOM killer, SIGKILL, a lost session): check dmesg and the node's msrun log"),
    Signature("ring_allreduce", _rx(r"RunRingAllReduce.*fail"),
              "a host-side all-reduce between the nodes failed: a node left the cluster network", FATAL,
              "check the other node and the network between the nodes"),
    # ---- the device
    Signature("stream_sync", _rx(r"aclrtSynchronizeStream(?:WithTimeout)?\b.*(?:fail|error|time)|"
                                 r"(?:fail|error).*aclrtSynchronizeStream(?:WithTimeout)?|"
                                 r"(?i:sync stream (?:failed|error))"),
              "the NPU stream did not finish (aclrtSynchronizeStreamWithTimeout failed): a kernel or a "
              "collective on the device failed or hung", FATAL,
              "find the first EE/EI error code above it; for a hung collective see HCCL_EXEC_TIMEOUT; "
              "check the device with npu-smi info"),
    Signature("device_oom", _rx(r"(?i)(?:device|npu|hbm).*out of memory|out of memory.*(?:device|npu)|"
                                r"Malloc device memory failed|memory isn't enough and alloc failed|"
                                r"Memory isn't enough|Out of Memory!!!|Failed to allocate memory|EL0004"),
              "the NPU ran out of device memory", FATAL,
              "lower the batch size or sequence length, enable recompute, or use more model parallelism"),
    Signature("hccl_notify_timeout", _rx(r"EI0002|Notify register times out|[Nn]otify wait.*time ?out"),
              "an HCCL collective timed out waiting for a remote rank", FATAL, _HCCL_EXEC_HINT),
    Signature("hccl_exec_timeout", _rx(r"(?i)hccl.*exec(?:ution)?.*time(?:d)? ?out|HCCL_EXEC_TIMEOUT"),
              "an HCCL collective timed out waiting for a remote rank", FATAL, _HCCL_EXEC_HINT),
    Signature("hccl_connect_timeout", _rx(r"EI0006|(?i:socket establish timeout|getting socket times out|"
                                          r"connect.*time(?:d)? ?out.*hccl|hccl.*connect.*time(?:d)? ?out)"),
              "HCCL could not connect to a remote rank in time", FATAL, _HCCL_CONNECT_HINT),
    Signature("cann_error", _rx(r"(?<![A-Za-z0-9])(?P<code>(?P<family>E[EIJLZ])\d{4})(?::| ?\[| ?\()"),
              "CANN error {code} from {family_words}", FATAL,
              "look the code up in the CANN error code reference; the lines after it give the reason"),
    Signature("hccl_error", _rx(r"^\[ERROR\] HCC[LP]\("),
              "HCCL reported an error", FATAL, _HCCL_EXEC_HINT),
    # ---- the rank's own death (text some runtimes print)
    Signature("signal", _rx(r"(?:[Kk]illed by|[Rr]eceived|[Cc]aught) signal (?P<sig>\d+|SIG[A-Z]+)|"
                              r"Fatal Python error: Segmentation fault|^Segmentation fault"),
              "the process was killed by a signal ({sig})", FATAL,
              "SIGKILL without a word is usually the OOM killer (dmesg); SIGTERM came from outside"),
    # ---- plain ERROR lines: reported, rank low
    Signature("error_line", _rx(r" - (?:ERROR|CRITICAL) - |^\[(?:ERROR|CRITICAL)\] "),
              "an ERROR line", ERROR),
)

_QUIET_LEVEL = re.compile(r"^\s*\[(?:INFO|WARNING|DEBUG)\]| - (?:INFO|WARNING|DEBUG) - ")


class _Words(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"


def match(line: str) -> Finding | None:
    """The first signature that matches ``line`` (capped at ``error`` on an INFO/WARNING line)."""
    for sig in SIGNATURES:
        m = sig.pattern.search(line)
        if m is None:
            continue
        words = _Words({k: v for k, v in m.groupdict().items() if v is not None})
        if "family" in words:
            words["family_words"] = CANN_FAMILIES.get(words["family"], "CANN")
        severity = sig.severity
        if severity == FATAL and _QUIET_LEVEL.search(line):
            severity = BENIGN if sig.name.startswith(("hccl", "cann")) else ERROR
        return Finding(sig.name, severity, sig.cause.format_map(words), sig.hint.format_map(words), line.strip())
    return None


def best(findings: list[Finding]) -> Finding | None:
    """The explanation to show: the first finding of the highest severity (the earliest fatal line
    is usually the cause; later ones are the echo of it on other ranks)."""
    top = None
    for f in findings:
        if f.severity == BENIGN:
            continue
        if top is None or _RANK[f.severity] > _RANK[top.severity]:
            top = f
    return top
