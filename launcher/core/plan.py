"""The plan: for every node, exactly what runs there — pure, no I/O, golden-testable.

job + rendered config + hosts + job id + master port -> one :class:`NodePlan` per node
(host, node rank, remote job directory, env, the msrun argv) and the files to stage.
``alaunch plan`` prints :meth:`Plan.render_shell`; ``launch`` starts exactly
:meth:`NodePlan.launch_argv` with :meth:`NodePlan.env_values`, so the dry run and the
real run cannot drift apart.

The CANN environment is sourced by a small *fixed* wrapper (:data:`WRAPPER`): user values
never become shell text; they are positional arguments or environment values. The scripts
it sources are the host's ``env_scripts=`` (in order; each must exist) or, by default, the
usual CANN ``set_env.sh`` locations that exist (:data:`DEFAULT_ENV_SCRIPTS`); a script that
fails stops the node with exit 126 and the script's stderr (it used to go to /dev/null).
Submit's preflight runs the same wrapper with ``true`` on every host, so a broken script is
refused before anything starts.
"""

from __future__ import annotations

import os
import posixpath
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from launcher.core.hostfile import Host
from launcher.core.layout import JobLayout
from launcher.core.spec import SECRET_MASK, JobSpec
from launcher.errors import InputError
from launcher.resources import package_path

DEFAULT_CLUSTER_TIME_OUT = 600  # seconds msrun waits for every node to join
# msrun's master port when none is pinned: clear of HCCL's ports (HCCL_IF_BASE_PORT, 60000 up,
# 16 or more per device) and of the kernel's ephemeral range (32768-60999), where a port free
# at preflight is likelier to be taken by an outgoing connection before msrun binds it.
DEFAULT_PORT_RANGE = (29500, 29899)
ENTRY_DIR = str(package_path("entry"))  # launcher/entry/, shipped with the package
BUILTIN_ENTRY_FILES = ("run_cpu.py", "cpu_patches.py")
CANN_SET_ENV = "/usr/local/Ascend/ascend-toolkit/set_env.sh"
# Sourced when the hostfile names no env_scripts, each only if it exists: the toolkit as
# installed by root, and as installed by a user into ~/Ascend.
DEFAULT_ENV_SCRIPTS = (CANN_SET_ENV, "~/Ascend/ascend-toolkit/set_env.sh")
LOOPBACK = "127.0.0.1"

# Source the env scripts ($ALAUNCH_ENV_SCRIPTS, one per line, in order; missing ones are
# skipped only when $ALAUNCH_ENV_OPTIONAL is set: the defaults) with their stdout to our
# stderr (the node's launcher.log: a chatty set_env.sh must not talk on a protocol channel)
# and their stderr kept: a failing script stops here with exit 126 and that stderr. Then the
# staged code first on PYTHONPATH, an optional bin dir first on PATH (msrun starts workers
# with the `python` on PATH), then exec the argv. Fixed text: the same for every job, taking
# nothing from the user as code (the script paths are data in the environment).
WRAPPER = (
    "set -f; IFS='\n'; "
    'for f in $ALAUNCH_ENV_SCRIPTS; do '
    'case "$f" in "~/"*) f="$HOME/${f#??}";; esac; '
    'if [ ! -f "$f" ]; then [ -n "$ALAUNCH_ENV_OPTIONAL" ] && continue; '
    'echo "alaunch: env script $f not found" >&2; exit 126; fi; '
    'e=$(mktemp "${TMPDIR:-/tmp}/alaunch-env.XXXXXX") || exit 126; '
    '. "$f" >&2 2>"$e"; c=$?; '
    'if [ $c -ne 0 ]; then echo "alaunch: env script $f failed (exit $c): $(tail -c 1500 "$e")" >&2; '
    'rm -f "$e"; exit 126; fi; cat "$e" >&2; rm -f "$e"; done; unset IFS; set +f; '
    'export PYTHONPATH="$ALAUNCH_PYTHONPATH${PYTHONPATH:+:$PYTHONPATH}"; '
    'if [ -n "$ALAUNCH_BIN_DIR" ]; then export PATH="$ALAUNCH_BIN_DIR:$PATH"; fi; '
    'exec "$@"'
)
WRAPPER_NAME = "alaunch-node"  # $0 of the wrapper: shows in ps output


@dataclass(frozen=True)
class EnvVar:
    """One environment value; a secret prints as ``***`` everywhere but in the real env."""

    name: str
    value: str
    secret: bool = False

    def display(self) -> str:
        return SECRET_MASK if self.secret else self.value

    def __repr__(self) -> str:  # a secret must not leak through logs or tracebacks either
        return f"EnvVar({self.name}={self.display()!r})"


@dataclass(frozen=True)
class StageItem:
    """A local file or directory, or generated text, and where it lands under the job dir."""

    dest: str  # POSIX path relative to the job root
    local: str | None = None  # path on this machine (file or directory)
    text: str | None = None  # generated content (the rendered config)
    ignore: tuple[str, ...] = ()  # gitignore-style patterns for a directory (code trees)


def parse_port_range(text: str, key: str = "--master-port-range") -> tuple[int, int]:
    """``LO-HI`` (inclusive, 1024..65535, LO <= HI) -> (LO, HI); a one-line error otherwise."""
    lo, sep, hi = text.strip().partition("-")
    try:
        pair = (int(lo), int(hi)) if sep else None
    except ValueError:
        pair = None
    if pair is None or not (1024 <= pair[0] <= pair[1] <= 65535):
        raise InputError(f"{text!r} is not a port range; give LO-HI with 1024 <= LO <= HI <= 65535, "
                         f"e.g. {DEFAULT_PORT_RANGE[0]}-{DEFAULT_PORT_RANGE[1]}", key=key)
    return pair


def quote_path(path: str) -> str:
    """shlex-quote a remote path but keep a leading ``~/`` expanding (as ``"$HOME"/...``)."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def quote_arg(arg: str) -> str:
    """Like :func:`quote_path` for a bare path or an ``--option=~/path`` argument."""
    key, sep, value = arg.partition("=")
    if sep and key.startswith("--") and value.startswith("~/"):
        return shlex.quote(key + "=") + quote_path(value)
    return quote_path(arg)


@dataclass(frozen=True)
class NodePlan:
    """What one node runs: its rank, its job dir, its env and the msrun command."""

    host: Host
    node_rank: int
    layout: JobLayout
    env: tuple[EnvVar, ...]
    argv: tuple[str, ...]  # msrun and its arguments, as the process gets them
    ranks: tuple[int, ...] = ()  # the global ranks of this node's workers (msrun: node_rank * local + i)

    @property
    def state_dir(self) -> str:
        """This node's own state dir (a shared job dir holds every node's)."""
        return self.layout.node_state(self.node_rank)

    @property
    def pid_path(self) -> str:
        return posixpath.join(self.state_dir, "pid")

    @property
    def exit_code_path(self) -> str:
        return posixpath.join(self.state_dir, "exit_code")

    @property
    def log_path(self) -> str:
        return posixpath.join(self.state_dir, "launcher.log")

    def launch_argv(self) -> list[str]:
        """The argv a runner starts: the fixed wrapper, then msrun."""
        return ["sh", "-c", WRAPPER, WRAPPER_NAME, *self.argv]

    def env_values(self) -> dict[str, str]:
        """The real env (secrets included): only for the runner, never for printing."""
        return {var.name: var.value for var in self.env}

    def env_display(self) -> dict[str, str]:
        return {var.name: var.display() for var in self.env}

    def render_shell(self) -> str:
        """This node's commands as a copy-pasteable shell snippet (secrets as ``***``)."""
        root = quote_path(self.layout.root)
        lines = [f"# node {self.node_rank}: {self.host.name} ({self.host.workers} worker(s), "
                 f"devices {','.join(map(str, self.host.slot_ids)) or '-'})",
                 f"mkdir -p {root} && cd {root} && \\"]
        env = [f"{var.name}={shlex.quote(var.display())}" for var in self.env]
        lines.append("  env " + " \\\n      ".join(env) + " \\")
        wrapper = ["sh", "-c", shlex.quote(WRAPPER), WRAPPER_NAME]
        lines.append("  " + " ".join(wrapper) + " \\")
        args = [quote_arg(a) for a in self.argv]
        lines.append("    " + " \\\n    ".join(args))
        return "\n".join(lines)


@dataclass(frozen=True)
class Plan:
    """Every node's plan plus what to stage (the same files go to every node's job dir)."""

    job_id: str
    name: str
    master_addr: str
    master_port: int
    worker_num: int
    nodes: tuple[NodePlan, ...]
    items: tuple[StageItem, ...] = field(default=())

    def render_shell(self) -> str:
        head = (f"# job {self.job_id} ({self.name}): {len(self.nodes)} node(s), {self.worker_num} "
                f"worker(s), master {self.master_addr}:{self.master_port}\n"
                f"# run each block on its host (node 0 first); files staged: "
                f"{', '.join(i.dest for i in self.items) or 'none'}")
        return "\n\n".join([head, *(n.render_shell() for n in self.nodes)]) + "\n"


# ----------------------------------------------------------------------------- building

def entry_path(spec: JobSpec, layout: JobLayout) -> str:
    """Where the entry script is on the host: built-in and relative ones live in code/."""
    script = spec.entry.script
    if spec.entry.builtin:
        return posixpath.join(layout.code, BUILTIN_ENTRY_FILES[0])
    if script.startswith(("/", "~")):
        return script
    return posixpath.join(layout.code, script)


def stage_items(spec: JobSpec, config_text: str) -> list[StageItem]:
    """What every node needs under its job dir: code, entry, inputs, checkpoint, tokenizer, config."""
    items: list[StageItem] = []
    if not isinstance(spec.code, str):
        items.append(StageItem("code", local=spec.code.local, ignore=tuple(spec.code.exclude)))
    if spec.entry.builtin:
        items += [StageItem(f"code/{name}", local=os.path.join(ENTRY_DIR, name))
                  for name in BUILTIN_ENTRY_FILES]
    for name, ref in spec.inputs.items():
        if ref.local is not None:
            base = os.path.basename(ref.local.rstrip("/"))
            items.append(StageItem(f"data/{name}/{base}", local=ref.local))
            if base.endswith(".mindrecord"):  # a MindRecord file is unusable without its index
                items.append(StageItem(f"data/{name}/{base}.db", local=ref.local + ".db"))
    if spec.checkpoint is not None and spec.checkpoint.local is not None:
        base = os.path.basename(spec.checkpoint.local.rstrip("/"))
        items.append(StageItem(f"ckpt/{base}", local=spec.checkpoint.local))
    if spec.tokenizer is not None and spec.tokenizer.local is not None:
        items.append(StageItem(f"tokenizer/{os.path.basename(spec.tokenizer.local)}",
                               local=spec.tokenizer.local))
    items.append(StageItem("config/job.yaml", text=config_text))
    return items


def env_script_vars(host: Host) -> list[EnvVar]:
    """The wrapper's env for ``host``'s env scripts: its ``env_scripts=`` (each required),
    else :data:`DEFAULT_ENV_SCRIPTS` (each only if present)."""
    if host.env_scripts is None:
        return [EnvVar("ALAUNCH_ENV_SCRIPTS", "\n".join(DEFAULT_ENV_SCRIPTS)), EnvVar("ALAUNCH_ENV_OPTIONAL", "1")]
    return [EnvVar("ALAUNCH_ENV_SCRIPTS", "\n".join(host.env_scripts))]


def job_env(spec: JobSpec, environ: Mapping[str, str]) -> list[EnvVar]:
    """The job file's env, resolved (``from_local`` read here), secrets kept marked."""
    return [EnvVar(name, value.resolve(environ), value.is_secret)
            for name, value in spec.env_values().items()]


def master_address(hosts: Sequence[Host], addresses: Mapping[str, str] | None = None) -> str:
    """Node 0's address as the other nodes reach it (loopback when it is the only node): its
    hostfile ``addr=``, else ``addresses`` (its ssh HostName), else its name."""
    first = hosts[0]
    if len(hosts) == 1:
        return LOOPBACK
    if first.is_local:
        raise InputError("node 0 is 'localhost' but the job spans several hosts: the other nodes "
                         "cannot reach it by that name; list this machine by an address they reach",
                         source=first.source, line=first.line)
    if first.addr:
        return first.addr
    return (addresses or {}).get(first.name, first.name)


def build_plan(spec: JobSpec, config_text: str, hosts: Sequence[Host], job_id: str, master_port: int, *,
               roots: Mapping[str, str] | None = None, addresses: Mapping[str, str] | None = None,
               environ: Mapping[str, str] | None = None, bin_dir: str | None = None,
               cluster_time_out: int = DEFAULT_CLUSTER_TIME_OUT) -> Plan:
    """The pure core: the nodes the job uses (``hosts`` already filtered, in rank order).

    ``roots`` maps host name -> its job dir when known (``~`` resolved by preflight);
    otherwise ``<workdir>/alaunch/<job-id>``. ``addresses`` maps host names (ssh aliases)
    to the address other nodes use; ``bin_dir`` is put first on PATH on the nodes.
    """
    if not hosts:
        raise InputError("no hosts to run on (give -H HOSTFILE or --local)", key="hosts")
    if not 0 < master_port < 65536:
        raise InputError(f"master port {master_port} is out of range; valid: 1-65535", key="master_port")
    environ = os.environ if environ is None else environ
    empty = [h.name for h in hosts if h.workers < 1]
    if empty:
        raise InputError(f"host(s) {', '.join(empty)} have no slots left after --include/--exclude",
                         key="--include")
    worker_num = sum(h.workers for h in hosts)
    master = master_address(hosts, addresses)
    user_env = job_env(spec, environ)
    reserved = {"ASCEND_RT_VISIBLE_DEVICES", "ALAUNCH_PYTHONPATH", "ALAUNCH_BIN_DIR", "ALAUNCH_ENV_SCRIPTS",
                "ALAUNCH_ENV_OPTIONAL"}
    clash = [v.name for v in user_env if v.name in reserved]
    if clash:
        raise InputError(f"env {clash[0]} is set by alaunch from the hostfile; remove it from the job",
                         source=spec.source, key=f"env.{clash[0]}")
    nodes = []
    first_rank = 0
    for rank, host in enumerate(hosts):
        root = (roots or {}).get(host.name) or JobLayout.for_job(host.remote_workdir, job_id).root
        layout = JobLayout(root)
        env = [EnvVar("ASCEND_RT_VISIBLE_DEVICES", ",".join(map(str, host.slot_ids))),
               EnvVar("ALAUNCH_PYTHONPATH", layout.code)]
        if bin_dir:
            env.append(EnvVar("ALAUNCH_BIN_DIR", bin_dir))
        env += env_script_vars(host)
        env += user_env
        msrun = posixpath.join(bin_dir, "msrun") if bin_dir else "msrun"
        argv = (msrun, f"--worker_num={worker_num}", f"--local_worker_num={host.workers}",
                f"--master_addr={master}", f"--master_port={master_port}", f"--node_rank={rank}",
                f"--log_dir={layout.msrun_log}", "--join=True", f"--cluster_time_out={cluster_time_out}",
                *spec.msrun_args, entry_path(spec, layout), "--config", layout.config, *spec.entry.args)
        nodes.append(NodePlan(host, rank, layout, tuple(env), argv,
                              tuple(range(first_rank, first_rank + host.workers))))
        first_rank += host.workers
    return Plan(job_id, spec.name, master, master_port, worker_num, tuple(nodes),
                tuple(stage_items(spec, config_text)))
