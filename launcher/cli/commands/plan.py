"""`alaunch plan JOB -H HOSTFILE`: the dry run — exactly the commands each node would run."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from launcher.cli import environment
from launcher.cli.options import HostfileOpt, LocalOpt, SlotsOpt, IncludeOpt, ExcludeOpt, default_slots, SshConfigOpt

ORDER = 25
DEFAULT_PORT = 8118  # msrun's default; `submit` checks it (or picks another) on node 0


def register(app: typer.Typer) -> None:

    @app.command("plan", help="Print each node's exact commands (dry run: nothing is sent or started).")
    def plan_cmd(
        job: Path = typer.Argument(..., help="Job file (YAML)."),
        hostfile: HostfileOpt = None, local: LocalOpt = False, slots: SlotsOpt = default_slots(),
        include: IncludeOpt = None, exclude: ExcludeOpt = None,
        sets: List[str] = typer.Option([], "--set", help="Override a key: key=value (YAML-typed)."),
        master_port: int = typer.Option(DEFAULT_PORT, "--master-port", help="msrun's master port."),
        bin_dir: Optional[str] = typer.Option(None, "--bin-dir", envvar="ALAUNCH_REMOTE_BIN_DIR",
                                              help="Directory with msrun/python on the hosts (first on PATH)."),
        job_id: Optional[str] = typer.Option(None, "--job-id", help="Job id to plan for (default: a new one)."),
        ssh_config: SshConfigOpt = None,
    ) -> None:
        from launcher.core.spec import load_job
        from launcher.core.layout import new_job_id
        from launcher.ops.service import SubmitOptions, prepare, resolve_hosts, used_hosts

        env = environment.current()
        from launcher.cli import slurm
        if (target := slurm.target_of(hostfile)) is not None:  # -H names a Slurm target
            text = slurm.plan_text(job, target, tuple(sets), None if master_port == DEFAULT_PORT else master_port,
                                   bin_dir, job_id or new_job_id(load_job(job).name))
            env.stdout.print(text, markup=False, highlight=False, soft_wrap=True, end="")
            return
        spec = load_job(job)
        hosts = used_hosts(spec, resolve_hosts(hostfile, local, slots, include, exclude))
        prepared = prepare(spec, hosts, job_id or new_job_id(spec.name), master_port,
                           SubmitOptions(tuple(sets), master_port, bin_dir,
                                         ssh_config=str(ssh_config) if ssh_config else None))
        env.stdout.print(prepared.plan.render_shell(), markup=False, highlight=False, soft_wrap=True, end="")
