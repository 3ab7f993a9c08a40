"""Progress of long transfers: a bar per host on a terminal, plain lines otherwise.

Staging (``submit``) and fetching (``fetch``, ``submit --fetch``) report through these.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import BarColumn, DownloadColumn, ProgressColumn, Task, TaskID, TextColumn
from rich.progress import Progress as RichBar
from rich.text import Text

from launcher.ops import registry as reg
from launcher.ops.collect import FetchReport, NodeFetch, fetch_job
from launcher.ops.stage import HostReport, PlainProgress, Progress

if TYPE_CHECKING:
    from launcher.cli.environment import Environment
    from launcher.runners.ssh import ConnectOptions


class RichProgress(Progress):
    """Files, bytes and speed per host, on a terminal."""

    def __init__(self, bar: RichBar, say: Callable[[str], None]):
        self.bar, self.say = bar, say
        self.tasks: dict[str, TaskID] = {}

    def start(self, host: str, total: int, files: int) -> None:
        """A bar per host with something to send; none for nothing (a no-op re-submit drew
        "0 file(s) 1/1 bytes ?")."""
        if files or total:
            self.tasks[host] = self.bar.add_task(f"{host}: {files} file(s)", total=max(total, 1))

    def advance(self, host: str, n: int) -> None:
        if host in self.tasks:
            self.bar.advance(self.tasks[host], n)

    def done(self, host: str, report: HostReport) -> None:
        if host in self.tasks:
            self.bar.update(self.tasks[host], completed=self.bar.tasks[self.tasks[host]].total)
        PlainProgress(self.say).done(host, report)


MANY_HOSTS = 8  # past this many hosts, staging reports the group, not a bar or line per host


class GroupProgress(Progress):
    """Staging to many hosts: one bar for the group on a terminal (``bar``), no line per host,
    and one summary line when every host is done (a 64-node submit printed 64 lines or drew 64
    bars). Relays and shared filesystems are counted, the slowest host named."""

    def __init__(self, hosts: int, say: Callable[[str], None], bar: RichBar | None = None):
        self.hosts, self.say, self.bar = hosts, say, bar  # hosts: for the bar's title
        self.task: TaskID | None = None
        self.reports: dict[str, HostReport] = {}
        self.lock = threading.Lock()

    def start(self, host: str, total: int, files: int) -> None:
        if self.bar is None or not (files or total):
            return
        with self.lock:
            if self.task is None:
                self.task = self.bar.add_task(f"staging to {self.hosts} hosts", total=max(total, 1))
            else:
                self.bar.update(self.task, total=(self.bar.tasks[self.task].total or 0) + total)

    def advance(self, host: str, n: int) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task, n)

    def done(self, host: str, report: HostReport) -> None:
        with self.lock:
            self.reports[host] = report

    def finish(self) -> None:
        if self.reports:
            self.say(group_line(list(self.reports.values())))


def group_line(reports: list[HostReport]) -> str:
    """'staged to 64 hosts: 3 file(s), 12.0 MiB sent from here; 63 fed by the relay; linked 5
    on each; slowest 10.0.0.14 (0.6 s)' (pure)."""
    sent = sum(r.bytes_sent for r in reports)
    files = sum(r.objects_sent for r in reports)
    relayed = sum(1 for r in reports if r.via and r.via != "laptop")
    shared = sum(1 for r in reports if r.shared_with)
    linked = sorted({r.linked + r.copied for r in reports if not r.shared_with})
    slowest = max(reports, key=lambda r: r.seconds)
    parts = [f"staged to {len(reports)} hosts: {files} file(s), {sent / 2**20:.1f} MiB sent from here"]
    if relayed:
        parts.append(f"{relayed} fed by the relay")
    if shared:
        parts.append(f"{shared} on a shared filesystem (staged once)")
    if linked:
        parts.append(f"linked {linked[0]} on each" if len(linked) == 1 else f"linked {linked[0]}-{linked[-1]}")
    parts.append(f"slowest {slowest.host} ({slowest.seconds:.1f} s)")
    return "; ".join(parts)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class MiBSpeedColumn(ProgressColumn):
    """Bytes per second in MiB/s, as every other line says it (rich's column is decimal MB/s)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?" if speed is None else f"{_mib(int(speed))}/s", style="progress.data.speed")


def transfer_bar(console) -> RichBar:
    """The bar of a send or a fetch: binary units, and gone when done (transient), leaving each
    host's line. A fetch at 80 columns left its finished bar under that line, the same bytes in
    other units: "4.4 MiB in 0.2 s (21.9 MiB/s)" then "4.7/4.7 MB 236.0 MB/s"."""
    return RichBar(TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                   MiBSpeedColumn(), console=console, transient=True)


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

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def start(self, host: str, files: int, total_bytes: int) -> None:
        self.say(f"{host}: fetching {files} file(s), {_mib(total_bytes)}")

    def advance(self, host: str, n: int) -> None:
        pass

    def done(self, host: str, node: NodeFetch) -> None:
        self.say(node_line(node))


class RichFetchProgress(PlainFetchProgress):
    """A terminal: one bar per node with bytes and bytes/s."""

    def __init__(self, bar: RichBar, say: Callable[[str], None]):
        super().__init__(say)
        self.bar, self.lock = bar, threading.Lock()
        self.tasks: dict[str, TaskID] = {}

    def start(self, host: str, files: int, total_bytes: int) -> None:
        with self.lock:
            self.tasks[host] = self.bar.add_task(f"{host}: {files} file(s)", total=max(total_bytes, 1))

    def advance(self, host: str, n: int) -> None:
        self.bar.advance(self.tasks[host], n)

    def done(self, host: str, node: NodeFetch) -> None:
        if host in self.tasks:
            self.bar.update(self.tasks[host], completed=self.bar.tasks[self.tasks[host]].total)
        super().done(host, node)


def fetch_with_progress(env: Environment, registry: reg.Registry, job: str, what: str, dest: Path,
                        options: ConnectOptions | None) -> FetchReport:
    """Fetch with a bar per node on a terminal, plain lines otherwise (used by fetch and submit --fetch)."""
    say = lambda text: env.stderr.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    if env.stderr.is_terminal and not env.raw:
        bar = transfer_bar(env.stderr)
        with bar:
            return fetch_job(registry, job, what, dest, env.state_dir, progress=RichFetchProgress(bar, say),
                             options=options)
    return fetch_job(registry, job, what, dest, env.state_dir, progress=PlainFetchProgress(say), options=options)
