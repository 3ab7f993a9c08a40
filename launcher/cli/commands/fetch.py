"""`alaunch fetch JOB`: bring logs, checkpoints and predictions home into runs/<job-id>/<host>/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from launcher.cli import environment
from launcher.cli.options import AcceptNewOpt, KnownHostsOpt, SshConfigOpt

if TYPE_CHECKING:  # imported when the verb runs (cli/app.py)
    from launcher.ops import registry as reg
    from launcher.ops.collect import FetchReport

ORDER = 45


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"


def saved_lines(report: FetchReport) -> list[str]:
    """Per group: bytes moved vs bytes on the host ('lora: 2 file(s), 528.1 KiB moved of 3.0 MiB
    on the host (the full checkpoints), 82.7% not moved')."""
    lines = []
    for name, g in report.groups().items():
        line = f"{name}: {g.files} file(s), {_size(g.moved)} moved of {_size(g.on_host)} on the host"
        if name == "lora":
            line += " (the full checkpoints)"
        if g.on_host and g.moved < g.on_host:
            line += f", {100 * (g.on_host - g.moved) / g.on_host:.1f}% not moved"
        lines.append(line)
    return lines


def report_json(report: FetchReport) -> str:
    return json.dumps({"job": report.job_id, "run_dir": str(report.run_dir), "seconds": round(report.seconds, 3),
                       "bytes_transferred": report.bytes_transferred,
                       "groups": {k: vars(g) for k, g in report.groups().items()},
                       "nodes": [{k: getattr(n, k) for k in ("host", "local_dir", "files", "fetched", "resumed",
                                                             "skipped", "restarted", "bytes_total",
                                                             "bytes_transferred", "seconds", "error")}
                                 for n in report.nodes]}, indent=2)


def refresh_first(env, registry: reg.Registry, job: str, options) -> None:
    """A job not yet ended is refreshed from its hosts before fetching: fetch is one more place
    that may notice a dead node, and the gang rule (stop the others) holds whoever notices."""
    record = registry.get(job)
    if record.terminal or not record.nodes:
        return
    from functools import partial

    from launcher.ops.engines import engine_of
    from launcher.runners import make_runner
    record, _ = engine_of(record, registry, env.state_dir,
                          exec_factory=partial(make_runner, options=options)).refresh(job)
    env.stderr.print(f"{record.id}: {record.state}" + (f" ({record.reason})" if record.reason else ""),
                     markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:

    @app.command("fetch",
                 help="Fetch a job's logs/checkpoints/predictions into runs/<job-id>/<host>/ (verified, resumable).",
                 short_help="Fetch a job's logs, checkpoints and predictions into runs/.")
    def fetch_cmd(
        job: str = typer.Argument(..., help="Job id, unique id prefix, or name (newest)."),
        what: str = typer.Option("all", "--what", help="logs,checkpoints,predictions,tensorboard or all; "
                                 "lora: only the tensors the LoRA fine-tune trained, cut out of each "
                                 "checkpoint on the host (into <host>/lora/...)."),
        dest: Path = typer.Option(Path("runs"), "--dest", help="Where runs/<job-id>/ goes."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
        known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None,
        accept_new: AcceptNewOpt = False,
    ) -> None:
        from launcher.cli.progress import fetch_with_progress
        from launcher.ops import registry as reg
        from launcher.ops.collect import FetchError, default_options

        env = environment.current()
        with reg.Registry.in_state_dir(env.state_dir) as registry:
            options = default_options(registry.get(job))
            options.known_hosts = known_hosts or options.known_hosts
            options.ssh_config = ssh_config or options.ssh_config
            options.accept_new_host_keys = accept_new
            refresh_first(env, registry, job, options)
            try:
                report = fetch_with_progress(env, registry, job, what, dest, options)
            except FetchError as exc:
                if as_json:
                    env.stdout.print(report_json(exc.report), markup=False, highlight=False, soft_wrap=True)
                raise
        if as_json:
            env.stdout.print(report_json(report), markup=False, highlight=False, soft_wrap=True)
            return
        for line in saved_lines(report):
            env.stderr.print(line, markup=False, highlight=False, soft_wrap=True)
        env.stdout.print(str(report.run_dir), markup=False, highlight=False, soft_wrap=True)
