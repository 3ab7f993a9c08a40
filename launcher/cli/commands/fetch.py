"""`alaunch fetch JOB`: bring logs, checkpoints and predictions home into runs/<job-id>/<host>/."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress as RichBar, TextColumn, TransferSpeedColumn

from launcher.cli import environment

from launcher.ops import registry as reg
from launcher.ops.collect import FetchError, FetchReport, NodeFetch, default_options, fetch_job
from launcher.cli.commands.submit import ssh_options

ORDER = 45


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def node_line(node: NodeFetch) -> str:
    """One plain line per node: what came, what was skipped, how fast."""
    if node.error:
        return f"{node.error}"
    parts = [f"{node.host}: {node.files} file(s), {node.fetched} fetched"]
    if node.resumed:
        parts.append(f"{node.resumed} resumed")
    if node.restarted:
        parts.append(f"{node.restarted} restarted (sha256 mismatch)")
    parts.append(f"{node.skipped} already here")
    return ", ".join(parts) + (f"; {_mib(node.bytes_transferred)} in {node.seconds:.1f} s"
                               f" ({_mib(int(node.rate))}/s)")


class PlainFetchProgress:
    """Not a terminal: one line per node when it starts and when it ends."""

    def __init__(self, say):
        self.say = say

    def start(self, host: str, files: int, total_bytes: int) -> None:
        self.say(f"{host}: fetching {files} file(s), {_mib(total_bytes)}")

    def advance(self, host: str, n: int) -> None:
        pass

    def done(self, host: str, node: NodeFetch) -> None:
        self.say(node_line(node))


class RichFetchProgress(PlainFetchProgress):
    """A terminal: one bar per node with bytes and bytes/s."""

    def __init__(self, bar: RichBar, say):
        super().__init__(say)
        self.bar, self.tasks, self.lock = bar, {}, threading.Lock()

    def start(self, host: str, files: int, total_bytes: int) -> None:
        with self.lock:
            self.tasks[host] = self.bar.add_task(f"{host}: {files} file(s)", total=max(total_bytes, 1))

    def advance(self, host: str, n: int) -> None:
        self.bar.advance(self.tasks[host], n)

    def done(self, host: str, node: NodeFetch) -> None:
        if host in self.tasks:
            self.bar.update(self.tasks[host], completed=self.bar.tasks[self.tasks[host]].total)
        super().done(host, node)


def report_json(report: FetchReport) -> str:
    return json.dumps({"job": report.job_id, "run_dir": str(report.run_dir), "seconds": round(report.seconds, 3),
                       "bytes_transferred": report.bytes_transferred,
                       "nodes": [{k: getattr(n, k) for k in ("host", "local_dir", "files", "fetched", "resumed",
                                                             "skipped", "restarted", "bytes_total",
                                                             "bytes_transferred", "seconds", "error")}
                                 for n in report.nodes]}, indent=2)


def fetch_with_progress(env, registry: reg.Registry, job: str, what: str, dest: Path,
                        options) -> FetchReport:
    """Fetch with a bar per node on a terminal, plain lines otherwise (used by fetch and submit --fetch)."""
    say = lambda text: env.stderr.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    if env.stderr.is_terminal and not env.raw:
        bar = RichBar(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), console=env.stderr, transient=False)
        with bar:
            return fetch_job(registry, job, what, dest, env.state_dir, progress=RichFetchProgress(bar, say), options=options)
    return fetch_job(registry, job, what, dest, env.state_dir, progress=PlainFetchProgress(say), options=options)


def register(app: typer.Typer) -> None:
    s = ssh_options()

    @app.command("fetch", help="Fetch a job's logs/checkpoints/predictions into runs/<job-id>/<host>/ (verified, resumable).")
    def fetch_cmd(
        job: str = typer.Argument(..., help="Job id, unique id prefix, or name (newest)."),
        what: str = typer.Option("all", "--what", help="logs,checkpoints,predictions or all."),
        dest: Path = typer.Option(Path("runs"), "--dest", help="Where runs/<job-id>/ goes."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
        known_hosts: Optional[Path] = s["known_hosts"], ssh_config: Optional[Path] = s["ssh_config"],
        accept_new: bool = s["accept_new"],
    ) -> None:
        env = environment.current()
        with reg.Registry.in_state_dir(env.state_dir) as registry:
            options = default_options(registry.get(job))
            options.known_hosts = known_hosts or options.known_hosts
            options.ssh_config = ssh_config or options.ssh_config
            options.accept_new_host_keys = accept_new
            try:
                report = fetch_with_progress(env, registry, job, what, dest, options)
            except FetchError as exc:
                if as_json:
                    env.stdout.print(report_json(exc.report), markup=False, highlight=False, soft_wrap=True)
                raise
        if as_json:
            env.stdout.print(report_json(report), markup=False, highlight=False, soft_wrap=True)
            return
        env.stdout.print(str(report.run_dir), markup=False, highlight=False, soft_wrap=True)
