"""Run a pipeline: each step in order, job steps through :class:`JobService`, built-ins here.

What a step leaves behind (its *outputs*) is recorded in the registry (``pipeline_steps``) as
plain data: ``{"host", "python", "job_id", "root", "paths": {group: [absolute paths]}}`` for
what stays on a host, ``{"local": {...}}`` for what is on this machine. A reference
``{from: STEP}`` resolves to those paths: a job step gets ``{remote: PATH}`` (the checkpoint
stays on the cluster), a built-in that reads files here (score, results) fetches them first.

Re-runs: a step whose identity (``core.pipeline.identity``: its definition, the job file and
template text, its local inputs' content, its upstream steps' identities) equals a finished
step of an earlier run of the same pipeline, and whose outputs still exist, is *skipped* and
its outputs reused. ``--from`` / ``--only`` take the steps not selected from the newest
earlier run.

Concurrency: a step starts as soon as the steps it needs are done, so independent steps
(eval and predict after one training) are submitted at the same time, each from its own
thread with its own registry connection (one sqlite connection cannot hold two threads'
transactions). Where they run is the card allocation's business (issue #14): each submit
claims free cards on the hosts under their lock, and one that does not fit is queued
(``SubmitOptions.wait``) until an earlier step frees its cards. ``concurrent=False`` (the
CLI's ``--logs``, whose live view is one job's) runs the steps one at a time, in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import threading
import time
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from launcher.core import pipeline as pl
from launcher.core import yamlio
from launcher.core.hostfile import Host
from launcher.core.layout import slug
from launcher.core.spec import JobSpec, parse_job
from launcher.errors import AlaunchError, InputError, RemoteError
from launcher.runners import CommandTimeout, ConnectError
from launcher.metrics.retry import Verdict, classify
from launcher.ops import proc
from launcher.ops import registry as reg
from launcher.ops.service import JobService, SubmitOptions, prepare, used_hosts

ENTRY_DIR = Path(__file__).resolve().parents[1] / "entry"
DRY_PORT = 8118


@dataclass
class StepView:
    """What the dry run (and ``status``) says about one step: pure data."""

    name: str
    kind: str
    needs: tuple[str, ...]
    resolves: list[str] = field(default_factory=list)  # "checkpoint <- train's last checkpoint: /path"
    plan: str = ""  # a job step's node commands, a built-in's action
    action: str = "run"  # run | skip (identity unchanged) | reuse (not selected)
    cards: dict = field(default_factory=dict)  # host -> cards a job step takes ({} for a built-in)
    together: list[str] = field(default_factory=list)  # job steps that run at the same time
    waits_for: list[str] = field(default_factory=list)  # ready at the same time, but their cards come first


@dataclass
class StepResult:
    state: str
    outputs: dict
    job_id: str | None = None
    reason: str | None = None
    attempts: int = 1


def step_job_data(step: pl.Step, resolve: Callable[[pl.Ref, str], dict]) -> tuple[dict, str, str]:
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
    if step.sets:
        data["overrides"] = {**(data.get("overrides") or {}), **step.sets}
    return data, source, base_dir


def file_sha(path: str) -> str:
    """Content hash of a local file or directory tree (a step's local input)."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
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
    """One pipeline run against one registry and one set of hosts."""

    def __init__(self, registry: reg.Registry, service: JobService, hosts: Sequence[Host], *,
                 say: Callable[[str], None] = lambda s: None, runs_dir: Path = Path("runs"),
                 opts: SubmitOptions = SubmitOptions(), follow: Callable[[reg.JobRecord], Any] | None = None,
                 builtins: Mapping[str, Callable[..., dict]] | None = None, concurrent: bool = True):
        self._registry0, self._service0, self.hosts = registry, service, list(hosts)
        self._owner = threading.current_thread()
        self._local = threading.local()
        self._opened: list[reg.Registry] = []
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self.concurrent = concurrent
        self.say, self.runs_dir, self.opts = say, Path(runs_dir), opts
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
            mine = self._local.registry = reg.Registry(self._registry0.path)
            self._opened.append(mine)
        return mine

    @property
    def service(self) -> JobService:
        """The job service, bound to this thread's registry connection."""
        if threading.current_thread() is self._owner:
            return self._service0
        mine = getattr(self._local, "service", None)
        if mine is None:
            s0 = self._service0
            mine = self._local.service = JobService(self.registry, s0.state_dir, say=s0.say, progress=s0.progress,
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
            chosen = [pl.last_checkpoint(paths)]
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
        record = self.registry.get(job_id)
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

    def merge_on_host(self, producer: dict) -> dict:
        """Run ``entry/merge_ckpt.py`` on the producer's node 0, in its job dir."""
        root = producer["root"]
        out = posixpath.join(root, "output", "merged", f"{producer.get('job_id', 'merged')}.ckpt")
        host = next((h for h in self.hosts if h.name == producer["host"]), None) or Host(producer["host"], 1)
        runner = self.service.exec_factory(host).using(producer.get("python"))
        try:
            program = (ENTRY_DIR / "merge_ckpt.py").read_text(encoding="utf-8")  # needs mindspore: no -S
            argv = [runner.python, "-c", program, json.dumps({"job_dir": root, "out": out})]
            res = runner.exec(argv, timeout=3600)
        finally:
            runner.close()
        if not res.ok:
            tail = (res.stderr.decode(errors="replace").strip().splitlines() or [f"exit code {res.exit_code}"])[-1]
            raise AlaunchError(f"merge on {producer['host']} failed: {tail}")
        return json.loads(res.text().strip().splitlines()[-1])

    # ------------------------------------------------------------------ identity

    def job_spec(self, step: pl.Step, *, dry: bool = False) -> JobSpec:
        def resolve(ref: pl.Ref, site: str) -> dict:
            if dry and ref.step not in self.outputs:
                return {"remote": self._placeholder(ref, site)}
            return self.resolve(ref, site)

        data, source, base_dir = step_job_data(step, resolve)
        return parse_job(data, source, base_dir)

    def _placeholder(self, ref: pl.Ref, site: str) -> str:
        """Where a ref will point, for the dry run (the producer has not run yet)."""
        producer = self.pipeline.step(ref.step) if self.pipeline else None
        root = f"~/alaunch/<{ref.step}'s job id>"
        if producer is not None and producer.builtin == "merge":
            inner = producer.options.get("checkpoint")
            return f"~/alaunch/<{getattr(inner, 'step', '?')}'s job id>/output/merged/<job id>.ckpt"
        if site == "checkpoint" and producer is not None and producer.builtin is None:
            spec = self.job_spec(producer, dry=True)
            world = sum(len(h.slot_ids) for h in used_hosts(spec, self.hosts))
            if world > 1 and ref.select == "last":
                return f"{root}/output/merged/<job id>.ckpt (merged from {world} ranks)"
            return f"{root}/output/checkpoint" if ref.select == "all" else f"{root}/output/checkpoint/rank_0/<last>.ckpt"
        return f"{root}/<{ref.output or 'output'}>"

    def step_identity(self, step: pl.Step, spec: JobSpec | None) -> str:
        content: dict[str, str] = {}
        canonical = step.canonical()
        if spec is not None:
            canonical["spec"] = spec.model_dump(mode="json")
            canonical["template"] = hashlib.sha256(spec.template_path().read_bytes()).hexdigest()
            canonical["hosts"] = [(h.name, len(h.slot_ids)) for h in used_hosts(spec, self.hosts)]
            refs = [spec.checkpoint, spec.tokenizer, *spec.inputs.values()]
            for ref in refs:
                if ref is not None and ref.is_local and Path(ref.local).exists():
                    content[ref.local] = file_sha(ref.local)
        upstream = {n: self.identities.get(n, "") for n in step.needs}
        return pl.identity(canonical, upstream, content)

    def outputs_exist(self, outputs: dict) -> bool:
        """Are a finished step's outputs still there (local files here, remote ones on their host)?"""
        if "local" in outputs:
            return all(Path(p).exists() for paths in outputs["local"].values()
                       for p in ([paths] if isinstance(paths, str) else paths))
        paths = [p for ps in outputs.get("paths", {}).values() for p in ps]
        if not paths:
            return True
        host = next((h for h in self.hosts if h.name == outputs.get("host")), None)
        if host is None:
            return False
        runner = self.service.exec_factory(host).using(outputs.get("python"))
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
        """The dry run: each step in order, what its refs resolve to, its plan. Nothing is sent."""
        selected = pl.select(pipeline, from_step, only)
        self.base_dir = Path(pipeline.base_dir or ".")
        self.pipeline = pipeline
        views = []
        for step in pipeline.order():
            view = StepView(step.name, step.kind, step.needs)
            previous = self.registry.reusable_steps(pipeline.name, step.name)
            if step.name not in selected:
                view.action = "reuse" if previous else "missing"
                if previous:
                    self.outputs[step.name] = previous[0].outputs
            if step.builtin is not None:
                for ref in step.refs():
                    view.resolves.append(f"{ref.describe()}" + (f" (from {ref.step}'s last run)"
                                                                 if ref.step in self.outputs else " (at run time)"))
            if step.builtin is None:
                spec = self.job_spec(step, dry=True)
                hosts = used_hosts(spec, self.hosts)
                prepared = prepare(spec, hosts, f"{slug(spec.name)}-<run>", DRY_PORT, self.opts)
                if spec.checkpoint is not None:
                    how = f" <- {step.checkpoint.describe()}" if isinstance(step.checkpoint, pl.Ref) else ""
                    view.resolves.append(f"checkpoint{how}: {spec.checkpoint.local or spec.checkpoint.remote}")
                for name, ref in spec.inputs.items():
                    how = f" <- {step.inputs[name].describe()}" if isinstance(step.inputs.get(name), pl.Ref) else ""
                    view.resolves.append(f"inputs.{name}{how}: {ref.local or ref.remote}")
                others = [h.name for h in hosts[1:]]
                for site, ref, _ in self.remote_refs(step, spec) if others else []:
                    view.resolves.append(f"{site}: copied from {ref.step}'s host to {', '.join(others)} through this "
                                         f"machine before the submit (sha256-checked), unless already there")
                view.plan = prepared.plan.render_shell()
                view.cards = {h.name: len(h.slot_ids) for h in hosts}
            else:
                view.plan = self.builtin_text(step)
            views.append(view)
        self.timing(pipeline, views, selected)
        return views

    def timing(self, pipeline: pl.Pipeline, views: Sequence[StepView], selected: Sequence[str]) -> None:
        """Which steps run together and which wait for cards (``concurrent``), in the views."""
        by_name = {v.name: v for v in views}
        if not self.concurrent:
            return
        capacity = {h.name: len(h.slot_ids) for h in self.hosts}
        for level in pl.levels(pipeline, selected):
            groups = pl.pack(level, {n: by_name[n].cards for n in level}, capacity)
            for i, group in enumerate(groups):
                jobs = [n for n in group if by_name[n].cards]
                for n in group:
                    by_name[n].together = [m for m in jobs if m != n]
                    by_name[n].waits_for = [m for g in groups[:i] for m in g if by_name[m].cards]

    def builtin_text(self, step: pl.Step) -> str:
        texts = {"data": "synthesise, prepare, train the tokenizer, write MindRecord (on this machine)",
                 "merge": "merge the per-rank checkpoints on the training job's node 0 (entry/merge_ckpt.py)",
                 "fetch": "fetch the steps' outputs into the runs directory",
                 "score": "fetch the predictions, score them, save scores.json in the run directory",
                 "results": "fetch the runs' logs, print the results table (and the loss plot)"}
        options = {k: v for k, v in step.options.items() if not isinstance(v, (pl.Ref, list, dict))}
        return texts[step.builtin] + (f"; with {options}" if options else "")

    # ------------------------------------------------------------------ run

    def run(self, pipeline: pl.Pipeline, from_step: str | None = None, only: Sequence[str] = ()) -> reg.PipelineRecord:
        """Every step once its needs are done: the ready ones at the same time (see the module
        docstring), in file order among them; a step whose need failed is blocked."""
        selected = pl.select(pipeline, from_step, only)
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
        running: dict[Any, str] = {}
        pool = ThreadPoolExecutor(max_workers=max(1, len(order)) if self.concurrent else 1,
                                  thread_name_prefix="alaunch-step")
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
                        running[pool.submit(self._run_step_safely, pipeline, record.id, step, force)] = step.name
                if not running:
                    continue
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in finished:
                    name = running.pop(future)
                    result = future.result()
                    self.outputs[name] = result.outputs
                    if result.state == reg.FAILED:
                        failed.add(name)
                        self.registry.set_step(record.id, name, state="failed", reason=result.reason,
                                               ended_at=reg.now_iso())
                        self.say(f"  {name}: FAILED: {result.reason}")
                    else:
                        done.add(name)
        finally:
            pool.shutdown(wait=True)
            for opened in self._opened:
                opened.close()
            self._opened.clear()
        state = reg.FAILED if failed else reg.SUCCEEDED
        return self.registry.end_pipeline(record.id, state, f"failed: {', '.join(sorted(failed))}" if failed else None)

    def reuse(self, pipeline: pl.Pipeline, run_id: str, step: pl.Step) -> None:
        """A step not selected (``--from``/``--only``): its outputs from the newest earlier run."""
        previous = self.registry.reusable_steps(pipeline.name, step.name)
        if not previous:
            raise InputError(f"step {step.name!r} is not selected and no earlier run of {pipeline.name!r} "
                             f"finished it; run without --from/--only first", key="--from")
        self.outputs[step.name] = previous[0].outputs
        self.identities[step.name] = previous[0].identity
        self.registry.set_step(run_id, step.name, state="skipped", identity=previous[0].identity,
                               job_id=previous[0].job_id, outputs=previous[0].outputs,
                               reason=f"not selected: reused run {previous[0].pipeline_id}")
        self.say(f"  {step.name}: reused from {previous[0].pipeline_id}")

    def _run_step_safely(self, pipeline: pl.Pipeline, run_id: str, step: pl.Step, force: bool) -> StepResult:
        try:
            return self.run_step(pipeline, run_id, step, force)
        except AlaunchError as exc:
            return StepResult(reg.FAILED, {}, reason=exc.message)

    def run_step(self, pipeline: pl.Pipeline, run_id: str, step: pl.Step, force: bool) -> StepResult:
        spec = self.job_spec(step) if step.builtin is None else None
        ident = self.step_identity(step, spec)
        self.identities[step.name] = ident
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
            result = self.run_job(run_id, step, spec)
        else:
            result = StepResult(reg.SUCCEEDED, self.run_builtin(step))
        if result.state == reg.SUCCEEDED:
            self.registry.set_step(run_id, step.name, state="succeeded", job_id=result.job_id,
                                   outputs=result.outputs, attempts=result.attempts, ended_at=reg.now_iso())
            self.say(f"  {step.name}: done in {time.monotonic() - start:.0f} s"
                     + (f" ({result.job_id})" if result.job_id else ""))
        else:
            self.registry.set_step(run_id, step.name, job_id=result.job_id, attempts=result.attempts)
        return result

    # ------------------------------------------------------------------ job steps

    def run_job(self, run_id: str, step: pl.Step, spec: JobSpec) -> StepResult:
        hosts = used_hosts(spec, self.hosts)
        world = sum(len(h.slot_ids) for h in hosts)
        if spec.kind == "finetune" and world > 1:
            prepared = prepare(spec, hosts, "check-merge", DRY_PORT, self.opts)
            check_mergeable(spec, prepared.rendered[hosts[0].name].config, world)
        self.say(f"  {step.name}: {spec.kind} {spec.name} on {world} card(s)")
        self.place(step, spec, hosts)
        # concurrent steps: one that finds its cards taken by a sibling queues for them
        opts = replace(self.opts, wait=True) if self.concurrent else self.opts
        record = self.service.submit(spec, self.hosts, opts,
                                     meta={"pipeline": run_id, "pipeline_step": step.name})
        devices = record.meta.get("devices") or {}
        if devices:
            self.say(f"  {step.name}: {record.id} on " + "; ".join(f"{h} card(s) {','.join(map(str, d))}"
                                                                 for h, d in devices.items()))
        self.registry.set_step(run_id, step.name, job_id=record.id)
        attempts = 1
        while True:
            outcome = self.follow(record)
            record = self.registry.get(record.id)
            if record.state == reg.SUCCEEDED:
                return StepResult(reg.SUCCEEDED, self.job_outputs(record), record.id, attempts=attempts)
            verdict = self.diagnose(record, outcome)
            if attempts > step.retries or not verdict.transient:
                why = record.reason or record.state
                extra = (f"; {verdict.cause}: not transient, not retried" if step.retries and not verdict.transient
                         else "")
                return StepResult(reg.FAILED, {}, record.id, f"{why}{extra}", attempts)
            attempts += 1
            self.say(f"  {step.name}: {verdict.cause} (transient): resuming, attempt {attempts} of {step.retries + 1}")
            from launcher.ops.resume import resume_job
            record = resume_job(self.service, record.id, self.say, original=spec)

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
        bin_dir = self.opts.bin_dir or default_bin_dir(self.hosts)
        for site, ref, path in self.remote_refs(step, spec):
            producer = self.outputs.get(ref.step) or {}
            source = producer.get("host")
            targets = [h for h in hosts if source and h.name != source]
            if not targets:
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

    def diagnose(self, record: reg.JobRecord, outcome: Any) -> Verdict:
        lines: list[str] = []
        failure = getattr(outcome, "failure", None)
        if failure is not None:
            lines = [failure.message, *failure.lines]
        codes = [n.exit_code for n in record.nodes] + list((getattr(outcome, "node_codes", None) or {}).values())
        return classify(codes, [*lines, record.reason or ""])

    def job_outputs(self, record: reg.JobRecord) -> dict:
        """Where a finished job's outputs are: node 0's job dir, listed by the job's output groups."""
        from launcher.ops.collect import job_outputs, list_node, globs_for
        node0 = record.nodes[0]
        hosts = {h.name: h for h in self.hosts}
        python = (record.meta.get("pythons") or {}).get(node0.host)  # None: the runner's default
        outputs, _ = job_outputs(record)
        groups = [g for g in ("checkpoints", "predictions") if getattr(outputs, g)]
        paths: dict[str, list[str]] = {}
        if groups:
            runner = self.service.exec_factory(hosts.get(node0.host) or Host(node0.host, 1)).using(python)
            try:
                listing = list_node(runner, node0.job_dir, globs_for(outputs, groups))
            finally:
                runner.close()
            for f in listing.files:
                paths.setdefault(f.group, []).append(posixpath.join(listing.root, f.path))
            for g in paths:
                paths[g].sort(key=lambda p: (pl.ordinal_step(p), p))
        default = "checkpoints" if record.kind == "finetune" else "predictions"
        return {"job_id": record.id, "host": node0.host, "python": python, "root": node0.job_dir,
                "paths": paths, "default": default}

    def _quiet_follow(self, record: reg.JobRecord) -> Any:
        from launcher.ops.follow import Follower
        hosts = {h.name: h for h in self.hosts}
        return Follower(record, self.service.exec_factory, hosts, _QuietSink(self.say), self.service).run()

    # ------------------------------------------------------------------ built-ins

    def run_builtin(self, step: pl.Step) -> dict:
        if step.builtin in self.builtins:
            return self.builtins[step.builtin](self, step)
        return getattr(self, f"builtin_{step.builtin}")(step)

    def _path(self, value: Any, site: str = "path") -> Any:
        return pl.substitute(value, lambda ref: self.resolve(ref, site))

    def builtin_data(self, step: pl.Step) -> dict:
        """The demo's data recipe here: synth -> prepare -> tokenizer -> prepare with MindRecord."""
        from launcher.data.prepare import PrepareOptions, prepare as prepare_data
        from launcher.data.recipe import load_recipe
        from launcher.data.synth import synthesise
        from launcher.data.tokenizer import texts_of, train_sentencepiece
        o = step.options
        out = self.local_path(o.get("out", "build/data"))
        recipe = load_recipe(self.local_path(o["recipe"]))
        out.mkdir(parents=True, exist_ok=True)
        raw = out / "raw.jsonl"
        synthesise(int(o.get("rows", 100_000)), raw, seed=int(o.get("seed", 1)))
        opts = dict(raw=raw, recipe=recipe, out_dir=out, seed=None, test_rows=int(o.get("test_rows", 0)))
        prepare_data(PrepareOptions(**opts))
        model = train_sentencepiece(texts_of(out / "train.json"), out / "tokenizer",
                                    vocab_size=int(o.get("vocab_size", 1024)))
        prepare_data(PrepareOptions(**opts, tokenizer=Path(model), seq_length=int(o.get("seq_length", 512))))
        local = {"train": [str(out / "train.mindrecord")], "tokenizer": [str(model)], "dir": [str(out)]}
        if (out / "test.jsonl").exists():
            local["test"] = [str(out / "test.jsonl")]
        return {"local": local, "default": "dir"}

    def builtin_merge(self, step: pl.Step) -> dict:
        ref = step.options.get("checkpoint")
        if not isinstance(ref, pl.Ref):
            raise InputError("merge needs with: {checkpoint: {from: TRAIN_STEP}}", key=f"steps.{step.name}.with")
        producer = self._producer(ref)
        result = self.merge_on_host(producer)
        self.say(f"  {step.name}: {result['mode']}: {result['ranks']} rank(s) at step {result['step'][-1]} "
                 f"-> {result['out']}")
        return {"job_id": None, "host": producer["host"], "python": producer.get("python"),
                "root": producer["root"], "paths": {"checkpoints": [result["out"]]}, "default": "checkpoints",
                "merge": result}

    def builtin_fetch(self, step: pl.Step) -> dict:
        refs = list(pl.iter_refs(step.options.get("steps") or step.options))
        what = str(step.options.get("what", "all"))
        dirs = [str(self.fetched(ref.step, what)) for ref in refs]
        return {"local": {"runs": dirs}, "default": "runs"}

    def builtin_score(self, step: pl.Step) -> dict:
        from launcher.metrics import mathacc, predictions, scorefile
        ref = step.options.get("predictions")
        if not isinstance(ref, pl.Ref):
            raise InputError("score needs with: {predictions: {from: STEP}}", key=f"steps.{step.name}.with")
        metric = step.options.get("metric", "math")
        if metric != "math":
            raise InputError(f"score metric {metric!r}: the pipeline scores 'math' (score squad with "
                             f"`alaunch score squad`)", key=f"steps.{step.name}.with.metric")
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
