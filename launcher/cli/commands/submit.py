"""`alaunch submit JOB -H HOSTFILE|--local`: render, stage, start on every node; print the job id last."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress as RichBar, TextColumn, TransferSpeedColumn

from launcher.cli import environment

from launcher.ops import registry as reg
from launcher.ops.service import JobService, SubmitOptions, resolve_hosts
from launcher.ops.stage import HostReport, PlainProgress, Progress

ORDER = 30


class RichProgress(Progress):
    """Files, bytes and speed per host, on a terminal."""

    def __init__(self, bar: RichBar, say):
        self.bar, self.tasks, self.say = bar, {}, say

    def start(self, host: str, total: int, files: int) -> None:
        self.tasks[host] = self.bar.add_task(f"{host}: {files} file(s)", total=max(total, 1))

    def advance(self, host: str, n: int) -> None:
        self.bar.advance(self.tasks[host], n)

    def done(self, host: str, report: HostReport) -> None:
        if host in self.tasks:
            self.bar.update(self.tasks[host], completed=self.bar.tasks[self.tasks[host]].total)
        PlainProgress(self.say).done(host, report)


def host_options():
    return dict(
        hostfile=typer.Option(None, "-H", "--hostfile", help="Hostfile (DeepSpeed format)."),
        local=typer.Option(False, "--local", help="Run on this machine, no SSH (the default without -H)."),
        slots=typer.Option(int(os.environ.get("ALAUNCH_LOCAL_SLOTS", "1")), "--slots",
                           help="Slots of this machine with --local."),
        include=typer.Option(None, "--include", help="Only these hosts/slots: NAME[:0,1][@NAME...]."),
        exclude=typer.Option(None, "--exclude", help="Not these hosts/slots: NAME[:0,1][@NAME...]."),
    )


def ssh_options():
    return dict(
        known_hosts=typer.Option(None, "--known-hosts", help="known_hosts file (default: ~/.ssh/known_hosts)."),
        ssh_config=typer.Option(None, "--ssh-config", help="ssh config file (default: ~/.ssh/config)."),
        accept_new=typer.Option(False, "--accept-new-host-keys",
                                help="Trust unknown host keys and add them to known_hosts."),
    )


def exec_factory(known_hosts: Optional[Path], ssh_config: Optional[Path], accept_new: bool):
    """How the verbs reach hosts: the transport's ConnectOptions, shared by every host."""
    from functools import partial

    from launcher.runners import make_runner
    from launcher.runners import ConnectOptions
    options = ConnectOptions(known_hosts=known_hosts, ssh_config=ssh_config, accept_new_host_keys=accept_new)
    return partial(make_runner, options=options)


def register(app: typer.Typer) -> None:
    o = host_options()
    s = ssh_options()

    @app.command("submit", help="Stage a job and start it on every node; prints the job id last.")
    def submit_cmd(
        job: Path = typer.Argument(..., help="Job file (YAML)."),
        hostfile: Optional[Path] = o["hostfile"], local: bool = o["local"], slots: int = o["slots"],
        include: Optional[str] = o["include"], exclude: Optional[str] = o["exclude"],
        sets: List[str] = typer.Option([], "--set", help="Override a key: key=value (YAML-typed)."),
        master_port: Optional[int] = typer.Option(None, "--master-port", help="Pin msrun's master port."),
        bin_dir: Optional[str] = typer.Option(None, "--bin-dir", envvar="ALAUNCH_REMOTE_BIN_DIR",
                                              help="Directory with msrun/python on the hosts (first on PATH)."),
        cluster_time_out: int = typer.Option(600, "--cluster-time-out", help="Seconds msrun waits for all nodes."),
        check_mindformers: bool = typer.Option(False, "--validate", help="Also load the config with MindFormers."),
        follow: bool = typer.Option(False, "--follow", "-f",
                                    help="Follow the logs live until the end; exit with the job's status code."),
        fetch: bool = typer.Option(False, "--fetch",
                                   help="When the job ends, fetch its outputs into runs/<job-id>/ (implies --follow)."),
        fetch_dest: Path = typer.Option(Path("runs"), "--fetch-dest", help="Where --fetch puts runs/<job-id>/."),
        known_hosts: Optional[Path] = s["known_hosts"], ssh_config: Optional[Path] = s["ssh_config"],
        accept_new: bool = s["accept_new"],
    ) -> None:
        env = environment.current()
        say = lambda text: env.stderr.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
        hosts = resolve_hosts(hostfile, local, slots, include, exclude)
        opts = SubmitOptions(tuple(sets), master_port, bin_dir, cluster_time_out, check_mindformers)
        factory = exec_factory(known_hosts, ssh_config, accept_new)
        with reg.Registry.in_state_dir(env.state_dir) as registry:
            if env.stderr.is_terminal and not env.raw:
                bar = RichBar(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                              TransferSpeedColumn(), console=env.stderr, transient=False)
                with bar:
                    service = JobService(registry, env.state_dir, say=say, progress=RichProgress(bar, say),
                                         exec_factory=factory)
                    record = service.submit(job, hosts, opts)
            else:
                service = JobService(registry, env.state_dir, say=say, progress=PlainProgress(say),
                                     exec_factory=factory)
                record = service.submit(job, hosts, opts)
            say(f"started {record.name} on {len(record.nodes)} node(s): "
                + ", ".join(f"{n.host} (node {n.node_rank}, pid {n.pid})" for n in record.nodes))
            code = 0
            if follow or fetch:
                from launcher.cli.live import follow_job, runner_factory
                code = follow_job(record, service, runner_factory(known_hosts, ssh_config, accept_new),
                                  raw=env.raw)
                record = registry.get(record.id)
            if fetch:
                from launcher.ops.collect import default_options
                from launcher.cli.commands.fetch import fetch_with_progress
                options = default_options(record)
                options.accept_new_host_keys = accept_new
                report = fetch_with_progress(env, registry, record.id, "all", fetch_dest, options)
                say(f"fetched into {report.run_dir}")
            env.stdout.print(record.id, markup=False, highlight=False)
        if code:
            raise typer.Exit(code)
