"""`alaunch plan JOB -H HOSTFILE`: the dry run — exactly the commands each node would run.

On top, the cards each node would get: every host is asked once, in parallel, who holds which
card (the INVENTORY submit's preflight sends, read-only: no claim is taken), and the same pure
choice as submit's picks among the free ones; ``--offline`` (or a host that cannot be reached)
shows the first N candidates and says the host was not asked. Nothing is started.
"""

from __future__ import annotations

from pathlib import Path

import typer

from launcher.cli import environment
from launcher.cli.options import (
    AcceptNewOpt,
    ExcludeOpt,
    HostfileOpt,
    IncludeOpt,
    KnownHostsOpt,
    LocalOpt,
    SlotsOpt,
    SshConfigOpt,
)

ORDER = 25


def register(app: typer.Typer) -> None:

    @app.command("plan", help="Print each node's exact commands and the cards it would get (dry run: the hosts "
                                   "are only asked which cards are free; nothing is sent or started).")
    def plan_cmd(
        job: Path = typer.Argument(..., help="Job file (YAML)."),
        hostfile: HostfileOpt = None, local: LocalOpt = False, slots: SlotsOpt = 1,
        include: IncludeOpt = None, exclude: ExcludeOpt = None,
        sets: list[str] = typer.Option([], "--set", help="Override a key: key=value (YAML-typed)."),
        master_port: int | None = typer.Option(None, "--master-port", help="Pin msrun's master port (as submit)."),
        master_port_range: str | None = typer.Option(
            None, "--master-port-range", envvar="ALAUNCH_MASTER_PORT_RANGE",
            help="Where node 0's free master port is picked, LO-HI (default 29500-29899, as submit)."),
        bin_dir: str | None = typer.Option(None, "--bin-dir", envvar="ALAUNCH_REMOTE_BIN_DIR",
                                              help="Directory with msrun/python on the hosts (first on PATH)."),
        job_id: str | None = typer.Option(None, "--job-id", help="Job id to plan for (default: a new one)."),
        devices: str | None = typer.Option(None, "--devices",
                                              help="Pin the cards on every node, e.g. 4,5,6,7 (as submit)."),
        offline: bool = typer.Option(False, "--offline",
                                     help="Do not ask the hosts which cards are free: show the first N."),
        known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None, accept_new: AcceptNewOpt = False,
    ) -> None:
        from launcher.cli.connect import runner_factory
        from launcher.core.cards import parse_devices
        from launcher.core.layout import new_job_id
        from launcher.core.plan import DEFAULT_PORT_RANGE, parse_port_range
        from launcher.core.spec import load_job
        from launcher.ops.engines import engine_for, read_target
        from launcher.ops.service import SubmitOptions

        env = environment.current()
        target = read_target(hostfile, local=local, slots=slots, include=include, exclude=exclude)
        opts = SubmitOptions(tuple(sets), master_port, bin_dir,
                             ssh_config=str(ssh_config) if ssh_config else None,
                             master_port_range=parse_port_range(master_port_range) if master_port_range
                             else DEFAULT_PORT_RANGE,
                             devices=parse_devices(devices) if devices is not None else None)
        from launcher.core.render import apply_job_sets
        spec = apply_job_sets(load_job(job), sets)  # --set name=... names the planned job id too
        engine = engine_for(target, None, env.state_dir,  # a dry run records nothing
                            exec_factory=runner_factory(known_hosts, ssh_config, accept_new))
        env.stdout.print(engine.dry_run(spec, target, opts, job_id or new_job_id(spec.name), offline=offline),
                         markup=False, highlight=False, soft_wrap=True, end="")
