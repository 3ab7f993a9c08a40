"""`alaunch prune -H HOSTFILE [--older-than 7d] [--keep-last N] [--checkpoints] [--dry-run]`."""

from __future__ import annotations

import typer

from launcher.cli import environment
from launcher.cli.options import AcceptNewOpt, ExcludeOpt, HostfileOpt, IncludeOpt, KnownHostsOpt, SshConfigOpt

ORDER = 85


def register(app: typer.Typer) -> None:

    @app.command("prune", help="Remove finished job dirs, unreferenced staged trees and store objects, "
                               "and .part leftovers on every host (never a running or queued job).",
                 short_help="Remove finished job dirs, staged trees and unused store objects.")
    def prune_cmd(
        hostfile: HostfileOpt = None, include: IncludeOpt = None, exclude: ExcludeOpt = None,
        older_than: str = typer.Option("7d", "--older-than", help="Only jobs that ended this long ago (s/m/h/d/w)."),
        keep_last: int = typer.Option(0, "--keep-last", min=0, help="Keep the N most recently ended jobs per host."),
        checkpoints: bool = typer.Option(False, "--checkpoints",
                                         help="Also remove the jobs' models: checkpoints, merged weights, "
                                              "strategy files (kept by default)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would go, and how many bytes."),
        grace: str = typer.Option("1h", "--grace", help="Keep store objects and leftovers younger than this."),
        known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None, accept_new: AcceptNewOpt = False,
    ) -> None:
        from rich.table import Table

        from launcher.cli.connect import runner_factory
        from launcher.core.prune import human_bytes, parse_age
        from launcher.errors import InputError
        from launcher.ops import registry as reg
        from launcher.ops.engines import engine_for, read_target
        from launcher.ops.prune import PruneOptions

        env = environment.current()
        if hostfile is None:
            raise InputError("prune needs the hosts: give -H HOSTFILE", key="-H")
        target = read_target(hostfile, include=include, exclude=exclude)
        hosts = target.stage_hosts()  # a scheduler target: its shared workdir, through the login node
        opts = PruneOptions(parse_age(older_than), keep_last, checkpoints, dry_run, parse_age(grace, "--grace"))
        with reg.Registry.in_state_dir(env.state_dir) as registry:
            out = engine_for(target, registry, env.state_dir,
                             exec_factory=runner_factory(known_hosts, ssh_config, accept_new)).prune(target, opts)
        verb = "would remove" if dry_run else "removed"
        table = Table("host", "job dirs", "trees", "objects", ".part/tmp", "bytes",
                      title=f"prune ({'dry run' if dry_run else 'done'}): {verb}")
        # a job id cut to "old-2025…" at 80 columns would not tell which job goes: keep it whole
        table.columns[1].min_width = max([len(j["id"]) for r in out.values() for j in r.jobs] + [8])
        for h in hosts:
            r = out[h.name]
            if r.skipped:
                table.add_row(h.name, r.skipped, "", "", "", "")
                continue
            jobs = "\n".join(f"{j['id']} ({human_bytes(j['bytes'])}{', ckpt kept' if j['checkpoints_kept'] else ''})"
                             for j in r.jobs) or "-"
            table.add_row(h.name, jobs, str(len(r.trees)), str(r.objects.get("count", 0)),
                          str(r.parts.get("count", 0)), f"{r.bytes} ({human_bytes(r.bytes)})")
        env.stdout.print(table)
