"""Run a pipeline: each step in order, job steps through :class:`JobService`, built-ins here.

What a step leaves behind (its *outputs*) is recorded in the registry (``pipeline_steps``) as
plain data: ``{"host", "python", "job_id", "root", "paths": {group: [absolute paths]}}`` for
what stays on a host, ``{"local": {...}}`` for what is on this machine. A reference
``{from: STEP}`` resolves to those paths: a job step gets ``{remote: PATH}`` (the checkpoint
stays on the cluster), a built-in that reads files here (score, results) fetches them first.

Re-runs (docs/pipelines.md): a step's identity is the hash of named *parts*
(:meth:`PipelineRunner.step_parts`): every file it reads by content (job file, template,
local inputs, the code tree, the entry and merge scripts alaunch ships, a data recipe, a
score's reference), where its outputs go, the alaunch version, and the *content identity of
the outputs it needs* (``digest``: paths and sha256 of a training's checkpoints, never the
producer's identity: a re-trained model re-runs every consumer). A step whose identity
equals a finished step of an earlier run, and whose outputs still exist, is *skipped*; the
parts are recorded with the outputs so the dry run can say what changed. A step whose job of
the same identity is still running (``alaunch run`` was killed) is *re-attached*; one that
succeeded after its driver died is reused. ``--from`` / ``--only`` take the steps not
selected from the newest earlier run, checked to be current and present.

Checkpoints are chosen by global step, from each file's own metadata (``entry/merge_ckpt.py``
``inspect``), across attempts: never by name.

Concurrency: a step starts as soon as the steps it needs are done, so independent steps
(eval and predict after one training) are submitted at the same time, each from its own
thread with its own registry connection (one sqlite connection cannot hold two threads'
transactions). Where they run is the card allocation's business (issue #14): each submit
claims free cards on the hosts under their lock, and one that does not fit is queued
(``SubmitOptions.wait``) until an earlier step frees its cards. ``concurrent=False`` (the
CLI's ``--logs``, whose live view is one job's) runs the steps one at a time, in order.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import posixpath
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from launcher import __version__
from launcher.core import pipeline as pl
from launcher.core import yamlio
from launcher.core.hostfile import Host
from launcher.core.layout import JobLayout, slug
from launcher.core.render import with_sets
from launcher.core.spec import JobSpec, parse_job
from launcher.errors import AlaunchError, InputError, NothingToResume, RemoteError
from launcher.metrics.retry import Verdict, classify
from launcher.ops import proc
from launcher.ops import registry as reg
from launcher.ops.ckpt import MERGE_PROGRAM, checkpoints_of, on_host
from launcher.ops.engine import Engine, HostTarget
from launcher.ops.service import SubmitOptions, prepare, used_hosts
from launcher.runners import CommandTimeout, ConnectError

ENTRY_DIR = Path(__file__).resolve().parents[1] / "entry"
DRY_PORT = 8118


def merged_path(producer: Mapping[str, Any]) -> str:
    """Where a training's per-rank checkpoints are merged to (one file per job, in its job dir)."""
    return posixpath.join(producer["root"], "output", "merged", f"{producer.get('job_id', 'merged')}.ckpt")


def lora_applied_path(producer: Mapping[str, Any], base: str) -> str:
    """Where a consumer's base + a training's LoRA delta are written, on each of its hosts: in the
    training's job dir (like the merged file), named by its job id and the base's path (a
    second base is a second file)."""
    return posixpath.join(producer["root"], "output", "lora", f"{producer.get('job_id', 'lora')}-base-"
                          f"{pl.text_sha(base)[:12]}.ckpt")


def digest(what: Any) -> str:
    """The content identity of a step's outputs: a hash of plain data (paths and sha256s)."""
    return pl.text_sha(json.dumps(what, sort_keys=True, default=str))


def local_digest(local: Mapping[str, Any]) -> str:
    """A built-in's local outputs: each file's (absolute) path and content."""
    files = {p: (file_sha(p) if Path(p).exists() else None)
             for paths in local.values() for p in ([paths] if isinstance(paths, str) else paths)}
    return digest(files)


@dataclass
class StepView:
    """What the dry run (and ``status``) says about one step: pure data."""

    name: str
    kind: str
    needs: tuple[str, ...]
    resolves: list[str] = field(default_factory=list)  # "checkpoint <- train's last checkpoint: /path"
    plan: str = ""  # a job step's node commands, a built-in's action
    action: str = "run"  # run | skip (identity unchanged) | reuse (not selected) | missing
    why: str = ""  # "unchanged since RUN", what changed, "taken from run RUN"
    cards: dict = field(default_factory=dict)  # host -> cards a job step takes ({} for a built-in)
    together: list[str] = field(default_factory=list)  # job steps that run at the same time
    waits_for: list[str] = field(default_factory=list)  # ready at the same time, but their cards come first
    job: str = ""  # a job step's job name and file, "llama3-8b-lora-math (jobs/llama3_8b_lora_math.yaml), finetune"
    trainable: int | None = None  # the LoRA trainable parameter count its rendered config gives


@dataclass
class StepResult:
    state: str
    outputs: dict
    job_id: str | None = None
    reason: str | None = None
    attempts: int = 1


def trainable_of(spec: JobSpec, hosts: Sequence[Host]) -> int | None:
    """The LoRA trainable parameter count of the job's rendered config (None: not a LoRA model,
    or a family the counter does not know); the dry run shows it per step (13,631,488 for the
    recipe's training: rank 16 on wq/wk/wv/wo of Llama3-8B)."""
    from launcher.core.layout import JobLayout
    from launcher.core.render import render_job
    try:
        rendered = render_job(spec, list(hosts), JobLayout("/dry-run"))
    except (AlaunchError, OSError, ValueError, KeyError):
        return None
    value = rendered.derived.get("trainable_params")
    return value if isinstance(value, int) else None


def step_job_data(step: pl.Step, resolve: Callable[[pl.Ref, str], dict[str, Any]]
                  ) -> tuple[dict[str, Any], str, str | None]:
    """The step's job mapping with its refs resolved: (data, source, base_dir). ``resolve(ref,
    site)`` gives a PathRef mapping for site 'checkpoint' or 'input'."""
    if step.job is not None:
        data = yamlio.load_file(step.job)
        source, base_dir = step.job, str(Path(step.job).parent)
    else:
        data, source, base_dir = dict(step.inline or {}), f"pipeline step {step.name}", None
    if step.checkpoint is not None:
        data["checkpoint"] = resolve(step.checkpoint, "checkpoint") if isinstance(step.checkpoint, pl.Ref) \
            else step.checkpoint
    if step.inputs:
        inputs = dict(data.get("inputs") or {})
        for name, value in step.inputs.items():
            ref = resolve(value, "input") if isinstance(value, pl.Ref) else dict(value)
            fills = (inputs.get(name) or {}).get("fills") if isinstance(inputs.get(name), dict) else None
            inputs[name] = {**ref, **({"fills": fills} if fills and "fills" not in ref else {})}
        data["inputs"] = inputs
    data = with_sets(data, step.sets)  # nodes, cards_per_node, seed, env.X on the job; the rest overrides
    return data, source, base_dir


def file_sha(path: str, exclude: Sequence[str] = ()) -> str:
    """Content hash of a local file or directory tree (a step's local input, a code tree:
    ``exclude`` globs match any path component, as staging's do)."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    if exclude and p.is_dir():
        files = [q for q in files if not any(fnmatch.fnmatch(part, g) for part in q.relative_to(p).parts
                                             for g in exclude)]
    for q in files:
        h.update(str(q.relative_to(p) if p.is_dir() else q.name).encode())
        with open(q, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def check_mergeable(spec: JobSpec, config: Mapping[str, Any], world: int) -> None:
    """Before a multi-card LoRA training whose checkpoint will be merged: MindFormers merges
    only with the *full* strategy, so ``only_trainable_params`` must be False."""
    if world <= 1:
        return
    model_config = ((config.get("model") or {}).get("model_config") or {})
    if not model_config.get("pet_config"):
        return
    only = ((config.get("parallel") or {}).get("strategy_ckpt_config") or {}).get("only_trainable_params", True)
    if only is not False:
        raise InputError("a multi-card LoRA job whose checkpoint is merged must save the full strategy: set "
                         "parallel.strategy_ckpt_config.only_trainable_params: False (MindFormers needs it "
                         "to merge the per-rank files)", source=spec.source,
                         key="overrides.parallel.strategy_ckpt_config.only_trainable_params")


class PipelineRunner:
    """One pipeline run against one registry and one target, through the target's engine
    (``service``: any :class:`~launcher.ops.engine.Engine`)."""

    def __init__(self, registry: reg.Registry, service: Engine, target: Any, *,
                 say: Callable[[str], None] = lambda s: None, runs_dir: Path = Path("runs"),
                 opts: SubmitOptions = SubmitOptions(), follow: Callable[[reg.JobRecord], Any] | None = None,
                 builtins: Mapping[str, Callable[..., dict]] | None = None, concurrent: bool = True,
                 cancel_on_interrupt: bool = False, force_reuse: bool = False):
        # a plain list of hosts (tests, callers before engines) is a hostfile's target
        self.target = target if hasattr(target, "node_hosts") else HostTarget(tuple(target))
        self._registry0, self._service0, self.hosts = registry, service, self.target.node_hosts()
        self._owner = threading.current_thread()
        self._local = threading.local()
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self.concurrent = concurrent
        self.say, self.runs_dir, self.opts = say, Path(runs_dir).resolve(), opts  # never the cwd's
        self.cancel_on_interrupt, self.force_reuse = cancel_on_interrupt, force_reuse
        self.parts: dict[str, dict] = {}  # step -> its identity parts (this run's)
        self.follow = follow or self._quiet_follow
        self.builtins = dict(builtins or {})
        self.outputs: dict[str, dict] = {}  # step -> outputs (this run's, or reused)
        self.identities: dict[str, str] = {}
        self.base_dir = Path(".")
        self.pipeline: pl.Pipeline | None = None

    @property
    def registry(self) -> reg.Registry:
        """The registry, through this thread's own connection (a step thread opens one)."""
        if threading.current_thread() is self._owner:
            return self._registry0
        mine = getattr(self._local, "registry", None)
        if mine is None:
            mine = self._local.registry = reg.Registry(self._registry0.path)  # closed by step_thread
        return mine

    @property
    def service(self) -> Engine:
        """The engine, bound to this thread's registry connection."""
        if threading.current_thread() is self._owner:
            return self._service0
        mine = getattr(self._local, "service", None)
        if mine is None:
            s0 = self._service0
            mine = self._local.service = type(s0)(self.registry, s0.state_dir, say=s0.say, progress=s0.progress,
                                                  exec_factory=s0.exec_factory)
        return mine

    def local_path(self, value: Any) -> Path:
        """A path option of a built-in: relative to the pipeline file."""
        return (self.base_dir / os.path.expanduser(str(value))).resolve()

    # ------------------------------------------------------------------ resolution

    def _producer(self, ref: pl.Ref) -> dict:
        if ref.step not in self.outputs:
            raise AlaunchError(f"step {ref.step!r} has no outputs yet (did it run?)")
        return self.outputs[ref.step]

    def resolve(self, ref: pl.Ref, site: str) -> Any:
        """A ref at a consumer site: 'checkpoint' / 'input' (PathRef mappings for a job),
        'path' (a local path), 'paths' (local paths), 'run_dir' (a fetched run directory)."""
        out = self._producer(ref)
        if ref.output == pl.LORA:  # written on the consumer's hosts before the submit (place)
            if site not in ("checkpoint", "input") or "local" in out:
                raise AlaunchError(f"cannot use {ref.describe()} as {site}")
            return {"remote": lora_applied_path(out, str(ref.base))}
        if site == "run_dir":
            return str(self.fetched(ref.step, "all"))
        if "local" in out:
            paths = out["local"].get(ref.output or out.get("default", "")) or []
            if isinstance(paths, str):
                paths = [paths]
            if not paths:
                raise AlaunchError(f"step {ref.step!r} has no output {ref.output or out.get('default')!r}")
            chosen = paths if ref.select == "all" else paths[-1:]
            if site in ("checkpoint", "input"):
                return {"local": chosen[0]}
            return chosen if site == "paths" else chosen[0]
        group = ref.output or ("checkpoints" if site == "checkpoint" else out.get("default", "checkpoints"))
        paths = out.get("paths", {}).get(group) or []
        if not paths:
            raise AlaunchError(f"step {ref.step!r} left no {group!r} outputs on {out.get('host')}")
        if group == "checkpoints" and ref.select == "last":
            if len(pl.ranks_of(paths)) > 1 and site == "checkpoint":
                merged = self.auto_merge(ref.step)
                return {"remote": merged}
            last = pl.last_checkpoint(checkpoints_of(out))
            if last is None:
                raise AlaunchError(f"step {ref.step!r} left no checkpoint on {out.get('host')}")
            chosen = [last.path]
        else:
            chosen = paths if ref.select == "all" else paths[-1:]
        if site in ("checkpoint", "input"):
            if ref.select == "all" and group == "checkpoints":
                return {"remote": posixpath.dirname(posixpath.dirname(chosen[0]))}  # the checkpoint dir
            return {"remote": chosen[0]}
        if site in ("path", "paths"):
            local = [str(self.fetched(ref.step, group, p)) for p in chosen]
            return local if site == "paths" else local[0]
        raise AlaunchError(f"cannot use {ref.describe()} as {site}")

    def fetched(self, step: str, group: str, remote_path: str | None = None) -> Path:
        """Fetch a job step's outputs (``group``) here, once; the local run dir or the one file."""
        from launcher.ops.collect import fetch_job, host_dirs
        out = self.outputs[step]
        job_id = out.get("job_id")
        if not job_id:
            raise AlaunchError(f"step {step!r} ran no job; nothing to fetch")
        with self._locks[f"fetch:{step}"]:  # two consumers of one step fetch it once
            key = f"fetched:{group}"
            if "fetched:all" in out:
                key = "fetched:all"
            if key not in out:
                what = "all" if group == "all" else ("logs", group) if group != "logs" else "logs"
                report = fetch_job(self.registry, job_id, what, self.runs_dir)
                out[key] = str(report.run_dir)
        run_dir = Path(out[key])
        if remote_path is None:
            return run_dir
        record = self.service.log_view(self.registry.get(job_id))  # the job dirs fetch read (a scheduler's: one)
        node0 = record.nodes[0]
        rel = posixpath.relpath(remote_path, node0.job_dir)
        return run_dir / host_dirs(record.nodes)[0] / rel

    def auto_merge(self, step: str) -> str:
        """Merge a multi-card step's per-rank checkpoints (once) and return the merged path."""
        out = self.outputs[step]
        with self._locks[f"merge:{step}"]:  # two consumers of one training merge it once
            if "merged" not in out:
                self.say(f"  {step}: {len(pl.ranks_of(out['paths']['checkpoints']))} ranks' checkpoints: merging")
                out["merged"] = self.merge_on_host(out)["out"]
        return out["merged"]

    def host(self, name: str) -> Host:
        """A host of the target by name: a node, or where it stages (a scheduler's login node)."""
        return next((h for h in self.hosts + self.target.stage_hosts() if h.name == name), None) or Host(name, 1)

    def merge_on_host(self, producer: dict) -> dict:
        """Merge the newest global step every rank has (from the latest attempt that has it:
        ``core.pipeline.common_last_step`` on the files' own metadata) with
        ``entry/merge_ckpt.py``, into the producer's job dir, where the engine runs work
        (:meth:`Engine.run_task`: on hosts, the producer's node 0; on Slurm, a job of its own)."""
        root, out = producer["root"], merged_path(producer)
        picked = pl.common_last_step(checkpoints_of(producer))
        if picked is None:
            raise AlaunchError(f"the ranks of {producer.get('job_id')} have no checkpoint step in common "
                               f"(by the files' global steps); nothing complete to merge")
        step, ckpts = picked
        request = {"job_dir": root, "out": out, "step": step, "world": producer.get("world"),
                   "ckpts": {str(r): c.path for r, c in ckpts.items()}}
        return self.service.run_task(self.target, self.host(producer["host"]), producer.get("python"),
                                     MERGE_PROGRAM, request, posixpath.dirname(out), "merge")

    def merge_text(self, step: pl.Step) -> str:
        """The dry run's merge: where and how the engine would run it."""
        ref = step.options.get("checkpoint")
        out = self.outputs.get(getattr(ref, "step", "")) if isinstance(ref, pl.Ref) else None
        if out and "root" in out:
            root, merged = out["root"], merged_path(out)
        else:
            root = self.job_root(f"<{getattr(ref, 'step', '?')}'s job id>")
            merged = posixpath.join(root, "output", "merged", "<job id>.ckpt")
        request = {"job_dir": root, "out": merged, "step": "<the newest global step every rank saved>",
                   "ckpts": "<each rank's checkpoint of that step>"}
        host = (out or {}).get("host") or "the training's node 0"
        return self.service.task_text(self.target, host, MERGE_PROGRAM, request, posixpath.dirname(merged), "merge")

    def job_root(self, job_id: str) -> str:
        """A job's directory on the target (the dry run's stand-in for a step not run yet):
        ``~/alaunch/<id>`` on hosts, the shared workdir's on Slurm."""
        return JobLayout.for_job(self.target.workdir, job_id).root

    def on_host(self, producer: Mapping[str, Any], request: dict, what: str) -> Any:
        """``entry/merge_ckpt.py`` with ``request`` on the producer's host (its one JSON line)."""
        runner = self.service.exec_factory(self.host(producer["host"])).using(producer.get("python"))
        try:
            return on_host(runner, request, what)
        finally:
            runner.close()

    # ------------------------------------------------------------------ identity

    def job_spec(self, step: pl.Step, *, dry: bool = False) -> JobSpec:
        def resolve(ref: pl.Ref, site: str) -> dict:
            if dry and ref.step not in self.outputs:
                return {"remote": self._placeholder(ref, site)}
            out = self.outputs[ref.step]
            if dry and site == "checkpoint" and ref.select == "last" and "local" not in out and not ref.output \
                    and len(pl.ranks_of((out.get("paths") or {}).get("checkpoints") or [])) > 1:
                return {"remote": out.get("merged") or merged_path(out)}  # where the run merges it, not merged now
            return self.resolve(ref, site)

        data, source, base_dir = step_job_data(step, resolve)
        return parse_job(data, source, base_dir)

    def _placeholder(self, ref: pl.Ref, site: str) -> str:
        """Where a ref will point, for the dry run (the producer has not run yet)."""
        producer = self.pipeline.step(ref.step) if self.pipeline else None
        root = self.job_root(f"<{ref.step}'s job id>")
        if ref.output == pl.LORA:
            return lora_applied_path({"root": root, "job_id": "<job id>"}, str(ref.base))
        if producer is not None and producer.builtin == "merge":
            inner = producer.options.get("checkpoint")
            inner_root = self.job_root(f"<{getattr(inner, 'step', '?')}'s job id>")
            return f"{inner_root}/output/merged/<job id>.ckpt"
        if site == "checkpoint" and producer is not None and producer.builtin is None:
            spec = self.job_spec(producer, dry=True)
            world = sum(len(h.slot_ids) for h in used_hosts(spec, self.hosts))
            if world > 1 and ref.select == "last":
                return f"{root}/output/merged/<job id>.ckpt (merged from {world} ranks)"
            if ref.select == "all":
                return f"{root}/output/checkpoint"
            return f"{root}/output/checkpoint/rank_0/<last>.ckpt"
        return f"{root}/<{ref.output or 'output'}>"

    def step_parts(self, step: pl.Step, spec: JobSpec | None) -> dict[str, str]:
        """What a step's identity covers, by name (docs/pipelines.md): every file it reads by
        content, where its outputs go, the alaunch version, and each needed step's *outputs'*
        content identity (``digest``), never that step's identity."""
        parts: dict[str, str] = {"definition": digest(step.canonical()), "alaunch": __version__}
        if spec is not None:
            parts["job"] = digest(spec.model_dump(mode="json"))  # resolved refs, absolute local paths
            if step.job is not None:
                parts["job file"] = pl.text_sha(Path(step.job).read_bytes())
            parts["template"] = pl.text_sha(spec.template_path().read_bytes())
            parts["hosts"] = digest([(h.name, len(h.slot_ids)) for h in used_hosts(spec, self.hosts)])
            named = {"checkpoint": spec.checkpoint, "tokenizer": spec.tokenizer,
                     **{f"input {n}": r for n, r in spec.inputs.items()}}
            for name, ref in named.items():
                if ref is not None and ref.local is not None:
                    parts[name] = file_sha(ref.local) if Path(ref.local).exists() else "missing"
            if not isinstance(spec.code, str):
                parts["code tree"] = file_sha(spec.code.local, spec.code.exclude)
            if spec.entry.builtin:
                parts["entry scripts"] = digest({q.name: pl.text_sha(q.read_bytes())
                                                 for q in sorted(ENTRY_DIR.glob("*.py"))
                                                 if q.name != MERGE_PROGRAM.name})
        else:
            table = pl.BUILTIN_OPTIONS[step.kind]  # the built-in's name
            for key, (kind, _) in table.items():
                value = step.options.get(key)
                if kind == "path" and isinstance(value, str):
                    where = self.local_path(value)  # absolute: a second checkout's outputs are not this one's
                    parts[f"{key} path"] = str(where)
                    if key in ("recipe", "reference") and where.is_file():
                        parts[f"{key} file"] = file_sha(str(where))
            if step.builtin == "merge":
                parts["merge script"] = pl.text_sha(MERGE_PROGRAM.read_bytes())
        for need in step.needs:
            out = self.outputs.get(need) or {}
            parts[f"{need}'s outputs"] = out.get("digest") or self.identities.get(need, "")
        return parts

    def step_identity(self, step: pl.Step, spec: JobSpec | None) -> str:
        self.parts[step.name] = self.step_parts(step, spec)
        return pl.identity(self.parts[step.name])

    def outputs_exist(self, outputs: dict) -> bool:
        """Are a finished step's outputs still there (local files here, remote ones on their host)?"""
        if "local" in outputs:
            return all(Path(p).exists() for paths in outputs["local"].values()
                       for p in ([paths] if isinstance(paths, str) else paths))
        paths = [p for ps in outputs.get("paths", {}).values() for p in ps]
        if not paths:
            return True
        if not any(h.name == outputs.get("host") for h in self.hosts + self.target.stage_hosts()):
            return False
        runner = self.service.exec_factory(self.host(outputs["host"])).using(outputs.get("python"))
        try:
            return bool(runner.call("files", {"op": "exist", "paths": paths}, timeout=120,
                                    what="look for a step's outputs")["exist"])
        except (ConnectError, CommandTimeout):
            raise
        except RemoteError:
            return False  # the host answered, not with a yes: the step runs again
        finally:
            runner.close()

    # ------------------------------------------------------------------ dry run

    def describe(self, pipeline: pl.Pipeline, from_step: str | None = None, only: Sequence[str] = ()) -> list[StepView]:
        """The dry run: each step in order, whether it would run and why ("run (what changed)")
        or be skipped ("skip (unchanged since RUN)"), what its refs resolve to, its plan.
        Nothing is submitted (a skip's outputs are checked to exist, a read)."""
        selected = pl.select(pipeline, from_step, only)
        pl.missing_options(pipeline, [n for n in selected if pipeline.step(n).builtin not in self.builtins])
        self.base_dir = Path(pipeline.base_dir or ".")
        self.pipeline = pipeline
        views = []
        will_run: set[str] = set()
        for step in pipeline.order():
            view = StepView(step.name, step.kind, step.needs)
            previous = self.registry.reusable_steps(pipeline.name, step.name)
            if step.name not in selected:
                view.action = "reuse" if previous else "missing"
                view.why = f"taken from run {previous[0].pipeline_id}" if previous else "NOT RUN BEFORE"
                if previous:
                    self.outputs[step.name] = previous[0].outputs
            spec = self.job_spec(step, dry=True) if step.builtin is None else None
            if step.name in selected:
                view.action, view.why = self.verdict(pipeline, step, spec, previous, will_run,
                                                     force=bool(from_step or only))
                if view.action == "run":
                    will_run.add(step.name)
            if step.builtin is not None:
                for ref in step.refs():
                    view.resolves.append(f"{ref.describe()}" + (f" (from {ref.step}'s last run)"
                                                                 if ref.step in self.outputs else " (at run time)"))
            if spec is not None:
                hosts = used_hosts(spec, self.hosts)
                if spec.checkpoint is not None:
                    how = f" <- {step.checkpoint.describe()}" if isinstance(step.checkpoint, pl.Ref) else ""
                    view.resolves.append(f"checkpoint{how}: {spec.checkpoint.local or spec.checkpoint.remote}")
                for name, given in spec.inputs.items():
                    how = f" <- {step.inputs[name].describe()}" if isinstance(step.inputs.get(name), pl.Ref) else ""
                    view.resolves.append(f"inputs.{name}{how}: {given.local or given.remote}")
                others = [] if self.target.shared_workdir else [h.name for h in hosts[1:]]
                for site, ref, _ in self.remote_refs(step, spec):
                    if ref.output == pl.LORA:
                        view.resolves.append(f"{site}: {ref.step}'s LoRA delta cut on its node"
                                             + (f", copied to {', '.join(others)} (the delta's bytes only)" if others
                                                else "") + f", written with {ref.base} into one checkpoint there")
                        continue
                    if not others:
                        continue
                    view.resolves.append(f"{site}: copied from {ref.step}'s host to {', '.join(others)} through this "
                                         f"machine before the submit (sha256-checked), unless already there")
                view.plan = self.service.plan_text(spec, self.target, replace(self.opts, master_port=DRY_PORT),
                                                   f"{slug(spec.name)}-<run>")
                view.cards = {h.name: len(h.slot_ids) for h in hosts}
                view.job = f"{spec.name} ({os.path.relpath(step.job) if step.job else 'inline'}), {spec.kind}"
                view.trainable = trainable_of(spec, hosts) if spec.kind == "finetune" else None
            else:
                view.plan = self.builtin_text(step)
                if step.builtin == "merge":
                    view.plan += " " + self.merge_text(step)
            views.append(view)
        self.timing(pipeline, views, selected)
        return views

    def verdict(self, pipeline: pl.Pipeline, step: pl.Step, spec: JobSpec | None, previous: Sequence[Any],
                will_run: set[str], force: bool) -> tuple[str, str]:
        """("skip", "unchanged since RUN") or ("run", what changed) for the dry run."""
        if force:
            return "run", "selected by --from/--only"
        upstream = [n for n in step.needs if n in will_run]
        if upstream:
            self.outputs.pop(step.name, None)
            return "run", f"{', '.join(upstream)} run{'s' if len(upstream) == 1 else ''} first (new outputs)"
        if spec is not None and any(isinstance(r, pl.Ref) and r.step not in self.outputs for r in step.refs()):
            return "run", "an input step has no outputs yet"
        ident = self.step_identity(step, spec)
        self.identities[step.name] = ident
        for hit in [p for p in previous if p.identity == ident][:1]:
            if self.outputs_exist(hit.outputs):
                self.outputs[step.name] = hit.outputs
                return "skip", f"unchanged since {hit.pipeline_id}"
            return "run", f"the outputs of {hit.pipeline_id} are gone"
        if not previous:
            return "run", "not run before"
        return "run", ", ".join(pl.changed(previous[0].outputs.get("identity_parts"), self.parts[step.name])) \
            + f" changed since {previous[0].pipeline_id}"

    def timing(self, pipeline: pl.Pipeline, views: Sequence[StepView], selected: Sequence[str]) -> None:
        """Which steps run together and which wait for cards (``concurrent``), in the views."""
        by_name = {v.name: v for v in views}
        if not self.concurrent:
            return
        # a scheduler queues every job of a level at once and places them itself
        capacity = {h.name: 1 << 30 if self.target.schedules else len(h.slot_ids) for h in self.hosts}
        for level in pl.levels(pipeline, selected):
            groups = pl.pack(level, {n: by_name[n].cards for n in level}, capacity)
            for i, group in enumerate(groups):
                jobs = [n for n in group if by_name[n].cards]
                for n in group:
                    by_name[n].together = [m for m in jobs if m != n]
                    by_name[n].waits_for = [m for g in groups[:i] for m in g if by_name[m].cards]

    def builtin_text(self, step: pl.Step) -> str:
        texts = {"data": "synthesise, prepare, train the tokenizer, write MindRecord (on this machine)",
                 "merge": "merge the per-rank checkpoints into the training's job dir,",
                 "fetch": "fetch the steps' outputs into the runs directory",
                 "score": "fetch the predictions, score them, save scores.json in the run directory",
                 "results": "fetch the runs' logs, print the results table (and the loss plot)"}
        if step.builtin == "score" and step.options.get("metric") == "squad":
            texts["score"] = "fetch the eval's logs, score SQuAD EM/F1 from its pred/label blocks, save scores.json"
        options = {k: v for k, v in step.options.items() if not isinstance(v, (pl.Ref, list, dict))}
        return texts[str(step.builtin)] + (f"; with {options}" if options else "")

    # ------------------------------------------------------------------ run

    def run(self, pipeline: pl.Pipeline, from_step: str | None = None, only: Sequence[str] = ()) -> reg.PipelineRecord:
        """Every step once its needs are done: the ready ones at the same time (see the module
        docstring), in file order among them; a step whose need failed is blocked.

        Each step runs on a daemon thread: Ctrl-C (or SIGTERM) reaches this loop at once and
        ends the run *interrupted* while the steps' jobs run on (``alaunch run`` again
        re-attaches to them), or, with ``cancel_on_interrupt``, cancels them first. Any error
        ends the run FAILED with one line (never left "running" to read "interrupted" later)."""
        selected = pl.select(pipeline, from_step, only)
        pl.missing_options(pipeline, [n for n in selected if pipeline.step(n).builtin not in self.builtins])
        self.base_dir = Path(pipeline.base_dir or ".")
        self.pipeline = pipeline
        order = pipeline.order()
        record = self.registry.create_pipeline(pipeline.name, pipeline.source,
                                               [(s.name, s.kind, list(s.needs)) for s in order], runner=proc.me())
        self.say(f"pipeline {pipeline.name}: run {record.id}, {len(order)} steps")
        force = bool(from_step or only)
        failed: set[str] = set()
        done: set[str] = set()
        pending = list(order)
        running: set[str] = set()
        results: queue.Queue = queue.Queue()

        def step_thread(step: pl.Step) -> None:
            try:
                results.put((step.name, self._run_step_safely(pipeline, record.id, step, force)))
            finally:
                mine = getattr(self._local, "registry", None)
                if mine is not None:  # this thread's own connection, closed by this thread
                    mine.close()

        try:
            while pending or running:
                for step in list(pending):
                    if any(n in failed for n in step.needs):
                        pending.remove(step)
                        failed.add(step.name)
                        self.registry.set_step(record.id, step.name, state="blocked",
                                               reason=f"needs {', '.join(n for n in step.needs if n in failed)}")
                        self.say(f"  {step.name}: blocked (a step it needs failed)")
                    elif all(n in done for n in step.needs) and (self.concurrent or not running):
                        pending.remove(step)
                        if step.name not in selected:
                            self.reuse(pipeline, record.id, step)
                            done.add(step.name)
                            continue
                        running.add(step.name)
                        threading.Thread(target=step_thread, args=(step,), daemon=True,
                                         name=f"alaunch-step-{step.name}").start()
                if not running:
                    continue
                try:
                    name, result = results.get(timeout=0.5)  # a short wait: Ctrl-C is seen between two
                except queue.Empty:
                    continue
                running.discard(name)
                self.outputs[name] = result.outputs
                if result.state == reg.FAILED:
                    failed.add(name)
                    self.registry.set_step(record.id, name, state="failed", reason=result.reason,
                                           ended_at=reg.now_iso())
                    self.say(f"  {name}: FAILED: {result.reason}")
                else:
                    done.add(name)
        except KeyboardInterrupt:
            self.interrupted(record.id, pipeline)
            raise
        except AlaunchError as exc:
            self.registry.end_pipeline(record.id, reg.FAILED, f"failed: {exc.message}")
            raise
        except Exception as exc:  # noqa: BLE001 - a bug still ends the run, in one line, then shows
            self.registry.end_pipeline(record.id, reg.FAILED, f"failed: {type(exc).__name__}: {exc}")
            raise
        state = reg.FAILED if failed else reg.SUCCEEDED
        return self.registry.end_pipeline(record.id, state, f"failed: {', '.join(sorted(failed))}" if failed else None)

    def interrupted(self, run_id: str, pipeline: pl.Pipeline) -> None:
        """Ctrl-C / SIGTERM: the running steps' jobs keep running (said, with how to re-attach),
        or are cancelled with ``cancel_on_interrupt``. The run ends FAILED "interrupted"."""
        live = [replace(s, job_id=s.job_id or self.registry.step_job(run_id, s.step))
                for s in self.registry.pipeline(run_id).steps if s.state == "running"]
        how = f"`alaunch run {pipeline.source}` again re-attaches to them"
        for s in live:
            if s.job_id and self.cancel_on_interrupt:
                try:
                    self._service0.cancel(s.job_id)
                    self.registry.set_step(run_id, s.step, state="cancelled", ended_at=reg.now_iso(),
                                           reason=f"interrupted: job {s.job_id} cancelled (--cancel-on-interrupt)")
                    self.say(f"  {s.step}: job {s.job_id} cancelled")
                except AlaunchError as exc:
                    self.say(f"  {s.step}: could not cancel job {s.job_id}: {exc.message}")
                continue
            what = f"job {s.job_id} keeps running" if s.job_id else "its job may still be starting"
            self.registry.set_step(run_id, s.step, state="failed", ended_at=reg.now_iso(), job_id=s.job_id,
                                   reason=f"interrupted: {what}; {how}")
            self.say(f"  {s.step}: {what}")
        jobs = [s.job_id for s in live if s.job_id]
        if self.cancel_on_interrupt or not jobs:
            why = "interrupted" + (": its jobs were cancelled" if jobs else "")
        else:
            why = f"interrupted: the jobs keep running ({', '.join(jobs)}); {how}, or `alaunch cancel JOB`"
        self.registry.end_pipeline(run_id, reg.FAILED, why)
        self.say(f"pipeline {pipeline.name}: {why}")

    def reuse(self, pipeline: pl.Pipeline, run_id: str, step: pl.Step) -> None:
        """A step not selected (``--from``/``--only``): its outputs from the newest earlier run,
        checked: it must still be current (same identity today) and its outputs present, or the
        run is refused (``force_reuse``: said, and used anyway)."""
        previous = self.registry.reusable_steps(pipeline.name, step.name)
        if not previous:
            raise InputError(f"step {step.name!r} is not selected and no earlier run of {pipeline.name!r} "
                             f"finished it; run without --from/--only first", key="--from")
        prev = previous[0]
        spec = self.job_spec(step) if step.builtin is None else None
        ident = self.step_identity(step, spec)
        problem = None
        if prev.identity != ident:
            what = ", ".join(pl.changed(prev.outputs.get("identity_parts"), self.parts[step.name]))
            problem = f"is not current ({what} changed since run {prev.pipeline_id})"
        elif not self.outputs_exist(prev.outputs):
            problem = f"has lost its outputs (run {prev.pipeline_id}'s are gone)"
        if problem and not self.force_reuse:
            raise InputError(f"step {step.name!r} {problem}; run it too (--from {step.name}) or "
                             f"--force-reuse to use it anyway", key="--from")
        self.outputs[step.name] = prev.outputs
        self.identities[step.name] = prev.identity
        self.registry.set_step(run_id, step.name, state="skipped", identity=prev.identity,
                               job_id=prev.job_id, outputs=prev.outputs,
                               reason=f"not selected: reused run {prev.pipeline_id}"
                                      + (f" (--force-reuse: it {problem})" if problem else ""))
        self.say(f"  {step.name}: reused from {prev.pipeline_id}" + (f" (WARNING: it {problem})" if problem else ""))

    def _run_step_safely(self, pipeline: pl.Pipeline, run_id: str, step: pl.Step, force: bool) -> StepResult:
        """Every failure of a step is one line on the step (a bug too: its type and message)."""
        try:
            return self.run_step(pipeline, run_id, step, force)
        except AlaunchError as exc:
            return StepResult(reg.FAILED, {}, reason=exc.message)
        except Exception as exc:  # noqa: BLE001 - a built-in's bug fails its step, not the run's record
            return StepResult(reg.FAILED, {}, reason=f"{type(exc).__name__}: {exc}")

    def run_step(self, pipeline: pl.Pipeline, run_id: str, step: pl.Step, force: bool) -> StepResult:
        spec = self.job_spec(step) if step.builtin is None else None
        ident = self.step_identity(step, spec)
        self.identities[step.name] = ident
        parts = self.parts[step.name]
        if not force:
            for previous in self.registry.reusable_steps(pipeline.name, step.name, ident)[:1]:
                if self.outputs_exist(previous.outputs):
                    self.registry.set_step(run_id, step.name, state="skipped", identity=ident,
                                           job_id=previous.job_id, outputs=previous.outputs,
                                           reason=f"unchanged since {previous.pipeline_id}")
                    self.say(f"  {step.name}: unchanged since run {previous.pipeline_id}, outputs present: skipped")
                    return StepResult("skipped", previous.outputs, previous.job_id)
        self.registry.set_step(run_id, step.name, state="running", identity=ident, started_at=reg.now_iso())
        start = time.monotonic()
        if spec is not None:
            earlier = self.earlier_job(pipeline, run_id, step, ident, force)
            result = self.watch(run_id, step, spec, earlier) if earlier else self.run_job(run_id, step, spec)
        else:
            result = StepResult(reg.SUCCEEDED, self.run_builtin(step))
        if result.state == reg.SUCCEEDED:
            outputs = {**result.outputs, "identity_parts": parts}
            outputs["digest"] = outputs.get("digest") or digest(result.outputs)
            result = replace(result, outputs=outputs)
            self.registry.set_step(run_id, step.name, state="succeeded", job_id=result.job_id,
                                   outputs=outputs, attempts=result.attempts, ended_at=reg.now_iso())
            self.say(f"  {step.name}: done in {time.monotonic() - start:.0f} s"
                     + (f" ({result.job_id})" if result.job_id else ""))
        else:
            self.registry.set_step(run_id, step.name, job_id=result.job_id, attempts=result.attempts)
        return result

    def earlier_job(self, pipeline: pl.Pipeline, run_id: str, step: pl.Step, ident: str,
                    force: bool) -> reg.JobRecord | None:
        """The job of an earlier run of this step, same identity, that is still running (its
        ``alaunch run`` was killed or interrupted: re-attach, never train twice) or that
        succeeded after its driver died (reuse it); None: submit. Recorded as this run's
        step's job before it is said (a Ctrl-C right after must know the job)."""
        earlier = [s for s in self.registry.step_jobs(pipeline.name, step.name, ident) if s.pipeline_id != run_id]
        for prev in earlier[:1]:
            job_id = None if prev.state in ("succeeded", "skipped") else \
                prev.job_id or self.registry.step_job(prev.pipeline_id, step.name)
            if job_id is None:
                return None  # finished (its outputs were not current enough to skip), or nothing submitted
            try:
                job = self.registry.get(job_id)
            except InputError:
                return None  # pruned
            if not job.terminal:
                note = f"re-attached to {job.id} (still {job.state}, from run {prev.pipeline_id})"
            elif job.state == reg.SUCCEEDED and not force:
                note = f"{job.id} of run {prev.pipeline_id} succeeded after its driver stopped: reused"
            else:
                return None
            self.registry.set_step(run_id, step.name, job_id=job.id)
            self.say(f"  {step.name}: {note}")
            return job
        return None

    # ------------------------------------------------------------------ job steps

    def run_job(self, run_id: str, step: pl.Step, spec: JobSpec) -> StepResult:
        hosts = used_hosts(spec, self.hosts)
        world = sum(len(h.slot_ids) for h in hosts)
        if spec.kind == "finetune" and world > 1:
            prepared = prepare(spec, hosts, "check-merge", DRY_PORT, self.opts)
            check_mergeable(spec, prepared.rendered[hosts[0].name].config, world)
        self.say(f"  {step.name}: {spec.kind} {spec.name} on {world} card(s)")
        self.place(step, spec, hosts)
        return self.watch(run_id, step, spec, self.submit(run_id, step, spec))

    def submit(self, run_id: str, step: pl.Step, spec: JobSpec) -> reg.JobRecord:
        # concurrent steps: one that finds its cards taken by a sibling queues for them
        opts = replace(self.opts, wait=True) if self.concurrent else self.opts
        service, say = self.service, self.service.say  # this thread's own engine (see `service`)
        service.say = lambda text: say(f"  {step.name}: {text}")  # a queued step's lines are its own
        try:
            record = service.submit(spec, self.target, opts, meta={"pipeline": run_id, "pipeline_step": step.name})
        finally:
            service.say = say
        self.registry.set_step(run_id, step.name, job_id=record.id)
        devices = record.meta.get("devices") or {}
        if devices:
            self.say(f"  {step.name}: {record.id} on " + "; ".join(f"{h} card(s) {','.join(map(str, d))}"
                                                                 for h, d in devices.items()))
        return record

    def watch(self, run_id: str, step: pl.Step, spec: JobSpec, record: reg.JobRecord) -> StepResult:
        """Follow the step's job to its end; retry a transient failure (``retries:``): a training
        with a checkpoint every rank saved resumes, anything else is submitted again from
        scratch (said). A cancelled job is the user's word: never retried."""
        self.registry.set_step(run_id, step.name, job_id=record.id)
        attempts = int(record.meta.get("attempt", 1))
        while True:
            outcome = self.follow(record) if not record.terminal else None
            record = self.registry.get(record.id)
            if record.state == reg.SUCCEEDED:
                return StepResult(reg.SUCCEEDED, self.job_outputs(record), record.id, attempts=attempts)
            if record.state == reg.CANCELLED:
                return StepResult(reg.FAILED, {}, record.id, f"{record.reason or 'cancelled'} (a cancel is never "
                                                               f"retried)", attempts)
            verdict = self.diagnose(record, outcome)
            if attempts > step.retries or not verdict.transient:
                why = record.reason or record.state
                extra = (f"; {verdict.cause}: not transient, not retried" if step.retries and not verdict.transient
                         else "")
                return StepResult(reg.FAILED, {}, record.id, f"{why}{extra}", attempts)
            attempts += 1
            record = self.retry(run_id, step, spec, record, verdict, attempts)

    def retry(self, run_id: str, step: pl.Step, spec: JobSpec, record: reg.JobRecord, verdict: Verdict,
              attempts: int) -> reg.JobRecord:
        of = f"attempt {attempts} of {step.retries + 1}"
        if record.kind == "finetune":
            self.say(f"  {step.name}: {verdict.cause} (transient): resuming, {of}")
            try:
                return self.service.resume(record.id, self.say, original=spec)
            except NothingToResume as exc:
                self.say(f"  {step.name}: {verdict.cause} (transient): {exc.message}: submitting again from "
                         f"scratch, {of}")
        else:
            self.say(f"  {step.name}: {verdict.cause} (transient): running it again, {of}")
        return self.submit(run_id, step, spec)

    def remote_refs(self, step: pl.Step, spec: JobSpec) -> list[tuple[str, pl.Ref, str]]:
        """(site, ref, path) of each reference the step's job reads at a path on a host."""
        out = []
        if isinstance(step.checkpoint, pl.Ref) and spec.checkpoint is not None and spec.checkpoint.remote:
            out.append(("checkpoint", step.checkpoint, spec.checkpoint.remote))
        for name, value in step.inputs.items():
            ref = spec.inputs.get(name)
            if isinstance(value, pl.Ref) and ref is not None and ref.remote:
                out.append((f"inputs.{name}", value, ref.remote))
        return out

    def place(self, step: pl.Step, spec: JobSpec, hosts: Sequence[Host]) -> None:
        """Each referenced output onto every host of the consumer that is not the producer's
        (ops.relay: through this machine, sha256-checked; a host with the same bytes there,
        e.g. on a shared filesystem, is left alone)."""
        from launcher.ops.relay import relay
        from launcher.runners import default_bin_dir, python_for
        for site, ref, path in self.remote_refs(step, spec):
            if ref.output == pl.LORA:
                self.place_lora(step, site, ref, path, hosts)
        if self.target.shared_workdir:
            return  # every node of the target sees the producer's job dir
        bin_dir = self.opts.bin_dir or default_bin_dir(self.hosts)
        for site, ref, path in self.remote_refs(step, spec):
            if ref.output == pl.LORA:
                continue  # placed above: only the delta travelled
            producer = self.outputs.get(ref.step) or {}
            source = producer.get("host")
            targets = [h for h in hosts if source and h.name != source]
            if not source or not targets:
                continue
            src_host = next((h for h in self.hosts if h.name == source), None) or Host(source, 1)
            src = self.service.exec_factory(src_host).using(producer.get("python") or python_for(bin_dir, src_host))
            try:
                for host in targets:
                    dst = self.service.exec_factory(host).using(python_for(bin_dir, host))
                    try:
                        done = relay(src, dst, path, what=f"step {step.name}: {site}")
                    finally:
                        dst.close()
                    how = (f"copied through this machine ({done.bytes} bytes, sha256 {done.sha256[:12]} checked)"
                           if done.bytes else "already there (same sha256)")
                    self.say(f"  {step.name}: {site} {source} -> {host.name}: {how}")
            finally:
                src.close()

    def lora_delta(self, step: str) -> dict:
        """The LoRA delta of a training step's last checkpoint, cut on its node once (``fetch
        --what lora``'s extractor: ``remote/collect.py``, streaming, frozen tensors skipped by
        seeks) into ``<its dir>/lora/<its name>``, checked against the names and counts render
        gives. Refused when the ranks split the model (model/pipeline parallel): rank 0's
        file holds only a piece of each tensor; the merge step's checkpoint is whole."""
        from launcher.ops.collect import check_delta, job_outputs, list_node, lora_request
        out = self.outputs[step]
        with self._locks[f"lora:{step}"]:  # two consumers of one training cut it once
            if "lora_delta" not in out:
                if not out.get("job_id") or "local" in out:
                    raise AlaunchError(f"output: lora takes a training job's LoRA delta; step {step!r} ran no job")
                record = self.registry.get(out["job_id"])
                spec = lora_request(record.config_text, job_outputs(record)[0])
                if not spec["whole"]:
                    raise AlaunchError(f"step {step!r} splits its model across ranks (model or pipeline parallel): "
                                       f"a rank's checkpoint holds pieces of the LoRA tensors; take a merge step's "
                                       f"checkpoint instead of output: lora")
                last = pl.last_checkpoint(checkpoints_of(out))
                if last is None:
                    raise AlaunchError(f"step {step!r} left no checkpoint on {out.get('host')}")
                if not last.path.endswith(".ckpt"):
                    raise AlaunchError(f"{last.path}: base + LoRA delta is written for MindSpore .ckpt files only")
                runner = self.service.exec_factory(self.host(out["host"])).using(out.get("python"))
                try:
                    listing = list_node(runner, posixpath.dirname(last.path), {}, None,
                                        {**spec, "globs": [posixpath.basename(last.path)]})
                finally:
                    runner.close()
                cut = next((f for f in listing.files if f.group == "lora"), None)
                wrong = check_delta(listing.deltas[0], spec["names"], True) if listing.deltas else "no delta written"
                if cut is None or wrong:
                    raise AlaunchError(f"step {step!r}: the LoRA delta of {last.path}: {wrong}")
                out["lora_delta"] = {"path": cut.src, "size": cut.size, "sha256": cut.sha256, "source": last.path,
                                     "source_size": listing.deltas[0].source_size}
        return dict(out["lora_delta"])

    def place_lora(self, step: pl.Step, site: str, ref: pl.Ref, applied: str, hosts: Sequence[Host]) -> None:
        """``{from: train, output: lora, base: PATH}``: the training's delta (:meth:`lora_delta`)
        copied to each of the consumer's hosts that is not the training's (``ops.relay``: the
        delta's bytes only, sha256-checked), then base + delta written there as ``applied``
        (``remote/collect.py`` APPLY, streaming), the checkpoint the consumer's job loads. A
        target with a shared workdir writes it once, on the training's node."""
        from launcher.ops.relay import relay
        from launcher.runners import default_bin_dir, python_for
        producer = self.outputs[ref.step]
        delta = self.lora_delta(ref.step)
        source = producer["host"]
        bin_dir = self.opts.bin_dir or default_bin_dir(self.hosts)
        where = [self.host(source)] if self.target.shared_workdir else list({h.name: h for h in hosts}.values())
        src = self.service.exec_factory(self.host(source)).using(producer.get("python"))
        try:
            for host in where:
                python = producer.get("python") if host.name == source else python_for(bin_dir, host)
                dst = self.service.exec_factory(host).using(python)
                try:
                    if host.name != source:
                        done = relay(src, dst, delta["path"], what=f"step {step.name}: {site}")
                        self.say(f"  {step.name}: {site}: {ref.step}'s LoRA delta {source} -> {host.name}: "
                                 f"{done.bytes:,} bytes (the checkpoint it was cut from: {delta['source_size']:,})")
                    made = dst.call("collect", {"op": "apply", "base": ref.base, "delta": delta["path"],
                                                "out": applied}, timeout=3600,
                                    what=f"step {step.name}: writing {ref.base} + {ref.step}'s LoRA delta")
                    self.say(f"  {step.name}: {site} on {host.name}: {ref.base} + {ref.step}'s LoRA delta "
                             f"({made['replaced']} replaced, {made['added']} added) -> {made['out']}")
                finally:
                    dst.close()
        finally:
            src.close()

    def diagnose(self, record: reg.JobRecord, outcome: Any) -> Verdict:
        lines: list[str] = []
        failure = getattr(outcome, "failure", None)
        if failure is not None:
            lines = [failure.message, *failure.lines]
        codes = [n.exit_code for n in record.nodes] + list((getattr(outcome, "node_codes", None) or {}).values())
        return classify(codes, [*lines, record.reason or ""])

    def job_outputs(self, record: reg.JobRecord) -> dict:
        """Where a finished job's outputs are: node 0's job dir, listed by the job's output
        groups, with what the host says of each file (``entry/merge_ckpt.py`` ``inspect``: a
        checkpoint's global step from its own metadata, its mtime; the sha256 of what a consumer
        reads: each rank's last checkpoint and every other output). ``digest``, their content
        identity, is what a consumer's identity covers."""
        from launcher.ops.collect import globs_for, job_outputs, list_node
        node0 = self.service.log_view(record).nodes[0]  # where its files are (a scheduler's: the shared dir)
        python = (record.meta.get("pythons") or {}).get(node0.host)  # None: the runner's default
        outputs, _ = job_outputs(record)
        groups = [g for g in ("checkpoints", "predictions") if getattr(outputs, g)]
        paths: dict[str, list[str]] = {}
        if groups:
            runner = self.service.exec_factory(self.host(node0.host)).using(python)
            try:
                listing = list_node(runner, node0.job_dir, globs_for(outputs, groups))
            finally:
                runner.close()
            for f in listing.files:
                paths.setdefault(f.group, []).append(posixpath.join(listing.root, f.path))
        world = sum(len(r) for r in (record.meta.get("ranks") or {}).values()) or None
        out = {"job_id": record.id, "host": node0.host, "python": python, "root": node0.job_dir, "world": world,
               "paths": paths, "default": "checkpoints" if record.kind == "finetune" else "predictions"}
        every = [p for ps in paths.values() for p in ps]
        if every:
            files = self.on_host(out, {"op": "inspect", "paths": every}, "inspecting the outputs")
            out["files"] = files
            ckpts = checkpoints_of(out)
            read = [p for p in every if p not in {c.path for c in ckpts}]
            for rank in {c.rank for c in ckpts}:
                read.append(max((c for c in ckpts if c.rank == rank), key=pl.Checkpoint.order).path)
            hashed = self.on_host(out, {"op": "inspect", "paths": read, "hash": read}, "hashing the outputs")
            for p, info in hashed.items():
                files[p] = info
            for g in paths:
                paths[g].sort(key=lambda p: (pl.Checkpoint.of(p, files.get(p) or {}).order(), p))
        out["digest"] = digest({"job_id": record.id, "files": out.get("files") or {}})
        return out

    def _quiet_follow(self, record: reg.JobRecord) -> Any:
        return self.service.follow(record, self.service.exec_factory, _QuietSink(self.say),
                                   note=lambda text: self.say(f"  {record.name}: {text}"), offsets=False)

    # ------------------------------------------------------------------ built-ins

    def run_builtin(self, step: pl.Step) -> dict:
        if step.builtin in self.builtins:
            return self.builtins[step.builtin](self, step)
        return getattr(self, f"builtin_{step.builtin}")(step)

    def _path(self, value: Any, site: str = "path") -> Any:
        return pl.substitute(value, lambda ref: self.resolve(ref, site))

    def builtin_data(self, step: pl.Step) -> dict:
        """The demo's data recipe here: synth -> prepare -> tokenizer -> prepare with MindRecord."""
        from launcher.data.prepare import PrepareOptions
        from launcher.data.prepare import prepare as prepare_data
        from launcher.data.recipe import load_recipe
        from launcher.data.synth import synthesise
        from launcher.data.tokenizer import texts_of, train_sentencepiece
        o = step.options
        out = self.local_path(o.get("out", "build/data"))
        recipe = load_recipe(self.local_path(o["recipe"]))
        out.mkdir(parents=True, exist_ok=True)
        raw = out / "raw.jsonl"
        synthesise(int(o.get("rows", 100_000)), raw, seed=int(o.get("seed", 1)))
        opts: dict[str, Any] = dict(raw=raw, recipe=recipe, out_dir=out, seed=None,
                                    test_rows=int(o.get("test_rows", 0)))
        prepare_data(PrepareOptions(**opts))
        model = train_sentencepiece(texts_of(out / "train.json"), out / "tokenizer",
                                    vocab_size=int(o.get("vocab_size", 1024)))
        prepare_data(PrepareOptions(**opts, tokenizer=Path(model), seq_length=int(o.get("seq_length", 512))))
        local = {"train": [str(out / "train.mindrecord")], "tokenizer": [str(Path(model).resolve())]}
        if (out / "test.jsonl").exists():
            local["test"] = [str(out / "test.jsonl")]
        return {"local": {**local, "dir": [str(out)]}, "default": "dir", "digest": local_digest(local)}

    def builtin_merge(self, step: pl.Step) -> dict:
        ref = step.options["checkpoint"]
        producer = self._producer(ref)
        result = self.merge_on_host(producer)
        self.say(f"  {step.name}: {result['mode']}: {result['ranks']} rank(s) at global step {result['step']} "
                 f"-> {result['out']}")
        return {"job_id": None, "host": producer["host"], "python": producer.get("python"),
                "root": producer["root"], "paths": {"checkpoints": [result["out"]]}, "default": "checkpoints",
                "files": {result["out"]: {"step": result["step"], "sha256": result.get("sha256")}},
                "merge": result, "digest": digest({"out": result["out"], "sha256": result.get("sha256")})}

    def builtin_fetch(self, step: pl.Step) -> dict:
        refs = list(pl.iter_refs(step.options.get("steps") or step.options))
        what = str(step.options.get("what", "all"))
        dirs = [str(self.fetched(ref.step, what)) for ref in refs]
        return {"local": {"runs": dirs}, "default": "runs"}

    def builtin_score(self, step: pl.Step) -> dict:
        from launcher.metrics import mathacc, predictions, scorefile
        ref = step.options["predictions"]
        if step.options.get("metric") == "squad":
            return self.score_squad(step, ref)
        preds_path = Path(self.resolve(replace(ref, output=ref.output or "predictions"), "path"))
        reference = self.local_path(self._path(step.options["reference"]))
        preds = predictions.parse_generation_result(predictions.read_text(preds_path), str(preds_path))
        refs = predictions.parse_math_reference(predictions.read_text(reference), str(reference))
        if len(preds) != len(refs):
            raise InputError(f"{len(preds)} predictions but {len(refs)} reference items in {reference}",
                             source=str(preds_path))
        report = mathacc.score(preds, [r.problem for r in refs], [r.solution for r in refs])
        run_dir = self.fetched(ref.step, "predictions")
        payload = {"input": str(preds_path), "reference": str(reference), **report.as_dict()}
        scorefile.save(run_dir, "math", {k: v for k, v in payload.items() if k != "items"})
        self.say(f"  {step.name}: {ref.step}: {report.correct} of {report.total} correct "
                 f"({100 * report.accuracy:.1f}%)")
        return {"local": {"scores": [str(run_dir / scorefile.SCORES_NAME)], "run_dir": [str(run_dir)]},
                "default": "scores", "accuracy": report.accuracy}


    def score_squad(self, step: pl.Step, ref: pl.Ref) -> dict:
        """SQuAD EM/F1 of an eval step: its logs fetched, the one with ``pred is:`` / ``label
        is:`` blocks scored (rank 0's worker log first), scores.json saved beside them."""
        from launcher.metrics import predictions, scorefile, squad
        run_dir = self.fetched(ref.step, "logs")
        logs = sorted(run_dir.rglob("*.log"), key=lambda p: (p.name != "worker_0.log", str(p)))
        for log in logs:
            text = predictions.read_text(log)
            if predictions.looks_like_eval_log(text):
                break
        else:
            raise AlaunchError(f"no eval log with `pred is:` / `label is:` blocks among {len(logs)} log(s) of step "
                               f"{ref.step!r} in {run_dir}")
        pairs, expected = predictions.eval_log_pairs(text, str(log))
        result = squad.score((p.prediction, p.reference) for p in pairs)
        complete = expected is None or result.count >= expected
        scorefile.save(run_dir, "squad", {"input": str(log), **result.as_dict(), "complete": complete,
                                          "expected": expected})
        self.say(f"  {step.name}: {ref.step}: SQuAD EM {result.em:.2f}, F1 {result.f1:.2f} over {result.count} "
                 "examples" + ("" if complete else f" (of {expected}: the log stops early)"))
        return {"local": {"scores": [str(run_dir / scorefile.SCORES_NAME)], "run_dir": [str(run_dir)]},
                "default": "scores", "em": result.em, "f1": result.f1}


class _QuietSink:
    """The follower's sink for a pipeline: no log lines, notes only (the output stays short)."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def line(self, host: str, rank: int | None, text: str) -> None:
        pass

    def progress(self, view: Any) -> None:
        pass

    def note(self, text: str) -> None:
        self.say(f"    {text}")

    def msrun(self, host: str, text: str) -> None:
        pass

    def nodes(self, views: list) -> None:
        pass
