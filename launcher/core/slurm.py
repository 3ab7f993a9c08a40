"""Slurm, the pure half: the target file, the sbatch script and srun/msrun line, state mapping.

A Slurm target is a YAML file given with ``-H`` like a hostfile, whose top-level key is
``slurm:``. Nothing here runs anything: :func:`build_batch` turns a job + rendered config +
target into the exact batch script ``sbatch`` gets (``alaunch plan`` prints it; ``submit``
sends the same text), and :func:`map_state` / :func:`parse_squeue` / :func:`parse_scontrol`
turn what Slurm says into registry states. The I/O half is :mod:`launcher.ops.slurm`.

Why the script looks like this (checked with Debian's slurm-wlm 22.05 and msrun 2.9, see
design/facts.md): one ``srun --ntasks-per-node=1 --kill-on-bad-exit=1`` task per node runs a
*fixed* wrapper (:data:`NODE_SCRIPT`) that takes the node rank from ``$SLURM_NODEID`` and the
master from the first node of ``$SLURM_JOB_NODELIST`` (its ``NodeAddr``), then execs msrun with
``--join=True``: when the step's main process returns, Slurm kills what is left, so msrun must
stay in the foreground until its workers end. srun runs in the background under ``wait`` so a
SIGTERM from Slurm (scancel, time limit) reaches the script's trap at once and the follower
learns the end (``state/exit_code``) even when the scheduler, not msrun, ended the job.
User values never become shell code: options are checked against a strict character set,
paths and arguments are shlex-quoted, env values travel in the environment of ``sbatch``.
"""

from __future__ import annotations

import difflib
import posixpath
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from launcher.core import yamlio
from launcher.core.hostfile import Host, check_host_name
from launcher.core.layout import JobLayout
from launcher.core.plan import CANN_SET_ENV, DEFAULT_CLUSTER_TIME_OUT, EnvVar, entry_path, job_env
from launcher.core.spec import JobSpec
from launcher.errors import InputError

KEYS = ("login", "user", "port", "identity", "partition", "nodes", "cards_per_node", "gres", "account",
        "qos", "time", "workdir", "extra_sbatch", "python", "bin_dir")
# Values that land on an #SBATCH line: no whitespace, no quotes, nothing a shell or sbatch's
# own line splitter would read as a second option.
_OPTION_VALUE = re.compile(r"[A-Za-z0-9_.:,/@%+=-]{1,200}")
_TIME = re.compile(r"(\d+-)?\d+(:\d{1,2}){0,2}|\d+-\d+")
_EXTRA = re.compile(r"--[a-z][a-z0-9-]*(=[A-Za-z0-9_.:,/@%+=-]+)?")
_PATH = re.compile(r"/[A-Za-z0-9_.,/@%+=-]*")
SCRIPT_NAME = "job.sbatch"
SLURM_OUT = "slurm-%j.out"  # the batch script's own stdout/stderr (srun's messages), in state/

# The per-node wrapper srun starts (fixed text; argv: msrun, then msrun's other arguments).
NODE_SCRIPT = (
    'first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1); '
    'addr=$(scontrol show node "$first" -o | tr " " "\\n" | sed -n "s/^NodeAddr=//p"); '
    'if [ -n "$ALAUNCH_USE_GRES" ] && [ -n "${ASCEND_RT_VISIBLE_DEVICES:-}" ]; then :; '
    'else export ASCEND_RT_VISIBLE_DEVICES="$ALAUNCH_DEVICES"; fi; '
    'for f in "${ALAUNCH_CANN_SET_ENV:-' + CANN_SET_ENV + '}"; do '
    '[ -f "$f" ] && . "$f" >/dev/null 2>&1; done; '
    'export PYTHONPATH="$ALAUNCH_PYTHONPATH${PYTHONPATH:+:$PYTHONPATH}"; '
    'if [ -n "$ALAUNCH_BIN_DIR" ]; then export PATH="$ALAUNCH_BIN_DIR:$PATH"; fi; '
    'if [ -n "${ALAUNCH_SAMPLER:-}" ] && command -v npu-smi >/dev/null 2>&1; then '
    'python3 -S "$ALAUNCH_SAMPLER" "$ALAUNCH_SAMPLER_REQUEST" </dev/null >/dev/null 2>&1 & fi; '
    'msrun=$1; shift; '
    'exec "$msrun" --master_addr="${addr:-$first}" '
    '--master_port="${ALAUNCH_MASTER_PORT:-$((20000 + SLURM_JOB_ID % 40000))}" '
    '--node_rank="$SLURM_NODEID" "$@"'
)
NODE_SCRIPT_NAME = "alaunch-node"


@dataclass(frozen=True)
class SlurmTarget:
    """Where and how to submit: the login node and the allocation a job gets."""

    login: str
    workdir: str
    nodes: int
    cards_per_node: int
    partition: str | None = None
    gres: str | None = None  # None: npu:<cards_per_node>; "": no --gres
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    extra_sbatch: tuple[str, ...] = ()
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    python: str | None = None  # python on the login node (default: python3; ours for localhost)
    bin_dir: str | None = None  # msrun/python on the compute nodes (first on PATH)
    source: str | None = None
    engine: ClassVar[str] = "slurm"  # the engine that runs this target (launcher.ops.engines)
    shared_workdir: ClassVar[bool] = True  # every node sees the workdir: outputs stay where they are
    schedules: ClassVar[bool] = True  # Slurm queues and places the jobs (independent steps go in together)

    @property
    def gres_option(self) -> str | None:
        if self.gres is None:
            return f"npu:{self.cards_per_node}"
        return self.gres or None

    def login_host(self) -> Host:
        """The login node as a host the runners reach (``localhost`` runs here, no SSH)."""
        return Host(self.login, max(1, self.cards_per_node), user=self.user, port=self.port,
                    identity=self.identity, workdir=self.workdir, source=self.source)

    def stage_hosts(self) -> list[Host]:
        """Staging (and prune) reach the shared workdir through the login node alone."""
        return [self.login_host()]

    def node_hosts(self) -> list[Host]:
        """Stand-ins for the nodes Slurm will allocate (``node0`` ...): what render/plan count."""
        return [Host(f"node{i}", self.cards_per_node, workdir=self.workdir) for i in range(self.nodes)]

    def sbatch_options(self, job_id: str, root: str, *, output: str | None = None,
                       task: bool = False) -> list[str]:
        """The job's ``#SBATCH`` options; ``task``: one of alaunch's own programs (a merge) on
        one node, without the NPU gres (it reads and writes checkpoint files, on the CPU)."""
        layout = JobLayout(root)
        output = output or posixpath.join(layout.state, SLURM_OUT)
        opts = [f"--job-name={job_id}", f"--nodes={1 if task else self.nodes}", "--ntasks-per-node=1",
                f"--output={output}", f"--chdir={root}"]
        for key, value in (("partition", self.partition), ("gres", None if task else self.gres_option),
                           ("account", self.account), ("qos", self.qos), ("time", self.time)):
            if value:
                opts.append(f"--{key}={value}")
        return opts + list(self.extra_sbatch)


def _bad(msg: str, source: str, key: str, text: str) -> InputError:
    return InputError(msg, source=source, line=yamlio.line_of(text, ("slurm", key.split(".")[0])),
                      key=f"slurm.{key}")


def parse_target(text: str, source: str = "<slurm target>") -> SlurmTarget:
    """The ``slurm:`` mapping -> :class:`SlurmTarget`; every bad value names file:line and key."""
    data = yamlio.loads(text, source)
    if set(data) != {"slurm"} or not isinstance(data["slurm"], dict):
        raise InputError("a Slurm target has one top-level key, `slurm:`, holding a mapping",
                         source=source, line=1, key="slurm")
    raw: dict[str, Any] = data["slurm"]
    for key in raw:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _bad(f"unknown key {key!r}{hint}; valid: {', '.join(KEYS)}", source, str(key), text)
    for key in ("login", "workdir", "nodes", "cards_per_node"):
        if key not in raw:
            raise InputError(f"missing key slurm.{key}", source=source, line=1, key=f"slurm.{key}")

    def positive(key: str) -> int:
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _bad(f"{key} must be a positive integer, got {value!r}", source, key, text)
        return value

    def option(key: str, allow_empty: bool = False) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        value = str(value)
        if value == "" and allow_empty:
            return ""
        if not _OPTION_VALUE.fullmatch(value):
            raise _bad(f"{key} {value!r} has characters Slurm options do not take; valid: letters, "
                       "digits and _ . : , / @ % + = -", source, key, text)
        return value

    login = str(raw["login"])
    check_host_name(login, source=source, line=yamlio.line_of(text, ("slurm", "login")), key="slurm.login")
    workdir = str(raw["workdir"])
    if not _PATH.fullmatch(workdir) or ".." in workdir.split("/"):
        raise _bad(f"workdir {workdir!r} must be an absolute path on the cluster's shared filesystem "
                   "(no ~, spaces or '..': sbatch takes it literally)", source, "workdir", text)
    time_value = option("time")
    if time_value is not None and not _TIME.fullmatch(time_value):
        raise _bad(f"time {time_value!r} is not a Slurm time; valid: MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]",
                   source, "time", text)
    extra = raw.get("extra_sbatch") or []
    if not isinstance(extra, list):
        raise _bad("extra_sbatch must be a list of options, e.g. [\"--exclusive\"]", source, "extra_sbatch", text)
    for i, item in enumerate(extra):
        if not isinstance(item, str) or not _EXTRA.fullmatch(item):
            raise _bad(f"extra_sbatch[{i}] {item!r} is not one --option[=value] (no spaces or quotes)",
                       source, "extra_sbatch", text)
        if item.split("=")[0] in ("--nodes", "--ntasks-per-node", "--output", "--chdir", "--job-name"):
            raise _bad(f"extra_sbatch[{i}] {item!r} is set by alaunch; use the target's keys",
                       source, "extra_sbatch", text)
    port = raw.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        raise _bad(f"port must be 1-65535, got {port!r}", source, "port", text)
    return SlurmTarget(login=login, workdir=workdir.rstrip("/") or "/", nodes=positive("nodes"),
                       cards_per_node=positive("cards_per_node"), partition=option("partition"),
                       gres=option("gres", allow_empty=True), account=option("account"), qos=option("qos"),
                       time=time_value, extra_sbatch=tuple(extra), user=option("user"), port=port,
                       identity=None if raw.get("identity") is None else str(raw["identity"]),
                       python=None if raw.get("python") is None else str(raw["python"]),
                       bin_dir=option("bin_dir"), source=source)


# ----------------------------------------------------------------------------- the batch script

@dataclass(frozen=True)
class BatchPlan:
    """What ``sbatch`` gets: the script text and the environment it runs with."""

    job_id: str
    root: str
    script: str
    env: tuple[EnvVar, ...]
    msrun_argv: tuple[str, ...]  # msrun and its arguments but master/port/rank (from Slurm)
    nodes: int
    cards_per_node: int

    @property
    def layout(self) -> JobLayout:
        return JobLayout(self.root)

    @property
    def script_path(self) -> str:
        return posixpath.join(self.layout.state, SCRIPT_NAME)

    def env_values(self) -> dict[str, str]:
        return {v.name: v.value for v in self.env}

    def render(self) -> str:
        """``alaunch plan``: the environment (secrets as ***), the sbatch line and the script."""
        env = " ".join(f"{v.name}={shlex.quote(v.display())}" for v in self.env)
        return (f"# job {self.job_id}: {self.nodes} node(s) x {self.cards_per_node} worker(s) through Slurm\n"
                f"# on the login node, in {self.root}:\n"
                f"env {env} \\\n  sbatch --parsable {shlex.quote(self.script_path)}\n"
                f"# ---- {self.script_path}\n{self.script}")


def msrun_argv(spec: JobSpec, layout: JobLayout, target: SlurmTarget,
               cluster_time_out: int = DEFAULT_CLUSTER_TIME_OUT) -> tuple[str, ...]:
    msrun = posixpath.join(target.bin_dir, "msrun") if target.bin_dir else "msrun"
    return (msrun, f"--worker_num={target.nodes * target.cards_per_node}",
            f"--local_worker_num={target.cards_per_node}", f"--log_dir={layout.msrun_log}", "--join=True",
            f"--cluster_time_out={cluster_time_out}", entry_path(spec, layout), "--config", layout.config,
            *spec.entry.args)


@dataclass(frozen=True)
class NodeCheck:
    """The software check before msrun on a job of several nodes (what a hostfile submit's
    preflight does before it starts anything): ``versions`` (argv after the python) runs once
    on every node, each answer into ``state/versions/``; ``skew`` runs on the batch host over
    those answers and exits 1, one line on stderr, when the nodes differ: then no msrun starts."""

    versions: tuple[str, ...]
    skew: tuple[str, ...]
    answers: str  # the directory of the nodes' answers (state/versions)


@dataclass(frozen=True)
class NodeSampler:
    """The NPU telemetry of a Slurm job: the per-node wrapper starts ``program`` (the follower
    script's SAMPLE, staged in the job dir) with ``request`` beside msrun on every node, after
    ``ASCEND_RT_VISIBLE_DEVICES`` is set, when the node has ``npu-smi``. Why on the node: the
    follower reads the shared job dir through the login host, whose cards are not the job's."""

    program: str
    request: str  # the SAMPLE request, one argv element (wire.request_arg)


def build_batch(spec: JobSpec, target: SlurmTarget, job_id: str, *, root: str | None = None,
                environ: Mapping[str, str] | None = None, master_port: int | None = None,
                cluster_time_out: int = DEFAULT_CLUSTER_TIME_OUT, check: NodeCheck | None = None,
                sampler: NodeSampler | None = None) -> BatchPlan:
    """The batch script for ``spec`` on ``target`` (pure). ``check``: the nodes' software is
    compared first (jobs of more than one node); ``sampler``: each node samples its cards."""
    import os
    root = root or JobLayout.for_job(target.workdir, job_id).root
    layout = JobLayout(root)
    environ = os.environ if environ is None else environ
    user_env = job_env(spec, environ)
    reserved = [v.name for v in user_env if v.name.startswith(("ALAUNCH_", "SLURM_"))
                or v.name == "ASCEND_RT_VISIBLE_DEVICES"]
    if reserved:
        raise InputError(f"env {reserved[0]} is set by alaunch or Slurm; remove it from the job",
                         source=spec.source, key=f"env.{reserved[0]}")
    env = [EnvVar("ALAUNCH_PYTHONPATH", layout.code),
           EnvVar("ALAUNCH_DEVICES", ",".join(map(str, range(target.cards_per_node)))),
           EnvVar("ALAUNCH_USE_GRES", "1" if target.gres_option else ""),
           EnvVar("ALAUNCH_BIN_DIR", target.bin_dir or "")]
    if master_port is not None:
        if not 0 < master_port < 65536:
            raise InputError(f"master port {master_port} is out of range; valid: 1-65535", key="--master-port")
        env.append(EnvVar("ALAUNCH_MASTER_PORT", str(master_port)))
    if sampler is not None:
        env += [EnvVar("ALAUNCH_SAMPLER", sampler.program), EnvVar("ALAUNCH_SAMPLER_REQUEST", sampler.request)]
    env += user_env
    argv = msrun_argv(spec, layout, target, cluster_time_out)
    q = shlex.quote
    exit_file = q(posixpath.join(layout.state, "exit_code"))
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {opt}" for opt in target.sbatch_options(job_id, root)]
    lines += [
        f"# alaunch job {job_id} ({spec.name}): {target.nodes} node(s) x {target.cards_per_node} worker(s)",
        "# Slurm's SIGTERM (scancel, time limit) reaches this trap at once: srun runs under `wait`.",
        f"trap 'echo 143 > {exit_file}.tmp && mv {exit_file}.tmp {exit_file}; exit 143' TERM",
    ]
    if check is not None and target.nodes > 1:
        answers = q(check.answers)
        lines += [
            "# every node's MindSpore/MindFormers/CANN/driver, compared before msrun starts",
            'py="${ALAUNCH_BIN_DIR:+$ALAUNCH_BIN_DIR/}python3"',
            f"mkdir -p {answers}",
            f'srun --ntasks-per-node=1 --output={q(posixpath.join(check.answers, "%n.out"))} "$py" -S '
            + " ".join(q(a) for a in check.versions),
            f'"$py" -S {" ".join(q(a) for a in check.skew)} >/dev/null '
            f"|| {{ echo 1 > {exit_file}.tmp && mv {exit_file}.tmp {exit_file}; exit 1; }}",
        ]
    lines += [
        "srun --ntasks-per-node=1 --kill-on-bad-exit=1 \\",
        f"  bash -c {q(NODE_SCRIPT)} {NODE_SCRIPT_NAME} \\",
        "  " + " ".join(q(a) for a in argv) + " &",
        "wait $!",
        "code=$?",
        f'echo "$code" > {exit_file}.tmp && mv {exit_file}.tmp {exit_file}',
        'exit "$code"',
    ]
    return BatchPlan(job_id, root, "\n".join(lines) + "\n", tuple(env), argv, target.nodes,
                     target.cards_per_node)


@dataclass(frozen=True)
class TaskPlan:
    """One of alaunch's own programs (``entry/merge_ckpt.py``) as a one-node Slurm job: its
    files sit in ``where`` (a directory of the shared workdir, e.g. the training's
    ``output/merged``): the program, the batch script, Slurm's output, the program's one JSON
    line (``.answer``, written only when it exited 0) and its exit code (``.exit``)."""

    name: str  # the Slurm job name (prune protects every name squeue still lists)
    where: str
    script: str

    def path(self, suffix: str) -> str:
        return posixpath.join(self.where, f"{self.name}{suffix}")

    @property
    def script_path(self) -> str:
        return self.path(".sbatch")

    @property
    def program_path(self) -> str:
        return self.path(".py")

    def output_path(self, slurm_id: str) -> str:
        return self.path(f"-{slurm_id}.out")

    def render(self) -> str:
        return (f"# on the login node: sbatch --parsable {shlex.quote(self.script_path)}\n"
                f"# ---- {self.script_path}\n{self.script}")


def build_task(target: SlurmTarget, name: str, where: str, program: str, request: Mapping[str, Any]) -> TaskPlan:
    """The batch script of a task (pure): ``program`` (its file name in ``where``) with the
    JSON ``request`` as its one argument, run by the compute node's python (``bin_dir``'s,
    else the first on PATH, as the node check's), in the background under ``wait`` like a
    job's so a scancel reaches the trap at once."""
    import json
    q = shlex.quote
    plan = TaskPlan(name, where, "")
    py = posixpath.join(target.bin_dir, "python3") if target.bin_dir else "python3"
    answer, exit_file = q(plan.path(".answer")), q(plan.path(".exit"))
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {opt}" for opt in target.sbatch_options(name, where, output=plan.path("-%j.out"), task=True)]
    lines += [
        f"# alaunch task {name}: {program} on one node; its answer in {plan.path('.answer')}",
        f"trap 'echo 143 > {exit_file}.tmp && mv {exit_file}.tmp {exit_file}; exit 143' TERM",
        f"{q(py)} {q(plan.program_path)} {q(json.dumps(request, sort_keys=True))} "
        f"> {answer}.tmp &",
        "wait $!",
        "code=$?",
        f'if [ "$code" = 0 ]; then mv {answer}.tmp {answer}; fi',
        f'echo "$code" > {exit_file}.tmp && mv {exit_file}.tmp {exit_file}',
        'exit "$code"',
    ]
    return replace(plan, script="\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- states

# Slurm job state -> registry state. Anything not listed (CONFIGURING, COMPLETING, SUSPENDED,
# REQUEUED, RESIZING, SIGNALING, STAGE_OUT ...) is still alive: RUNNING once it has nodes.
_STATES = {
    "PENDING": "queued", "REQUEUE_HOLD": "queued", "REQUEUE_FED": "queued", "REQUEUED": "queued",
    "RUNNING": "running", "CONFIGURING": "running", "COMPLETING": "running", "SUSPENDED": "running",
    "COMPLETED": "succeeded",
    "FAILED": "failed", "NODE_FAIL": "failed", "TIMEOUT": "failed", "OUT_OF_MEMORY": "failed",
    "PREEMPTED": "failed", "BOOT_FAIL": "failed", "DEADLINE": "failed", "REVOKED": "failed",
    "CANCELLED": "cancelled",
}


@dataclass(frozen=True)
class SlurmJobState:
    """One job as Slurm reports it."""

    slurm_id: str
    slurm_state: str  # e.g. PENDING, RUNNING, TIMEOUT
    reason: str = ""  # Slurm's reason (Resources, Priority, NonZeroExitCode, ...)
    nodes: tuple[str, ...] = ()  # allocated node names, in SLURM_NODEID order
    exit_code: int | None = None
    signal: int | None = None
    fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return map_state(self.slurm_state)

    def describe(self) -> str:
        """The registry's reason: Slurm's own words (``PENDING (Resources)``, ``TIMEOUT``)."""
        text = self.slurm_state
        if self.reason and self.reason != "None":
            text += f" ({self.reason})"
        if self.exit_code not in (None, 0) or self.signal:
            text += f", exit code {self.exit_code}" + (f" signal {self.signal}" if self.signal else "")
        return text


def map_state(slurm_state: str) -> str:
    base = slurm_state.split()[0].rstrip("+").upper() if slurm_state.strip() else ""
    if base.startswith("CANCELLED"):
        return "cancelled"
    return _STATES.get(base, "running" if base else "unknown")


SQUEUE_FORMAT = "%i|%T|%r|%N"  # id, state (long), reason, node list


def squeue_argv(slurm_ids: Sequence[str]) -> list[str]:
    """One query for many jobs (squeue drops the ones it no longer has)."""
    return ["squeue", "-h", "-j", ",".join(slurm_ids), "-o", SQUEUE_FORMAT, "--states=all"]


def parse_squeue(text: str) -> dict[str, SlurmJobState]:
    jobs = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4 or not parts[0]:
            continue
        jid, state, reason, nodelist = parts
        jobs[jid] = SlurmJobState(jid, state, reason, fields={"NodeList": nodelist})
    return jobs


def parse_scontrol(text: str) -> dict[str, SlurmJobState]:
    """``scontrol show job -o [ids]``: one line of ``Key=Value`` per job."""
    jobs = {}
    for line in text.splitlines():
        fields = dict(_kv(line))
        jid = fields.get("JobId")
        if not jid:
            continue
        code, sig = None, None
        if ":" in fields.get("ExitCode", ""):
            a, b = fields["ExitCode"].split(":", 1)
            code, sig = (int(a) if a.isdigit() else None), (int(b) if b.isdigit() and b != "0" else None)
        jobs[jid] = SlurmJobState(jid, fields.get("JobState", ""), fields.get("Reason", ""),
                                  (), code, sig, fields)
    return jobs


def _kv(line: str) -> Iterator[tuple[str, str]]:
    """Split ``A=1 B=x y C=2`` where only a token holding '=' starts a new key."""
    key: str | None = None
    value = ""
    for token in line.split():
        if "=" in token and re.match(r"^[A-Za-z][A-Za-z0-9_:/]*=", token):
            if key is not None:
                yield key, value
            key, value = token.split("=", 1)
        elif key is not None:
            value += " " + token
    if key is not None:
        yield key, value


def sbatch_job_id(stdout: str) -> str:
    """``sbatch --parsable`` prints ``<id>`` or ``<id>;<cluster>``."""
    text = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    jid = text.split(";")[0]
    if not jid.isdigit():
        raise ValueError(f"sbatch did not print a job id: {stdout.strip()[:200]!r}")
    return jid


# ----------------------------------------------------------------------------- `alaunch top` on Slurm

TOP_SINFO_FORMAT = "%N|%t|%G|%c|%E"  # node, state (short), gres, CPUs, reason
TOP_SQUEUE_FORMAT = "%i|%j|%u|%N|%Z"  # id, name, user, node list, working dir (an alaunch job's root)


def top_argvs(partition: str | None) -> tuple[list[str], list[str]]:
    """What one refresh of ``top`` asks the login node: every node of the partition, and every
    running job on it (any user's)."""
    part = ["-p", partition] if partition else []
    return (["sinfo", "-h", "-N", "-o", TOP_SINFO_FORMAT, *part],
            ["squeue", "-h", "-t", "RUNNING", "-o", TOP_SQUEUE_FORMAT, *part])


@dataclass(frozen=True)
class NodeInfo:
    """One node as ``sinfo -N`` says it (a node in two partitions is listed once per partition)."""

    name: str
    state: str  # idle, mix, alloc, down*, drain, ...
    gres: str = ""
    cpus: str = ""
    reason: str = ""


@dataclass(frozen=True)
class RunningJob:
    """One running job as ``squeue`` says it: an alaunch job's name is its id, its dir its root."""

    slurm_id: str
    name: str
    user: str
    nodes: tuple[str, ...]
    workdir: str = ""


def parse_top_sinfo(text: str) -> list[NodeInfo]:
    nodes: dict[str, NodeInfo] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 5 and parts[0]:
            name, state, gres, cpus, reason = parts
            nodes.setdefault(name, NodeInfo(name, state, "" if gres == "(null)" else gres, cpus,
                                            "" if reason in ("none", "(null)") else reason))
    return list(nodes.values())


def parse_top_squeue(text: str) -> list[RunningJob]:
    jobs = []
    for line in text.splitlines():
        parts = line.strip().split("|", 4)
        if len(parts) == 5 and parts[0]:
            jid, name, user, nodelist, workdir = parts
            jobs.append(RunningJob(jid, name, user, tuple(expand_hostlist(nodelist)), workdir))
    return jobs


def expand_hostlist(text: str) -> list[str]:
    """Slurm's compressed node list -> names: ``n[1-3,7],login01`` -> n1 n2 n3 n7 login01, zero
    padding kept (``a[01-02]`` -> a01 a02); one bracket group per name (what a partition's
    node names use); a name it cannot read is kept as written."""
    if not text or text in ("(null)", "None"):
        return []
    names: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", text):
        m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if m is None or "[" in m.group(3):
            names.append(part)
            continue
        prefix, ranges, suffix = m.groups()
        for r in ranges.split(","):
            lo, _, hi = r.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                names.append(part)
                break
            width = len(lo)
            names += [f"{prefix}{i:0{width}d}{suffix}" for i in range(int(lo), int(hi or lo) + 1)]
    return names


def gres_cards(gres: str) -> int:
    """The NPU count of a node's gres (``npu:8``, ``npu:910b:8(S:0-1)``; 0 without npu)."""
    for entry in gres.split(","):
        fields = entry.split("(")[0].split(":")
        if fields[0] == "npu" and len(fields) > 1 and fields[-1].isdigit():
            return int(fields[-1])
    return 0
