"""`alaunch hosts check`: are these hosts ready for a job? One row per host, all at once."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from launcher.cli import environment
from launcher.errors import AlaunchError, ExitCode, InputError

if TYPE_CHECKING:  # annotations only: verbs import their stacks when they run
    from rich.table import Table

    from launcher.ops.engine import CheckReport

ORDER = 20


# hosts check's columns by what they are worth at 80 columns: the host and the verdict first
# (a host name is never cut or split: ``10.213.0.1`` / ``0`` read as another host)
_KEEP = ("host", "node", "reachable", "state")
_PRIORITY = {"verdict": 9, "NPUs": 6, "free disk": 5, "mindformers": 4, "mindspore": 4, "python": 3,
             "msrun": 2, "gres": 2, "cpus": 1, "OS/arch": 1}
_MIN = {"verdict": 36}  # the verdict keeps room for its reason: lower columns go first


def _table(report: CheckReport, width: int = 80, wide: bool = False) -> Table:
    """The engine's check report as a table, one line per host (failed rows in red)."""
    from launcher.cli import tables as t

    columns = [t.Column(c, t.KEEP) if c in _KEEP
               else t.Column(c, priority=_PRIORITY.get(c, 0), min_width=_MIN.get(c, 6)) for c in report.columns]
    return t.table(columns, report.rows, width, wide=wide, title=report.title,
                   row_styles=["red" if i in report.failed else None for i in range(len(report.rows))])


FEW_HOSTS = 4  # up to this many hosts, a passed host's cut verdict is printed whole too


def verdicts_below(report, table) -> list[str]:
    """The verdicts the table cut, whole, for under it: every failed host's; a passed host's too
    when there are few hosts. Why: ``hosts check --local`` at 80 columns read "PASS: ok (CPU
    only: no npu-smi; alaunch u…", the disk use and the ``alaunch prune`` hint cut away."""
    from launcher.cli.tables import cut_rows

    if "verdict" not in report.columns:
        return []
    few = len(report.rows) <= FEW_HOSTS
    verdicts = [row[report.columns.index("verdict")] if few or i in report.failed else ""
                for i, row in enumerate(report.rows)]
    return [f"{report.rows[i][0]}: {verdicts[i]}" for i in cut_rows(table, "verdict", verdicts)]


def register(app: typer.Typer) -> None:
    hosts_app = typer.Typer(help="Check the hosts of a hostfile.", no_args_is_help=True)

    @hosts_app.command("check")
    def check_cmd(
        hostfile: Path | None = typer.Option(None, "-H", "--hostfile", help="DeepSpeed-style hostfile."),
        include: str | None = typer.Option(None, "--include", help="Only these hosts/slots, e.g. 'h1:0,1@h2'."),
        exclude: str | None = typer.Option(None, "--exclude", help="Skip these hosts/slots, e.g. 'h1:0'."),
        local: bool = typer.Option(False, "--local", help="Check this machine (no SSH) instead of a hostfile."),
        as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
        timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Seconds to connect to each host."),
        accept_new: bool = typer.Option(False, "--accept-new-host-keys",
                                        help="Trust unknown host keys and add them to known_hosts."),
        min_disk_gb: float = typer.Option(5.0, "--min-disk-gb", min=0, help="Free space needed at the workdir."),
        require_npus: bool = typer.Option(False, "--require-npus",
                                          help="Fail hosts without npu-smi (default: CPU-only hosts pass)."),
        known_hosts: Path | None = typer.Option(None, "--known-hosts",
                                                   help="known_hosts file (default: ~/.ssh/known_hosts)."),
        ssh_config: Path | None = typer.Option(None, "--ssh-config", help="ssh config file (default: ~/.ssh/config)."),
        python: str | None = typer.Option(None, "--python",
                                             help="Python to probe with (default: python3 remote, this one local)."),
        verify_store: bool = typer.Option(False, "--verify-store",
                                          help="Re-hash each host's staging store; remove bad objects "
                                               "(resent next time)."),
        wide: bool = typer.Option(False, "--wide", "-w", help="Every column whole."),
    ) -> None:
        """Reachability, python, mindspore/mindformers, msrun, NPUs and disk of every host (a
        scheduler target: its login node and partition)."""
        from launcher.ops import engines
        from launcher.runners import ConnectOptions, make_runner

        env = environment.current()
        if hostfile is None and not local:
            raise InputError("no hosts: give -H HOSTFILE (DeepSpeed format: `host slots=N` per line) "
                             "or --local for this machine", key="-H")
        target = engines.read_target(hostfile, local=local, include=include, exclude=exclude)
        # control_persist=0: a check proves a NEW connection works, so it never rides on a
        # master kept from an earlier command (through one, a host whose sshd died reads "yes")
        options = ConnectOptions(connect_timeout=timeout, known_hosts=known_hosts,
                                 accept_new_host_keys=accept_new, ssh_config=ssh_config, control_persist=0)
        report = engines.engine_for(target, None, env.state_dir, exec_factory=partial(  # no registry: asks hosts only
            make_runner, options=options)).check(target, timeout=timeout, require_npus=require_npus,
                                                 min_disk_gb=min_disk_gb, python=python, verify_store=verify_store)
        if as_json:
            env.stdout.print(json.dumps(report.json, indent=1), markup=False, highlight=False, soft_wrap=True)
        else:
            out = env.stdout
            if not out.is_terminal:  # pipes get the full table, not an 80-column squeeze
                from rich.console import Console
                out = Console(file=env.stdout.file, width=180, no_color=env.stdout.no_color,
                              highlight=False)
            from launcher.cli.tables import print_table, wrap_words
            table = _table(report, out.width, wide)
            print_table(out, table, wide=wide)
            for line in verdicts_below(report, table):
                out.print(wrap_words(out, line, 2), markup=False, highlight=False, soft_wrap=True)
            for p in report.problems:
                out.print(f"problem: {p}", markup=False, highlight=False, soft_wrap=True)
        if report.failure:
            raise AlaunchError(report.failure, exit_code=ExitCode.CHECK_FAILED)

    app.add_typer(hosts_app, name="hosts")
