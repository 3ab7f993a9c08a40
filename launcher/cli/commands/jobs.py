"""`alaunch jobs`, `alaunch status JOB`, `alaunch cancel JOB`: the registry, refreshed from the hosts."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import typer

from launcher.cli import environment
from launcher.cli.options import AcceptNewOpt, KnownHostsOpt, SshConfigOpt
from launcher.errors import ExitCode

if TYPE_CHECKING:  # annotations only: verbs import their stacks when they run
    from rich.table import Table

    from launcher.ops import registry as reg

ORDER = 35


def status_table(record: reg.JobRecord, statuses, width: int = 80, *, wide: bool = False) -> Table:
    """One line per node at any width (:mod:`launcher.cli.tables`): node, host, state, exit and
    procs whole, the detail cut to one line (``status`` prints a cut detail in full below)."""
    from launcher.cli import tables as t

    columns = [t.Column("node", t.KEEP), t.Column("host", t.KEEP), t.Column("state", t.KEEP),
               t.Column("exit", t.KEEP), t.Column("procs", t.KEEP), t.Column("detail", min_width=12)]
    rows = [[str(s.node_rank), s.host, s.state, "" if s.exit_code is None else str(s.exit_code),
             str(s.processes), s.detail] for s in statuses]
    return t.table(columns, rows, width, wide=wide, title=f"{record.id} ({record.name}): {record.state}")


def cut_details(statuses, table: Table) -> list[str]:
    """``node N (HOST): DETAIL`` for each node whose detail the table could not show whole."""
    from launcher.cli.tables import cut_rows, one_line

    return [f"node {statuses[n].node_rank} ({statuses[n].host}): {one_line(statuses[n].detail)}"
            for n in cut_rows(table, "detail", [s.detail for s in statuses])]


def jobs_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    limit: int = typer.Option(20, "--limit", "-n", help="How many jobs to show (a page)."),
    offset: int = typer.Option(0, "--offset", help="Skip this many of the newest (the next page)."),
    state: list[str] = typer.Option([], "--state", help="Only jobs in this state (repeatable), e.g. running; "
                                                       "a wrong one lists the valid states."),
    wide: bool = typer.Option(False, "--wide", "-w", help="Every column whole (full ids, reasons, times)."),
    show_all: bool = typer.Option(False, "--all", "-a", help="Also submits refused before launch (unreachable "
                                                              "host, busy cards, bad key)."),
) -> None:
    """``alaunch jobs``: a page of the registry, then the newest pipeline run's steps."""
    env = environment.current()
    records = load_jobs(env, limit, state or None, offset, refused=show_all)
    if as_json:
        env.stdout.print(json.dumps(jobs_json(records), indent=2), markup=False, highlight=False, soft_wrap=True)
        return
    from launcher.cli.tables import print_table
    from launcher.ops import registry as reg
    with reg.Registry.in_state_dir(env.state_dir) as registry:
        runs = registry.pipelines(limit=1)
        ids = registry.ids_and_names()
    print_table(env.stdout, jobs_table(records, env.stdout.width, wide=wide, ids=ids), wide=wide)
    if runs:  # the newest pipeline run, as its table of steps
        from launcher.cli.pipelineview import steps_table
        print_table(env.stdout, steps_table(runs[0], env.stdout.width, wide=wide, ids=ids), wide=wide)


def load_jobs(env: environment.Environment, limit: int, states: list[str] | None, offset: int,
              refused: bool = True) -> list:
    """A page of records, brought up to date where that costs no host: a queued job whose
    waiting ``submit`` died, and live Slurm jobs (one ``squeue`` per login node for all)."""
    from launcher.ops import registry as reg

    with reg.Registry.in_state_dir(env.state_dir) as registry:
        records = registry.list(limit=limit, states=states, offset=offset, refused=refused)
        if any(r.state == reg.QUEUED and "waiter" in r.meta for r in records):  # `submit --wait` died?
            from launcher.ops import waiter
            records = [waiter.check(registry, r) for r in records]
        if any(not r.terminal for r in records):  # engines that answer for all live jobs at once (Slurm)
            from launcher.ops.engines import refresh_listed

            def factory():
                from launcher.cli.connect import runner_factory  # only then: `jobs` starts fast
                return runner_factory(None, None, False)
            failed = refresh_listed(registry, env.state_dir, records, factory)
            for where, why in failed.items():
                env.stderr.print(f"alaunch: could not ask {where} ({why}); its jobs show their "
                                 "last recorded state", markup=False, highlight=False, soft_wrap=True)
            if failed or any(not r.terminal for r in records):
                records = registry.list(limit=limit, states=states, offset=offset, refused=refused)
    return records


def jobs_json(records) -> list[dict]:
    """``jobs --json``: one object per job with its nodes (``refused``: refused before launch)."""
    from launcher.ops.registry import REFUSED
    return [{"id": r.id, "name": r.name, "kind": r.kind, "state": r.state, "created_at": r.created_at,
             "started_at": r.started_at, "ended_at": r.ended_at, "reason": r.reason,
             "refused": bool(r.meta.get(REFUSED)),
             "nodes": [{"rank": n.node_rank, "host": n.host, "state": n.state, "exit_code": n.exit_code,
                        "pid": n.pid, "job_dir": n.job_dir} for n in r.nodes]} for r in records]


def age(iso: str | None, now: dt.datetime) -> str:
    """``45s``, ``12m``, ``3h``, ``5d``: how long ago (``jobs``' age column; ``--wide`` adds the time)."""
    if not iso:
        return "-"
    then = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if then.tzinfo is None:
        then = then.replace(tzinfo=dt.timezone.utc)
    s = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def nodes_short(text: str) -> str:
    """``10.213.0.10 +1``: the first host whole and how many more (never a host cut in two)."""
    hosts = text.split(", ")
    return text if len(hosts) < 2 else f"{hosts[0]} +{len(hosts) - 1}"


def jobs_table(records, width: int = 80, *, wide: bool = False, ids: tuple[list[str], list[str]] | None = None,
               now: dt.datetime | None = None) -> Table:
    """The jobs table, one line per job at any width (:mod:`launcher.cli.tables`): id, state,
    nodes and age whole, the id as its shortest unique prefix when space is short (``ids``: every
    id and name of the registry; any command takes that prefix), the reason cut to one line."""
    from launcher.cli import tables as t

    now = now or dt.datetime.now(dt.timezone.utc)
    all_ids, names = ids if ids is not None else ([r.id for r in records], [r.name for r in records])
    prefixes = t.unique_prefixes([r.id for r in records], all_ids, names)
    columns = [t.Column("id", t.ID, priority=2, short=lambda v: prefixes.get(v, v), min_width=12),
               t.Column("state", t.KEEP), t.Column("name", priority=1), t.Column("kind", priority=0, min_width=t.WHOLE),
               t.Column("nodes", t.KEEP, short=nodes_short), t.Column("age", t.KEEP),
               t.Column("reason", priority=3, min_width=20)]
    rows = [[r.id, "refused" if r.meta.get("refused") else r.state, r.name, r.kind,
             ", ".join(n.host for n in r.nodes), age(r.created_at, now), r.reason or ""] for r in records]
    if wide:
        columns.insert(6, t.Column("created", t.KEEP))
        for r, row in zip(records, rows, strict=False):
            row.insert(6, r.created_at[:19].replace("T", " "))
    return t.table(columns, rows, width, wide=wide)


def status_cmd(
    job: str = typer.Argument(..., help="Job id, unique id prefix, or name (newest)."),
    known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None,
    accept_new: AcceptNewOpt = False,
    wide: bool = typer.Option(False, "--wide", "-w", help="Every column whole (full ids and details)."),
    as_json: bool = typer.Option(False, "--json", help="A job: print its record, nodes and card telemetry as JSON."),
) -> None:
    """``alaunch status JOB|PIPELINE``: refresh from the hosts; the exit code tells the state."""
    from launcher.cli.pipelineview import pipeline_ref

    env = environment.current()
    run = pipeline_ref(env.state_dir, job)
    code = pipeline_status(env, run, wide) if run is not None else job_status(env, job, known_hosts, ssh_config,
                                                                                accept_new, wide, as_json)
    if code:
        raise typer.Exit(code)


def pipeline_status(env: environment.Environment, run, wide: bool = False) -> int:
    """``status PIPELINE`` (a pipeline file, name or run id): its steps; 0 only when it succeeded."""
    from launcher.cli.pipelineview import steps_table
    from launcher.cli.tables import print_table
    from launcher.ops import registry as reg
    from launcher.ops.service import STATE_EXIT

    with reg.Registry.in_state_dir(env.state_dir) as registry:
        ids = registry.ids_and_names()
    print_table(env.stdout, steps_table(run, env.stdout.width, wide=wide, ids=ids), wide=wide)
    return 0 if run.state == "succeeded" else int(STATE_EXIT.get(run.state, ExitCode.JOB_FAILED))


def job_status(env: environment.Environment, job: str, known_hosts, ssh_config, accept_new: bool,
               wide: bool = False, as_json: bool = False) -> int:
    """``status JOB``: the node table and reason; the state's exit code (unknown while a live
    job has a node we could not reach)."""
    from launcher.cli.connect import job_service
    from launcher.ops.service import STATE_EXIT

    registry, service = job_service(env, known_hosts, ssh_config, accept_new, job)
    with registry:
        record, statuses = service.refresh(job)
    code = STATE_EXIT[record.state]
    if not record.terminal and any(s.state == "unknown" for s in statuses):
        code = ExitCode.JOB_UNKNOWN
    telemetry = job_telemetry(env.state_dir, record.id)
    if as_json:
        env.stdout.print(json.dumps(status_json(record, statuses, telemetry), indent=2), markup=False,
                         highlight=False, soft_wrap=True)
        return int(code)
    from launcher.cli.tables import print_table
    table = status_table(record, statuses, env.stdout.width, wide=wide)
    print_table(env.stdout, table, wide=wide)
    for line in cut_details(statuses, table):
        env.stdout.print(line, markup=False, highlight=False, soft_wrap=True)
    if telemetry:
        env.stdout.print(telemetry_table(telemetry))
    from launcher.metrics.stragglers import from_tails
    for slow in from_tails({s.host: s.tails for s in statuses if s.tails}):
        env.stdout.print(f"straggler: {slow.text()}", markup=False, highlight=False, soft_wrap=True)
    if record.reason:
        env.stdout.print(f"reason: {record.reason}", markup=False, highlight=False, soft_wrap=True)
    return int(code)


def job_telemetry(state_dir, job_id: str) -> list[dict]:
    """Per card (host, card, health, last/min/max of AI Core %, HBM MB, power W, temp C) as the
    job's follower sampled them; empty when no follower sampled (no npu-smi, not followed)."""
    from launcher.metrics.telemetry import summary_rows
    from launcher.ops.telemetry import load_telemetry, telemetry_path

    data = load_telemetry(telemetry_path(state_dir, job_id))
    return summary_rows(data) if data is not None else []


def status_json(record: reg.JobRecord, statuses, telemetry: list[dict]) -> dict:
    """``status --json``: the job (as ``jobs --json``), each node's refreshed state, the cards."""
    return {**jobs_json([record])[0],
            "node_status": [{"rank": s.node_rank, "host": s.host, "state": s.state, "exit_code": s.exit_code,
                             "processes": s.processes, "detail": s.detail} for s in statuses],
            "telemetry": telemetry}


def telemetry_table(rows: list[dict]) -> Table:
    """One line per card: health, then each metric's last value and its (min-max) so far; fits
    80 columns (no box lines, HBM in GiB: npu-smi's MB are MiB, power and temperature whole)."""
    from rich import box
    from rich.table import Table

    def cell(row: dict, metric: str, scale: float = 1.0, digits: int = 0) -> str:
        v = row[metric]
        if v["last"] is None:
            return "-"
        last, lo, hi = (f"{x * scale:.{digits}f}" for x in (v["last"], v["min"], v["max"]))
        return f"{last} ({lo}-{hi})"

    totals = sorted({r["hbm_total_mb"] for r in rows if r["hbm_total_mb"]})
    of = f" of {'/'.join(f'{t / 1024:g}' for t in totals)} GiB" if totals else ""
    hosts = sorted({r["host"] for r in rows})
    where = f" on {hosts[0]}" if len(hosts) == 1 else ""  # else each card is host/card
    table = Table(title=f"cards{where}: last (min-max) while followed; HBM{of}", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    table.add_column("card", overflow="fold")  # host/card folds onto two lines at 80 columns
    for name in ("health", "AI Core %", "HBM GiB", "power W", "temp C"):
        table.add_column(name, no_wrap=True)
    for r in rows:
        table.add_row(str(r["card"]) if where else f"{r['host']}/{r['card']}", r["health"], cell(r, "aicore_pct"),
                      cell(r, "hbm_used_mb", 1 / 1024, 1), cell(r, "power_w"), cell(r, "temp_c"))
    return table


def cancel_cmd(
    job: str = typer.Argument(..., help="Job id, unique id prefix, or name (newest)."),
    grace: float = typer.Option(10.0, "--grace", help="Seconds between SIGTERM and SIGKILL."),
    known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None,
    accept_new: AcceptNewOpt = False,
) -> None:
    """``alaunch cancel JOB``: one line per host, then the state; unknown if a host could not verify."""
    from launcher.cli.connect import job_service

    env = environment.current()
    registry, service = job_service(env, known_hosts, ssh_config, accept_new, job)
    with registry:
        before = registry.get(job)
        record, outcome = service.cancel(job, grace)
    for host, message in outcome.items():
        env.stdout.print(f"{host}: {message}", markup=False, highlight=False)
    env.stdout.print(cancel_line(before, record), markup=False, highlight=False, soft_wrap=True)
    if any(m.startswith("not verified") for m in outcome.values()):
        raise typer.Exit(int(ExitCode.JOB_UNKNOWN))  # something may still run there


def cancel_line(before: reg.JobRecord, after: reg.JobRecord) -> str:
    """``ID: cancelled``, or for a job that had ended (before the cancel, or found ended by its
    last look at the hosts) ``ID: had already ended (succeeded at ...); its state is kept``."""
    from launcher.ops.registry import CANCELLED
    if before.terminal or after.state != CANCELLED:
        when = f" at {after.ended_at[:19].replace('T', ' ')}" if after.ended_at else ""
        return f"{after.id}: had already ended ({after.state}{when}); its state is kept"
    return f"{after.id}: {after.state}"


def register(app: typer.Typer) -> None:
    app.command("jobs", help="List jobs, newest first.")(jobs_cmd)
    app.command("status", help="Refresh a job from its hosts; exit 0/100/101/102/103 by state.")(status_cmd)
    app.command("cancel", help="Stop a job's processes on every node and verify they are gone.")(cancel_cmd)
