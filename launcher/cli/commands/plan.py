"""`alaunch plan JOB -H HOSTFILE`: the dry run — exactly the commands each node would run.

On top, the cards each node would get: every host is asked once, in parallel, who holds which
card (the INVENTORY submit's preflight sends, read-only: no claim is taken), and the same pure
choice as submit's picks among the free ones; ``--offline`` (or a host that cannot be reached)
shows the first N candidates and says the host was not asked. Nothing is started.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from launcher.cli import environment
from launcher.cli.options import (AcceptNewOpt, ExcludeOpt, HostfileOpt, IncludeOpt, KnownHostsOpt, LocalOpt, SlotsOpt,
                                  SshConfigOpt, default_slots)

ORDER = 25
DEFAULT_PORT = 8118  # msrun's default; `submit` checks it (or picks another) on node 0


def register(app: typer.Typer) -> None:

    @app.command("plan", help="Print each node's exact commands and the cards it would get (dry run: the hosts "
                                   "are only asked which cards are free; nothing is sent or started).")
    def plan_cmd(
        job: Path = typer.Argument(..., help="Job file (YAML)."),
        hostfile: HostfileOpt = None, local: LocalOpt = False, slots: SlotsOpt = default_slots(),
        include: IncludeOpt = None, exclude: ExcludeOpt = None,
        sets: List[str] = typer.Option([], "--set", help="Override a key: key=value (YAML-typed)."),
        master_port: int = typer.Option(DEFAULT_PORT, "--master-port", help="msrun's master port."),
        bin_dir: Optional[str] = typer.Option(None, "--bin-dir", envvar="ALAUNCH_REMOTE_BIN_DIR",
                                              help="Directory with msrun/python on the hosts (first on PATH)."),
        job_id: Optional[str] = typer.Option(None, "--job-id", help="Job id to plan for (default: a new one)."),
        devices: Optional[str] = typer.Option(None, "--devices",
                                              help="Pin the cards on every node, e.g. 4,5,6,7 (as submit)."),
        offline: bool = typer.Option(False, "--offline",
                                     help="Do not ask the hosts which cards are free: show the first N."),
        known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None, accept_new: AcceptNewOpt = False,
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
        from dataclasses import replace

        from launcher.core import cards

        spec = load_job(job)
        full = resolve_hosts(hostfile, local, slots)
        filtered = resolve_hosts(hostfile, local, slots, include, exclude)
        if devices is not None:
            filtered = cards.pin_devices(filtered, cards.parse_devices(devices))
        used = used_hosts(spec, filtered)
        candidates, want = filtered[:len(used)], len(used[0].slot_ids)
        if offline:
            held = {h.name: "--offline" for h in candidates}
        else:
            from launcher.cli.connect import runner_factory
            from launcher.ops.cards import look
            from launcher.runners import default_bin_dir, python_for
            bins = bin_dir if bin_dir is not None else default_bin_dir(used)
            held = look(candidates, runner_factory(known_hosts, ssh_config, accept_new),
                        {h.name: python_for(bins, h) for h in candidates})
        chosen = cards.plan_devices(candidates, want, held,
                                    cards.pinned_hosts(full, candidates, want, devices is not None))
        hosts = [replace(h, slot_ids=n.cards) for h, n in zip(candidates, chosen)]
        env.stdout.print(cards.render_devices(chosen), markup=False, highlight=False, soft_wrap=True, end="")
        prepared = prepare(spec, hosts, job_id or new_job_id(spec.name), master_port,
                           SubmitOptions(tuple(sets), master_port, bin_dir,
                                         ssh_config=str(ssh_config) if ssh_config else None))
        env.stdout.print(staging_line(hosts) + prepared.plan.render_shell(), markup=False, highlight=False,
                         soft_wrap=True, end="")


def staging_line(hosts) -> str:
    """The staging route as a comment line (empty for fewer than 2 remote hosts)."""
    import os
    from launcher.core.route import parse_mode, staging_note
    note = staging_note([h.name for h in hosts if not h.is_local], parse_mode(os.environ.get("ALAUNCH_RELAY")),
                        int(os.environ.get("ALAUNCH_RELAY_DEGREE") or 2))
    return f"# staging: {note}\n" if note else ""
