"""`alaunch jobs`, `alaunch status JOB`, `alaunch cancel JOB`: the registry, refreshed from the hosts."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, List

import typer

from launcher.cli import environment
from launcher.cli.options import KnownHostsOpt, SshConfigOpt, AcceptNewOpt
from launcher.errors import ExitCode

if TYPE_CHECKING:  # annotations only: verbs import their stacks when they run
    from rich.table import Table

    from launcher.ops import registry as reg

ORDER = 35


def status_table(record: "reg.JobRecord", statuses) -> "Table":
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


def register(app: typer.Typer) -> None:
    @app.command("jobs", help="List jobs, newest first.")
    def jobs_cmd(
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        limit: int = typer.Option(20, "--limit", "-n", help="How many jobs to show (a page)."),
        offset: int = typer.Option(0, "--offset", help="Skip this many of the newest (the next page)."),
        state: List[str] = typer.Option([], "--state", help="Only jobs in this state (repeatable), e.g. running; "
                                                           "a wrong one lists the valid states."),
    ) -> None:
        from rich.table import Table

        from launcher.ops import registry as reg

        env = environment.current()
        with reg.Registry.in_state_dir(env.state_dir) as registry:
            records = registry.list(limit=limit, states=state or None, offset=offset)
            if any(r.state == reg.QUEUED and "waiter" in r.meta for r in records):  # `submit --wait` died?
                from launcher.ops import waiter
                records = [waiter.check(registry, r) for r in records]
            if any(r.meta.get("backend") == "slurm" and not r.terminal for r in records):
                from launcher.cli.connect import runner_factory  # only then: `jobs` starts fast
                from launcher.ops.slurm import SlurmService
                SlurmService(registry, env.state_dir,  # one squeue per login node for all live jobs
                             exec_factory=runner_factory(None, None, False)).refresh_many(records)
                records = registry.list(limit=limit, states=state or None, offset=offset)
        if as_json:
            rows = [{"id": r.id, "name": r.name, "kind": r.kind, "state": r.state, "created_at": r.created_at,
                     "started_at": r.started_at, "ended_at": r.ended_at, "reason": r.reason,
                     "nodes": [{"rank": n.node_rank, "host": n.host, "state": n.state, "exit_code": n.exit_code,
                                "pid": n.pid, "job_dir": n.job_dir} for n in r.nodes]} for r in records]
            env.stdout.print(json.dumps(rows, indent=2), markup=False, highlight=False, soft_wrap=True)
            return
        table = Table()
        for name in ("id", "state"):  # key columns keep their content at any width (80 in a pipe)
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
        env.stdout.print(table)
        with reg.Registry.in_state_dir(env.state_dir) as registry:
            runs = registry.pipelines(limit=1)
        if runs:  # the newest pipeline run, as its table of steps
            from launcher.cli.pipelineview import steps_table
            env.stdout.print(steps_table(runs[0]))

    @app.command("status", help="Refresh a job from its hosts; exit 0/100/101/102/103 by state.")
    def status_cmd(
        job: str = typer.Argument(..., help="Job id, unique id prefix, or name (newest)."),
        known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None,
        accept_new: AcceptNewOpt = False,
    ) -> None:

        from launcher.cli.connect import job_service
        from launcher.ops.service import STATE_EXIT

        env = environment.current()
        from launcher.cli.pipelineview import pipeline_ref
        run = pipeline_ref(env.state_dir, job)
        if run is not None:  # `status PIPELINE`: a pipeline file, name or run id
            from launcher.cli.pipelineview import steps_table
            env.stdout.print(steps_table(run))
            if run.state != "succeeded":
                raise typer.Exit(int(STATE_EXIT.get(run.state, ExitCode.JOB_FAILED)))
            return
        registry, service = job_service(env, known_hosts, ssh_config, accept_new, job)
        with registry:
            record, statuses = service.refresh(job)
        env.stdout.print(status_table(record, statuses))
        if record.reason:
            env.stdout.print(f"reason: {record.reason}", markup=False, highlight=False, soft_wrap=True)
        code = STATE_EXIT[record.state]
        if not record.terminal and any(s.state == "unknown" for s in statuses):
            code = ExitCode.JOB_UNKNOWN
        if code:
            raise typer.Exit(int(code))

    @app.command("cancel", help="Stop a job's processes on every node and verify they are gone.")
    def cancel_cmd(
        job: str = typer.Argument(..., help="Job id, unique id prefix, or name (newest)."),
        grace: float = typer.Option(10.0, "--grace", help="Seconds between SIGTERM and SIGKILL."),
        known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None,
        accept_new: AcceptNewOpt = False,
    ) -> None:
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
