"""Slurm, the I/O half: stage through the login node, sbatch, states from squeue/scontrol, scancel.

Everything goes through one runner to the login node (``localhost`` runs here, else SSH):
staging is the same content-addressed :class:`~launcher.ops.stage.Stager` the SSH backend
uses, aimed at one host (the workdir is the cluster's shared filesystem, so every compute
node sees the job dir); the batch script comes from :func:`launcher.core.slurm.build_batch`.
Slurm, not alaunch, owns the job's processes: states are read from ``squeue`` (one call for
every job asked about) and, for jobs that left the queue, ``scontrol show job``; ``sacct`` is
not used because many clusters (and the test cluster) run without accounting. When Slurm has
forgotten a job (``MinJobAge`` passed), the batch script's ``state/exit_code`` decides.

The registry rows: one node row per Slurm node (``slurm-node<i>`` until the allocation is
known, then Slurm's node name), all with the shared job dir; ``meta.backend = "slurm"``.
Followers and fetch read the shared job dir once, through the login node
(:func:`login_view`).
"""

from __future__ import annotations

import json
import posixpath
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from launcher.core import slurm as core
from launcher.core import validate
from launcher.core.cards import HostView
from launcher.core.hostfile import format_hostfile, parse_hostfile
from launcher.core.layout import JobLayout
from launcher.core.render import render_job, resolve_world
from launcher.core.slurm import parse_target  # noqa: F401  (the chooser's parser of a target file)
from launcher.core.spec import JobSpec, load_job
from launcher.errors import AlaunchError, InputError, RemoteError
from launcher.ops import mfcheck
from launcher.ops import registry as reg
from launcher.ops.cards import TopSource
from launcher.ops.engine import SKEW_KEYS, CheckReport, Engine
from launcher.ops.engines import record_meta
from launcher.ops.launch import NodeStatus
from launcher.ops.stage import Stager, resolve_home
from launcher.remote import wire
from launcher.runners import CommandRunner

BACKEND = "slurm"
LEAVE_QUEUE_TIMEOUT = 60.0
SETTLE_TIMEOUT = 30.0  # seconds from the batch script's last line to Slurm's final state
FORGOTTEN = "Invalid job id"  # squeue/scontrol about a job Slurm no longer has (MinJobAge passed)
ALIVE_SLURM = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
               "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED")


VERSIONS_PROGRAM = "alaunch-versions.py"  # staged into the job's config/: remote/slurm.py VERSIONS
SKEW_PROGRAM = "alaunch-skew.py"  # remote/slurm.py SKEW
SAMPLE_PROGRAM = "alaunch-sample.py"  # remote/follow.py SAMPLE: each node's npu-smi, see node_sampler


def node_check(root: str) -> core.NodeCheck:
    """The batch script's software check: each node's versions, then the comparison (the
    programs are staged with the job, see :func:`check_programs`)."""
    layout = JobLayout(root)
    answers = posixpath.join(layout.state, "versions")
    return core.NodeCheck((posixpath.join(layout.config_dir, VERSIONS_PROGRAM), wire.request_arg({"op": "versions"})),
                          (posixpath.join(layout.config_dir, SKEW_PROGRAM),
                           wire.request_arg({"op": "skew", "dir": answers, "keys": list(SKEW_KEYS)})), answers)


def node_sampler(root: str, every: float | None) -> core.NodeSampler | None:
    """Each node's NPU sampler (remote/follow.py SAMPLE, staged with the job by
    :func:`check_programs`): every ``every`` s (the job file's ``telemetry_every``; 0 or None:
    none) into ``state/telemetry/<node>.smi``, until the batch script wrote its exit code."""
    if not every:
        return None
    layout = JobLayout(root)
    return core.NodeSampler(posixpath.join(layout.config_dir, SAMPLE_PROGRAM), wire.request_arg(
        {"op": "sample", "dir": posixpath.join(layout.state, "telemetry"), "every": float(every),
         "stop": posixpath.join(layout.state, "exit_code")}))


def check_programs() -> dict[str, str]:
    """The check's programs and the nodes' sampler as the job dir's files (relative path -> text)."""
    return {f"config/{VERSIONS_PROGRAM}": wire.program("slurm", "versions"),
            f"config/{SKEW_PROGRAM}": wire.program("slurm", "skew"),
            f"config/{SAMPLE_PROGRAM}": wire.program("follow", "sample")}


def target_of(record: reg.JobRecord) -> core.SlurmTarget:
    data = dict(record.meta["target"])
    data["extra_sbatch"] = tuple(data.get("extra_sbatch") or ())
    return core.SlurmTarget(**data)


def login_view(record: reg.JobRecord) -> reg.JobRecord:
    """The record as followers and fetch see it: one node, the login host, the shared job dir."""
    login = parse_hostfile(record.hostfile_text, f"registry:{record.id}")[0]
    first = record.nodes[0] if record.nodes else reg.NodeRecord(0, login.name)
    return replace(record, nodes=(replace(first, node_rank=0, host=login.name,
                                          job_dir=record.meta.get("root", first.job_dir)),),
                   meta={**record.meta, "state_per_node": False})


def srun_failures(text: str) -> list[str]:
    """``srun: error: n2: task 1: Exited with exit code 1`` -> 'node 1 (n2): exited with exit code 1'."""
    found = []
    for m in re.finditer(r"srun: error: (\S+): tasks? ([\d,-]+): (.+)", text):
        found.append(f"node {m.group(2)} ({m.group(1)}): {m.group(3).strip()[:1].lower()}{m.group(3).strip()[1:]}")
    return found


def msrun_failure(text: str) -> str | None:
    """msrun's report of a worker that died without a word (SIGKILL, the OOM killer: ``Worker
    process <pid> exit with exception. Error code: -9``) in the batch script's output, in the
    words a hostfile job's follower gives it (:meth:`JobLogs.feed_msrun`). On Slurm msrun's
    stdout lands in ``state/slurm-<id>.out``, which the follower does not read: without this a
    SIGKILLed worker read as 'exit code 1' and a step's ``retries:`` never fired."""
    from launcher.metrics.logparse import JobLogs
    job = JobLogs()
    for line in text.splitlines():
        failure = job.feed_msrun("", line)
        if failure is not None:
            return failure.message
    return None


def batch_failures(text: str) -> list[str]:
    """What the batch script's output says of a failure: its own ``alaunch:`` lines, msrun's
    report of a dead worker, srun's task lines."""
    failures = [line[len("alaunch: "):] for line in text.splitlines() if line.startswith("alaunch: ")]
    msrun = msrun_failure(text)
    return failures + ([msrun] if msrun else []) + srun_failures(text)


class SlurmService(Engine):
    """The Slurm engine: submit, refresh, cancel and fail Slurm jobs through the login node;
    one registry."""

    name = BACKEND
    poll = 2.0

    @staticmethod
    def log_view(record: reg.JobRecord) -> reg.JobRecord:
        """One node, the login host, the shared job dir; the batch script keeps one ``state/``."""
        return login_view(record)

    def started_line(self, record: reg.JobRecord) -> str:
        return (f"submitted {record.id} to Slurm as job {record.meta['slurm_job_id']} "
                f"({len(record.nodes)} node(s) x {record.meta['target']['cards_per_node']} worker(s)); "
                f"{record.state}")

    def dry_run(self, job, target: core.SlurmTarget, opts, job_id: str, *, offline: bool = True) -> str:
        """The batch script and the sbatch line ``submit`` would run (secrets masked)."""
        from launcher.core.render import apply_job_sets
        return self.plan_text(apply_job_sets(job if isinstance(job, JobSpec) else load_job(job), opts.sets),
                              target, opts, job_id)

    def plan_text(self, spec: JobSpec, target: core.SlurmTarget, opts, job_id: str) -> str:
        target = self.effective_target(spec, target, opts.bin_dir)
        _, batch = self.prepare(spec, target, job_id, opts.sets, master_port=opts.master_port)
        return batch.render()

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def python_for(target: core.SlurmTarget) -> str:
        if target.python:
            return target.python
        return sys.executable if target.login_host().is_local else "python3"

    @staticmethod
    def effective_target(spec: JobSpec, target: core.SlurmTarget, bin_dir: str | None = None) -> core.SlurmTarget:
        """The job's nodes/cards against the target (``all`` = the target's), bin dir resolved."""
        world = resolve_world(spec, target.node_hosts())
        bin_dir = bin_dir or target.bin_dir
        if bin_dir is None and target.login_host().is_local:
            bin_dir = str(Path(sys.executable).parent)  # a local cluster: this venv's msrun/python
        return replace(target, nodes=world.nodes, cards_per_node=world.cards_per_node, bin_dir=bin_dir)

    def _run(self, ex: CommandRunner, argv: list[str], what: str, timeout: float = 60, stdin: bytes = b"") -> str:
        result = ex.exec(argv, [stdin] if stdin else [], timeout=timeout)
        if not result.ok:
            raise RemoteError(ex.host.name, f"{what} failed: {result.error_line()}")
        return result.text()

    def _login(self, record: reg.JobRecord) -> tuple[CommandRunner, str]:
        login = parse_hostfile(record.hostfile_text, f"registry:{record.id}")[0]
        return self.exec_factory(login), (record.meta.get("pythons") or {}).get(login.name, "python3")

    # ------------------------------------------------------------------ plan / submit
    def prepare(self, spec: JobSpec, target: core.SlurmTarget, job_id: str, sets: Sequence[str] = (),
                root: str | None = None, master_port: int | None = None, cluster_time_out: int = 600,
                check_mindformers: bool = False):
        """Render + batch script (pure but reading the template): what plan prints, submit sends."""
        root = root or JobLayout.for_job(target.workdir, job_id).root
        rendered = render_job(spec, target.node_hosts(), JobLayout(root), tuple(sets),
                              template_text=spec.template_path().read_text(encoding="utf-8"))
        validate.check_static(rendered.config, rendered.derived, source=spec.source)
        if check_mindformers:
            check = mfcheck.check_with_mindformers(rendered.text, rendered.config, source=spec.source)
            if check.skipped:
                raise AlaunchError(f"--validate: {check.detail}")
        batch = core.build_batch(spec, target, job_id, root=root, master_port=master_port,
                                 cluster_time_out=cluster_time_out, check=node_check(root),
                                 sampler=node_sampler(root, spec.telemetry_every))
        return rendered, batch

    def submit(self, job_path, target: core.SlurmTarget, opts, meta: Mapping | None = None) -> reg.JobRecord:
        """The shared phases (:class:`~launcher.ops.engine.Engine`: load, hash, survey, render,
        record, stage — a cancel during staging wins —, start) with Slurm's start: write the
        batch script and sbatch it through the login node. The record keeps the job name sbatch
        gets before sbatch runs, so a lost answer leaves a job ``cancel`` can still find."""
        spec, spec_text = self.load(job_path, opts.sets)
        target = self.effective_target(spec, target, opts.bin_dir)
        job_id = reg.new_job_id(spec.name)
        login = target.login_host()
        python = self.python_for(target)
        ex = self.exec_factory(login)
        meta = {**record_meta(self), "slurm_job_name": job_id, "target": {k: v for k, v in asdict(target).items()},
                "pythons": {login.name: python}, "bin_dir": target.bin_dir, "source": spec.source,
                "telemetry_every": spec.telemetry_every,
                **dict(meta or {})}
        nodes = [f"slurm-node{i}" for i in range(target.nodes)]
        try:
            ex.warm()
            local = self.hash_files(spec)
            stager = Stager({login.name: ex.using(python)}, progress=self.progress)
            inventories = stager.survey(local)
            root = resolve_home(JobLayout.for_job(target.workdir, job_id).root, inventories[login.name].home)
            rendered, batch = self.prepare(spec, target, job_id, opts.sets, root, opts.master_port,
                                           opts.cluster_time_out, opts.check_mindformers)
        except AlaunchError as exc:
            ex.close()
            self.record_failure(spec, [login], job_id, spec_text, exc, meta)
            raise
        meta.update(root=root, config_sha256={login.name: rendered.sha256})
        self.registry.create_job(spec.name, spec.kind, spec_text=spec_text, config_text=rendered.text,
                                 hostfile_text=format_hostfile([login]),
                                 nodes=[(n, root) for n in nodes], job_id=job_id, meta=meta)

        def stage() -> None:
            texts = {"config/job.yaml": rendered.text, **check_programs()}
            result = stager.stage(replace(local, texts=texts), {login.name: root}, inventories,
                                  texts_by_host={login.name: texts})
            self.last_stage_bytes = result.bytes_sent
            self.registry.update_meta(job_id, {"staged_bytes": result.bytes_sent})
            self.registry.add_event(job_id, "staged", f"{result.bytes_sent} bytes sent")

        try:
            slurm_id = self.stage_then_start(job_id, stage, lambda: self._sbatch(ex, python, batch),
                                             "nothing was submitted to Slurm")
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C; SIGTERM/SIGHUP take its path in the CLI
            self.registry.set_state_unless_ended(job_id, reg.FAILED, "interrupted (Ctrl-C or a signal) before "
                                                 f"Slurm answered; `alaunch cancel {job_id}` finds a job it queued")
            raise
        finally:
            ex.close()
        self.registry.update_meta(job_id, {"slurm_job_id": slurm_id})
        self.registry.add_event(job_id, "sbatch", f"Slurm job {slurm_id}")
        if self.registry.set_state_unless_ended(job_id, reg.QUEUED, f"Slurm job {slurm_id} submitted"):
            return self.registry.get(job_id)
        # cancelled while sbatch ran: the cancel could not see the Slurm id yet
        message = self._scancel(self.registry.get(job_id), 3.0)
        self.registry.add_event(job_id, "cancel-after-submit", message)
        return self.registry.get(job_id)

    def _sbatch(self, ex: CommandRunner, python: str, batch: core.BatchPlan | core.TaskPlan,
                files: Mapping[str, str] | None = None) -> str:
        """Write the batch script (and ``files``) and sbatch it on the login node
        (remote/slurm.py SUBMIT): its id."""
        env = batch.env_values() if isinstance(batch, core.BatchPlan) else {}
        res = self._call(ex, python, {"op": "submit", "script_path": batch.script_path, "script": batch.script,
                                      "env": env, "argv": ["sbatch", "--parsable", batch.script_path],
                                      "files": dict(files or {})}, "sbatch")
        if res["code"] != 0:
            lines = (res["err"] or res["out"]).strip().splitlines()
            said = lines[-1] if lines else f"exit code {res['code']}"
            raise RemoteError(ex.host.name, f"sbatch failed: {said}")
        try:
            return core.sbatch_job_id(res["out"])
        except ValueError as exc:
            raise RemoteError(ex.host.name, str(exc)) from None

    def resume(self, ref: str, say: Callable[[str], None] = lambda s: None,
               original: JobSpec | None = None) -> reg.JobRecord:
        """Attempt n+1 as a new sbatch of the same job dir: the shared dir's checkpoints listed
        once (every rank's are there), the previous attempt's ``state/`` (batch script, Slurm's
        output, exit code) kept under ``attempts/<n>/``, the config resumed, the batch script
        built again (secrets from the job file, as at submit) and sbatch'd. QUEUED when Slurm
        took it."""
        from launcher.ops.resume import locked
        return locked(self.registry, ref, lambda record, attempt: self._resume(record, attempt, say, original))

    def _resume(self, record: reg.JobRecord, attempt: int, say: Callable[[str], None],
                original: JobSpec | None) -> reg.JobRecord:
        from launcher.ops.resume import checkpoints_under, recorded_spec, resume_step, rotate_request
        spec = recorded_spec(record, original)
        root = record.meta["root"]
        ex, python = self._login(record)
        try:
            step = resume_step(record, checkpoints_under(ex.using(python), root))
            ex.call("attempt", rotate_request(record, root, attempt), timeout=120, what="keep the previous attempt")
            batch = core.build_batch(spec, target_of(record), record.id, root=root, check=node_check(root),
                                     sampler=node_sampler(root, spec.telemetry_every))
            self.registry.update_meta(record.id, {"attempt": attempt + 1, "resumed_from_step": step})
            self.registry.set_state(record.id, reg.STAGING, f"resuming from global step {step}: "
                                    f"attempt {attempt + 1}", force=True)
            say(f"{record.id}: attempt {attempt + 1}, resuming from the checkpoint of global step {step}")
            try:
                sid = self._sbatch(ex, python, batch)
            except AlaunchError as exc:
                self.registry.set_state_unless_ended(record.id, reg.FAILED, exc.message)
                raise
        finally:
            ex.close()
        self.registry.update_meta(record.id, {"slurm_job_id": sid})
        self.registry.add_event(record.id, "sbatch", f"Slurm job {sid} (attempt {attempt + 1})")
        for n in record.nodes:
            self.registry.set_node(record.id, n.node_rank, state=reg.PENDING, exit_code=None, ended_at=None)
        self.registry.set_state_unless_ended(record.id, reg.QUEUED,
                                             f"Slurm job {sid} submitted (attempt {attempt + 1})")
        return self.registry.get(record.id)

    # ------------------------------------------------------------------ tasks (a pipeline's merge)
    @staticmethod
    def task_target(target: core.SlurmTarget) -> core.SlurmTarget:
        """The target a task runs under: its bin dir resolved as a job's (a local cluster: this
        venv's python, which has MindSpore)."""
        if target.bin_dir is None and target.login_host().is_local:
            return replace(target, bin_dir=str(Path(sys.executable).parent))
        return target

    def task_text(self, target: core.SlurmTarget, host: str, program: Path, request: Mapping, where: str,
                  label: str) -> str:
        """The task's batch script, as :meth:`run_task` sbatches it."""
        plan = core.build_task(self.task_target(target), f"{label}-<id>", where, program.name, request)
        return f"as its own Slurm job (one node, {program.name} written beside it)\n{plan.render()}"

    def run_task(self, target: core.SlurmTarget, host, python, program: Path, request: Mapping, where: str,
                 label: str):
        """The task as a one-node sbatch job (its program, script, output and answer in
        ``where`` on the shared workdir), waited for with backoff (1 s to 5 s: a merge takes
        seconds to minutes, a queue may hold it longer); its answer, or an error naming the
        Slurm job and its program's last words. Ctrl-C scancels it."""
        target = self.task_target(target)
        plan = core.build_task(target, reg.new_job_id(label), where, program.name, request)
        ex, login_python = self.exec_factory(target.login_host()), self.python_for(target)
        sid = None
        try:
            sid = self._sbatch(ex, login_python, plan, {plan.program_path: program.read_text(encoding="utf-8")})
            self.say(f"  {label}: Slurm job {sid} ({plan.name}) in {where}")
            delay, settle = 1.0, None
            while True:
                files = self._read(ex, login_python, [plan.path(".exit"), plan.path(".answer"),
                                                      plan.output_path(sid)])
                code, answer, out = files.values()
                if code is not None and code.strip():
                    break
                st = self.query(ex, [sid]).get(sid)
                if st is None or st.state in reg.TERMINAL:  # ended without its exit file: a grace for it
                    settle = settle or time.monotonic()
                    if time.monotonic() - settle > SETTLE_TIMEOUT:
                        raise RemoteError(ex.host.name, f"{label}: Slurm job {sid} "
                                                        f"{st.describe() if st else 'is gone'} without an exit code")
                time.sleep(delay)
                delay = min(5.0, delay * 1.5)
        except KeyboardInterrupt:
            if sid is not None:
                self._run(ex, ["scancel", sid], "scancel")
            raise
        finally:
            ex.close()
        if code.strip() != "0" or not answer:
            tail = [line for line in (out or "").splitlines() if line.strip()]
            raise AlaunchError(f"{label} (Slurm job {sid}) failed with exit code {code.strip()}: "
                               f"{tail[-1] if tail else 'no output'}")
        result = json.loads(answer.strip().splitlines()[-1])
        if isinstance(result, dict):
            result["slurm_job_id"] = sid  # the pipeline's record of where its merge ran
        return result

    # ------------------------------------------------------------------ states
    def query(self, ex: CommandRunner, slurm_ids: Sequence[str]) -> dict[str, core.SlurmJobState]:
        """One squeue for all ids; one scontrol for those squeue no longer lists."""
        if not slurm_ids:
            return {}
        found = core.parse_squeue(self._ask(ex, core.squeue_argv(slurm_ids), "squeue"))
        missing = [i for i in slurm_ids if i not in found or found[i].state in reg.TERMINAL]
        for jid in missing:  # scontrol has the exit code and reason of an ended job
            found.update(core.parse_scontrol(self._ask(ex, ["scontrol", "show", "job", "-o", jid], "scontrol")))
        return found

    @staticmethod
    def _ask(ex: CommandRunner, argv: list[str], what: str) -> str:
        """A Slurm query's output; '' when Slurm no longer knows the job ("Invalid job id").
        Any other failure (the controller restarting, a socket timeout) raises: a hiccup is not
        an answer, and reading it as "the job is gone" recorded running jobs FAILED."""
        res = ex.exec(argv, timeout=60)
        if res.ok:
            return res.text()
        if FORGOTTEN in res.stderr.decode("utf-8", "replace"):
            return ""
        raise RemoteError(ex.host.name, f"{what} failed: {res.error_line()}")

    def _node_names(self, ex: CommandRunner, nodelist: str) -> list[str]:
        if not nodelist or nodelist in ("(null)", "None"):
            return []
        res = ex.exec(["scontrol", "show", "hostnames", nodelist], timeout=60)
        return res.text().split() if res.ok else []

    @staticmethod
    def _call(ex: CommandRunner, python: str, request: dict, what: str, timeout: float = 60) -> dict:
        """One op of ``launcher/remote/slurm.py`` on the login node; its answer through
        ``wire.answer`` (``CommandRunner.call``). A failed call raises (never read as "no file there")."""
        return ex.using(python).call("slurm", request, timeout=timeout, what=what)

    def _read(self, ex: CommandRunner, python: str, paths: Sequence[str],
              size: int = 8192) -> dict[str, str | None]:
        return self._call(ex, python, {"op": "read", "paths": list(paths), "bytes": size}, "reading the job's state")

    def _batch_output(self, ex: CommandRunner, python: str, record: reg.JobRecord) -> str:
        """The last 64 KiB of the job's current ``state/slurm-<id>.out`` ('' if none): msrun
        with ``--join`` copies every worker's output there, and after its report of a dead
        worker come its own traceback and the other node's last lines (some KiB)."""
        path = posixpath.join(JobLayout(record.meta["root"]).state,
                              core.SLURM_OUT.replace("%j", record.meta["slurm_job_id"]))
        return next(iter(self._read(ex, python, [path], 1 << 16).values())) or ""


    def _script_ended(self, ex: CommandRunner, python: str, record: reg.JobRecord) -> bool:
        path = posixpath.join(JobLayout(record.meta["root"]).state, "exit_code")
        return next(iter(self._read(ex, python, [path]).values())) is not None

    def refresh(self, ref: str) -> tuple[reg.JobRecord, list[NodeStatus]]:
        record = self.registry.get(ref)
        if record.terminal or "slurm_job_id" not in record.meta:
            return record, self._statuses(record)
        ex, python = self._login(record)
        sid = record.meta["slurm_job_id"]
        try:
            states = self.query(ex, [sid])
            if sid in states and states[sid].state == reg.RUNNING and self._script_ended(ex, python, record):
                # the batch script wrote its exit code: Slurm says COMPLETED/FAILED within seconds
                deadline = time.monotonic() + SETTLE_TIMEOUT
                while sid in states and states[sid].state == reg.RUNNING and time.monotonic() < deadline:
                    time.sleep(0.5)
                    states = self.query(ex, [sid])
            self._apply(record, states, ex, python)
            record = self.registry.get(record.id)
            tails = self._tails(ex, python, record) if record.state == reg.RUNNING else {}
        except AlaunchError as exc:
            record = self.registry.get(record.id)
            return record, [replace(s, state="unknown", detail=exc.message) for s in self._statuses(record)]
        finally:
            ex.close()
        return record, self._statuses(record, tails)

    def _tails(self, ex: CommandRunner, python: str, record: reg.JobRecord) -> dict[str, list[str]]:
        """Every rank's last log lines from the shared job dir (one read on the login node), as a
        hostfile node's status has them: the running job's progress and its stragglers. Logs
        that cannot be read leave the status without them (the state came from Slurm)."""
        try:
            return self._call(ex, python, {"op": "tails", "root": record.meta["root"]}, "reading the logs' tails")
        except AlaunchError:
            return {}

    def refresh_many(self, records: Sequence[reg.JobRecord]) -> dict[str, str]:
        """Every live Slurm job of ``records`` with one squeue per login node (for ``jobs``).
        Returns login node -> why it could not be asked: its jobs keep the registry's last
        states, and ``jobs`` says so rather than show them as current."""
        failed: dict[str, str] = {}
        by_login: dict[str, list[reg.JobRecord]] = {}
        for r in records:
            if not r.terminal and "slurm_job_id" in r.meta:
                by_login.setdefault(r.hostfile_text, []).append(r)
        for group in by_login.values():
            ex, python = self._login(group[0])
            try:
                states = self.query(ex, [r.meta["slurm_job_id"] for r in group])
                for r in group:
                    self._apply(r, states, ex, python)
            except AlaunchError as exc:
                failed[ex.name] = exc.message
            finally:
                ex.close()
        return failed

    def _apply(self, record: reg.JobRecord, states: Mapping[str, core.SlurmJobState], ex: CommandRunner,
               python: str) -> None:
        sid = record.meta["slurm_job_id"]
        st = states.get(sid)
        layout = JobLayout(record.meta["root"])
        if st is None:  # Slurm forgot it: the batch script's exit code decides
            code = self._read(ex, python, [posixpath.join(layout.state, "exit_code")])
            text = next(iter(code.values()))
            if text is None or not text.strip().lstrip("-").isdigit():
                if record.state != reg.QUEUED:
                    self.registry.set_state(record.id, reg.FAILED,
                                            f"Slurm job {sid} is gone from squeue/scontrol without an exit code")
                return
            rc = int(text.strip())
            st = core.SlurmJobState(sid, "COMPLETED" if rc == 0 else "FAILED", "", (), rc)
        state = st.state
        names = self._node_names(ex, st.fields.get("NodeList", ""))
        for rank, name in enumerate(names[: len(record.nodes)]):
            if record.nodes[rank].host != name:
                self.registry.set_node(record.id, rank, host=name)
        if state == reg.QUEUED:
            reason = f"Slurm job {sid}: {st.describe()}"
            if record.state != reg.QUEUED or record.reason != reason:
                self.registry.set_state(record.id, reg.QUEUED, reason, force=record.state == reg.RUNNING)
            return
        if state in (reg.RUNNING, "unknown"):
            if record.state != reg.RUNNING:
                self.registry.set_state(record.id, reg.RUNNING, f"Slurm job {sid} running on {', '.join(names)}")
                for n in record.nodes:
                    self.registry.set_node(record.id, n.node_rank, state=reg.RUNNING, started_at=reg.now_iso())
            return
        reason = f"Slurm job {sid}: {st.describe()}"
        if state == reg.FAILED:
            failures = batch_failures(self._batch_output(ex, python, record))
            if failures:
                reason += "; " + "; ".join(failures)
        exit_code = st.exit_code
        for n in record.nodes:
            self.registry.set_node(record.id, n.node_rank, state=state, exit_code=exit_code, ended_at=reg.now_iso())
        self.registry.set_state(record.id, state, reason)

    @staticmethod
    def _statuses(record: reg.JobRecord, tails: Mapping[str, list[str]] | None = None) -> list[NodeStatus]:
        """One row per Slurm node; ``tails`` (rank -> last lines) go to the node that runs the
        rank (rank // workers per node), with its progress as the detail."""
        from launcher.metrics.logparse import tails_progress
        per_node = int((record.meta.get("target") or {}).get("cards_per_node") or 1)
        rows = []
        for n in record.nodes:
            mine = {r: lines for r, lines in (tails or {}).items() if int(r) // per_node == n.node_rank}
            detail = (record.reason or "") if n.node_rank == 0 and record.state == reg.QUEUED else \
                tails_progress(n.host, mine) if mine else ""
            rows.append(NodeStatus(n.node_rank, n.host, n.state, n.exit_code, 0, detail, mine or None))
        return rows

    def wait(self, ref: str, poll: float | None = None, timeout: float | None = None,
             on_status=None) -> reg.JobRecord:
        """Poll with backoff (2 s doubling to 30 s): a queue may hold a job for hours."""
        end = None if timeout is None else time.monotonic() + timeout
        delay = poll or self.poll
        while True:
            record, statuses = self.refresh(ref)
            if on_status:
                on_status(record, statuses)
            if record.terminal or (end is not None and time.monotonic() > end):
                return record
            time.sleep(delay)
            delay = min(30.0, delay * 1.5)

    def wait_started(self, ref: str, note: Callable[[str], None] = lambda s: None,
                     timeout: float | None = None) -> reg.JobRecord:
        """While Slurm holds the job: poll with backoff, say each new reason; return when it
        runs or ended (a follower started on a queued job that is then cancelled would wait
        for a batch script that never ran)."""
        end = None if timeout is None else time.monotonic() + timeout
        delay, said = 1.0, None
        while True:
            record, _ = self.refresh(ref)
            if record.state != reg.QUEUED or (end is not None and time.monotonic() > end):
                return record
            if record.reason != said:
                note(f"queued: {record.reason}")
                said = record.reason
            time.sleep(delay)
            delay = min(30.0, delay * 1.5)

    def mark_end(self, ref: str) -> bool:
        """When Slurm ended the job but its batch script never wrote ``state/exit_code``
        (killed before its trap ran: NODE_FAIL, SIGKILL, cancelled while starting), write it
        from Slurm's verdict so a follower of the shared job dir learns the end. True if the
        job is over."""
        record = self.registry.get(ref)
        if not record.terminal or "root" not in record.meta:
            return False
        ex, python = self._login(record)
        try:
            path = posixpath.join(JobLayout(record.meta["root"]).state, "exit_code")
            code = {reg.SUCCEEDED: "0", reg.CANCELLED: "143"}.get(record.state, "1")
            self._call(ex, python, {"op": "mark_end", "path": path, "code": code}, "writing state/exit_code")
        finally:
            ex.close()
        return True

    def watch(self, ref: str, stop, first: float = 5.0, note: Callable[[str], None] | None = None) -> None:
        """For a follower: poll Slurm with backoff until the job ends or ``stop`` is set, then
        :meth:`mark_end` after a grace for the batch script's own last line. A poll that fails
        is said through ``note`` (each new reason once) and the polling goes on."""
        delay, said = first, None
        while not stop.wait(delay):
            try:
                record, statuses = self.refresh(ref)
                if statuses and statuses[0].state == "unknown" and statuses[0].detail:
                    raise AlaunchError(statuses[0].detail)  # Slurm could not be asked: say so, go on
                if record.terminal:
                    if not stop.wait(SETTLE_TIMEOUT / 3):
                        self.mark_end(ref)
                    return
            except AlaunchError as exc:
                if note is not None and exc.message != said:
                    note(f"cannot ask Slurm now ({exc.message}); following on, asking again")
                said = exc.message
            delay = min(30.0, delay * 1.5)

    # ------------------------------------------------------------------ cancel / fail
    def _orphan(self, ex: CommandRunner, record: reg.JobRecord) -> str | None:
        """The Slurm id of a job whose sbatch ran but whose answer was lost (the link dropped,
        alaunch killed): found by the name the batch script was submitted with
        (``--job-name=<job id>``, kept in meta ``slurm_job_name`` before sbatch runs)."""
        name = record.meta.get("slurm_job_name")
        if not name:
            return None
        ids = self._ask(ex, ["squeue", "-h", f"--name={name}", "-o", "%i"], "squeue --name").split()
        if ids:
            self.registry.update_meta(record.id, {"slurm_job_id": ids[0]})
            self.registry.add_event(record.id, "sbatch", f"Slurm job {ids[0]} found by its name {name} "
                                                         "(its sbatch answer was lost)")
        return ids[0] if ids else None

    def _scancel(self, record: reg.JobRecord, grace: float) -> str:
        """scancel, then wait until the job has left the queue (no RUNNING/COMPLETING step left)."""
        ex, _ = self._login(record)
        try:
            sid = record.meta.get("slurm_job_id") or self._orphan(ex, record)
            if sid is None:
                return "never reached Slurm"
            self._run(ex, ["scancel", sid], "scancel")
            start = time.monotonic()
            deadline = start + grace + LEAVE_QUEUE_TIMEOUT
            while True:
                st = self.query(ex, [sid]).get(sid)
                if st is None or st.slurm_state.split()[0].rstrip("+") not in ALIVE_SLURM:
                    return (f"scancel {sid}: left the queue after {time.monotonic() - start:.1f} s"
                            + (f" ({st.slurm_state})" if st else ""))
                if time.monotonic() > deadline:
                    raise RemoteError(ex.host.name, f"Slurm job {sid} still {st.slurm_state} "
                                                    f"{deadline - start:.0f} s after scancel")
                time.sleep(0.5)
        finally:
            ex.close()

    def cancel(self, ref: str, grace: float = 10.0) -> tuple[reg.JobRecord, dict[str, str]]:
        """scancel the job and wait until it left the queue. An ended record whose sbatch
        answer was lost (no Slurm id) is still looked for by its job name: a job that Slurm
        queued after all is cancelled, and the answer says so."""
        record = self.registry.get(ref)
        login = parse_hostfile(record.hostfile_text, f"registry:{record.id}")[0].name
        if record.terminal:
            if record.meta.get("slurm_job_id") or not record.meta.get("slurm_job_name"):
                raise InputError(f"job {record.id} is already {record.state}; nothing to cancel")
            message = self._scancel(record, grace)
            if message != "never reached Slurm":
                self.registry.add_event(record.id, "cancel", f"the job was {record.state}; {message}")
                message += f" (it was queued although its submit failed; the job stays {record.state})"
            return self.registry.get(record.id), {login: message}
        # CANCELLED first (as on hosts): a submit still staging starts nothing, one whose sbatch
        # is answering finds the job ended and scancels what it queued
        when = " during staging" if record.state in (reg.PENDING, reg.STAGING) else ""
        try:
            record = self.registry.set_state(record.id, reg.CANCELLED, "cancelled by the user" + when)
        except reg.IllegalTransition:
            record = self.registry.get(record.id)  # it ended meanwhile: scancel what is left
        message = self._scancel(record, grace)
        for n in record.nodes:
            self.registry.set_node(record.id, n.node_rank, state=reg.CANCELLED, ended_at=reg.now_iso())
        return self.registry.get(record.id), {login: message}

    def _explained(self, record: reg.JobRecord, reason: str) -> str:
        """The follower's reason with msrun's report of a dead worker, which on Slurm only the
        batch script's output holds (a reason the follower already explained is kept). Asking
        costs one read on the login node; one that fails leaves the reason as it is."""
        if "slurm_job_id" not in record.meta or "as msrun reported" in reason:
            return reason
        ex, python = self._login(record)
        try:
            found = msrun_failure(self._batch_output(ex, python, record))
        except AlaunchError:
            found = None
        finally:
            ex.close()
        return f"{reason}; {found}" if found else reason

    def fail(self, ref: str, reason: str, grace: float = 3.0) -> reg.JobRecord:
        """A rank failed (seen by the follower): record FAILED first, then scancel the job."""
        record = self.registry.get(ref)
        if record.terminal and record.state != reg.FAILED:
            return record
        if record.state != reg.FAILED and self.registry.set_state_unless_ended(record.id, reg.FAILED, reason):
            explained = self._explained(record, reason)  # recorded first: the read comes after
            if explained != reason:
                self.registry.set_state(record.id, reg.FAILED, explained)
        record = self.registry.get(record.id)
        if record.state != reg.FAILED:
            return record  # cancelled or succeeded meanwhile
        if reason not in (record.reason or ""):
            # Slurm's verdict was recorded first ("FAILED (NonZeroExitCode), exit code 1; ..."):
            # the follower's first failure (which rank, why) leads it. Reading the batch output
            # before recording FAILED let the watcher win that race in a full suite run.
            record = self.registry.set_state(record.id, reg.FAILED, f"{reason}; {record.reason}" if record.reason
                                             else reason)
        message = self._scancel(record, grace)
        for n in record.nodes:
            self.registry.set_node(record.id, n.node_rank, state=reg.FAILED, ended_at=reg.now_iso())
        self.registry.add_event(record.id, "gang-stop", message)
        return self.registry.get(record.id)

    # ------------------------------------------------------------------ prune
    def prune(self, target: core.SlurmTarget, opts) -> dict:
        """``alaunch prune`` of the shared workdir through the login node. Never a job Slurm
        still has: every job name in the queue is protected, whatever the registry says (an
        sbatch whose answer was lost is FAILED in the registry and may be running; its
        processes run on compute nodes, where the scan's process check does not look). A
        queue that cannot be read prunes nothing."""
        from launcher.ops.prune import prune_hosts
        login = target.login_host()
        ex = self.exec_factory(login)
        try:
            queued = set(self._ask(ex, ["squeue", "-h", "-o", "%j"], "squeue").split())
        finally:
            ex.close()
        python = self.python_for(target)
        return prune_hosts([login], lambda h: self.exec_factory(h).using(python), self.registry, opts, alive=queued)

    # ------------------------------------------------------------------ top
    def top_source(self, target: core.SlurmTarget, *, bin_dir: str | None = None, interval: float = 2.0,
                   timeout: float = 15.0) -> TopSource:
        """``alaunch top -H <slurm target>``: the partition's nodes through the login node."""
        return SlurmTop(self, target, interval, timeout)

    # ------------------------------------------------------------------ hosts check
    def check(self, target: core.SlurmTarget, *, timeout: float = 10.0, **policy) -> CheckReport:
        """The login node answers and the partition exists: its nodes, states and gres; problems."""
        nodes, problems = self.sinfo(target)
        return CheckReport(f"Slurm partition {target.partition or '(default)'} via {target.login}",
                           ("node", "state", "gres", "cpus", "reason"),
                           [(n.name, n.state, n.gres, n.cpus, n.reason) for n in nodes],
                           problems=problems,
                           json={"login": target.login, "partition": target.partition,
                                 "nodes": [asdict(n) for n in nodes], "problems": problems},
                           failure=f"Slurm check failed: {problems[0]}" if problems else None)

    def sinfo(self, target: core.SlurmTarget) -> tuple[list[core.NodeInfo], list[str]]:
        """The login node answers and the partition exists: its nodes, states, gres and the
        reason of a node that is down or drained; problems."""
        ex = self.exec_factory(target.login_host())
        problems: list[str] = []
        try:
            res = ex.exec(core.top_argvs(target.partition)[0], timeout=60)
        except AlaunchError as exc:
            return [], [exc.message]
        finally:
            ex.close()
        if not res.ok:
            return [], [f"{target.login}: sinfo failed: {res.error_line()}"]
        nodes = core.parse_top_sinfo(res.text())
        if not nodes:
            problems.append(f"partition {target.partition or '(default)'} has no nodes (sinfo printed none)")
        elif len(nodes) < target.nodes:
            problems.append(f"the target asks for {target.nodes} node(s) but the partition has {len(nodes)}")
        usable = [n for n in nodes if n.state.rstrip("*~#!%$@^-") in ("idle", "mix", "alloc", "comp")]
        if nodes and len(usable) < target.nodes:
            problems.append(f"only {len(usable)} node(s) up (idle/mixed/allocated); the target asks for {target.nodes}")
        if target.gres_option:
            name = target.gres_option.split(":")[0]
            if not any(name in n.gres for n in nodes):
                problems.append(f"no node of the partition has gres {name!r} (gres: "
                                f"{', '.join(sorted({n.gres for n in nodes})) or 'none'}); set gres: \"\" "
                                "in the target for a cluster without gres")
        return nodes, problems


# ----------------------------------------------------------------------------- top

SAMPLE_AGE = 30.0  # s: a node's NPU sample older than this is said with its age


def top_views(nodes: Sequence[core.NodeInfo], jobs: Sequence[core.RunningJob],
              samples: Mapping[tuple[str, str], str], now: float,
              progress: Mapping[str, str] | None = None) -> list[HostView]:
    """One refresh of ``top`` on Slurm -> a view per node. The scheduler's word on each node
    (its state and reason, every running job on it: user, name, Slurm id); its cards from the
    newest NPU sample an alaunch job on it wrote (``samples``: (Slurm id, node) -> the tail of
    ``<job root>/state/telemetry/<node>.smi``), the job's cards held by it, a card another
    process uses held by that process; an idle node without a sample: its gres' cards, free.
    A node with neither shows no cards: what runs there is the scheduler's to say, not ours.
    ``progress``: alaunch job id -> its logs' progress (the job's cards show it)."""
    from launcher.core.cards import CardView, Holder
    from launcher.ops.npusmi import NpuSmiParseError, parse_npu_smi
    from launcher.ops.telemetry import node_sample
    on: dict[str, list[core.RunningJob]] = {}
    for job in jobs:
        for name in job.nodes:
            on.setdefault(name, []).append(job)
    views = []
    for node in nodes:
        here = on.get(node.name, [])
        words = node.state + (f" ({node.reason})" if node.reason else "")
        if here:
            words += ": " + ", ".join(f"{j.user} {j.name} (Slurm {j.slurm_id})" for j in here)
        cards: tuple[CardView, ...] = ()
        notes = []
        for job in here:
            tail = samples.get((job.slurm_id, node.name)) or ""  # its first line may be cut: tried last
            sample = next((s for line in reversed(tail.splitlines()) if (s := node_sample(line, 1))), None)
            if sample is None:
                continue
            if sample.table.startswith("!exit"):
                notes.append(f"npu-smi: {sample.table[1:]}")
                continue
            try:
                found = parse_npu_smi(sample.table)
            except NpuSmiParseError as exc:
                notes.append(exc.message.splitlines()[0])
                continue
            if now - sample.t > SAMPLE_AGE:
                notes.append(f"NPU sample {now - sample.t:.0f} s old")
            rows = []
            for c in found:
                holder = None
                if c.npu_id in sample.ranks:
                    holder = Holder(c.npu_id, job_id=job.name, user=job.user)
                elif c.busy():
                    p = c.processes[0] if c.processes else None
                    holder = Holder(c.npu_id, pid=p.pid if p else None, process=p.name if p else None,
                                    hbm_mb=p.memory_mb if p else c.hbm_used_mb)
                rows.append(CardView(c.npu_id, c.health, c.aicore_pct, c.hbm_used_mb, c.hbm_total_mb, c.power_w,
                                     c.temp_c, holder, (progress or {}).get(job.name) if holder and holder.job_id
                                     else None))
            cards = tuple(rows)
            break
        if not cards and not here and node.state.rstrip("*~#!%$@^-") == "idle":
            cards = tuple(CardView(c) for c in range(core.gres_cards(node.gres)))
        views.append(HostView(node.name, cards, note="; ".join(notes) or None, scheduler=words))
    return views


class SlurmTop(TopSource):
    """Each refresh: ``sinfo`` and ``squeue`` on the login node, then one TOP of
    ``remote/slurm.py`` there: the newest NPU sample of every running alaunch job's nodes (the
    files its sampler writes in the shared workdir, ``remote/follow.py`` SAMPLE) and its logs'
    tails (its progress). Three round trips over one kept connection, nothing run on a compute
    node. A login node that does not answer is one unreachable row."""

    def __init__(self, engine: SlurmService, target: core.SlurmTarget, interval: float = 2.0, timeout: float = 15):
        super().__init__(interval, timeout)
        self.engine, self.target = engine, target
        self.ex = engine.exec_factory(target.login_host())
        self.python = engine.python_for(target)

    def ask(self) -> list[HostView]:
        sinfo, squeue = core.top_argvs(self.target.partition)
        try:
            nodes = core.parse_top_sinfo(self._query(sinfo, "sinfo"))
            jobs = core.parse_top_squeue(self._query(squeue, "squeue"))
            # an alaunch job's dir is <workdir>/alaunch/<its id>, its Slurm name that id: only
            # those are read (not a path in another user's home that merely ran there)
            ours = [j for j in jobs
                    if j.workdir.startswith("/") and posixpath.basename(j.workdir.rstrip("/")) == j.name]
            paths = {(j.slurm_id, n): posixpath.join(JobLayout(j.workdir).state, "telemetry", f"{n}.smi")
                     for j in ours for n in j.nodes}
            request = {"op": "top", "paths": sorted(set(paths.values())), "roots": sorted({j.workdir for j in ours}),
                       "bytes": 1 << 15}
            got = self.engine._call(self.ex, self.python, request, "reading the NPU samples",
                                    timeout=self.timeout) if ours else {}
        except AlaunchError as exc:
            return [HostView(self.target.login, error=exc.message.splitlines()[0])]
        from launcher.metrics.logparse import tails_progress
        texts, logs = got.get("samples") or {}, got.get("tails") or {}
        samples = {key: text for key, path in paths.items() if (text := texts.get(path))}
        progress = {j.name: text for j in ours if (text := tails_progress("", logs.get(j.workdir) or {}))}
        return top_views(nodes, jobs, samples, time.time(), progress)

    def _query(self, argv: list[str], what: str) -> str:
        """sinfo/squeue on the login node within ``--timeout`` (a hung controller is one
        unreachable row, not a frozen screen)."""
        res = self.ex.exec(argv, timeout=self.timeout)
        if not res.ok:
            raise RemoteError(self.ex.host.name, f"{what} failed: {res.error_line()}")
        return res.text()

    def close(self) -> None:
        self.ex.close()
