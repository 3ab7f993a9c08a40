"""`alaunch jobs`, `alaunch status JOB`, `alaunch cancel JOB`: the registry, refreshed from the hosts."""

from __future__ import annotations

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


def status_table(record: reg.JobRecord, statuses) -> Table:
    """The key columns (node, host, state) never shrink below their content, at any width (80
    columns in a pipe included: rich used to collapse them to nothing to fit a long detail);
    the detail folds onto more lines instead."""
    from rich.table import Table

    table = Table(title=f"{record.id} ({record.name}): {record.state}")
    for name, values in (("node", [str(s.node_rank) for s in statuses]), ("host", [s.host for s in statuses]),
                         ("state", [s.state for s in statuses])):
        table.add_column(name, no_wrap=True, min_width=max([len(name)] + [len(v) for v in values]))
    table.add_column("exit", no_wrap=True)
    table.add_column("procs", no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=1)
    for s in statuses:
        table.add_row(str(s.node_rank), s.host, s.state, "" if s.exit_code is None else str(s.exit_code),
                      str(s.processes), s.detail)
    return table


def jobs_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    limit: int = typer.Option(20, "--limit", "-n", help="How many jobs to show (a page)."),
    offset: int = typer.Option(0, "--offset", help="Skip this many of the newest (the next page)."),
    state: list[str] = typer.Option([], "--state", help="Only jobs in this state (repeatable), e.g. running; "
                                                       "a wrong one lists the valid states."),
) -> None:
    """``alaunch jobs``: a page of the registry, then the newest pipeline run's steps."""
    env = environment.current()
    records = load_jobs(env, limit, state or None, offset)
    if as_json:
        env.stdout.print(json.dumps(jobs_json(records), indent=2), markup=False, highlight=False, soft_wrap=True)
        return
    env.stdout.print(jobs_table(records))
    from launcher.ops import registry as reg
    with reg.Registry.in_state_dir(env.state_dir) as registry:
        runs = registry.pipelines(limit=1)
    if runs:  # the newest pipeline run, as its table of steps
        from launcher.cli.pipelineview import steps_table
        env.stdout.print(steps_table(runs[0]))


def load_jobs(env: environment.Environment, limit: int, states: list[str] | None, offset: int) -> list:
    """A page of records, brought up to date where that costs no host: a queued job whose
    waiting ``submit`` died, and live Slurm jobs (one ``squeue`` per login node for all)."""
    from launcher.ops import registry as reg

    with reg.Registry.in_state_dir(env.state_dir) as registry:
        records = registry.list(limit=limit, states=states, offset=offset)
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
                records = registry.list(limit=limit, states=states, offset=offset)
    return records


def jobs_json(records) -> list[dict]:
    """``jobs --json``: one object per job with its nodes."""
    return [{"id": r.id, "name": r.name, "kind": r.kind, "state": r.state, "created_at": r.created_at,
             "started_at": r.started_at, "ended_at": r.ended_at, "reason": r.reason,
             "nodes": [{"rank": n.node_rank, "host": n.host, "state": n.state, "exit_code": n.exit_code,
                        "pid": n.pid, "job_dir": n.job_dir} for n in r.nodes]} for r in records]


def jobs_table(records) -> Table:
    """The jobs table; the key columns keep their content at any width (80 in a pipe)."""
    from rich.table import Table

    table = Table()
    for name in ("id", "state"):
        width = max([len(name)] + [len(r.id if name == "id" else r.state) for r in records])
        table.add_column(name, no_wrap=True, min_width=width)
    table.add_column("name", overflow="fold")
    table.add_column("kind", overflow="fold")
    table.add_column("nodes", overflow="fold")
    table.add_column("created", overflow="fold")
    table.add_column("reason", overflow="fold", ratio=1)
    for r in records:
        table.add_row(r.id, r.state, r.name, r.kind, ", ".join(n.host for n in r.nodes),
                      r.created_at[:19].replace("T", " "), r.reason or "")
    return table


def status_cmd(
    job: str = typer.Argument(..., help="Job id, unique id prefix, or name (newest)."),
    known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None,
    accept_new: AcceptNewOpt = False,
    as_json: bool = typer.Option(False, "--json", help="A job: print its record, nodes and card telemetry as JSON."),
) -> None:
    """``alaunch status JOB|PIPELINE``: refresh from the hosts; the exit code tells the state."""
    from launcher.cli.pipelineview import pipeline_ref

    env = environment.current()
    run = pipeline_ref(env.state_dir, job)
    code = pipeline_status(env, run) if run is not None else job_status(env, job, known_hosts, ssh_config,
                                                                          accept_new, as_json)
    if code:
        raise typer.Exit(code)


def pipeline_status(env: environment.Environment, run) -> int:
    """``status PIPELINE`` (a pipeline file, name or run id): its steps; 0 only when it succeeded."""
    from launcher.cli.pipelineview import steps_table
    from launcher.ops.service import STATE_EXIT

    env.stdout.print(steps_table(run))
    return 0 if run.state == "succeeded" else int(STATE_EXIT.get(run.state, ExitCode.JOB_FAILED))


def job_status(env: environment.Environment, job: str, known_hosts, ssh_config, accept_new: bool,
               as_json: bool = False) -> int:
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
    env.stdout.print(status_table(record, statuses))
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
    80 columns (no box lines, HBM in GB, power and temperature whole)."""
    from rich import box
    from rich.table import Table

    def cell(row: dict, metric: str, scale: float = 1.0, digits: int = 0) -> str:
        v = row[metric]
        if v["last"] is None:
            return "-"
        last, lo, hi = (f"{x * scale:.{digits}f}" for x in (v["last"], v["min"], v["max"]))
        return f"{last} ({lo}-{hi})"

    totals = sorted({r["hbm_total_mb"] for r in rows if r["hbm_total_mb"]})
    of = f" of {'/'.join(f'{t / 1024:g}' for t in totals)} GB" if totals else ""
    hosts = sorted({r["host"] for r in rows})
    where = f" on {hosts[0]}" if len(hosts) == 1 else ""  # else each card is host/card
    table = Table(title=f"cards{where}: last (min-max) while followed; HBM{of}", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    table.add_column("card", overflow="fold")  # host/card folds onto two lines at 80 columns
    for name in ("health", "AI Core %", "HBM GB", "power W", "temp C"):
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
        record, outcome = service.cancel(job, grace)
    for host, message in outcome.items():
        env.stdout.print(f"{host}: {message}", markup=False, highlight=False)
    env.stdout.print(f"{record.id}: {record.state}", markup=False, highlight=False)
    if any(m.startswith("not verified") for m in outcome.values()):
        raise typer.Exit(int(ExitCode.JOB_UNKNOWN))  # something may still run there


def register(app: typer.Typer) -> None:
    app.command("jobs", help="List jobs, newest first.")(jobs_cmd)
    app.command("status", help="Refresh a job from its hosts; exit 0/100/101/102/103 by state.")(status_cmd)
    app.command("cancel", help="Stop a job's processes on every node and verify they are gone.")(cancel_cmd)
