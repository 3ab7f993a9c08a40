"""Progress of long transfers: a bar per host on a terminal, plain lines otherwise.

Staging (``submit``) and fetching (``fetch``, ``submit --fetch``) report through these.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress as RichBar, TextColumn, TransferSpeedColumn

from launcher.ops import registry as reg
from launcher.ops.collect import FetchReport, NodeFetch, fetch_job
from launcher.ops.stage import HostReport, PlainProgress, Progress

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
