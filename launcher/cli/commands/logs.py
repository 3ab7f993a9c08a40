"""`alaunch logs PATH`: read a log file or a fetched run directory, tagged by host and rank.

The pieces are kept apart so the live mode (``logs JOB -f``, lines arriving over SSH)
reuses them unchanged: :func:`discover` (local files -> streams), :class:`LinePrinter`
(filter, tag, colour and print one line), :func:`print_summary` (the end table or JSON),
all fed through one :class:`launcher.metrics.logparse.JobLogs`.

Which file is which rank: ``worker_N.log`` (msrun) and ``.../rank_N/info.log`` or
``error.log`` (MindFormers) are rank N; ``scheduler.log`` is msrun's scheduler. In a run
directory ``runs/<job-id>/<host>/...`` the first directory level is the host. The same
MindFormers lines reach both ``worker_N.log`` (stdout) and ``rank_N/info.log``, so each
(host, rank) is read from one file: the worker log when fetched, else info.log.
"""

from __future__ import annotations

from pathlib import Path

import typer

from launcher.cli import environment
from launcher.cli.options import AcceptNewOpt, KnownHostsOpt, SshConfigOpt
from launcher.errors import ExitCode, InputError

ORDER = 60


def show_local(path: Path, *, summary: bool, as_json: bool, grep: str | None, rank: int | None,
               node: str | None, raw: bool, since: str | None = None) -> int:
    """The local mode; returns the exit code (JOB_FAILED when a failure was recognised)."""
    from launcher.cli.logview import LinePrinter, compile_grep, print_summary
    from launcher.metrics.logfiles import discover, feed_file_line, merged_lines, parse_files
    from launcher.metrics.logparse import JobLogs

    files = discover(path)
    regex = compile_grep(grep)
    if rank is not None or node is not None:
        files = [f for f in files if (rank is None or f.rank == rank) and (node is None or f.host == node)]
        if not files:
            raise InputError(f"no log for {'rank ' + str(rank) if rank is not None else ''}"
                             f"{' on ' + node if node else ''} here", source=str(path))
    if summary or as_json:
        job = parse_files(files)
        print_summary(job, as_json=as_json)
    else:
        from launcher.cli.live import parse_since
        printer = LinePrinter(tagged=len(files) > 1, raw=raw, grep=regex, since=parse_since(since))
        job = JobLogs()
        for lf, line in merged_lines(files):
            feed_file_line(job, lf, line)
            printer.emit(lf.host, lf.rank, line)
        job.finish()
        if not raw:
            print_summary(job, as_json=False, to_stderr=True)
    return int(ExitCode.JOB_FAILED) if job.verdict() is not None else int(ExitCode.OK)


def show_job(ref: str, *, follow: bool, grep: str | None, rank: int | None, node: str | None, raw: bool,
             since: str | None, known_hosts: Path | None, ssh_config: Path | None, accept_new: bool,
             verbose: bool = False, from_start: bool = False, progress_every: float = 10.0,
             unreachable_after: float = 10.0, telemetry_every: float | None = None,
             summary: str | None = None, fetched_in: Path = Path("runs")) -> int:
    """The job mode: every node's logs over one channel each (see launcher.ops.follow).

    ``summary`` ("table" or "json"): only the summary — of the fetched copy when there is one
    (``fetched_in/<job-id>``, where ``fetch`` puts it), else read from the hosts (every line, none
    printed). It said "fetch the job first", and still said it after ``fetch``."""
    from launcher.cli.connect import job_service, runner_factory, saved_ssh
    from launcher.cli.live import follow_job
    from launcher.ops import registry as reg

    env = environment.current()
    registry, service = job_service(env, known_hosts, ssh_config, accept_new, ref)
    with registry:
        record = registry.get(ref)
        runner_for = runner_factory(*saved_ssh(record, known_hosts, ssh_config), accept_new)
        if summary is not None and (fetched_in / record.id).is_dir():
            return show_local(fetched_in / record.id, summary=True, as_json=summary == "json", grep=None,
                              rank=rank, node=node, raw=raw)
        if not record.nodes or (record.state in (reg.PENDING, reg.STAGING)):
            raise InputError(f"job {record.id} is {record.state}: it has no logs on its hosts yet")
        return follow_job(record, service, runner_for, follow=follow, raw=raw, grep=grep, rank=rank,
                          node=node, since=since, verbose=verbose, resume=not from_start,
                          progress_every=progress_every, unreachable_after=unreachable_after,
                          telemetry_every=telemetry_every, summary=summary)


def register(app: typer.Typer) -> None:

    @app.command("logs")
    def logs(
        target: str = typer.Argument(..., help="A job (id, prefix or name), a log file or a fetched run directory."),
        follow: bool = typer.Option(False, "--follow", "-f",
                                    help="Follow the job until it ends; exit with its status code."),
        summary: bool = typer.Option(False, "--summary",
                                     help="Print only the summary (a job: its fetched copy, else from the hosts)."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
        grep: str | None = typer.Option(None, "--grep", help="Only lines matching this regex."),
        rank: int | None = typer.Option(None, "--rank", help="Only this rank."),
        node: str | None = typer.Option(None, "--node", help="Only this host."),
        raw: bool = typer.Option(False, "--raw", help="Plain lines, no colour, no summary (pipes)."),
        since: str | None = typer.Option(None, "--since", help="Only lines since: 30s, 10m, 2h or a time."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="-f: every line, not the short story."),
        from_start: bool = typer.Option(False, "--from-start",
                                        help="-f: read every log from its start, not from where the last "
                                             "follower left it."),
        progress_every: float = typer.Option(10.0, "--progress-every", help="-f in a pipe: a progress line every N s."),
        unreachable_after: float = typer.Option(10.0, "--unreachable-after",
                                                help="-f: a node silent this many seconds shows as unreachable."),
        telemetry_every: float | None = typer.Option(None, "--telemetry-every", min=0,
                                                     help="-f: seconds between npu-smi samples of each node "
                                                          "(default: the job file's telemetry_every, 5; 0: off; "
                                                          "a Slurm job's nodes sample at the job file's period, "
                                                          "0 stops reading them)."),
        known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None,
        accept_new: AcceptNewOpt = False,
    ) -> None:
        """Show a job's or a log's lines tagged by host/rank, or their summary (exit 100 on a failure)."""
        path = Path(target)
        if path.exists() or any(sep in target for sep in ("/", "\\")) or target.endswith(".log"):
            if follow:
                raise InputError("-f follows a job from the registry, not a local file", key="--follow")
            code = show_local(path, summary=summary, as_json=as_json, grep=grep, rank=rank,
                              node=node, raw=raw, since=since)
        else:
            if (summary or as_json) and follow:
                raise InputError("--summary/--json print a job's summary once; drop -f (or them)", key="--summary")
            code = show_job(target, follow=follow, grep=grep, rank=rank, node=node, raw=raw, since=since,
                            known_hosts=known_hosts, ssh_config=ssh_config, accept_new=accept_new,
                            verbose=verbose, from_start=from_start, progress_every=progress_every,
                            unreachable_after=unreachable_after, telemetry_every=telemetry_every,
                            summary="json" if as_json else "table" if summary else None)
        if code:
            raise typer.Exit(code)
