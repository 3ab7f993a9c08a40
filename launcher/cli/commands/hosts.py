"""`alaunch hosts check`: are these hosts ready for a job? One row per host, all at once."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import typer

from launcher.cli import environment
from launcher.errors import AlaunchError, ExitCode, InputError

ORDER = 20


def _load_hosts(hostfile: Optional[Path], local: bool, include: Optional[str], exclude: Optional[str]):
    from launcher.core.hostfile import apply_filters, local_hosts, read_hostfile

    if hostfile is not None and local:
        raise InputError("give either -H HOSTFILE or --local, not both", key="--local")
    if hostfile is None and not local:
        raise InputError("no hosts: give -H HOSTFILE (DeepSpeed format: `host slots=N` per line) "
                         "or --local for this machine", key="-H")
    hosts = local_hosts() if local else read_hostfile(hostfile)
    return apply_filters(hosts, include, exclude) if (include or exclude) else hosts


def _short_os(name: str | None) -> str:
    """'Debian GNU/Linux 12 (bookworm)' -> 'Debian 12': the table is wide enough already."""
    return re.sub(r"\s*\(.*?\)|GNU/Linux\s*", "", name or "?").strip()


def _table(rows) -> "object":
    from rich.table import Table

    table = Table(title="hosts check", show_lines=False)
    for col in ("host", "reachable", "OS/arch", "python", "mindspore", "mindformers", "msrun",
                "NPUs", "free disk", "verdict"):
        table.add_column(col, overflow="fold")
    for r in rows:
        reach = "no" if not r.reachable else (f"yes {r.rtt_ms:.1f} ms" if r.rtt_ms is not None else "yes")
        osarch = f"{_short_os(r.os)} {r.arch or ''}".strip() if r.reachable else ""
        disk = f"{r.disk_free_gb:g} GB ({r.disk_path})" if r.disk_free_gb is not None else ""
        verdict = ("PASS" if r.passed else "FAIL") + f": {r.reason}"
        table.add_row(r.host, reach, osarch, r.python or "", r.mindspore or ("-" if r.reachable else ""),
                      r.mindformers or ("-" if r.reachable else ""),
                      ("yes" if r.msrun else "-") if r.reachable else "",
                      r.npu_summary or "", disk, verdict, style=None if r.passed else "red")
    return table


def register(app: typer.Typer) -> None:
    hosts_app = typer.Typer(help="Check the hosts of a hostfile.", no_args_is_help=True)

    @hosts_app.command("check")
    def check_cmd(
        hostfile: Optional[Path] = typer.Option(None, "-H", "--hostfile", help="DeepSpeed-style hostfile."),
        include: Optional[str] = typer.Option(None, "--include", help="Only these hosts/slots, e.g. 'h1:0,1@h2'."),
        exclude: Optional[str] = typer.Option(None, "--exclude", help="Skip these hosts/slots, e.g. 'h1:0'."),
        local: bool = typer.Option(False, "--local", help="Check this machine (no SSH) instead of a hostfile."),
        as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
        timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Seconds to connect to each host."),
        accept_new: bool = typer.Option(False, "--accept-new-host-keys",
                                        help="Trust unknown host keys and add them to known_hosts."),
        min_disk_gb: float = typer.Option(5.0, "--min-disk-gb", min=0, help="Free space needed at the workdir."),
        require_npus: bool = typer.Option(False, "--require-npus",
                                          help="Fail hosts without npu-smi (default: CPU-only hosts pass)."),
        known_hosts: Optional[Path] = typer.Option(None, "--known-hosts",
                                                   help="known_hosts file (default: ~/.ssh/known_hosts)."),
        ssh_config: Optional[Path] = typer.Option(None, "--ssh-config", help="ssh config file (default: ~/.ssh/config)."),
        python: Optional[str] = typer.Option(None, "--python",
                                             help="Python to probe with (default: python3 remote, this one local)."),
        verify_store: bool = typer.Option(False, "--verify-store",
                                          help="Re-hash each host's staging store; remove bad objects (resent next time)."),
    ) -> None:
        """Reachability, python, mindspore/mindformers, msrun, NPUs and disk of every host."""
        from launcher.ops.fanout import run_parallel
        from launcher.ops.probe import CheckPolicy, check_host, unreachable_row
        from launcher.runners import ConnectOptions, make_runner

        env = environment.current()
        from launcher.cli import slurm
        if (target := slurm.target_of(hostfile)) is not None:  # the login node and sinfo
            from functools import partial
            return slurm.hosts_check(target, partial(make_runner, options=ConnectOptions(
                connect_timeout=timeout, known_hosts=known_hosts, accept_new_host_keys=accept_new,
                ssh_config=ssh_config)), as_json)
        hosts = _load_hosts(hostfile, local, include, exclude)
        # control_persist=0: a check proves a NEW connection works, so it never rides on a
        # master kept from an earlier command (through one, a host whose sshd died reads "yes")
        options = ConnectOptions(connect_timeout=timeout, known_hosts=known_hosts,
                                 accept_new_host_keys=accept_new, ssh_config=ssh_config, control_persist=0)
        policy = CheckPolicy(require_npus=require_npus, min_disk_gb=min_disk_gb, python=python)

        def one(host):
            with make_runner(host, options) as runner:
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

        results = run_parallel(hosts, one)
        rows = [r if not isinstance(r, BaseException) else unreachable_row(h, r)
                for h, r in results.items()]
        if as_json:
            env.stdout.print(json.dumps([r.to_json() for r in rows], indent=1), markup=False,
                             highlight=False, soft_wrap=True)
        else:
            out = env.stdout
            if not out.is_terminal:  # pipes get the full table, not an 80-column squeeze
                from rich.console import Console
                out = Console(file=env.stdout.file, width=180, no_color=env.stdout.no_color,
                              highlight=False)
            out.print(_table(rows))
        failed = [r for r in rows if not r.passed]
        if failed:
            raise AlaunchError(f"{len(failed)} of {len(rows)} host(s) failed the check: "
                               + ", ".join(r.host for r in failed), exit_code=ExitCode.CHECK_FAILED)

    app.add_typer(hosts_app, name="hosts")
