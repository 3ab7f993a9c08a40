"""`alaunch submit JOB -H HOSTFILE|--local`: render, stage, start on every node; print the job id last."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    from launcher.core.hostfile import Host
    from launcher.ops import registry as reg
    from launcher.ops.engine import Engine
    from launcher.ops.service import SubmitOptions
    from launcher.runners import CommandRunner

ORDER = 30


def submit_cmd(
    job: Path = typer.Argument(..., help="Job file (YAML)."),
    hostfile: HostfileOpt = None, local: LocalOpt = False, slots: SlotsOpt = 1,
    include: IncludeOpt = None, exclude: ExcludeOpt = None,
    sets: list[str] = typer.Option([], "--set", help="Override a key: key=value (YAML-typed)."),
    master_port: int | None = typer.Option(None, "--master-port", help="Pin msrun's master port."),
    master_port_range: str | None = typer.Option(
        None, "--master-port-range", envvar="ALAUNCH_MASTER_PORT_RANGE",
        help="Where node 0's free master port is picked, LO-HI (default 29500-29899: clear of HCCL's)."),
    bin_dir: str | None = typer.Option(None, "--bin-dir", envvar="ALAUNCH_REMOTE_BIN_DIR",
                                          help="Directory with msrun/python on the hosts (first on PATH)."),
    cluster_time_out: int = typer.Option(600, "--cluster-time-out", help="Seconds msrun waits for all nodes."),
    check_mindformers: bool = typer.Option(False, "--validate", help="Also load the config with MindFormers."),
    devices: str | None = typer.Option(None, "--devices",
                                          help="Pin the cards on every node, e.g. 4,5,6,7 (default: free ones)."),
    wait: bool = typer.Option(False, "--wait",
                              help="If the cards are busy, queue until they free up (else refuse)."),
    poll: float = typer.Option(2.0, "--poll", help="Seconds between looks while queued (--wait)."),
    follow: bool = typer.Option(False, "--follow", "-f",
                                help="Follow the logs live until the end; exit with the job's status code."),
    fetch: bool = typer.Option(False, "--fetch",
                               help="When the job ends, fetch its outputs into runs/<job-id>/ (implies --follow)."),
    fetch_dest: Path = typer.Option(Path("runs"), "--fetch-dest", help="Where --fetch puts runs/<job-id>/."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="--follow: every log line, not the short story."),
    known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None,
    accept_new: AcceptNewOpt = False,
) -> None:
    """``alaunch submit``: the options become :class:`SubmitOptions`; the target (a hostfile,
    ``--local`` or a scheduler's target file) picks its engine (:mod:`launcher.ops.engines`)."""
    from launcher.cli.connect import runner_factory
    from launcher.ops.engines import read_target

    opts = submit_options(sets, master_port, master_port_range, bin_dir, cluster_time_out, check_mindformers,
                          ssh_config, devices, wait, poll)
    factory = runner_factory(known_hosts, ssh_config, accept_new)
    target = read_target(hostfile, local=local, slots=slots, include=include, exclude=exclude)
    code = submit_to_target(job, target, opts, factory, factory, follow=follow, fetch=fetch, fetch_dest=fetch_dest,
                            accept_new=accept_new, verbose=verbose)
    if code:
        raise typer.Exit(code)


def submit_options(sets: Sequence[str], master_port: int | None, master_port_range: str | None, bin_dir: str | None,
                   cluster_time_out: int, check_mindformers: bool, ssh_config: Path | None, devices: str | None,
                   wait: bool, poll: float) -> SubmitOptions:
    """The command line as :class:`launcher.ops.service.SubmitOptions` (a bad port range or
    device list is refused here, naming the option)."""
    from launcher.core.cards import parse_devices
    from launcher.core.plan import DEFAULT_PORT_RANGE, parse_port_range
    from launcher.ops.service import SubmitOptions

    return SubmitOptions(tuple(sets), master_port, bin_dir, cluster_time_out, check_mindformers,
                         ssh_config=str(ssh_config) if ssh_config else None,
                         master_port_range=parse_port_range(master_port_range) if master_port_range
                         else DEFAULT_PORT_RANGE,
                         devices=parse_devices(devices) if devices is not None else None, wait=wait, poll=poll)


def submit_to_target(job: Path, target: Any, opts: SubmitOptions, factory: Callable[[Host], CommandRunner],
                     runner_for: Callable[[Host], CommandRunner], *, follow: bool, fetch: bool, fetch_dest: Path,
                     accept_new: bool, verbose: bool) -> int:
    """Stage and start (or queue) through the target's engine (transfer bars on a terminal,
    plain lines in a pipe), say where the job runs, then submit's tail
    (:func:`launcher.cli.live.finish_submit`)."""
    from launcher.cli.live import finish_submit
    from launcher.ops import registry as reg

    env = environment.current()
    say = lambda text: env.stderr.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    with reg.Registry.in_state_dir(env.state_dir) as registry:
        service, record = start_job(env, registry, job, target, opts, factory, say)
        say(service.started_line(record))
        return finish_submit(registry, record, service, runner_for, follow=follow, fetch=fetch,
                             fetch_dest=fetch_dest, accept_new=accept_new, verbose=verbose)


MANY_HOSTS = 8  # past this many hosts staging reports the group (cli/progress.GroupProgress)


def start_job(env: environment.Environment, registry: reg.Registry, job: Path, target: Any, opts: SubmitOptions,
              factory: Callable[[Host], CommandRunner], say: Callable[[str], None]) -> tuple[Engine, reg.JobRecord]:
    """The engine's ``submit`` with its progress shown: rich bars on a terminal, else plain lines."""
    from launcher.ops.engines import engine_for
    from launcher.ops.stage import PlainProgress, Progress

    staged_to = len(target.stage_hosts())
    many = staged_to > MANY_HOSTS
    progress: Progress
    if env.stderr.is_terminal and not env.raw:
        from launcher.cli.progress import GroupProgress, RichProgress, transfer_bar
        bar = transfer_bar(env.stderr)
        with bar:
            progress = GroupProgress(staged_to, say, bar) if many else RichProgress(bar, say)
            service = engine_for(target, registry, env.state_dir, say=say, progress=progress, exec_factory=factory)
            return service, service.submit(job, target, opts)
    if many:
        from launcher.cli.progress import GroupProgress
        progress = GroupProgress(staged_to, say)
    else:
        progress = PlainProgress(say)
    service = engine_for(target, registry, env.state_dir, say=say, progress=progress, exec_factory=factory)
    return service, service.submit(job, target, opts)


def register(app: typer.Typer) -> None:
    app.command("submit", help="Stage a job and start it on every node; prints the job id last.")(submit_cmd)
