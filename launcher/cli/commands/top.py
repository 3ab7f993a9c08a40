"""`alaunch top -H HOSTFILE`: every host's cards, who holds each (any user), and their load.
On a Slurm target (`-H slurm.yaml`), the partition's nodes: the engine's ``top_source``.

Before this, seeing a shared cluster meant ``watch npu-smi info`` in one ssh window per node,
and npu-smi does not say whose job a process is. Each refresh asks every host ONCE, in
parallel (the one fan-out; ``remote/stage.py``'s TOP: the host-wide claims of every user,
``npu-smi info``, the owner of each process it lists, our own jobs' log tails), over ssh
masters kept open between refreshes. A host that does not answer reads ``unreachable`` with
the reason. On a terminal the table is full-screen and redrawn every ``--interval`` s
(rich ``Live``) until Ctrl-C; ``--once`` prints it once (for a pipe); ``--json`` prints one
snapshot as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:  # annotations only: verbs import their stacks when they run
    from rich.console import Group

    from launcher.core.cards import CardView, HostView

ORDER = 22


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value}%"


def _hbm(card: CardView) -> str:
    if card.hbm_used_mb is None:
        return ""
    used = f"{card.hbm_used_mb / 1024:.1f}"
    return f"{used}/{card.hbm_total_mb / 1024:.0f} GiB" if card.hbm_total_mb else f"{used} GiB"


def render(views: Sequence[HostView], stamp: str = "") -> Group:
    """The screen: one line per host (free cards first), then one row per card."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text()
    free = sum(len(v.free) for v in views if not v.error)
    head.append(f"alaunch top  {stamp}  {free} free card(s) on {sum(1 for v in views if not v.error)}"
                f"/{len(views)} host(s)\n", style="bold")
    for v in views:
        head.append(v.summary() + "\n", style="red" if v.error else ("green" if v.free else None))
    table = Table(show_lines=False, pad_edge=False, box=None)
    right = {"card", "AICore", "HBM", "power", "temp"}
    for col in ("host", "card", "health", "AICore", "HBM", "power", "temp", "holder", "progress"):
        table.add_column(col, justify="right" if col in right else "left", overflow="fold")
    from launcher.core.cards import holder_text
    for v in views:
        if v.error:
            table.add_row(v.host, "", "unreachable", "", "", "", "", "", "", style="red")
            continue
        for c in v.cards:
            style = "red" if c.health not in (None, "OK") else (None if c.holder else "green")
            table.add_row(v.host, str(c.card), c.health or "", _pct(c.aicore_pct), _hbm(c),
                          "" if c.power_w is None else f"{c.power_w:.0f} W",
                          "" if c.temp_c is None else f"{c.temp_c} C", holder_text(c.holder) or "free",
                          c.progress or "", style=style)
    return Group(head, table)


def register(app: typer.Typer) -> None:

    @app.command("top", help="Every host's cards live: health, AI Core, HBM, power, temperature and who holds "
                             "each (user, job, pid; or the process that is not alaunch's).")
    def top_cmd(
        hostfile: HostfileOpt = None, local: LocalOpt = False, slots: SlotsOpt = 1,
        include: IncludeOpt = None, exclude: ExcludeOpt = None,
        once: bool = typer.Option(False, "--once", help="Print the table once and exit (for a pipe)."),
        as_json: bool = typer.Option(False, "--json", help="Print one snapshot as JSON."),
        interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between refreshes."),
        timeout: float = typer.Option(15.0, "--timeout", min=1.0, help="Seconds a host has to answer."),
        bin_dir: str | None = typer.Option(None, "--bin-dir", envvar="ALAUNCH_REMOTE_BIN_DIR",
                                              help="Directory with python on the hosts (first on PATH)."),
        known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None, accept_new: AcceptNewOpt = False,
    ) -> None:
        import time

        from launcher.cli.connect import runner_factory
        from launcher.ops.engines import engine_for, read_target

        env = environment.current()
        target = read_target(hostfile, local=local, slots=slots, include=include, exclude=exclude)
        engine = engine_for(target, None, env.state_dir, exec_factory=runner_factory(known_hosts, ssh_config,
                                                                                      accept_new))
        source = engine.top_source(target, bin_dir=bin_dir, interval=interval, timeout=timeout)
        try:
            if as_json:
                env.stdout.print(json.dumps(source.snapshot(), indent=1), markup=False, highlight=False,
                                 soft_wrap=True)
                return
            if once or not env.stdout.is_terminal:
                out = env.stdout
                if not out.is_terminal:  # a pipe gets the whole table, not an 80-column squeeze
                    from rich.console import Console
                    out = Console(file=env.stdout.file, width=160, no_color=env.stdout.no_color, highlight=False)
                out.print(render(source.survey(), time.strftime("%H:%M:%S")))
                return
            from rich.live import Live
            with Live(render([], "asking the hosts ..."), console=env.stdout, screen=True,
                      auto_refresh=False) as live:
                try:
                    while True:
                        began = time.monotonic()
                        live.update(render(source.survey(), time.strftime("%H:%M:%S")), refresh=True)
                        time.sleep(max(0.0, interval - (time.monotonic() - began)))
                except KeyboardInterrupt:
                    return
        finally:
            source.close()
