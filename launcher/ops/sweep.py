"""Run a sweep: each trial a job (or a pipeline run) through the target's engine, packed onto
free cards, followed for its loss, pruned by the sweep's rules, recorded in the registry.

The plan (:func:`load_base`, :func:`plan`) is the dry run: every trial with its overrides, its
LoRA trainable count (the same render ``plan`` prints) and the cards it takes, on any target
(a hostfile's hosts or a Slurm target's node stand-ins: :func:`~launcher.ops.engines` chose
the engine). :class:`SweepDriver` runs it:

- **Packing**: at most ``max_parallel`` trials run at once. On a hostfile the driver puts each
  trial on the hosts with the most cards its own trials leave free (``core.sweep.place``):
  ``used_hosts`` takes the *first* N hosts of a target, so four one-card trials on 2 hosts x
  2 slots would otherwise all ask for the first host and queue there while the second idles.
  Which cards on a host is the card allocation's business as for any submit (claims, and
  ``wait``: a card another user holds queues the trial instead of failing it). A scheduler's
  target (Slurm) places the trials itself: each is one sbatch job.
- **Detached**: a trial's job runs on under its supervisor (or Slurm) whatever happens to the
  driver. Its job carries ``{"sweep", "sweep_trial"}`` in its meta from its creation, so a
  driver killed between the submit and recording the job id still finds it
  (``Registry.sweep_trial_job``). Re-running the sweep file: finished trials (succeeded or
  pruned) are kept, running ones re-attached (followed again from their logs' start), the
  rest (pending, failed, cancelled) run. A pipeline trial's job is its swept step's (recorded
  as the driver first follows it); re-run, the trial starts on that job's hosts, where its
  pipeline run re-attaches it (a step's identity covers its hosts: placed elsewhere, it would
  train again; tests/test_sweep_driver.py).
- **Pruning**: each followed trial's rank-0 loss points (``metrics.logparse.parse_loss``, the
  parser ``logs -f`` uses) are its curve; every ``poll`` s each running trial is judged
  against the others' curves (``core.sweep.prune_reason``); a pruned trial is recorded
  ``pruned`` with the reason *before* its job is cancelled (so the cancel's follow-up cannot
  read as a failure), and its cards go to the next trial.
- **Budget**: ``card_hours``: no new trial starts once the finished and running trials' cards x
  hours reach it.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from launcher.core import pipeline as pl
from launcher.core import sweep as sw
from launcher.core import yamlio
from launcher.core.render import get_dotted, render_config, resolve_world, with_sets
from launcher.core.spec import JobSpec, parse_job
from launcher.errors import AlaunchError, InputError
from launcher.metrics.logparse import parse_loss
from launcher.ops import proc
from launcher.ops import registry as reg
from launcher.ops.engine import Engine
from launcher.ops.service import SubmitOptions

RUNNING_STATES = ("queued", "running")


@dataclass(frozen=True)
class Base:
    """What every trial starts from: the job the overrides go to (and its pipeline)."""

    path: str
    identity: str
    job_path: str
    job_data: dict[str, Any]
    template: dict[str, Any]
    seed: int | None
    pipeline: pl.Pipeline | None = None
    step: str | None = None

    @property
    def kind(self) -> str:
        return "pipeline" if self.pipeline is not None else "job"


@dataclass(frozen=True)
class TrialPlan:
    trial: sw.Trial
    spec: JobSpec
    nodes: int
    cards_per_node: int
    trainable: int | None

    @property
    def cards(self) -> int:
        return self.nodes * self.cards_per_node


def _text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=path) from None


def load_base(sweep: sw.Sweep) -> Base:
    """The sweep's base file (a pipeline if it has ``steps:``, else a job file), the job its
    overrides go to, that job's template, and the base's identity (the texts of the files)."""
    data = yamlio.load_file(sweep.base)
    pipeline, step_name, job_path = None, None, sweep.base
    if isinstance(data, dict) and "steps" in data:
        pipeline = pl.load_pipeline(sweep.base)
        jobs = [s for s in pipeline.order() if s.job is not None]
        if sweep.step is not None:
            step = pipeline.step(sweep.step)
            if step.job is None:
                raise sweep.error(f"step {step.name!r} is not a job step from a file (the overrides go to a job)",
                                  "step")
        elif jobs:
            step = jobs[0]
        else:
            raise sweep.error("the pipeline has no job step from a file for the overrides", "base")
        step_name, job_path = step.name, str(step.job)
        data = with_sets(yamlio.load_file(job_path), step.sets)  # the step's own set: (cards_per_node too)
    elif sweep.step is not None:
        raise sweep.error("'step' names a pipeline step; the base is a job file", "step")
    spec = parse_job(data, job_path, str(Path(job_path).parent), _text(job_path))
    template_path = spec.template_path()
    template_text = _text(str(template_path))
    template = yamlio.loads(template_text, str(template_path), allow_aliases=True)
    texts = [_text(sweep.base), template_text] + ([_text(job_path)] if pipeline is not None else [])
    ident = sw.identity({"base": [pl.text_sha(t) for t in texts]})
    return Base(sweep.base, ident, job_path, data, template, spec.seed, pipeline, step_name)


def trials_of(sweep: sw.Sweep, base: Base) -> list[sw.Trial]:
    """The trials, their names resolved against the base's template (+ the job's own +keys)."""
    keys = sw.template_keys(base.template)
    keys += [k.lstrip("+") for k in (base.job_data.get("overrides") or {})]
    keymap = sw.resolve_keys(sweep, list(dict.fromkeys(keys)), sweep.sets)
    return sw.trials(sweep, keymap, base.identity, base.seed)


def trial_job_data(sweep: sw.Sweep, base: Base, trial: sw.Trial) -> dict[str, Any]:
    data = dict(base.job_data)
    data["overrides"] = {**(data.get("overrides") or {}), **trial.overrides}
    data.update(trial.job)
    if trial.seed is not None:
        data["seed"] = trial.seed
    if base.pipeline is None:
        data["name"] = f"{sweep.name}-{trial.id[:8]}"
    return data


def plan(sweep: sw.Sweep, base: Base, target: Any) -> list[TrialPlan]:
    """Every trial as it would run on ``target``: its job, cards and LoRA trainable count.
    A trial the template refuses (a key, a world that does not divide) is an InputError
    naming the trial, before anything runs."""
    hosts = target.node_hosts()
    out = []
    for trial in trials_of(sweep, base):
        data = trial_job_data(sweep, base, trial)
        try:
            spec = parse_job(data, base.job_path, str(Path(base.job_path).parent))
            world = resolve_world(spec, hosts)
            _, derived = render_config(base.template, overrides=spec.overrides, world=world, kind=spec.kind,
                                       seed=spec.seed, source=spec.source or base.job_path)
        except InputError as exc:
            raise InputError(f"trial {trial.id} ({_brief(trial.params)}): {exc.message}") from None
        out.append(TrialPlan(trial, spec, world.nodes, world.cards_per_node, derived.get("trainable_params")))
    return out


def base_values(base: Base, plans: Sequence[TrialPlan]) -> dict[str, Any]:
    """What the base sets each overridden key to (its job's override, else the template's), for
    the best trial's diff against the base."""
    own = {k.lstrip("+"): v for k, v in (base.job_data.get("overrides") or {}).items()}
    keys = dict.fromkeys(k.lstrip("+") for p in plans for k in p.trial.overrides)
    return {k: own[k] if k in own else get_dotted(base.template, k) for k in keys}


def trial_pipeline(base: Base, trial: sw.Trial) -> pl.Pipeline:
    """The base pipeline with the trial's overrides set on its step (``set:``, as a pipeline
    file would): the pipeline's own name, so its unchanged steps are reused as by ``alaunch run``.
    The trial's job fields (``job: {cards_per_node: 1}``) and seed go there too: a step's ``set:``
    takes the job-file keys (``render.with_sets``)."""
    assert base.pipeline is not None and base.step is not None
    sets = {**trial.overrides, **trial.job, **({"seed": trial.seed} if trial.seed != base.seed else {})}
    steps = tuple(replace(s, sets={**s.sets, **sets}) if s.name == base.step else s for s in base.pipeline.steps)
    return replace(base.pipeline, steps=steps)


def _brief(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start:
        return None
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    t0 = dt.datetime.strptime(start, fmt)
    t1 = dt.datetime.strptime(end, fmt) if end else dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return max(0.0, (t1 - t0).total_seconds())


def result_of(record: reg.JobRecord, curve: Sequence[tuple[int, float]], cards: int,
              scores: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A finished trial's numbers: the leaderboard's columns and what an objective may name."""
    finite = [loss for _, loss in curve if math.isfinite(loss)]
    duration = _seconds(record.started_at or record.created_at, record.ended_at)
    out: dict[str, Any] = {
        "final_loss": curve[-1][1] if curve else None, "min_loss": min(finite) if finite else None,
        "steps": curve[-1][0] if curve else None, "duration_s": duration, "cards": cards,
        "card_hours": cards * duration / 3600 if duration is not None else None, "job_id": record.id}
    out.update(scores or {})
    return out


def objective_of(result: Mapping[str, Any], objective: sw.Objective) -> float | None:
    value = result.get(objective.metric)
    if value is None and objective.step is not None:  # STEP.math_accuracy and STEP.accuracy name one score
        step, fld = objective.metric.split(".", 1)
        value = result.get(f"{step}.accuracy" if fld == "math_accuracy" else f"{step}.math_accuracy")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class _CurveSink:
    """The follower's sink for a trial: rank 0's loss points into ``curve``, nothing said."""

    def __init__(self, curve: list[tuple[int, float]]):
        self.curve = curve

    def line(self, host: str, rank: int | None, text: str) -> None:
        if rank == 0 and "loss" in text:
            point = parse_loss(text)
            if point is not None and (not self.curve or point.global_step > self.curve[-1][0]):
                self.curve.append((point.global_step, point.loss))

    def progress(self, view: Any) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def msrun(self, host: str, text: str) -> None:
        pass

    def nodes(self, views: list) -> None:
        pass


@dataclass
class _Live:
    """One trial this driver runs or follows."""

    plan: TrialPlan
    hosts: tuple[str, ...] = ()
    curve: list[tuple[int, float]] = field(default_factory=list)
    job_id: str | None = None
    started: float = field(default_factory=time.time)
    pruned: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    followed: str | None = None  # the swept step's job this driver followed (its curve is whole)
    saved: list[tuple[int, float]] = field(default_factory=list)  # the registry's curve at the start


class SweepDriver:
    """One sweep against one registry and one target, through the target's engine."""

    def __init__(self, registry: reg.Registry, engine: Engine, target: Any, sweep: sw.Sweep, base: Base, *,
                 say: Callable[[str], None] = lambda s: None, opts: SubmitOptions = SubmitOptions(),
                 poll: float = 1.0, runs_dir: Path = Path("runs")):
        self.registry, self.engine, self.target = registry, engine, target
        self.sweep, self.base, self.say, self.poll = sweep, base, say, poll
        self.opts = replace(opts, wait=True)  # a card another user holds queues the trial, never fails it
        self.runs_dir = runs_dir
        self.live: dict[str, _Live] = {}
        self.curves: dict[str, list[tuple[int, float]]] = {}
        self.lock = threading.Lock()
        self.saved: dict[str, int] = {}  # trial -> points of its curve in the registry

    # ------------------------------------------------------------------ the loop
    def run(self, plans: Sequence[TrialPlan] | None = None) -> reg.SweepRecord:
        plans = list(plans if plans is not None else plan(self.sweep, self.base, self.target))
        sweep = self.sweep
        info = {"objective": {"metric": sweep.objective.metric, "goal": sweep.objective.goal},
                "keys": sweep.keys(), "base": self.base.path, "kind": self.base.kind,
                "base_overrides": base_values(self.base, plans),
                "prune": {"nan": sweep.prune.nan, "median": sweep.prune.median, "k": sweep.prune.k,
                          "min_steps": sweep.prune.min_steps},
                "trainable": {p.trial.id: p.trainable for p in plans}, "cards": {p.trial.id: p.cards for p in plans}}
        record = self.registry.open_sweep(sweep.name, sweep.source, info, runner=proc.me())
        sid = record.id
        for p in plans:
            self.registry.add_trial(sid, p.trial.id, p.trial.position, p.trial.identity, p.trial.params,
                                    p.trial.overrides, p.trial.seed)
        rows = {t["trial"]: t for t in self.registry.sweep(sid).trials}
        for t in rows.values():
            self.curves[t["trial"]] = [(int(x[0]), float(x[1])) for x in t["curve"]]
        todo: list[TrialPlan] = []
        for p in plans:
            row = rows[p.trial.id]
            job_id = row["run_id"] or self.registry.sweep_trial_job(sid, p.trial.id)
            if row["state"] in sw.DONE_STATES:
                self.say(f"  {p.trial.id}: {row['state']} earlier, kept")
                if row["state"] == "pruned" and job_id:
                    self._finish_prune(p.trial.id, job_id)
            elif self.base.pipeline is not None and job_id and self._alive_or_done(job_id):
                # its pipeline run re-attaches the swept step's job (or reuses it): on the hosts it
                # runs on, as a step's identity covers its hosts (placed elsewhere, it would train again)
                on = () if self.target.schedules else tuple(n.host for n in self.registry.get(job_id).nodes)
                self.say(f"  {p.trial.id}: pipeline trial, its job {job_id}: re-attached")
                self._start(sid, p, hosts=on)
            elif self.base.pipeline is not None:
                todo.append(p)  # its pipeline run reuses or re-attaches what it can of an earlier run
            elif job_id and self._alive_or_done(job_id):
                job = self.registry.get(job_id)
                self.say(f"  {p.trial.id}: job {job_id} ({job.state}): re-attached")
                # its cards count against its hosts' free ones (the scheduler's target: it places)
                on = () if self.target.schedules else tuple(n.host for n in job.nodes)
                self._start(sid, p, hosts=on, job_id=job_id)
            else:
                todo.append(p)
        self.say(f"sweep {sweep.name}: {sid}, {len(plans)} trials ({len(plans) - len(todo) - len(self.live)} "
                 f"done, {len(self.live)} running, {len(todo)} to run; at most {sweep.budget.max_parallel} at once)")
        try:
            while todo or self.live:
                self._judge(sid)
                self._save_curves(sid)
                self._reap(sid)
                spent = self._spent(sid)  # after the reap: a trial that just ended has its result recorded
                while todo and len(self.live) < sweep.budget.max_parallel:
                    budget = sweep.budget.card_hours
                    if budget is not None and spent + self._running_card_hours() >= budget:
                        self.say(f"  card-hour budget {budget:g} reached: {len(todo)} trial(s) not started")
                        for p in todo:
                            self.registry.set_trial(sid, p.trial.id, state="skipped", reason="card-hour budget")
                        todo = []
                        break
                    hosts = self._place(todo[0])
                    if hosts is None:
                        break
                    self._start(sid, todo.pop(0), hosts=hosts)
                time.sleep(self.poll)
        except KeyboardInterrupt:
            self.registry.end_sweep(sid, reg.FAILED, "interrupted: the trials keep running; run the sweep again "
                                                     "to re-attach")
            raise
        states = [t["state"] for t in self.registry.sweep(sid).trials]
        failed = sum(1 for s in states if s == "failed")
        self.registry.end_sweep(sid, reg.FAILED if failed == len(states) else reg.SUCCEEDED,
                                f"{failed} trial(s) failed" if failed else None)
        return self.registry.sweep(sid)

    def _finish_prune(self, tid: str, job_id: str) -> None:
        """A pruned trial's job still running: its driver was killed between recording the prune
        and the cancel. Cancelled now (its cards were promised to the next trial)."""
        try:
            if not self.registry.get(job_id).terminal:
                self.say(f"  {tid}: pruned, its job {job_id} still running: cancelled")
                self.engine.cancel(job_id, grace=3.0)
        except AlaunchError as exc:
            self.say(f"  {tid}: could not cancel job {job_id}: {exc.message}")

    def _alive_or_done(self, job_id: str) -> bool:
        """Whether a trial's job (from a killed driver) runs or succeeded: the engine is asked
        first (a job whose submit died mid-staging is ended there, and the trial runs again)."""
        try:
            record = self.registry.get(job_id)
            if not record.terminal:
                record, _ = self.engine.refresh(job_id)
        except InputError:
            return False  # pruned from the registry since
        except AlaunchError as exc:
            self.say(f"  job {job_id}: could not ask its engine ({exc.message}); re-attached as recorded")
            return not self.registry.get(job_id).terminal
        return not record.terminal or record.state == reg.SUCCEEDED

    def _spent(self, sid: str) -> float:
        return sum(float((t["result"] or {}).get("card_hours") or 0) for t in self.registry.sweep(sid).trials)

    def _running_card_hours(self) -> float:
        with self.lock:
            return sum(lv.plan.cards * (time.time() - lv.started) / 3600 for lv in self.live.values())

    def _place(self, p: TrialPlan) -> tuple[str, ...] | None:
        """The hosts the next trial goes to (() on a scheduler's target: it places), or None
        when this driver's own running trials leave no room now."""
        if self.target.schedules:
            return ()
        with self.lock:
            free = {h.name: len(h.slot_ids) for h in self.target.node_hosts()}
            for lv in self.live.values():
                for name in lv.hosts:
                    free[name] = free.get(name, 0) - lv.plan.cards_per_node
        return sw.place(free, p.nodes, p.cards_per_node)

    def _start(self, sid: str, p: TrialPlan, *, hosts: tuple[str, ...] = (), job_id: str | None = None) -> None:
        lv = _Live(p, hosts, self.curves.setdefault(p.trial.id, []), job_id)
        lv.saved = list(lv.curve)
        lv.curve.clear()  # followed again from the logs' start
        with self.lock:
            self.live[p.trial.id] = lv
        threading.Thread(target=self._trial_thread, args=(sid, lv), daemon=True,
                         name=f"alaunch-trial-{p.trial.id}").start()

    # ------------------------------------------------------------------ one trial (its own thread)
    def _trial_thread(self, sid: str, lv: _Live) -> None:
        registry = reg.Registry(self.registry.path)
        engine = type(self.engine)(registry, self.engine.state_dir, say=lambda s: None,
                                   progress=None, exec_factory=self.engine.exec_factory)
        tid = lv.plan.trial.id
        try:
            if self.base.pipeline is not None:
                self._pipeline_trial(sid, lv, registry, engine)
                return
            if lv.job_id is None:
                target = self._target_for(lv)
                registry.set_trial(sid, tid, state="queued", started_at=reg.now_iso(), reason=None)
                record = engine.submit(lv.plan.spec, target, self.opts, meta={"sweep": sid, "sweep_trial": tid})
                lv.job_id = record.id
                where = ", ".join(f"{h} card(s) {','.join(map(str, d))}"
                                  for h, d in (record.meta.get("devices") or {}).items())
                self.say(f"  {tid}: {record.id} started{' on ' + where if where else ''} "
                         f"({_brief(lv.plan.trial.params)})")
            registry.set_trial(sid, tid, state="running", run_id=lv.job_id)
            record = registry.get(lv.job_id)
            # offsets=False: every follow reads the logs from their start (the curve was
            # cleared); resuming at a killed driver's offsets left a trial that ended meanwhile
            # with no curve, so no final loss in the leaderboard
            engine.follow(record, engine.exec_factory, _CurveSink(lv.curve), offsets=False)
            record = registry.get(lv.job_id)
            if record.state == reg.QUEUED or not record.terminal:
                record = self._wait_end(engine, registry, lv.job_id)
            result = result_of(record, lv.curve, lv.plan.cards)
            if lv.pruned:
                self._end(registry, sid, tid, state="pruned", reason=lv.pruned, result=result, curve=lv.curve)
            elif record.state == reg.SUCCEEDED:
                value = objective_of(result, self.sweep.objective)
                self._end(registry, sid, tid, state="succeeded", result={**result, "objective": value},
                          curve=lv.curve)
                self.say(f"  {tid}: succeeded, {self.sweep.objective.metric} {value}")
            else:
                self._end(registry, sid, tid, state="failed" if record.state == reg.FAILED else "cancelled",
                          reason=record.reason, result=result, curve=lv.curve)
                self.say(f"  {tid}: {record.state}: {record.reason}")
        except AlaunchError as exc:
            self._end(registry, sid, tid, state="pruned" if lv.pruned else "failed",
                      reason=lv.pruned or exc.message, curve=lv.curve)
            self.say(f"  {tid}: failed: {exc.message}")
        except Exception as exc:  # noqa: BLE001 - a bug fails one trial, in one line; the sweep goes on
            self._end(registry, sid, tid, state="failed", reason=f"{type(exc).__name__}: {exc}")
            self.say(f"  {tid}: failed: {type(exc).__name__}: {exc}")
        finally:
            registry.close()
            lv.done.set()

    def _target_for(self, lv: _Live) -> Any:
        if not lv.hosts:
            return self.target
        return replace(self.target, hosts=tuple(h for h in self.target.node_hosts() if h.name in lv.hosts))

    def _pipeline_trial(self, sid: str, lv: _Live, registry: reg.Registry, engine: Engine) -> None:
        """A trial of a pipeline base: one pipeline run (``PipelineRunner``: a step whose job
        still runs from a killed driver is re-attached, a finished one reused); the swept
        step's job is followed for the curve, and its scores come from the score steps."""
        from launcher.ops.pipeline import PipelineRunner
        tid = lv.plan.trial.id

        def follow(record: reg.JobRecord) -> Any:
            mine = record.meta.get("pipeline_step") == self.base.step
            if mine:
                lv.job_id = lv.followed = record.id
                lv.curve.clear()
                registry.set_trial(sid, tid, run_id=record.id)  # a re-run finds its hosts; the page its job
            return engine.follow(record, engine.exec_factory, _CurveSink(lv.curve if mine else []), offsets=False)

        registry.set_trial(sid, tid, state="running", started_at=reg.now_iso(), reason=None)
        runner = PipelineRunner(registry, engine, self._target_for(lv), opts=self.opts, runs_dir=self.runs_dir,
                                follow=follow, say=lambda text: None)
        run = runner.run(trial_pipeline(self.base, lv.plan.trial))
        scores: dict[str, Any] = {}
        for step in run.steps:
            if step.kind == "score" and isinstance(step.outputs.get("accuracy"), (int, float)):
                scores[f"{step.step}.accuracy"] = scores[f"{step.step}.math_accuracy"] = step.outputs["accuracy"]
        job_id = lv.job_id or next((st.job_id for st in run.steps if st.step == self.base.step), None)
        if job_id and job_id != lv.job_id:
            registry.set_trial(sid, tid, run_id=job_id)  # reused from an earlier run: never followed
        record = registry.get(job_id) if job_id else None
        if record is not None and lv.followed != record.id:
            self._read_curve(engine, record, lv)
        result = result_of(record, lv.curve, lv.plan.cards, scores) if record else dict(scores)
        result["pipeline_run"] = run.id
        if lv.pruned:
            self._end(registry, sid, tid, state="pruned", reason=lv.pruned, result=result, curve=lv.curve)
        elif run.state == reg.SUCCEEDED:
            value = objective_of(result, self.sweep.objective)
            self._end(registry, sid, tid, state="succeeded", result={**result, "objective": value}, curve=lv.curve)
            self.say(f"  {tid}: pipeline run {run.id} succeeded, {self.sweep.objective.metric} {value}")
        else:
            self._end(registry, sid, tid, state="failed", reason=run.reason, result=result, curve=lv.curve)
            self.say(f"  {tid}: pipeline run {run.id} failed: {run.reason}")

    def _read_curve(self, engine: Engine, record: reg.JobRecord, lv: _Live) -> None:
        """The curve of a swept step's job this driver never followed: it ended while no driver
        ran (the pipeline run found it terminal, or reused it from an earlier run), so it is read
        once from its logs' start. Logs that cannot be read leave the curve an earlier driver
        saved: a result is never failed for its curve (a full run once ranked a succeeded trial
        with no final loss, its job ended between the kill and the re-run)."""
        lv.curve.clear()
        try:
            engine.follow(record, engine.exec_factory, _CurveSink(lv.curve), follow=False)
        except AlaunchError as exc:
            self.say(f"  {lv.plan.trial.id}: its job's logs could not be read ({exc.message}): "
                     f"the curve saved earlier is kept")
        if not lv.curve:
            lv.curve.extend(lv.saved)

    def _wait_end(self, engine: Engine, registry: reg.Registry, job_id: str) -> reg.JobRecord:
        while True:
            record, _ = engine.refresh(job_id)
            if record.terminal:
                return record
            time.sleep(self.poll)

    def _save_curves(self, sid: str) -> None:
        """The running trials' curves into the registry as they grow (the dashboard's sweep page
        reads them live; the trial's own thread writes the final one)."""
        with self.lock:  # held across the writes: a trial's final write (``_end``) is never overwritten
            grown = [(t, list(lv.curve)) for t, lv in self.live.items()
                     if not lv.done.is_set() and len(lv.curve) != self.saved.get(t, 0)]
            for tid, curve in grown:
                self.saved[tid] = len(curve)
                self.registry.set_trial(sid, tid, curve=curve)

    def _end(self, registry: reg.Registry, sid: str, tid: str, **fields: Any) -> None:
        """A trial's last write (its state, result and whole curve), under the driver's lock."""
        with self.lock:
            registry.set_trial(sid, tid, ended_at=reg.now_iso(), **fields)

    def _reap(self, sid: str) -> None:
        with self.lock:
            for tid in [t for t, lv in self.live.items() if lv.done.is_set()]:
                del self.live[tid]

    def _judge(self, sid: str) -> None:
        """Each running trial against the others' curves; prune (record, then cancel)."""
        rules = self.sweep.prune
        if not rules.any:
            return
        with self.lock:
            running = [(t, lv) for t, lv in self.live.items() if lv.job_id and not lv.pruned and not lv.done.is_set()]
            curves = {t: list(c) for t, c in self.curves.items()}
        for tid, lv in running:
            others = [c for t, c in curves.items() if t != tid and c]
            why = sw.prune_reason(curves.get(tid) or [], others, rules)
            if why is None:
                continue
            lv.pruned = why
            self.registry.set_trial(sid, tid, state="pruned", reason=why, curve=curves.get(tid) or [])
            self.say(f"  {tid}: pruned: {why}")
            try:
                self.engine.cancel(str(lv.job_id), grace=3.0)
            except AlaunchError as exc:
                self.say(f"  {tid}: could not cancel job {lv.job_id}: {exc.message}")
