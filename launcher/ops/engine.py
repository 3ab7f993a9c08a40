"""The engine interface: what every way of running a job (SSH hosts, Slurm, ...) implements.

An engine is a small class behind a small interface (torchx's ``Scheduler``, DeepSpeed's
multinode runners): :meth:`Engine.dry_run` returns the exact request, printable, touching
nothing (``plan``, ``run --dry-run``); :meth:`Engine.submit` sends it, through the phases
every engine shares (:class:`launcher.ops.service.Phases`: load, hash, survey, render,
record, stage, start). After that the verbs only call the interface: ``refresh`` (states from
the engine's own facts), ``cancel``, ``fail`` (gang stop), ``wait_started``, ``watch``,
``log_view`` (the log sources the follower reads, the files fetch reads), ``check`` (``hosts
check``) and ``prune``. Which engine a target or a registry record belongs to is decided in
ONE place, :mod:`launcher.ops.engines`; nothing else in the package looks at the kind
(``tests/test_engines.py`` fails if a module does).

The two engines: :class:`launcher.ops.service.JobService` (SSH hosts; the local machine is
an SSH-less host of it) and :class:`launcher.ops.slurm.SlurmService`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from launcher.core.hostfile import Host
from launcher.errors import AlaunchError, ExitCode
from launcher.ops import registry as reg

if TYPE_CHECKING:
    from launcher.core.spec import JobSpec
    from launcher.ops.cards import TopSource
    from launcher.ops.launch import NodeStatus
    from launcher.ops.prune import HostPrune, PruneOptions
    from launcher.ops.stage import LocalSet, Progress
    from launcher.runners import CommandRunner

    SubmitOptions = Any  # launcher.ops.service.SubmitOptions (imported there: service imports this module)


# Versions that must agree on every node of one job (a mixed cluster fails late and obscurely):
# a hostfile's preflight compares them before anything starts, a Slurm job's batch script
# before msrun starts (remote/slurm.py SKEW).
SKEW_KEYS = ("mindspore", "mindformers", "cann", "driver")


WATCH_JOIN_S = 60.0  # how long leaving a follow waits for its engine watch's refresh in flight


@dataclass(frozen=True)
class HostTarget:
    """A hostfile (or ``--local``): the hosts a job may use, after ``--include``/``--exclude``
    (``full``: before them, for ``plan``'s pinned cards)."""

    hosts: tuple[Host, ...]
    full: tuple[Host, ...] = ()
    source: str = ""
    engine: ClassVar[str] = "hosts"
    shared_workdir: ClassVar[bool] = False  # each host has its own disk: outputs are copied between them
    schedules: ClassVar[bool] = False  # alaunch places jobs on cards (a scheduler's target: it queues them)

    @property
    def workdir(self) -> str:
        """Where jobs live on the first host (the dry run's stand-in for a step's job dir)."""
        return self.hosts[0].remote_workdir if self.hosts else "~"

    def node_hosts(self) -> list[Host]:
        """The hosts render and plan count."""
        return list(self.hosts)

    def stage_hosts(self) -> list[Host]:
        """The hosts staging sends to (progress and prune go to these)."""
        return list(self.hosts)


@dataclass
class CheckReport:
    """``hosts check``'s answer, engine-neutral: a table (one row per host or node), the
    rows that failed, problems beyond the rows, and the JSON form."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    failed: set[int] = field(default_factory=set)  # indices into rows
    problems: list[str] = field(default_factory=list)
    json: Any = None
    failure: str | None = None  # the one line `hosts check` exits with (None: passed)


class JobCancelled(AlaunchError):
    """``submit`` found its job cancelled (during staging or start)."""

    exit_code = ExitCode.JOB_CANCELLED


class Engine(ABC):
    """One way of running a job. Constructed with the registry it writes, the state dir, how it
    says things (``say``, ``progress``) and how it reaches a host (``exec_factory``)."""

    name: ClassVar[str]

    def __init__(self, registry: reg.Registry, state_dir: Path, *, say: Callable[[str], None] = lambda s: None,
                 progress: Progress | None = None, exec_factory: Callable[[Host], CommandRunner] | None = None):
        if exec_factory is None:
            from launcher.runners import make_runner
            exec_factory = make_runner
        self.registry = registry
        self.state_dir = Path(state_dir)
        self.say = say
        self.progress = progress
        self.exec_factory = exec_factory
        self.last_stage_bytes = 0

    # ------------------------------------------------------------------ the phases every engine's submit runs
    def load(self, job: str | Path | JobSpec, sets: Sequence[str] = ()) -> tuple[JobSpec, str]:
        """Load: the job file (a JobSpec — a pipeline step's, references resolved — is taken as
        it is), its local paths checked, and its text for the registry with secrets masked."""
        from launcher.core import validate
        from launcher.core.render import apply_job_sets
        from launcher.core.spec import JobSpec, load_job, redacted_text
        spec = apply_job_sets(job if isinstance(job, JobSpec) else load_job(job), sets)  # --set nodes=all
        validate.check_local_paths(spec)
        if isinstance(job, JobSpec):
            from launcher.core.yamlio import dumps
            text = redacted_text(spec, dumps(spec.model_dump(mode="json", exclude_none=True)))
        else:
            text = redacted_text(spec, Path(spec.source).read_text(encoding="utf-8")) if spec.source else ""
        return spec, text

    def hash_files(self, spec: JobSpec, *, hash_new: bool = True) -> LocalSet:
        """Hash: the code and data to stage (render-independent; a local cache). ``hash_new=False``:
        files the cache does not name are left for the Stager (a first staging into an empty
        store sends them unhashed and the host names them; see ``ops.stage.collect``)."""
        from launcher.core.plan import stage_items
        from launcher.ops.stage import CACHE_NAME, HashCache, collect
        cache = HashCache(self.state_dir / CACHE_NAME)
        files = collect([i for i in stage_items(spec, "") if i.text is None], cache, hash_new=hash_new)
        cache.save()
        for warning in files.warnings:
            self.say(f"warning: {warning}")
        return files

    def record_failure(self, spec: JobSpec, hosts: Sequence[Host], job_id: str, spec_text: str,
                       exc: AlaunchError, meta: Mapping | None = None) -> None:
        """Record: a job refused before it was recorded is recorded FAILED with the reason and
        ``meta.refused`` (nothing was sent or started): ``jobs`` hides it unless ``--all``, so an
        unreachable host or a bad key no longer leaves a `failed` job among the real ones, while
        ``status ID`` and the dashboard still say why (a state of its own would need a registry
        migration rebuilding three tables, for what this flag says)."""
        from launcher.core.hostfile import format_hostfile
        self.registry.create_job(spec.name, spec.kind, spec_text=spec_text, hostfile_text=format_hostfile(hosts),
                                 nodes=[h.name for h in hosts], job_id=job_id, state=reg.FAILED,
                                 meta={**(meta or {}), reg.REFUSED: True})
        self.registry.set_state(job_id, reg.FAILED, exc.message)

    def cancelled(self, job_id: str, what: str) -> JobCancelled:
        return JobCancelled(f"job {job_id} was cancelled during submit; {what}")

    def stage_then_start(self, job_id: str, stage: Callable[[], None], start: Callable[[], Any],
                         nothing: str = "nothing was started") -> Any:
        """Stage, then start, a recorded job: STAGING first (a cancel between record and here:
        :class:`JobCancelled`), a cancel during staging wins (nothing starts), an error records
        FAILED unless a cancel recorded the end first (its word stands)."""
        try:
            self.registry.set_state(job_id, reg.STAGING)
        except reg.IllegalTransition:  # cancelled between record and here
            raise self.cancelled(job_id, nothing) from None
        try:
            stage()
            if self.registry.get(job_id).state == reg.CANCELLED:  # cancel during staging wins
                raise self.cancelled(job_id, nothing)
            return start()
        except JobCancelled:
            raise
        except AlaunchError as exc:
            self.registry.set_state_unless_ended(job_id, reg.FAILED, exc.message)
            raise

    # ------------------------------------------------------------------ submit = dry run + schedule
    @abstractmethod
    def dry_run(self, job: str | Path | JobSpec, target: Any, opts: SubmitOptions, job_id: str,
                *, offline: bool = True) -> str:
        """Exactly what :meth:`submit` would send, as text; starts nothing (``offline``: asks
        no host either)."""

    @abstractmethod
    def plan_text(self, spec: JobSpec, target: Any, opts: SubmitOptions, job_id: str) -> str:
        """The job's exact request as text, pure (a pipeline step's dry run): the commands each
        node runs, or the batch script a scheduler gets."""

    @abstractmethod
    def submit(self, job: str | Path | JobSpec, target: Any, opts: SubmitOptions,
               meta: Mapping | None = None) -> reg.JobRecord:
        """Record, stage and start (or queue) the job; the record as it stands after."""

    @abstractmethod
    def started_line(self, record: reg.JobRecord) -> str:
        """The one line ``submit`` says when the job is started or queued."""

    # ------------------------------------------------------------------ states
    @abstractmethod
    def refresh(self, ref: str) -> tuple[reg.JobRecord, list[NodeStatus]]:
        """Ask the engine's own facts how the job is; record what changed."""

    def refresh_many(self, records: Sequence[reg.JobRecord]) -> dict[str, str]:
        """Bring a listed page of records up to date where that is one cheap question for all
        (``jobs``). Returns where -> why it could not be asked."""
        return {}

    def wait_started(self, ref: str, note: Callable[[str], None] = lambda s: None,
                     timeout: float | None = None) -> reg.JobRecord:
        """Return when the job runs or ended (an engine that queues says each new reason)."""
        return self.registry.get(ref)

    def watch(self, ref: str, stop: threading.Event, first: float = 5.0,
              note: Callable[[str], None] | None = None) -> None:
        """While a follower runs: learn the end of a job whose own processes may never say it
        (a scheduler that kills the script). Returns when ``stop`` is set or the job ended."""
        return None

    # ------------------------------------------------------------------ stop
    @abstractmethod
    def cancel(self, ref: str, grace: float = 10.0) -> tuple[reg.JobRecord, dict[str, str]]:
        """Stop the job everywhere; the record and, per host, what happened."""

    @abstractmethod
    def fail(self, ref: str, reason: str, grace: float = 3.0) -> reg.JobRecord:
        """A rank failed: record FAILED first, then stop every node (the gang rule)."""

    @abstractmethod
    def resume(self, ref: str, say: Callable[[str], None] = lambda s: None,
               original: JobSpec | None = None) -> reg.JobRecord:
        """Attempt n+1 of a stopped training job, in its own job dir, from the newest
        checkpoint every rank saved (``alaunch resume``, a pipeline step's ``retries:``)."""

    # ------------------------------------------------------------------ alaunch's own programs (a merge)
    def run_task(self, target: Any, host: Host, python: str | None, program: Path, request: Mapping[str, Any],
                 where: str, label: str) -> Any:
        """Run one of alaunch's own programs (``entry/merge_ckpt.py``) with ``request`` where the
        target runs work, and return its one JSON line. Hosts: on ``host`` (the producer's node
        0), through its runner. A scheduler's engine queues it as a job of its own, its files
        in ``where`` (on a Slurm login node it would compete with every user's shell)."""
        from launcher.ops.ckpt import on_host
        runner = self.exec_factory(host).using(python)
        try:
            return on_host(runner, dict(request), label, program)
        finally:
            runner.close()

    def task_text(self, target: Any, host: str, program: Path, request: Mapping[str, Any], where: str,
                  label: str) -> str:
        """What :meth:`run_task` would do, for a dry run (pure)."""
        return f"on {host}, in {where} ({program.parent.name}/{program.name})"

    # ------------------------------------------------------------------ what the follower and fetch read
    @staticmethod
    def log_view(record: reg.JobRecord) -> reg.JobRecord:
        """The record as the follower and fetch see it: which host holds which job dir, and
        whether each node keeps its own ``state/node-<rank>`` (meta ``state_per_node``)."""
        return record

    def follow(self, record: reg.JobRecord, runner_for: Callable[[Host], Any], sink: Any,
               note: Callable[[str], None] = lambda s: None, *, follow: bool = True, node: str | None = None,
               offsets: bool = True, resume: bool = True, display: Any = None, **kw: Any) -> Any:
        """The one way to read a job's logs (``logs [-f]``, ``submit --follow``, a pipeline's
        steps): wait while the engine queues it (each new reason said), read the job dirs of
        :meth:`log_view` with :meth:`watch` beside the follower. ``follow`` false: one read of
        what is there, nothing stopped. ``offsets``: each file's offset kept in the state dir
        (a later follow resumes there; ``resume`` false reads from byte 0 again). ``display``:
        a context the follower runs inside (a live terminal view). ``node``: a node of the
        job, checked. The follower's result, or None when the job ended in the queue."""
        from launcher.core.hostfile import parse_hostfile
        from launcher.errors import InputError
        from launcher.ops.follow import Follower
        if follow and record.state == reg.QUEUED:
            record = self.wait_started(record.id, note)
            if record.terminal and record.started_at is None:
                return None
        view = self.log_view(record)  # the job dirs the engine's nodes write (Slurm: one, shared)
        hosts = {h.name: h for h in parse_hostfile(view.hostfile_text, f"registry:{view.id}")}
        if node is not None and node not in hosts:
            raise InputError(f"job {view.id} has no node {node!r}; its nodes: {', '.join(hosts)}", key="--node")
        path = self.offsets_path(view.id) if follow and offsets else None
        if path is not None and not resume and path.exists():
            path.unlink()  # --from-start: read every file from byte 0 again
        if follow:
            from launcher.ops.telemetry import telemetry_path
            kw.setdefault("telemetry_path", telemetry_path(self.state_dir, view.id))
        follower = Follower(view, runner_for, hosts, sink, self if follow else None, follow=follow,
                            gang_stop=not view.terminal, offsets_path=path, **kw)
        with self.watching(view, note) if follow else nullcontext(), display or nullcontext():
            return follower.run()

    def offsets_path(self, job_id: str) -> Path:
        """Where a follower of the job keeps each file's offset (a later follow resumes there)."""
        return self.state_dir / "follow" / f"{job_id}.json"

    @contextmanager
    def watching(self, record: reg.JobRecord, note: Callable[[str], None] = lambda s: None) -> Iterator[None]:
        """:meth:`watch` in a thread beside a follower of a running job, stopped AND joined on
        the way out: a watch still mid-refresh wrote into the caller's registry after the
        caller had closed it ("Cannot operate on a closed database" in the watch thread)."""
        if record.terminal:
            yield
            return
        stop = threading.Event()
        thread = threading.Thread(target=self.watch, args=(record.id, stop), kwargs={"note": note}, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(WATCH_JOIN_S)

    # ------------------------------------------------------------------ the target
    @abstractmethod
    def check(self, target: Any, *, timeout: float = 10.0, **policy: Any) -> CheckReport:
        """``hosts check``: is the target ready for a job."""

    def top_source(self, target: Any, *, bin_dir: str | None = None, interval: float = 2.0,
                   timeout: float = 15.0) -> TopSource:
        """``alaunch top`` and the dashboard's cards page: the target's hosts, each asked once per
        refresh (``remote/stage.py``'s TOP) over a connection kept between refreshes."""
        from launcher.ops.cards import Surveyor
        from launcher.runners import default_bin_dir, python_for
        hosts = target.node_hosts()
        bins = bin_dir if bin_dir is not None else default_bin_dir(hosts)
        return Surveyor(hosts, self.exec_factory, {h.name: python_for(bins, h) for h in hosts}, interval, timeout)

    def prune(self, target: Any, opts: PruneOptions) -> dict[str, HostPrune]:
        """``alaunch prune`` on the target's staging hosts (never a queued or running job)."""
        from launcher.ops.prune import prune_hosts
        return prune_hosts(target.stage_hosts(), self.exec_factory, self.registry, opts)
