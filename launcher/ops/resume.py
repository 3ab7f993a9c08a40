"""``alaunch resume JOB``: restart a failed or cancelled training job from its last checkpoint,
in the same job directory, as attempt 2, 3, ...

How (MindFormers' own resume): the rendered config gets ``resume_training: True`` and
``load_checkpoint: <job dir>/output/checkpoint``; MindFormers then loads, on every rank, the
newest checkpoint that *every* rank has (its ``resume_ckpt`` rule, from each rank's
``meta.json``), restores the optimizer state and the global step, and skips the data it
already trained on, so the loss lines continue from the checkpoint's step. Nothing of the
previous attempt is lost: each node's ``state/``, ``msrun_log/`` and ``output/log/`` move to
``attempts/<n>/`` first (remote/attempt.py).

Which checkpoint: the newest *global* step every rank has, read from each file's own
metadata on its host (``entry/merge_ckpt.py`` ``inspect``), never from its name (a resumed
run names its files with a shifted in-epoch step, and attempts can repeat a name).

One attempt at a time: the move from failed/cancelled to staging is a compare-and-set in the
registry (``Registry.move_if``); a second ``resume`` at once is told so and touches nothing.
A resume that cannot start (no checkpoint) puts the job back as it was.

Cards: the job's claim died with its processes, so before the launch the job claims the
cards it had (``meta.devices``) again, under each host's lock, as ``submit`` does; cards
another job (or a foreign process, per npu-smi) took meanwhile make it refuse, naming them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from launcher.core import cards as core_cards
from launcher.core import pipeline as pl
from launcher.core import yamlio
from launcher.core.hostfile import Host, parse_hostfile
from launcher.core.plan import Plan, build_plan
from launcher.core.spec import JobSpec, load_job, masked_secrets, parse_job, restore_secrets
from launcher.errors import AlaunchError, InputError, NothingToResume, ResumeBusy
from launcher.ops import cards as card_ops
from launcher.ops import registry as reg
from launcher.ops.fanout import run_parallel
from launcher.ops.launch import Launcher, launch_all
from launcher.ops.stage import inventory, store_base

if TYPE_CHECKING:
    from launcher.ops.engine import Engine
    from launcher.runners import CommandRunner

CHECKPOINT_GLOB = "output/checkpoint/**/*.ckpt"


def resumed_config(config_text: str, job_dir: str) -> str:
    """The rendered MindFormers YAML with resume on, loading from the job's checkpoint dir (pure)."""
    config = yaml.safe_load(config_text) or {}
    config["resume_training"] = True
    config["load_checkpoint"] = posixpath.join(job_dir, "output", "checkpoint")
    model_config = (config.get("model") or {}).get("model_config")
    if isinstance(model_config, dict):
        model_config["checkpoint_name_or_path"] = None  # the base weights come from the checkpoint now
    return yamlio.dumps(config)


def claim_again(service: Engine, record: reg.JobRecord, hosts: Sequence[Host], plan: Plan,
                pythons: Mapping[str, str]) -> None:
    """Take the job's cards again (the ones it had, ``meta.devices``) under each host's lock,
    as submit does: its old claim died with its processes, and another job may hold the
    cards now. Taken by someone else (a live claim, or a process per npu-smi): refuse, naming
    the holder, and let go of what was claimed here."""
    states = {n.host.name: posixpath.dirname(n.pid_path) for n in plan.nodes}

    def one(host: Host) -> card_ops.ClaimAnswer:
        runner = service.exec_factory(host).using(pythons.get(host.name))
        try:
            return card_ops.claim(runner, store_base(host), record.id, host.slot_ids, states.get(host.name, ""))
        finally:
            runner.close()

    answers = {h.name: a for h, a in run_parallel(hosts, one).raise_on_failure().items()}
    short = {}
    for h in hosts:
        taken = [answers[h.name].held[c] for c in h.slot_ids if c in answers[h.name].held]
        if taken or not answers[h.name].ok:
            short[h.name] = taken
    if short:
        for h in hosts:
            if answers[h.name].ok:
                runner = service.exec_factory(h).using(pythons.get(h.name))
                try:
                    card_ops.release(runner, store_base(h), record.id)
                finally:
                    runner.close()
        raise core_cards.CardsBusy(f"cannot resume {record.id} on its cards: " + "; ".join(
            f"{name}: " + ", ".join(f"card {x.card} held by {x.describe()}" for x in held)
            for name, held in short.items()) + "; resume again when they are free", short)
    service.registry.add_event(record.id, "cards", "; ".join(f"{h.name}: {','.join(map(str, h.slot_ids))}"
                                                             for h in hosts) + " (claimed again to resume)")


def recorded_spec(record: reg.JobRecord, original: JobSpec | None = None) -> JobSpec:
    """The job of a training record as it was submitted (every engine's resume starts here),
    its secret env values back: ``original`` is the job as its submitter built it (a pipeline
    step's retry has it); else the job file is read again for them (the registry keeps ``***``)."""
    if record.kind != "finetune":
        raise InputError(f"job {record.id} is a {record.kind} job; only training jobs resume from a checkpoint "
                         f"(submit it again)")
    meta = record.meta
    source = meta.get("source") or f"registry:{record.id}"
    base_dir = str(Path(source).parent) if meta.get("source") else None
    spec = parse_job(yamlio.loads(record.spec_text, f"registry:{record.id}"), source, base_dir)
    if masked_secrets(spec):
        if original is None and meta.get("source") and Path(source).is_file():
            original = load_job(source)
        spec = restore_secrets(spec, original, source)
    return spec


def checkpoints_under(runner: CommandRunner, root: str) -> list[pl.Checkpoint]:
    """Every checkpoint of the job dir ``root`` with what the file itself says (global step,
    attempt): one listing and one inspection on the host (entry/merge_ckpt.py ``inspect``)."""
    from launcher.ops.ckpt import on_host
    from launcher.ops.collect import list_node
    listing = list_node(runner, root, {"checkpoints": [CHECKPOINT_GLOB]})
    paths = [posixpath.join(listing.root, f.path) for f in listing.files]
    info = on_host(runner, {"op": "inspect", "paths": paths}, "inspecting checkpoints") if paths else {}
    return [pl.Checkpoint.of(p, info.get(p) or {}) for p in paths]


def resume_step(record: reg.JobRecord, checkpoints: list[pl.Checkpoint]) -> int:
    """The newest global step every rank saved (from the latest attempt that has it), or the
    one-line refusal."""
    picked = pl.common_last_step(checkpoints)
    if picked is None:
        raise NothingToResume(f"job {record.id} has no checkpoint that every rank saved")
    return picked[0]


def rotate_request(record: reg.JobRecord, root: str, attempt: int) -> dict:
    """ROTATE (remote/attempt.py) for one job dir: keep attempt ``attempt``, config resumed."""
    return {"op": "rotate", "root": root, "attempt": attempt, "config": resumed_config(record.config_text, root)}


def locked(registry: reg.Registry, ref: str, run: Callable[[reg.JobRecord, int], reg.JobRecord]) -> reg.JobRecord:
    """One attempt at a time, whatever the engine: the job is moved FAILED/CANCELLED ->
    STAGING in one conditional write before anything else (two resumes at once both passed
    the state check, and the loser marked FAILED a job whose attempt 2 ran on); the loser is
    told so and changes nothing. A resume that fails before launching puts the job back."""
    record = registry.get(ref)
    if record.kind != "finetune":
        raise InputError(f"job {record.id} is a {record.kind} job; only training jobs resume from a checkpoint "
                         f"(submit it again)")
    attempt = int(record.meta.get("attempt", 1))
    if not registry.move_if(record.id, (reg.FAILED, reg.CANCELLED), reg.STAGING,
                            f"resuming: attempt {attempt + 1}"):
        now = registry.get(record.id)
        if now.state in (reg.STAGING, reg.RUNNING, reg.QUEUED, reg.PENDING):
            raise ResumeBusy(f"job {record.id} is {now.state} (attempt {now.meta.get('attempt', 1)}): another resume "
                             f"is under way or it runs; one attempt at a time")
        raise InputError(f"job {record.id} is {now.state}; only a failed or cancelled job can be resumed")
    try:
        return run(record, attempt)
    except BaseException:
        now = registry.get(record.id)
        if now.state == reg.STAGING:  # nothing launched: the job is as it was
            registry.set_state(record.id, record.state, record.reason, force=True)
        raise


def resume_job(service: Engine, ref: str, say: Callable[[str], None] = lambda s: None,
               original: JobSpec | None = None) -> reg.JobRecord:
    """Attempt n+1 of a stopped finetune job on its hosts (see the module docstring). Returns it
    RUNNING."""
    return locked(service.registry, ref, lambda record, attempt: _resume(service, record, attempt, say, original))


def _resume(service: Engine, record: reg.JobRecord, attempt: int, say: Callable[[str], None],
            original: JobSpec | None) -> reg.JobRecord:
    registry = service.registry
    meta = record.meta
    spec = recorded_spec(record, original)
    hosts = parse_hostfile(record.hostfile_text, f"registry:{record.id}")
    by_name = {h.name: h for h in hosts}
    pythons = dict(meta.get("pythons") or {})

    def runner_for(host: str) -> CommandRunner:
        return service.exec_factory(by_name[host]).using(pythons.get(host))

    def listed(node: reg.NodeRecord) -> list[pl.Checkpoint]:
        runner = runner_for(node.host)
        try:
            return checkpoints_under(runner, node.job_dir)
        finally:
            runner.close()

    found = run_parallel(record.nodes, listed).raise_on_failure()
    step = resume_step(record, [c for node in record.nodes for c in found[node]])

    def rotate(node: reg.NodeRecord) -> dict:
        runner = runner_for(node.host)
        try:
            return runner.call("attempt", rotate_request(record, node.job_dir, attempt), timeout=120,
                               what="keep the previous attempt")
        finally:
            runner.close()

    run_parallel(record.nodes, rotate).raise_on_failure()
    devices = meta.get("devices") or {}
    hosts = [replace(h, slot_ids=tuple(devices.get(h.name, h.slot_ids))) for h in hosts]
    by_name = {h.name: h for h in hosts}
    node0 = by_name[record.nodes[0].host]
    runner0 = runner_for(node0.name)
    try:
        port = inventory(runner0, [], port=None).port
        assert port is not None  # asked for (port=None: pick a free one), node 0 answers one
    finally:
        runner0.close()
    roots = {n.host: n.job_dir for n in record.nodes}
    config_text = resumed_config(record.config_text, record.nodes[0].job_dir)
    plan = build_plan(spec, config_text, hosts, record.id, port, roots=roots,
                      addresses={node0.name: meta.get("master_addr") or node0.name}, bin_dir=meta.get("bin_dir"))
    claim_again(service, record, [by_name[n.host] for n in record.nodes], plan, pythons)
    registry.update_meta(record.id, {"attempt": attempt + 1, "master_port": port, "resumed_from_step": step})
    registry.set_state(record.id, reg.STAGING, f"resuming from global step {step}: attempt {attempt + 1}",
                       force=True)
    say(f"{record.id}: attempt {attempt + 1}, resuming from the checkpoint of global step {step}")
    execs = {n.host: runner_for(n.host) for n in record.nodes}
    try:
        launchers = {n.node_rank: Launcher(execs[n.host.name], record.id) for n in plan.nodes}
        try:
            started = launch_all(plan, launchers)
        except AlaunchError as exc:
            registry.set_state(record.id, reg.FAILED, exc.message)
            raise
    finally:
        for ex in execs.values():
            ex.close()
    for rank, s in started.items():
        registry.set_node(record.id, rank, pid=s.pid, pgid=s.pid, state=reg.RUNNING, exit_code=None,
                          started_at=reg.now_iso(), ended_at=None)
    return registry.set_state(record.id, reg.RUNNING)
