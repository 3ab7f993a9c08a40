"""The job service: submit (load -> hosts -> survey -> render -> registry -> plan -> stage ->
launch), status refresh from the hosts, cancel, and a simple wait for ``--follow``.

This is the one place that writes the registry for a job's lifecycle; plan, stage and launch
stay pure or host-facing. Every failure after the job is recorded leaves it FAILED with the
reason, so ``alaunch jobs`` tells the story even when ``submit`` died half way.

Gang rules (a distributed job lives or dies whole; one dead rank leaves the others hung in a
collective, holding NPUs):

* Any node failing stops the others, whoever notices it: the follower (``fail``), ``status``
  (``refresh``), ``fetch`` (which refreshes).
* ``cancel`` always leaves nothing of the job running, whatever the recorded state: a FAILED
  (or SUCCEEDED) job with survivors has them stopped, and the answer says so.
* A cancel during staging wins: the state becomes CANCELLED at once; ``submit`` checks it before
  launching (nothing starts) and after (what started is stopped).
* Once cancel is asked no other end state can be recorded: CANCELLED is written *before* the
  processes are stopped, and every other end is written with
  ``Registry.set_state_unless_ended`` (check and write in one transaction), so a refresh racing
  with the cancel finds it ended and writes nothing over it.
"""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from launcher.core import cards as core_cards
from launcher.core import validate
from launcher.core.hostfile import Host, format_hostfile, parse_hostfile
from launcher.core.layout import JobLayout, new_job_id
from launcher.core.plan import DEFAULT_CLUSTER_TIME_OUT, DEFAULT_PORT_RANGE, WRAPPER, Plan, build_plan, env_script_vars
from launcher.core.render import Rendered, render_job, resolve_world
from launcher.core.spec import JobSpec, load_job
from launcher.errors import AlaunchError, ExitCode, InputError, RemoteError
from launcher.ops import cards as card_ops
from launcher.ops import mfcheck, proc, waiter
from launcher.ops import registry as reg
from launcher.ops.engine import SKEW_KEYS, CheckReport, Engine, HostTarget, JobCancelled  # noqa: F401 (JobCancelled: callers import it here)
from launcher.ops.fanout import run_parallel
from launcher.ops.launch import Launcher, NodeStatus, launch_all, master_port, reach_check
from launcher.ops.stage import Inventory, LocalSet, Stager, inventory, resolve_home, store_base
from launcher.runners import CommandRunner, default_bin_dir, python_for, resolve_address

LISTED_NODES = 8  # a 64-node job's line would be 64 entries long: `alaunch status` has them all


STATE_EXIT = {reg.SUCCEEDED: ExitCode.OK, reg.FAILED: ExitCode.JOB_FAILED, reg.RUNNING: ExitCode.JOB_RUNNING,
              reg.STAGING: ExitCode.JOB_RUNNING, reg.PENDING: ExitCode.JOB_RUNNING, reg.QUEUED: ExitCode.JOB_RUNNING,
              reg.CANCELLED: ExitCode.JOB_CANCELLED}


@dataclass(frozen=True)
class SubmitOptions:
    sets: tuple[str, ...] = ()
    master_port: int | None = None  # pinned by the user; else a free one on node 0
    bin_dir: str | None = None  # put first on PATH on the hosts (where msrun and python live)
    cluster_time_out: int = DEFAULT_CLUSTER_TIME_OUT
    check_mindformers: bool = False
    ssh_config: str | None = None  # resolves node 0's address (its HostName) as the runners do
    master_port_range: tuple[int, int] = DEFAULT_PORT_RANGE  # where node 0's free port is picked
    devices: tuple[int, ...] | None = None  # --devices: the candidate cards on every node (pins them)
    wait: bool = False  # --wait: queue until the cards are free instead of refusing
    poll: float = 2.0  # seconds between looks while queued


def used_hosts(spec: JobSpec, hosts: Sequence[Host]) -> list[Host]:
    """The first ``nodes`` hosts, each with ``cards_per_node`` of its (filtered) slots."""
    world = resolve_world(spec, hosts)
    return [replace(h, slot_ids=h.slot_ids[:world.cards_per_node]) for h in list(hosts)[:world.nodes]]


def version_skew(versions: Mapping[str, Mapping[str, str | None] | None]) -> list[str]:
    """host -> its versions (in node order) -> one line per package whose versions differ,
    naming the hosts on each side (a package absent everywhere is no skew)."""
    problems = []
    for key in SKEW_KEYS:
        seen: dict[str, list[str]] = {}
        for host, v in versions.items():
            seen.setdefault(str((v or {}).get(key) or "none"), []).append(host)
        if len(seen) > 1:
            problems.append(f"{key} differs between nodes: " + "; ".join(
                f"{ver} on {', '.join(hosts)}" for ver, hosts in seen.items()))
    return problems


@dataclass(frozen=True)
class LocalJob:
    """What submit knows before touching a host (phase 1)."""

    spec: JobSpec
    hosts: tuple[Host, ...]
    job_id: str
    opts: SubmitOptions
    spec_text: str
    pythons: dict[str, str]
    files: LocalSet | None = None  # hashed code and data (phase 1b)
    candidates: tuple[Host, ...] = ()  # the used hosts with every card the job may get there
    meta: dict = field(default_factory=dict)  # extra registry meta (a pipeline step's ids)


@dataclass(frozen=True)
class Preflight:
    """What one round of questions to the hosts told us (phase 2)."""

    inventories: dict[str, Inventory]
    roots: dict[str, str]  # host -> job root, home resolved
    port: int


def shared_job_dirs(hosts: Sequence[Host], pre: Preflight) -> dict[str, int]:
    """node rank -> the first node rank whose job dir is the same directory (same store id
    on the same filesystem, same path): an NFS/SFS workdir. Fetch reads such a dir once."""
    first: dict[tuple[str, str], int] = {}
    out: dict[str, int] = {}
    for rank, h in enumerate(hosts):
        key = (pre.inventories[h.name].fsid, pre.roots[h.name])
        if key in first:
            out[str(rank)] = first[key]
        else:
            first[key] = rank
    return out


@dataclass
class Prepared:
    spec: JobSpec
    hosts: list[Host]
    rendered: dict[str, Rendered]  # per host name (same object when roots agree)
    plan: Plan
    warnings: list[str] = field(default_factory=list)  # what MindFormers resolves by itself (validate)


def prepare(spec: JobSpec, hosts: Sequence[Host], job_id: str, port: int, opts: SubmitOptions,
            roots: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None) -> Prepared:
    """Render (once per distinct job root) and plan: pure apart from reading the template."""
    template_text = spec.template_path().read_text(encoding="utf-8")
    roots = dict(roots or {h.name: JobLayout.for_job(h.remote_workdir, job_id).root for h in hosts})
    by_root: dict[str, Rendered] = {}
    warnings: list[str] = []
    for h in hosts:
        if roots[h.name] not in by_root:
            r = render_job(spec, hosts, JobLayout(roots[h.name]), opts.sets, template_text=template_text)
            warnings += [w for w in validate.check_static(r.config, r.derived, source=spec.source)
                         if w not in warnings]
            if opts.check_mindformers:  # the real-MindFormers layer (slow import), on request
                check = mfcheck.check_with_mindformers(r.text, r.config, source=spec.source)
                if check.skipped:
                    raise AlaunchError(f"--validate: {check.detail}")
            by_root[roots[h.name]] = r
    rendered = {h.name: by_root[roots[h.name]] for h in hosts}
    plan = build_plan(spec, rendered[hosts[0].name].text, hosts, job_id, port, roots=roots,
                      addresses={h.name: resolve_address(h, opts.ssh_config) for h in hosts[:1]}, environ=environ,
                      bin_dir=opts.bin_dir if opts.bin_dir is not None else default_bin_dir(hosts),
                      cluster_time_out=opts.cluster_time_out)
    return Prepared(spec, list(hosts), rendered, plan, warnings)


def hosts_of(target: HostTarget | Sequence[Host]) -> list[Host]:
    """A hostfile target's hosts (a plain list of hosts is taken as it is)."""
    return target.node_hosts() if isinstance(target, HostTarget) else list(target)


LOST_AFTER_S = 3600.0  # a node unreachable this long is lost: the job ends FAILED (see JobService._lost)


def dry_run_port(opts: SubmitOptions, node0: str, ports: Mapping[str, int | None],
                 asked: object) -> tuple[int, str]:
    """``plan``'s master port and its comment line: the port node 0 answered to the same
    request submit's preflight sends (plan printed msrun's 8118 while submit picked from
    29500-29899, issue #33), or, when node 0 was not asked, what submit will do."""
    lo, hi = opts.master_port_range
    got = ports.get(node0)
    if opts.master_port is not None:
        if node0 in ports and got is None:
            return opts.master_port, (f"# master port: {opts.master_port} (pinned) is in use on {node0} now; "
                                      "submit would refuse it\n")
        return opts.master_port, f"# master port: {opts.master_port} (pinned)\n"
    if got is not None:
        return got, (f"# master port: {got}, free on {node0} now (submit picks again there, from {lo}-{hi})\n")
    why = "--offline" if asked == "--offline" else f"{node0} not asked"
    return lo, (f"# master port: a free one from {lo}-{hi} is picked on {node0} at submit ({why}; "
                f"shown: {lo})\n")


class JobService(Engine):
    """The SSH hosts engine (the local machine is an SSH-less host of it): submit, refresh,
    cancel and wait, against one registry; hosts reached through ``exec_factory``."""

    name = "hosts"

    # ------------------------------------------------------------------ submit

    def dry_run(self, job: str | Path | JobSpec, target: HostTarget | Sequence[Host], opts: SubmitOptions,
                job_id: str, *, offline: bool = True) -> str:
        """``plan``: the cards each node would get (the hosts asked who holds which, read-only,
        unless ``offline``), the staging route, and each node's exact commands."""
        from launcher.core import cards
        from launcher.core.render import apply_job_sets
        from launcher.core.route import parse_mode, staging_note
        spec = apply_job_sets(job if isinstance(job, JobSpec) else load_job(job), opts.sets)
        filtered = hosts_of(target)
        full = list(target.full) if isinstance(target, HostTarget) and target.full else filtered
        if opts.devices is not None:
            filtered = cards.pin_devices(filtered, opts.devices)
        used = used_hosts(spec, filtered)
        candidates, want = filtered[:len(used)], len(used[0].slot_ids)
        held: dict[str, dict[int, cards.Holder] | str]
        ports: dict[str, int | None] = {}
        if offline:
            held = {h.name: "--offline" for h in candidates}
        else:
            bins = opts.bin_dir if opts.bin_dir is not None else default_bin_dir(used)
            held = card_ops.look(candidates, self.exec_factory, {h.name: python_for(bins, h) for h in candidates},
                                 port_ask=dict(port=opts.master_port, pinned=opts.master_port is not None,
                                               port_range=opts.master_port_range), ports=ports)
        chosen = cards.plan_devices(candidates, want, held,
                                    cards.pinned_hosts(full, candidates, want, opts.devices is not None))
        hosts = [replace(h, slot_ids=n.cards) for h, n in zip(candidates, chosen, strict=False)]
        note = staging_note([h.name for h in hosts if not h.is_local], parse_mode(os.environ.get("ALAUNCH_RELAY")),
                            int(os.environ.get("ALAUNCH_RELAY_DEGREE") or 2))
        port, port_note = dry_run_port(opts, candidates[0].name, ports, held.get(candidates[0].name))
        return (cards.render_devices(chosen) + port_note + (f"# staging: {note}\n" if note else "")
                + self.plan_text(spec, hosts, replace(opts, master_port=port), job_id))

    def plan_text(self, spec: JobSpec, target: HostTarget | Sequence[Host], opts: SubmitOptions, job_id: str) -> str:
        """Each node's exact commands (pure: the template is read, no host asked)."""
        port = opts.master_port if opts.master_port is not None else opts.master_port_range[0]
        hosts = used_hosts(spec, hosts_of(target))
        return prepare(spec, hosts, job_id, port, replace(opts, master_port=port)).plan.render_shell()

    def started_line(self, record: reg.JobRecord) -> str:
        """'started ID on N node(s): host (node 0, pid P, devices D), ...' — the first
        :data:`LISTED_NODES` nodes, then how many more. The id (it holds the name) comes first:
        ``submit --follow`` said it only at the end, so a Ctrl-C left no way back to the job."""
        def node(n: reg.NodeRecord) -> str:
            devices = ",".join(map(str, record.meta.get("devices", {}).get(n.host, []))) or "-"
            return f"{n.host} (node {n.node_rank}, pid {n.pid}, devices {devices})"
        shown = [node(n) for n in record.nodes[:LISTED_NODES]]
        more = len(record.nodes) - len(shown)
        return (f"started {record.id} on {len(record.nodes)} node(s): " + ", ".join(shown)
                + (f", and {more} more (alaunch status {record.id})" if more else ""))

    def check(self, target: HostTarget | Sequence[Host], *,  # type: ignore[override]  # the policy, named
              timeout: float = 10.0, require_npus: bool = False,
              min_disk_gb: float = 5.0, python: str | None = None, verify_store: bool = False) -> CheckReport:
        """``hosts check``: one probe per host, all at once (``exec_factory`` should connect
        fresh: a kept master would hide a dead sshd); ``verify_store`` re-hashes each store."""
        from launcher.ops.probe import CheckPolicy, CheckRow, check_host, table_cells, unreachable_row
        policy = CheckPolicy(require_npus=require_npus, min_disk_gb=min_disk_gb, python=python)
        hosts = hosts_of(target)

        def one(host: Host) -> CheckRow:
            with self.exec_factory(host) as runner:
                row = check_host(runner, policy, timeout)
                if verify_store and row.reachable:
                    from launcher.ops.stage import verify_store as verify
                    try:
                        v = verify(runner)  # with the interpreter check_host set on the runner
                    except AlaunchError as exc:
                        row.notes.append(f"store not verified: {exc.message}")
                    else:
                        row.notes.append(f"store: {v['objects']} object(s) verified" + (
                            f", {len(v['bad'])} bad removed ({', '.join(s[:12] for s in v['bad'])})"
                            if v["bad"] else ", all good"))
                return row

        rows = [r if not isinstance(r, BaseException) else unreachable_row(h, r)
                for h, r in run_parallel(hosts, one).items()]
        columns, cells = table_cells(rows)
        failed = [r for r in rows if not r.passed]
        return CheckReport("hosts check", columns, cells, {i for i, r in enumerate(rows) if not r.passed},
                           json=[r.to_json() for r in rows],
                           failure=(f"{len(failed)} of {len(rows)} host(s) failed the check: "
                                    + ", ".join(r.host for r in failed)) if failed else None)

    def resume(self, ref: str, say: Callable[[str], None] = lambda s: None,
               original: JobSpec | None = None) -> reg.JobRecord:
        """Attempt n+1 on the same hosts (:func:`launcher.ops.resume.resume_job`)."""
        from launcher.ops.resume import resume_job
        return resume_job(self, ref, say, original=original)

    def submit(self, job_path: str | Path | JobSpec, hosts: HostTarget | Sequence[Host],
               opts: SubmitOptions = SubmitOptions(), meta: Mapping | None = None) -> reg.JobRecord:
        """The phases, in order: :meth:`local` (load, check, hash — no host) -> :meth:`preflight`
        (one fan-out: each host's home and store inventory, node 0's free port) -> :func:`prepare`
        (pure: render, plan) -> record -> :meth:`stage` -> :meth:`launch` -> record the pids."""
        job = self.local(job_path, hosts_of(hosts), opts)
        if meta:
            job = replace(job, meta=dict(meta))
        runners = {h.name: self.exec_factory(h).using(job.pythons[h.name]) for h in job.hosts}
        try:
            for r in runners.values():
                r.warm()  # the ssh handshakes run while we hash the code and data
            try:
                job = self.hash(job)
                pre = self.preflight(job, runners)
                job, busy = self.allocate(job, pre)
                prepared = prepare(job.spec, job.hosts, job.job_id, pre.port, job.opts, roots=pre.roots)
                for warning in prepared.warnings:
                    self.say(f"warning: {warning}")
            except AlaunchError as exc:
                self.record_failure(job.spec, job.hosts, job.job_id, job.spec_text, exc)
                raise
            self._record(job, pre, prepared)
            try:
                started = self._stage_and_launch(job, pre, prepared, runners, busy)
            except (KeyboardInterrupt, SystemExit):  # Ctrl-C; SIGTERM/SIGHUP take its path in the CLI
                self._interrupted(job.job_id, "interrupted (Ctrl-C or a signal) before the job started")
                raise
        finally:
            _close(runners)
        try:
            return self._started(job, started)
        except (KeyboardInterrupt, SystemExit):
            self._interrupted(job.job_id, "interrupted (Ctrl-C or a signal) while recording the started nodes")
            raise

    def _stage_and_launch(self, job: LocalJob, pre: Preflight, prepared: Prepared,
                          runners: Mapping[str, CommandRunner], busy: core_cards.CardsBusy | None) -> dict:
        """Phases 4-6 of :meth:`submit` on the recorded job: stage, claim the cards, launch."""
        def start() -> dict:
            claimed, plan = self.claim_cards(job, pre, prepared, runners, busy)
            try:
                return self.launch(claimed, plan, runners)
            except AlaunchError:
                self._release_cards(claimed, pre, runners)
                raise

        return self.stage_then_start(job.job_id, lambda: self.stage(job, pre, prepared, runners), start)

    def _release_claims(self, record: reg.JobRecord) -> None:
        """Drop the job's card claims on its hosts: it ended before it started, so no process or
        pid file would ever tell the claim it is dead, and the cards stayed held for the claim's
        pre-start grace (found by the kill drill: a submit SIGKILLed between the claim and the
        launch). Best effort: a host that does not answer lets the claim expire by itself."""
        hosts, pythons = self._nodes(record)

        def one(host: Host) -> bool:
            runner = self.exec_factory(host).single_use().using(pythons.get(host.name))
            try:
                return card_ops.release(runner, store_base(host), record.id)
            finally:
                runner.close()
        run_parallel([hosts[n] for n in dict.fromkeys(n.host for n in record.nodes) if n in hosts], one)

    def _interrupted(self, job_id: str, why: str) -> None:
        """A submit interrupted after the job was recorded: record the end and stop whatever of
        it started on the hosts (found by its marker, pids or not). Before, it stayed
        ``staging`` forever: prune protected its dir, ``logs`` refused, the dashboard polled
        it, and nodes launched before the interrupt ran on unwatched."""
        try:
            self.fail(job_id, why, grace=3.0)
        except AlaunchError as exc:
            self.registry.add_event(job_id, "interrupted", f"could not verify the hosts: {exc.message}")

    def _started(self, job: LocalJob, started: dict) -> reg.JobRecord:
        for rank, s in started.items():
            self.registry.set_node(job.job_id, rank, pid=s.pid, pgid=s.pid, state=reg.RUNNING,
                                   started_at=reg.now_iso())
        if self.registry.set_state_unless_ended(job.job_id, reg.RUNNING):
            return self.registry.get(job.job_id)
        # cancelled while the nodes were starting: stop what started (the cancel may have looked
        # before the processes existed)
        outcome = self._stop_nodes(self.registry.get(job.job_id), 3.0, reg.CANCELLED)
        self.registry.add_event(job.job_id, "cancel-after-launch", "; ".join(f"{h}: {m}" for h, m in outcome.items()))
        return self.registry.get(job.job_id)

    # ------------------------------------------------------------------ cards (issue #14)

    def allocate(self, job: LocalJob, pre: Preflight) -> tuple[LocalJob, core_cards.CardsBusy | None]:
        """Each node's cards, chosen among its candidates that no live claim and no npu-smi
        process holds (pure: :func:`launcher.core.cards.allocate`). Too few free cards: refuse
        (CardsBusy names the holders), or with ``--wait`` go on with the default cards and
        let :meth:`claim_cards` queue."""
        held = {h.name: card_ops.held_cards(pre.inventories[h.name].claims, pre.inventories[h.name].npu_smi,
                                            job.job_id) for h in job.candidates}
        try:
            self._refuse_jumping_the_queue(job, registered=False)
            hosts = core_cards.allocate(job.candidates, len(job.hosts[0].slot_ids), held)
        except core_cards.CardsBusy as exc:
            if not job.opts.wait:
                raise
            return job, exc
        return replace(job, hosts=tuple(hosts)), None

    def claim_cards(self, job: LocalJob, pre: Preflight, prepared: Prepared, runners: Mapping[str, CommandRunner],
                    busy: core_cards.CardsBusy | None) -> tuple[LocalJob, Prepared]:
        """Take the chosen cards on every node under the host's lock. A card taken meanwhile by
        another submit: choose again from what the claim answered. Still short: refuse, or with
        ``--wait`` record the job QUEUED (first come, first served among this registry's queued
        jobs on the same hosts) and look again every ``poll`` seconds until it can claim."""
        want = len(job.hosts[0].slot_ids)
        held: Mapping[str, Mapping[int, core_cards.Holder]] = {h.name: {} for h in job.candidates}
        hosts: Sequence[Host] = job.hosts
        shown = None
        for attempt in range(1_000_000_000):
            try:
                if busy is not None:
                    raise busy
                hosts = core_cards.allocate(job.candidates, want, held) if attempt else list(job.hosts)
                self._refuse_jumping_the_queue(job, registered=True)
                ahead = self._queued_ahead(job) if job.opts.wait else []
                if ahead:
                    raise core_cards.CardsBusy(f"waiting for the earlier queued job(s) {', '.join(ahead)}")
            except core_cards.CardsBusy as exc:
                if not job.opts.wait:
                    raise
                record = self.registry.get(job.job_id)
                if record.state == reg.CANCELLED:
                    raise AlaunchError(f"job {job.job_id} was cancelled while queued",
                                       exit_code=ExitCode.JOB_CANCELLED) from None
                if record.state != reg.QUEUED:
                    self.registry.update_meta(job.job_id, {"waiter": waiter.me()})  # jobs/status: gone -> FAILED
                    self.registry.set_state(job.job_id, reg.QUEUED, exc.bare)
                self.registry.update_meta(job.job_id, {"queue_beat": time.time()})
                line = f"queued (position {len(self._queued_ahead(job)) + 1}): {exc.bare}"
                if line != shown:
                    self.say(line)
                    shown = line
                time.sleep(job.opts.poll)
                answers = self._claim_all(job, pre, prepared, runners, {h.name: () for h in job.candidates})
                held = {a.host: a.held for a in answers.values()}
                busy = None
                continue
            if self.registry.get(job.job_id).state == reg.CANCELLED:
                raise AlaunchError(f"job {job.job_id} was cancelled while queued", exit_code=ExitCode.JOB_CANCELLED)
            answers = self._claim_all(job, pre, prepared, runners, {h.name: h.slot_ids for h in hosts})
            if all(a.ok for a in answers.values()):
                break
            for name, a in answers.items():  # all or none: let the others go while we choose again
                if a.ok:
                    card_ops.release(runners[name], pre.inventories[name].base, job.job_id)
            held = {a.host: a.held for a in answers.values()}
            if attempt >= 5 and not job.opts.wait:
                raise core_cards.CardsBusy(f"could not claim cards after {attempt + 1} tries; taken meanwhile: "
                                           + "; ".join(f"{n}: {core_cards.describe_held(a.held, a.held)}"
                                                       for n, a in answers.items() if not a.ok))
        devices = {h.name: list(h.slot_ids) for h in hosts}
        self.registry.update_meta(job.job_id, {"devices": devices})
        self.registry.add_event(job.job_id, "cards", "; ".join(f"{n}: {','.join(map(str, d))}"
                                                               for n, d in devices.items()))
        if [h.slot_ids for h in hosts] != [h.slot_ids for h in job.hosts]:
            job = replace(job, hosts=tuple(hosts))
            prepared = prepare(job.spec, job.hosts, job.job_id, pre.port, job.opts, roots=pre.roots)
        return job, prepared

    def _claim_all(self, job: LocalJob, pre: Preflight, prepared: Prepared, runners: Mapping[str, CommandRunner],
                   cards: Mapping[str, Sequence[int]]) -> dict[str, card_ops.ClaimAnswer]:
        states = {n.host.name: posixpath.dirname(n.pid_path) for n in prepared.plan.nodes}

        def one(host: Host) -> card_ops.ClaimAnswer:
            return card_ops.claim(runners[host.name], pre.inventories[host.name].base,
                                  job.job_id, cards[host.name], states.get(host.name, ""))
        return {h.name: a for h, a in run_parallel(job.candidates, one).raise_on_failure().items()}

    def _release_cards(self, job: LocalJob, pre: Preflight, runners: Mapping[str, CommandRunner]) -> None:
        def one(host: Host) -> bool:
            return card_ops.release(runners[host.name], pre.inventories[host.name].base, job.job_id)
        run_parallel(job.candidates, one)  # best effort: a dead claim frees itself anyway

    def _refuse_jumping_the_queue(self, job: LocalJob, registered: bool) -> None:
        """First come, first served for every submit, not only ``--wait`` ones: a submit without
        ``--wait`` whose hosts have an earlier job still queued for cards is refused (CardsBusy,
        exit 4) instead of taking the cards that job waits for (it jumped the queue)."""
        if job.opts.wait:
            return
        ahead = self._queued_ahead(job, registered)
        if ahead:
            raise core_cards.CardsBusy(f"job(s) {', '.join(ahead)} queued earlier for cards on these hosts; "
                                       "submit with --wait to queue behind them", {})

    def _queued_ahead(self, job: LocalJob, registered: bool = True) -> list[str]:
        """Queued jobs of this registry on one of our hosts, submitted before us and still waited
        for (their submit looked within the last 10 polls)."""
        ours = {h.name for h in job.candidates}
        me = (self.registry.get(job.job_id).created_at, job.job_id) if registered else ("\uffff", "")
        fresh = time.time() - max(10 * job.opts.poll, 30.0)
        return [r.id for r in reversed(self.registry.list(limit=None, states=[reg.QUEUED]))
                if r.id != job.job_id and (r.created_at, r.id) < me
                and ours & {n.host for n in r.nodes} and r.meta.get("queue_beat", 0) > fresh]

    def local(self, job_path: str | Path | JobSpec, hosts: Sequence[Host], opts: SubmitOptions) -> LocalJob:
        """Phase 1, no host touched: the job file, its local paths, the hosts it uses, its id.
        A JobSpec (a pipeline step's job with its references resolved) is taken as it is."""
        spec, spec_text = self.load(job_path, opts.sets)
        if opts.devices is not None:
            hosts = core_cards.pin_devices(hosts, opts.devices)
        candidates = tuple(hosts)[:len(used_hosts(spec, hosts))]
        hosts = used_hosts(spec, hosts)
        bin_dir = opts.bin_dir if opts.bin_dir is not None else default_bin_dir(hosts)
        return LocalJob(spec, tuple(hosts), new_job_id(spec.name), replace(opts, bin_dir=bin_dir), spec_text,
                        {h.name: python_for(bin_dir, h) for h in hosts}, candidates=candidates)

    def hash(self, job: LocalJob) -> LocalJob:
        """Phase 1b: the code and data to stage, named from the hash cache (:meth:`Engine.hash_files`);
        files it does not name are hashed by :meth:`stage` only when no host's store is empty
        (a first staging sends them unhashed: the hosts name them)."""
        return replace(job, files=self.hash_files(job.spec, hash_new=False))

    def preflight(self, job: LocalJob, runners: Mapping[str, CommandRunner]) -> Preflight:
        """Phase 2, one round trip per host in one fan-out: each host's home and what its store
        already holds (so its job root and what to send), and on node 0 a free master port."""
        node0 = job.hosts[0].name

        files = job.files
        assert files is not None  # hashed in phase 1

        def one(host: Host) -> Inventory:
            ask: dict[str, Any] = dict(port=job.opts.master_port, pinned=job.opts.master_port is not None,
                       port_range=job.opts.master_port_range) if host.name == node0 else {}
            env = {v.name: v.value for v in env_script_vars(host)}
            return inventory(runners[host.name], files.objects, **ask,
                             versions=True, wrapper=WRAPPER, env=env, msrun_flags=bool(job.spec.msrun_args),
                             cards=True)

        inventories = {h.name: inv for h, inv in run_parallel(job.hosts, one).raise_on_failure().items()}
        for h in job.hosts:
            if inventories[h.name].env_error:
                raise RemoteError(h.name, inventories[h.name].env_error)
        for h in job.hosts:
            known = inventories[h.name].msrun_flags
            for arg in job.spec.msrun_args:
                if known is not None and arg.split("=", 1)[0] not in known:
                    raise InputError(f"msrun on {h.name} has no flag {arg.split('=', 1)[0]} "
                                     f"(its flags: {', '.join(known)})", source=job.spec.source, key="msrun_args")
        if len(job.hosts) > 1:
            skew = version_skew({h.name: inventories[h.name].versions for h in job.hosts})
            if skew:
                raise InputError("the nodes run different software; a job needs the same everywhere: "
                                 + " | ".join(skew), key="hostfile")
        roots = {h.name: resolve_home(JobLayout.for_job(h.remote_workdir, job.job_id).root, inventories[h.name].home)
                 for h in job.hosts}
        return Preflight(inventories, roots, master_port(node0, inventories[node0].port, job.opts.master_port))

    def _record(self, job: LocalJob, pre: Preflight, prepared: Prepared) -> None:
        hosts = job.hosts
        self.registry.create_job(
            job.spec.name, job.spec.kind, spec_text=job.spec_text, config_text=prepared.rendered[hosts[0].name].text,
            hostfile_text=format_hostfile(hosts), nodes=[(h.name, pre.roots[h.name]) for h in hosts],
            job_id=job.job_id, meta={"bin_dir": job.opts.bin_dir, "pythons": job.pythons, "master_port": pre.port,
                                     "master_addr": prepared.plan.master_addr, "source": job.spec.source,
                                     "ranks": {str(n.node_rank): list(n.ranks) for n in prepared.plan.nodes},
                                     "shared_with": shared_job_dirs(hosts, pre),
                                     "ssh": self._ssh_meta(),
                                     "submitter": proc.me(),  # judged by refresh while no pid is recorded
                                     "config_sha256": {h.name: prepared.rendered[h.name].sha256 for h in hosts},
                                     "telemetry_every": job.spec.telemetry_every,
                                     **job.meta})

    def stage(self, job: LocalJob, pre: Preflight, prepared: Prepared, runners: Mapping[str, CommandRunner]) -> None:
        """Phase 4: send what each filesystem lacks, make every job dir (config text per host)."""
        texts = {h.name: {"config/job.yaml": prepared.rendered[h.name].text} for h in job.hosts}
        assert job.files is not None  # hashed in phase 1
        relay_to = {h.name: resolve_address(h, job.opts.ssh_config)  # how the hops reach each other
                    for h in job.hosts if len(job.hosts) > 1 and not runners[h.name].local}
        result = Stager(runners, progress=self.progress, addresses=relay_to).stage(
            replace(job.files, texts=texts[job.hosts[0].name]), pre.roots, pre.inventories, texts_by_host=texts)
        self.last_stage_bytes = result.bytes_sent
        self.registry.update_meta(job.job_id, {"staged_bytes": result.bytes_sent})
        route = ""
        if result.relay is not None:
            route = f" (relay: {result.relay.route.describe()}" + (
                f"; direct to {', '.join(sorted(result.relay.failed))}" if result.relay.failed else "") + ")"
        self.registry.add_event(job.job_id, "staged", f"{result.bytes_sent} bytes sent{route}")

    def launch(self, job: LocalJob, prepared: Prepared, runners: Mapping[str, CommandRunner]) -> dict:
        """Phase 5: start msrun detached on every node (all or none)."""
        launchers = {n.node_rank: Launcher(runners[n.host.name], job.job_id) for n in prepared.plan.nodes}
        reach_check(prepared.plan, launchers)
        return launch_all(prepared.plan, launchers)

    def _ssh_meta(self) -> dict:
        """known_hosts / ssh_config used at submit, so status and cancel reach hosts the same way."""
        options = getattr(self.exec_factory, "keywords", {}).get("options")
        if options is None:
            return {}
        return {k: str(getattr(options, k)) for k in ("known_hosts", "ssh_config") if getattr(options, k)}


    # ------------------------------------------------------------------ status

    def _nodes(self, record: reg.JobRecord) -> tuple[dict[str, Host], dict[str, str]]:
        hosts = ({h.name: h for h in parse_hostfile(record.hostfile_text, f"registry:{record.id}")}
                 if record.hostfile_text.strip() else {})
        return hosts, dict(record.meta.get("pythons") or {})

    def refresh(self, ref: str) -> tuple[reg.JobRecord, list[NodeStatus]]:
        """Ask every node of a non-terminal job how it is; update the registry; return both."""
        record = self.registry.get(ref)
        if record.state == reg.QUEUED:  # its waiting submit may be gone (then nothing else would end it)
            record = waiter.check(self.registry, record)
        if record.state in (reg.PENDING, reg.STAGING) and all(n.pid is None for n in record.nodes):
            submitter = record.meta.get("submitter") or {}
            if proc.gone(submitter):  # SIGKILLed mid-submit: nobody else would ever end it
                try:
                    record = self.fail(record.id, f"interrupted: the `alaunch submit` process (pid "
                                                  f"{submitter.get('pid')}) is gone before the job started; "
                                                  "submit it again")
                except AlaunchError:
                    record = self.registry.get(record.id)  # FAILED recorded; a host is unverified
        if record.terminal or not record.nodes or record.nodes[0].pid is None:
            return record, [NodeStatus(n.node_rank, n.host, n.state, n.exit_code, 0) for n in record.nodes]
        hosts, pythons = self._nodes(record)

        def one(node: reg.NodeRecord) -> NodeStatus:
            ex = self.exec_factory(hosts[node.host]).single_use().using(pythons.get(node.host))  # no master of its own
            try:
                return Launcher(ex, record.id).status(JobLayout(node.job_dir).node_state(node.node_rank),
                                                      node.node_rank, job_root=node.job_dir)
            except AlaunchError as exc:
                return NodeStatus(node.node_rank, node.host, "unknown", None, 0, exc.message)
            finally:
                ex.close()

        statuses = list(run_parallel(record.nodes, one).raise_on_failure().values())
        statuses = self._note_reachability(record, statuses)
        lost = self._lost(record, statuses)
        if lost and record.state == reg.RUNNING:
            try:
                self.fail(record.id, lost)
            except AlaunchError as exc:  # the lost node cannot be verified: said, and recorded
                self.registry.add_event(record.id, "gang-stop", f"incomplete: {exc.message}")
            return self.registry.get(record.id), statuses
        for s in statuses:
            fields = {"state": s.state, "exit_code": s.exit_code}
            if s.state in reg.TERMINAL:
                fields["ended_at"] = reg.now_iso()
            self.registry.set_node(record.id, s.node_rank, **fields)
        if record.state not in (reg.RUNNING, reg.QUEUED):
            # pids recorded, RUNNING not yet (the submit writes it next): it judges nothing
            # now (STAGING -> SUCCEEDED is no move); the next refresh does
            return self.registry.get(record.id), statuses
        states = {s.state for s in statuses}
        failed = [s for s in statuses if s.state == reg.FAILED]
        # a cancel (or another refresh) may record the end first: its word stands
        if failed:
            why = "; ".join(f"node {s.node_rank} ({s.host}) exited with code {s.exit_code}"
                            + (f": {s.detail}" if s.detail else "") for s in failed)
            survivors = [s for s in statuses if s.state in ("running", "unknown")]
            if survivors:
                # gang rule: the others hang in a collective; status noticed, status stops them
                try:
                    stopped = self.fail(record.id, why).state == reg.FAILED  # else a cancel came first
                except AlaunchError as exc:
                    stopped = True
                    self.registry.add_event(record.id, "gang-stop", f"incomplete: {exc.message}")
                if stopped:
                    statuses = [replace(s, detail=(s.detail + "; " if s.detail else "") + "stopped (gang rule)")
                                if s in survivors and not s.detail.startswith("unreachable") else s
                                for s in statuses]
            else:
                self.registry.set_state_unless_ended(record.id, reg.FAILED, why)
        elif states == {reg.SUCCEEDED}:
            self.registry.set_state_unless_ended(record.id, reg.SUCCEEDED)
        return self.registry.get(record.id), statuses

    def _note_reachability(self, record: reg.JobRecord, statuses: list[NodeStatus]) -> list[NodeStatus]:
        """A node we could not reach reads ``unreachable since HH:MM:SS`` (the first failed
        contact, kept in the job's meta until it answers again, with its epoch time in
        ``unreachable_at``): no reason to fail the job — until it is lost (:meth:`_lost`)."""
        since = dict(record.meta.get("unreachable_since") or {})
        at = dict(record.meta.get("unreachable_at") or {})
        out, changed = [], False
        for s in statuses:
            if s.state == "unknown" and s.detail and s.detail != "not started":
                if s.host not in since:
                    since[s.host], changed = time.strftime("%H:%M:%S"), True
                if s.host not in at:
                    at[s.host], changed = time.time(), True
                s = replace(s, detail=f"unreachable since {since[s.host]} ({s.detail})")
            elif (s.host in since or s.host in at) and s.state != "unknown":
                since.pop(s.host, None)
                at.pop(s.host, None)
                changed = True
            out.append(s)
        if changed:
            self.registry.update_meta(record.id, {"unreachable_since": since, "unreachable_at": at})
        return out

    def _lost(self, record: reg.JobRecord, statuses: list[NodeStatus]) -> str | None:
        """Why the job is lost: a node unreachable for longer than LOST_AFTER_S (no collective
        waits that long: HCCL's own timeouts end a job whose peer vanished within 30 min), so the
        job cannot still be training. Before, a node that never came back left the job
        ``running`` forever."""
        at = dict(self.registry.get(record.id).meta.get("unreachable_at") or {})
        now = time.time()
        gone = [s for s in statuses if s.state == "unknown" and s.host in at and now - at[s.host] > LOST_AFTER_S]
        if not gone:
            return None
        return "; ".join(f"node {s.node_rank} ({s.host}) lost: unreachable for {int((now - at[s.host]) // 60)} min "
                         f"(over {LOST_AFTER_S // 60:.0f} min); check the host: its processes could not be stopped"
                         for s in gone)

    def wait(self, ref: str, poll: float = 2.0, timeout: float | None = None,
             on_status: Callable[[reg.JobRecord, list[NodeStatus]], None] | None = None) -> reg.JobRecord:
        """Poll until the job ends (the hook the live log follower will replace)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            record, statuses = self.refresh(ref)
            if on_status:
                on_status(record, statuses)
            if record.terminal or (end is not None and time.monotonic() > end):
                return record
            time.sleep(poll)

    # ------------------------------------------------------------------ cancel

    def _stop_nodes(self, record: reg.JobRecord, grace: float, state: str) -> dict[str, str]:
        """Stop every process of the job on every node in parallel; verify none is left.

        Each node stopped and verified is recorded ``state``; one that could not be verified
        is 'unknown'. Returns host -> what happened there."""
        hosts, pythons = self._nodes(record)

        def one(node: reg.NodeRecord) -> tuple[str, int | None]:
            if node.host not in hosts:
                raise AlaunchError(f"{node.host} is not in the job's recorded hostfile")
            ex = self.exec_factory(hosts[node.host]).single_use().using(pythons.get(node.host))
            try:
                out = Launcher(ex, record.id).cancel(node.pid, grace, JobLayout(node.job_dir).node_state(
                    node.node_rank) if node.job_dir else None)
            finally:
                ex.close()
            if out["left"]:
                raise AlaunchError(f"{node.host}: processes {out['left']} still alive after SIGKILL")
            if not out["found"]:
                return "nothing was running", out.get("exit_code")
            killed = " (SIGKILL after the grace period)" if out["sigkill"] else ""
            return f"stopped {out['found']} process(es){killed}", out.get("exit_code")

        outcome: dict[str, str] = {}
        for node, result in run_parallel(record.nodes, one).items():
            if isinstance(result, AlaunchError):
                outcome[node.host] = f"not verified: {result.message}"
                self.registry.set_node(record.id, node.node_rank, state="unknown")
            elif isinstance(result, BaseException):
                raise result
            else:
                outcome[node.host], code = result
                # msrun's exit code as the host recorded it: `status` showed a blank exit for
                # the nodes a failure stopped (issue #33)
                exit_code = {"exit_code": code} if code is not None and node.exit_code is None else {}
                if node.state in reg.TERMINAL:
                    if exit_code:
                        self.registry.set_node(record.id, node.node_rank, **exit_code)
                    continue  # a node that had ended keeps its own end (succeeded / failed)
                self.registry.set_node(record.id, node.node_rank, state=state, ended_at=reg.now_iso(),
                                       **exit_code)
        return outcome

    def cancel(self, ref: str, grace: float = 10.0) -> tuple[reg.JobRecord, dict[str, str]]:
        """Stop every process of the job on every node and verify none is left, whatever the
        recorded state. A live job is recorded CANCELLED *first* (so no concurrent refresh can
        record another end, and a submit still staging starts nothing); an ended one keeps its
        state, and what survived it is stopped and said so."""
        record = self.registry.get(ref)
        if record.state == reg.QUEUED and all(n.pid is None for n in record.nodes):  # nothing runs yet
            return self.registry.set_state(record.id, reg.CANCELLED, "cancelled by the user while queued"), \
                {n.host: "queued: nothing was running" for n in record.nodes}
        if record.state == reg.RUNNING:
            # Ask the nodes before writing CANCELLED: a job whose nodes all exited 0 after the
            # last look (nobody followed it) has succeeded, and a cancel must not overwrite
            # that result with `cancelled` (reproduced: both nodes exited 0, status 102).
            record, _ = self.refresh(record.id)
        was = record.state
        if not record.terminal:
            when = "during staging" if was in (reg.PENDING, reg.STAGING) else ""
            try:
                record = self.registry.set_state(record.id, reg.CANCELLED,
                                                 "cancelled by the user" + (f" {when}" if when else ""))
            except reg.IllegalTransition:
                record = self.registry.get(record.id)  # it ended meanwhile: stop what is left
        if not record.nodes:
            return record, {}
        outcome = self._stop_nodes(record, grace, reg.CANCELLED)
        bad = [h for h, m in outcome.items() if m.startswith("not verified")]
        if bad:
            self.registry.add_event(record.id, "cancel", f"could not verify on {', '.join(bad)}")
        if was in reg.TERMINAL:
            found = {h: m for h, m in outcome.items() if m.startswith("stopped")}
            if found:
                self.registry.add_event(record.id, "cancel", f"the job was {was}; stopped what survived: "
                                        + "; ".join(f"{h}: {m}" for h, m in found.items()))
            outcome = {h: (f"{m} (survivors of a {was} job)" if h in found else m) for h, m in outcome.items()}
        return self.registry.get(record.id), outcome

    def fail(self, ref: str, reason: str, grace: float = 3.0) -> reg.JobRecord:
        """Gang semantics: one rank failed, so record the job FAILED first (a follower killed
        half way still leaves the right state) and stop every node's processes. A job already
        FAILED is stopped again (idempotent: whoever notices stops); a CANCELLED or SUCCEEDED
        one is left to its own end (also when it ends between the look and the write)."""
        record = self.registry.get(ref)
        if record.terminal and record.state != reg.FAILED:
            return record
        if record.state != reg.FAILED and not self.registry.set_state_unless_ended(record.id, reg.FAILED, reason):
            return self.registry.get(record.id)
        record = self.registry.get(record.id)
        outcome = self._stop_nodes(record, grace, reg.FAILED)
        self.registry.add_event(record.id, "gang-stop", "; ".join(f"{h}: {m}" for h, m in outcome.items()))
        if all(n.pid is None for n in record.nodes):
            self._release_claims(record)
        bad = [h for h, m in outcome.items() if m.startswith("not verified")]
        if bad:
            raise AlaunchError(f"job {record.id} FAILED, but could not verify it stopped on {', '.join(bad)}")
        return self.registry.get(record.id)


def _close(execs: Mapping[str, CommandRunner]) -> None:
    for ex in execs.values():
        ex.close()
