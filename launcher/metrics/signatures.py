"""The failure signatures of the Ascend stack, kept as data: pattern, cause in words, severity, hint.

Why a table and not ``if`` chains: a signature is a fact about someone else's software (CANN,
HCCL, MindSpore's msrun, MindFormers), found in someone else's log; it is added or corrected in
one row, and every row is tested on real or realistic text it must match and a near miss it
must not (tests/fixtures/signatures/, read by tests/test_signatures.py: a row without both
fails the suite). docs/diagnosis.md lists the families.

What a match means: **nothing about the job's state**. A job's and a node's state come only
from process facts (msrun's exit code, the worker exits msrun reports, the supervisor's
record). A signature *explains* a failure that the processes already showed; it never causes
one. Measured reason: real healthy runs print lines that look fatal to a naive matcher —
``Topology build timed out., retry(1/200)`` then success (real-ascend worker_0.log, twice),
``[WARNING] ... HcclInit failed ..., use default``, handled tracebacks — and stopping a job on
them killed healthy jobs.

Families by shape, not by string: a CANN code is ``E`` + a module character + four digits (the
CANN troubleshooting guide: 1 GE, 3 AI CPU, E runtime, H ACL, I HCCL, J HCCP, L driver, Z
operators ...; x9xxx are internal errors); a runtime result is a six-digit number whose first
three digits say its class (107xxx a rejected call, 207xxx resources, 507xxx the device failing,
rt_error_codes.h); a CANN module writes ``[ERROR] HCCL(pid,proc):time [file] msg``. A code that
is in no table below is still a failure, named by its code with its family's words.

Severity, in the order :func:`best` ranks explanations:

* ``fatal``: the line names why a process died.
* ``error``: an ERROR line that may or may not matter.
* ``benign``: looks alarming, is not (retries, INFO/WARNING lines that mention HCCL).

Role, how a fatal finding is weighed against the others of the same run (logparse reads it):

* ``cause``: says what went wrong (a device out of memory, EJ0001, a segfault, a monitor).
* ``effect``: a timeout or a death that another failure explains (EI0002, 507046, msrun's
  report of a dead worker); one that names its remote rank points at that rank.
* ``generic``: says only that something failed (EE9999 "Inner Error", ``[ERROR] HCCL`` lines).

A line logged at INFO / WARNING / DEBUG level never rates above ``error`` (``hccl comm init: no
error`` is an INFO line), except rows marked ``any_level``: MindFormers logs its own decision to
stop training at INFO. A shell's echo of the user's commands and environment (``export
HCCL_EXEC_TIMEOUT=17340``, ``+ msrun ...``) is never a finding: it names a setting, not a failure
(a real log had its export taken for the failure ahead of the EE1002 that was).
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass

FATAL, ERROR, BENIGN = "fatal", "error", "benign"
_RANK = {FATAL: 2, ERROR: 1, BENIGN: 0}
CAUSE, EFFECT, GENERIC = "cause", "effect", "generic"
ROLE_ORDER = {CAUSE: 0, EFFECT: 1, GENERIC: 2}

#: The module a CANN error code comes from: its second character (CANN troubleshooting guide,
#: "error code display").
CANN_MODULES = {
    "1": "GE (the graph engine)", "2": "FE (the fusion engine)", "3": "AI CPU (an AI CPU operator)",
    "4": "TE Fusion (operator compilation)", "7": "a vector operator plug-in", "8": "a vector operator",
    "B": "the TBE pass compiler", "C": "Auto Tune", "D": "RL Tune", "E": "the CANN runtime (device execution)",
    "F": "LxFusion / AutoDeploy", "G": "AOE", "H": "ACL (AscendCL)", "I": "HCCL (collective communication)",
    "J": "HCCP (the device network process)", "K": "profiling", "L": "the driver / device resources",
    "M": "queue scheduling", "N": "DVPP", "O": "AMCT", "P": "dump",
    "Z": "an operator (kernel compile or launch)",
}
#: Short family names (``--json``'s ``family``), by the code's module character.
CODE_FAMILY = {"1": "GE", "2": "FE", "3": "AICPU", "4": "TBE", "7": "operator", "8": "operator",
               "E": "runtime", "H": "ACL", "I": "HCCL", "J": "HCCP", "K": "profiling", "L": "driver",
               "Z": "operator"}
#: Back-compatible name: the two-letter families.
CANN_FAMILIES = {"E" + k: v for k, v in CANN_MODULES.items()}

_HCCL_EXEC_HINT = ("a peer rank failed or stalled first: read the other ranks' first error; if the step is "
                   "legitimately slow raise HCCL_EXEC_TIMEOUT (default 1800 s)")
_HCCL_CONNECT_HINT = ("a peer rank did not come up or cannot be reached: check that every node started and the "
                      "device network (hccn_tool -i N -net_health -g); raise HCCL_CONNECT_TIMEOUT (default 120 s) "
                      "if nodes start far apart")
_STREAM_HINT = ("find the first EE/EI error code above it, on this rank and the others; for a hung collective "
                "see HCCL_EXEC_TIMEOUT; check the device with npu-smi info")
_OOM_HINT = "lower the batch size or sequence length, enable recompute, or use more model parallelism"
_DEVICE_HINT = ("check the card with npu-smi info (health, ECC errors) and the driver's log "
                "(/var/log/npu/slog); a card that keeps failing is taken out of the hostfile")
_INTERNAL_HINT = "an internal error: the lines just before and after it (and the plog) say which call failed"

#: CANN codes whose meaning is known: code -> (what happened, role, hint). Any other code is named
#: by its module (CANN_MODULES) with the family's hint; x9999 codes are internal (generic).
CANN_CODES: dict[str, tuple[str, str, str]] = {
    "EE1002": ("the NPU stream did not finish in time (stream synchronize timeout)", EFFECT, _STREAM_HINT),
    "EE9999": ("an internal error of the CANN runtime", GENERIC, _INTERNAL_HINT),
    "EH9999": ("an internal error of ACL (AscendCL)", GENERIC, _INTERNAL_HINT),
    "E19999": ("an internal error of the graph engine (GE)", GENERIC, _INTERNAL_HINT),
    "E39999": ("an AI CPU operator failed on the device (AICPU exception)", CAUSE,
               "the lines after it name the operator (op name, kernel); check its input shapes and dtypes, "
               "or run it on AI Core"),
    "EZ9999": ("an operator failed on the device", CAUSE,
               "the lines after it name the operator; check its inputs (shape, dtype) and the CANN version"),
    "EI0001": ("an HCCL environment variable is set to an invalid value", CAUSE,
               "the message names the variable and its valid range: fix it in the job's env"),
    "EI0004": ("the rank table file could not be read (invalid content)", CAUSE,
               "check RANK_TABLE_FILE: valid JSON, every server_id / device_ip / rank_id present"),
    "EI0011": ("HCCL could not allocate device memory for a collective", CAUSE, _OOM_HINT),
    "EI0014": ("the rank table is invalid", CAUSE, "check RANK_TABLE_FILE against the hosts and cards in use"),
    "EI0017": ("the rank table is invalid", CAUSE, "check RANK_TABLE_FILE against the hosts and cards in use"),
    "EJ0001": ("the HCCP process could not start on the device: the last training process is probably "
               "still running", CAUSE,
               "kill the previous job's processes on that host (npu-smi info lists them), wait 10 s, resubmit"),
    "EL0004": ("the NPU ran out of device memory", CAUSE, _OOM_HINT),
}
_FAMILY_HINT = {
    "I": _HCCL_EXEC_HINT, "J": "check the device network (hccn_tool -i N -net_health -g) and leftover processes",
    "L": _DEVICE_HINT, "E": _STREAM_HINT,
}

#: Runtime result numbers (rt_error_codes.h, ACL_ERROR_RT_*): number -> (meaning, role, family).
RT_RESULTS: dict[int, tuple[str, str, str]] = {
    107001: ("invalid device id", CAUSE, "device"),
    107019: ("wait timeout", EFFECT, "runtime"),
    107020: ("task timeout: a task on the device did not finish in time", EFFECT, "runtime"),
    207001: ("device memory allocation failed", CAUSE, "memory"),
    207004: ("no device", CAUSE, "device"),
    207018: ("the device ran out of memory", CAUSE, "memory"),
    507010: ("the device's task scheduler lost its heartbeat", CAUSE, "device"),
    507011: ("model execution failed", EFFECT, "runtime"),
    507014: ("an AI Core task timed out", CAUSE, "AI Core"),
    507015: ("an AI Core exception (an operator failed on AI Core)", CAUSE, "AI Core"),
    507017: ("an AI CPU task timed out", CAUSE, "AICPU"),
    507018: ("an AI CPU exception (an operator failed on AI CPU)", CAUSE, "AICPU"),
    507035: ("a vector core exception", CAUSE, "AI Core"),
    507046: ("stream synchronize timeout", EFFECT, "runtime"),
    507047: ("event synchronize timeout", EFFECT, "runtime"),
    507053: ("a device memory error (hardware)", CAUSE, "device"),
    507054: ("an HBM multi-bit ECC error (hardware)", CAUSE, "device"),
    507056: ("a link error", CAUSE, "device"),
    507057: ("a suspected error on a remote device", EFFECT, "device"),
    507899: ("a driver internal error", GENERIC, "driver"),
    507901: ("the host-device channel (HDC) disconnected", CAUSE, "device"),
}
RT_CLASSES = {"107": "the runtime rejected a call", "207": "a device resource ran out or is missing",
              "507": "the device failed while executing"}


@dataclass(frozen=True)
class Signature:
    """One failure shape. ``cause`` and ``hint`` may use the pattern's named groups.
    ``final``: the process stops right after this line (a crash, a monitor's stop): progress
    after it in the same stream is another process's, not a recovery."""

    name: str
    pattern: re.Pattern[str]
    cause: str
    severity: str
    hint: str = ""
    family: str = ""
    role: str = CAUSE
    any_level: bool = False
    final: bool = False
    keys: tuple[str, ...] = ()  # lowercase words one of which every line it matches has (a fast pre-check)


@dataclass(frozen=True)
class Finding:
    """A signature matched on one line: the words filled in from the line."""

    name: str
    severity: str
    cause: str
    hint: str
    line: str
    family: str = ""
    role: str = CAUSE
    code: str | None = None  # a CANN code or a runtime result number
    remote: int | None = None  # the remote rank a timeout names
    final: bool = False
    remote_host: str | None = None  # the server (IP) a heartbeat-lost report names


def _rx(text: str) -> re.Pattern[str]:
    return re.compile(text)


_CODE = r"(?P<code>E(?P<module>[0-9A-Z])\d{4})"
_CRASH_HINT = ("a crash in native code: the library in the backtrace says whose (libhccl: HCCL, libascend*/"
               "libruntime: CANN, libmindspore*: MindSpore); check the CANN and MindSpore versions match, "
               "then report it with the backtrace")
_MONITOR_HINT = ("MindFormers stopped the run on purpose: look at the loss / global norm before this step "
                 "(learning rate, data), or relax the monitor in the job's yaml")

#: The table. First match wins, so specific rows come before the family rows they refine.
SIGNATURES: tuple[Signature, ...] = (
    # ---- benign look-alikes first: they must never explain a failure
    Signature("cluster_retry", _rx(r"Topology build timed out\.?,? ?retry\((?P<k>\d+)/(?P<n>\d+)\)"),
              "cluster build retry {k} of {n} (normal while the other nodes start)", BENIGN, family="msrun",
              keys=("retry(",)),
    # ---- msrun's own reports (mindspore/parallel/cluster/process_entity/_api.py)
    Signature("worker_exit",
              _rx(r"Worker process (?P<pid>\d+) exit with exception(?:\. Error code: (?P<code>-?\d+))?"),
              "worker process {pid} exited abnormally (code {code}), as msrun reported", FATAL,
              "msrun stops the node's other workers after this; the worker's own log says why",
              family="msrun", role=EFFECT, keys=("worker process",)),
    Signature("scheduler_exit", _rx(r"Scheduler process (?P<pid>\d+) exit with exception"),
              "msrun's scheduler (process {pid}) exited abnormally", FATAL,
              "read msrun_log/scheduler.log on node 0: usually a node never joined or one was lost",
              family="msrun", role=EFFECT, keys=("scheduler process",)),
    Signature("nodes_timed_out", _rx(r"Time out nodes are:?\s*(?P<nodes>.*?)\s*$"),
              "node(s) {nodes} never joined the cluster or dropped out of it", FATAL,
              "check that those nodes started, and that they reach master_addr:master_port "
              "(address, port, firewall)", family="cluster", keys=("time out nodes", "timed out node")),
    Signature("nodes_timed_out", _rx(r"Timed out node list is:?\s*(?P<nodes>.*?)(?:,|$)"),
              "node(s) {nodes} never joined the cluster or dropped out of it", FATAL,
              "check that those nodes started, and that they reach master_addr:master_port "
              "(address, port, firewall)", family="cluster", keys=("time out nodes", "timed out node")),
    Signature("node_lost", _rx(r"The node: (?P<node>\S+) is timed out"),
              "node {node} lost from the cluster network (its heartbeat to the scheduler stopped)", FATAL,
              "the node died or its network to node 0 broke: check that host and the link between the nodes",
              family="cluster", keys=("the node:",)),
    Signature("cluster_build_timeout", _rx(r"Topology build timed out\.?\s*$"),
              "the cluster was not built in time: not every node joined", FATAL,
              "check that every node started and reaches master_addr:master_port; "
              "raise --cluster-time-out if nodes start far apart", family="cluster", keys=("topology build",)),
    Signature("main_process_gone", _rx(r"(?i)main process disappeared"),
              "the worker's parent (msrun) disappeared, so the worker stopped mid-run", FATAL,
              "msrun was killed (OOM killer, SIGKILL, a lost session): check dmesg and the node's msrun log",
              family="msrun", role=EFFECT, keys=("main process",)),
    Signature("ring_allreduce", _rx(r"RunRingAllReduce.*fail"),
              "a host-side all-reduce between the nodes failed: a node left the cluster network", FATAL,
              "check the other node and the network between the nodes", family="cluster", role=EFFECT,
              keys=("ringallreduce",)),
    # ---- MindFormers stopping the run itself (core/callback/callback.py, trainer/base_trainer.py)
    Signature("mf_global_norm",
              _rx(r"global norm (?P<norm>\S+?)(?: of step (?P<step>\d+))? (?:has been (?P<times>\d+) consecutive "
                  r"times greater than threshold:? (?P<thr>[^,\s]+)|is greater equal than threshold "
                  r"(?P<thr2>[^,\s]+)), stop training"),
              "MindFormers stopped training: the global norm {norm} went over its threshold "
              "(global-norm monitor)", FATAL, _MONITOR_HINT, family="MindFormers monitor", any_level=True,
              final=True, keys=("global norm",)),
    Signature("mf_nan_loss", _rx(r"There is (?:nan|inf) in [\w ]+? with value .*terminate training|"
                                 r"device_accum_local_loss of .* is .*, terminate training"),
              "MindFormers stopped training: the loss or a gradient is NaN / Inf (loss / overflow monitor)", FATAL,
              _MONITOR_HINT, family="MindFormers monitor", any_level=True, final=True,
              keys=("terminate training",)),
    Signature("mf_checkpoint_health", _rx(r"No healthy checkpoint found"),
              "MindFormers found no healthy checkpoint to resume from (checkpoint health monitor)", FATAL,
              "every saved checkpoint was marked unhealthy: resume from an older one or start afresh",
              family="MindFormers monitor", final=True, keys=("healthy checkpoint",)),
    # other versions' monitors: an exception or ERROR line that says it stops training (an INFO
    # "stop training" at the last step is a normal end: capped like any INFO line)
    Signature("mf_stop", _rx(r"(?i)\b(?:stop|terminat|abort)\w* (?:the )?training\b(?! (?:is|was) (?:not|skipped))|"
                             r"\btraining (?:is |was |has been |will be )?(?:stopped|terminated|aborted)\b"),
              "MindFormers stopped training: {line_words}", FATAL, _MONITOR_HINT,
              family="MindFormers monitor", final=True, keys=("training",)),
    # ---- native crashes (no Python traceback): signal handlers, faulthandler, glog, the shell
    Signature("native_crash",
              _rx(r"Fatal Python error: (?P<what>Segmentation fault|Aborted|Bus error|Floating point exception)|"
                  r"\*\*\* (?P<sig>SIG[A-Z]+) (?:\(@\S+\) received by PID|received at time=)|"
                  r"Signal \d+ \((?P<sig2>SIG(?:SEGV|BUS|ABRT|FPE|ILL))\) received by PID|"
                  r"[Cc]aught signal \d+ \((?P<what5>Segmentation fault|Bus error|Aborted|Illegal instruction)|"
                  r"Signal: (?P<what2>[A-Za-z ]+?) \((?P<signum>\d+)\)\s*$|"
                  r"Failing at address:? (?P<addr>\S+)|"
                  r"(?:^|\s)(?P<what3>Segmentation fault|Aborted|Bus error)\s+\(core dumped\)|"
                  r"^(?:.*: line \d+: +\d+ )?(?P<what4>Segmentation fault|Bus error)\s*(?:\(core dumped\))?(?:\s|$)|"
                  r"\*\*\* Aborted at \d+ \(unix time\)"),
              "the process crashed in native code ({what}{what2}{what3}{what4}{what5}{sig}{sig2})", FATAL,
              _CRASH_HINT, family="native crash", final=True,
              keys=("fatal python", "sig", "failing at", "segmentation", "core dumped", "bus error", "aborted")),
    # ---- the device
    # the HCCL timeouts refine their codes (EI0002, EI0006); every other code line is named by its code
    Signature("hccl_notify_timeout", _rx(r"EI0002|Notify register times out|[Nn]otify wait.*time ?out"),
              "an HCCL collective timed out waiting for a remote rank", FATAL, _HCCL_EXEC_HINT,
              family="HCCL", role=EFFECT, keys=("ei0002", "notify")),
    Signature("hccl_connect_timeout", _rx(r"EI0006|(?i:socket establish timeout|getting socket times out|"
                                          r"connect.*time(?:d)? ?out.*hccl|hccl.*connect.*time(?:d)? ?out)"),
              "HCCL could not connect to a remote rank in time", FATAL, _HCCL_CONNECT_HINT,
              family="HCCL", role=EFFECT, keys=("ei0006", "socket", "connect")),
    # every CANN code by its shape; the known ones (CANN_CODES) say what they mean
    Signature("cann_error",
              _rx(r"(?:^|[\s\[=(])" + _CODE + r"(?=:|\s|\]|\)|$)"),
              "CANN error {code} from {family_words}", FATAL,
              "look the code up in the CANN error code reference; the lines after it give the reason",
              family="CANN"),
    # a runtime result number in a call's return value
    Signature("rt_result",
              _rx(r"(?i)(?:ret(?:urn)?(?: ?code)?|result|error ?code|err(?:or)?(?: code)?|code)"
                  r"(?: is)?\s*[=:]?\s*\[?(?P<num>[125]07\d{3})(?!\d)"),
              "the CANN runtime returned {num} ({num_words})", FATAL, _STREAM_HINT, family="runtime",
              keys=("07",)),
    Signature("data_queue",
              _rx(r"unsupported acl datatype|ParseType\]|(?i:tdt\b.*(?:fail|error))|"
                  r"(?i:data ?queue\b.*(?:fail|error|abnormal))|(?i:getnext\b.*(?:fail|time ?out))"),
              "the device data channel failed (the dataset queue / tdt feeding the device)", FATAL,
              "the first such line names the batch or type it could not send; check the dataset's columns "
              "and dtypes; a later stream timeout is its consequence", family="data queue",
              keys=("acl datatype", "parsetype", "tdt", "queue", "getnext")),
    Signature("stream_sync", _rx(r"aclrtSynchronizeStream(?:WithTimeout)?\b.*(?:fail|error|time)|"
                                 r"(?:fail|error).*aclrtSynchronizeStream(?:WithTimeout)?|"
                                 r"(?i:sync stream (?:failed|error))"),
              "the NPU stream did not finish (aclrtSynchronizeStreamWithTimeout failed): a kernel or a "
              "collective on the device failed or hung", FATAL, _STREAM_HINT, family="runtime", role=EFFECT,
              keys=("synchronizestream", "sync stream")),
    Signature("device_oom", _rx(r"(?i)(?:device|npu|hbm).*out of memory|out of memory.*(?:device|npu)|"
                                r"Malloc device memory failed|memory isn't enough and alloc failed|"
                                r"Memory isn't enough|Out of Memory!!!|Failed to allocate memory"),
              "the NPU ran out of device memory", FATAL, _OOM_HINT, family="memory", keys=("memory",)),
    Signature("device_id", _rx(r"(?i)invalid device ?id|device ?id\b.*(?:is invalid|out of range|must be)|"
                               r"(?:set ?device|aclrtSetDevice|rtSetDevice)\b.*fail"),
              "the device id is invalid or the card cannot be opened", FATAL,
              "check DEVICE_ID / ASCEND_RT_VISIBLE_DEVICES against npu-smi info, and that no other job holds "
              "the card", family="device", keys=("device",)),
    Signature("rank_table", _rx(r"(?i)rank ?table\b.*(?:invalid|fail|error|not exist|no such|mismatch)"),
              "the rank table (RANK_TABLE_FILE) is invalid or does not match the cards in use", FATAL,
              "regenerate it with hccl_tools.py for the hosts and cards of this job; every device_ip and "
              "rank_id must be present", family="rank table", keys=("rank",)),
    Signature("heartbeat_lost",
              _rx(r"(?i)heart ?beat\b.*\blost\b|lost heart ?beat|heart ?beat\b.*(?:abnormal|time(?:d)? ?out)"),
              "a remote rank's heartbeat was lost (it died or its link broke)", FATAL,
              "read the remote rank's own log: it failed first", family="HCCL", role=EFFECT, keys=("heart",)),
    Signature("hccl_exec_timeout", _rx(r"(?i)hccl\b.*\bexec\w*\b.*\btime(?:d)? ?out\b"),
              "an HCCL collective timed out waiting for a remote rank", FATAL, _HCCL_EXEC_HINT,
              family="HCCL", role=EFFECT, keys=("hccl",)),
    Signature("hccl_error", _rx(r"^\[(?:ERROR|CRITICAL)\] ?HCC[LP]\("),
              "HCCL reported an error: {msg}", FATAL, _HCCL_EXEC_HINT, family="HCCL", role=GENERIC, keys=("hcc",)),
    Signature("cann_module",
              _rx(r"^\[(?:ERROR|CRITICAL)\] ?(?P<module>RUNTIME|GE|FE|TBE|TEFUSION|ASCENDCL|ACL|DRV|AICPU|TSD|"
                  r"DEVICE|KERNEL|DVPP|HCCL_ALG)\("),
              "CANN's {module} module reported an error: {msg}", FATAL, _INTERNAL_HINT, family="CANN", role=GENERIC,
              keys=("error]", "critical]")),
    # ---- the rank's own death (text some runtimes print)
    Signature("signal", _rx(r"(?:[Kk]illed by|[Rr]eceived|[Cc]aught|exit(?:ed)? (?:with|by|on)|terminated by|"
                            r"died (?:with|of)) signal (?P<sig>\d+|SIG[A-Z]+)"),
              "the process was killed by a signal ({sig})", FATAL,
              "SIGKILL without a word is usually the OOM killer (dmesg); SIGTERM came from outside",
              family="signal", role=EFFECT, keys=("signal",)),
    # ---- plain ERROR lines: reported, rank low
    Signature("error_line", _rx(r" - (?:ERROR|CRITICAL) - |^\[(?:ERROR|CRITICAL)\] "),
              "an ERROR line", ERROR, role=GENERIC, keys=("error", "critical")),
)

_QUIET_LEVEL = re.compile(r"^\s*\[(?:INFO|WARNING|DEBUG)\]| - (?:INFO|WARNING|DEBUG) - ")
#: A shell's echo of the user's own commands (``set -x``: ``+ cmd``) and environment.
ECHO = re.compile(r"^\s*(?:\++ |export\s+[A-Za-z_]\w*=|declare -x |setenv |[A-Z_][A-Z0-9_]*=\S*\s*$)")
_REMOTE = re.compile(r"(?i)remote[ _]?rank(?:[ _]?id)?\s*[:=]?\s*\[?\s*(\d+)")
#: HCCL's report of the root of a cluster fault: ``Cluster Exception Location[IP/ID]:[10.0.0.2/1]``,
#: ``serverId[10.0.0.2], deviceId[4], Heartbeat Lost Occurred`` (CANN's HCCL user guide, EI0002).
_REMOTE_HOST = re.compile(r"Location\[IP/ID\]:\[([^/\]]+)/\d+\]|serverId\[([^\]]+)\]|remote server id\[([^\]]+)\]")


_EXC_PREFIX = re.compile(r"^(?:.* - (?:ERROR|CRITICAL) - |\[(?:ERROR|CRITICAL)\] \S+ )?(?:\w+(?:Error|Exception): )?")


_MODULE_MSG = re.compile(r"^\[\w+\] ?\w+\([^)]*\):\S+?(?=\[|\s)\s*(?:\[[^\]]*\]\s*)*(.*)$")


def _module_message(line: str) -> str:
    """What a CANN module line says, without its level, module, pid, time and ``[file:line]`` tags."""
    m = _MODULE_MSG.match(line.strip())
    return (m.group(1) if m and m.group(1) else line.strip())[:200]


def _signal_words(number: int) -> str:
    try:
        return f"killed by signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"killed by signal {number}"


class _Words(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"


#: After a code: ``: [PID: 3213] 2024-09-01-10:00:00.000.000 The argument is invalid.``
_CODE_TEXT = re.compile(r"\s*:?\s*(?:\[PID: ?\d+\]\s*)?(?:\d{4}-\d\d-\d\d[- ][\d:.]+\s*)?(.*?)\s*$")
_ANY_CODE = re.compile(r"(?:^|[\s\[=(])" + _CODE + r"(?=:|\s|\]|\)|$)")
_RT_NUM = re.compile(r"(?<!\d)([125]07\d{3})(?!\d)")


def _rt_words(num: int) -> tuple[str, str, str]:
    return RT_RESULTS.get(num, (RT_CLASSES[str(num)[:3]], GENERIC, "runtime"))


def _code_words(words: _Words, sig: Signature, line: str) -> tuple[str, str, str, str]:
    """(cause, hint, role, family) of a CANN code or runtime result row. An internal code
    (EH9999 "Inner Error") on a line that also carries a runtime result (107020) is named by
    what the result means: "task timeout" says more than "inner error"."""
    if sig.name == "rt_result":
        meaning, role, family = _rt_words(int(words["num"]))
        words["num_words"] = meaning
        return sig.cause.format_map(words), sig.hint, role, family
    code, module = words["code"], words["module"]
    family = CODE_FAMILY.get(module, "CANN")
    if code in CANN_CODES:
        meaning, role, hint = CANN_CODES[code]
        cause = f"CANN error {code}: {meaning}"
    else:
        words["family_words"] = CANN_MODULES.get(module, "CANN")
        role = GENERIC if code.endswith("9999") else CAUSE
        cause, hint = sig.cause.format_map(words), _FAMILY_HINT.get(module, sig.hint)
        said = _CODE_TEXT.match(line[line.find(code) + len(code):])
        if said and said.group(1) and role == CAUSE:  # a code in no table: what it says is the cause
            cause = f"{cause}: {said.group(1)[:200]}"
    rt = _RT_NUM.search(line, line.find(code) + len(code))
    if role == GENERIC and rt is not None:
        meaning, role, _ = _rt_words(int(rt.group(1)))
        cause = f"CANN error {code} ({CANN_MODULES.get(module, 'CANN')}): {meaning} ({rt.group(1)})"
        hint = _STREAM_HINT
    return cause, hint, role, family


_ANY_KEY = re.compile("|".join(sorted({re.escape(k) for sig in SIGNATURES for k in sig.keys}, key=len, reverse=True)))
_KEYLESS = tuple(sig for sig in SIGNATURES if not sig.keys)


def match(line: str) -> Finding | None:
    """The first signature that matches ``line`` (capped at ``error`` on an INFO/WARNING line,
    None on a shell's echo of a command or variable). A line with none of the signatures' keys
    is tried against the keyless ones only: one search instead of a key test per signature,
    the follower's largest cost per line (2.2 of 8.5 s on a 100k-line log)."""
    if ECHO.match(line):
        return None
    low = line.lower()
    for sig in SIGNATURES if _ANY_KEY.search(low) else _KEYLESS:
        if sig.keys and not any(k in low for k in sig.keys):
            continue
        m = sig.pattern.search(line)
        if m is None:
            continue
        words = _Words({k: v for k, v in m.groupdict().items() if v is not None})
        cause, hint, role, family = sig.cause, sig.hint, sig.role, sig.family
        if sig.name in ("cann_error", "rt_result"):
            cause, hint, role, family = _code_words(words, sig, line)
        else:
            if sig.name == "native_crash":
                kinds = ("what", "what2", "what3", "what4", "what5", "sig", "sig2")
                for k in kinds:
                    words.setdefault(k, "")
                if not any(words[k] for k in kinds):
                    words["what"] = "a fatal signal"
            elif sig.name == "worker_exit" and words.get("code", "").startswith("-"):
                words["code"] = f"{words['code']}: {_signal_words(int(words['code'][1:]))}"
            elif sig.name in ("hccl_error", "cann_module"):
                words["msg"] = _module_message(line)
            elif sig.name == "mf_stop":
                words["line_words"] = _EXC_PREFIX.sub("", line.strip())[:200]
            cause, hint = cause.format_map(words), hint.format_map(words)
        severity = sig.severity
        if severity == FATAL and not sig.any_level and _QUIET_LEVEL.search(line):
            severity = BENIGN if sig.name.startswith(("hccl", "cann", "rt_")) else ERROR
        remote = _REMOTE.search(line) if role == EFFECT else None
        where = _REMOTE_HOST.search(line) if role == EFFECT else None
        code = words.get("num") if sig.name == "rt_result" else words.get("code") if sig.name == "cann_error" \
            else (lambda c: c.group("code") if c else None)(_ANY_CODE.search(line))
        if remote is not None:  # "waiting for remote rank 24": the rank to read next
            named = f"remote rank {remote.group(1)}"
            cause = cause.replace("a remote rank", named) if "a remote rank" in cause else f"{cause} ({named})"
        return Finding(sig.name, severity, cause, hint, line.strip(), family, role,
                       code if code not in (None, "?") else None, int(remote.group(1)) if remote else None,
                       sig.final, next(g for g in where.groups() if g) if where else None)
    return None


def best(findings: list[Finding]) -> Finding | None:
    """The explanation to show: of the highest severity, the first that says what went wrong
    (cause), else the first timeout or death (effect), else the first generic line."""
    top = None
    for f in findings:
        if f.severity == BENIGN:
            continue
        if top is None or (_RANK[f.severity], -ROLE_ORDER[f.role]) > (_RANK[top.severity], -ROLE_ORDER[top.role]):
            top = f
    return top
