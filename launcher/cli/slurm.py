"""The verbs' Slurm branch: a ``-H`` file whose top-level key is ``slurm:`` comes here.

Kept out of the verb modules so each verb only gains a two-line dispatch; the work is in
:mod:`launcher.ops.slurm` (I/O) and :mod:`launcher.core.slurm` (pure).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from launcher.cli import environment

if TYPE_CHECKING:
    from launcher.core import slurm as core
    from launcher.ops import registry as reg


def target_of(hostfile: Path | None) -> core.SlurmTarget | None:
    """The Slurm target when ``-H`` names one, else None (a hostfile). The sniff reads one line
    and imports nothing, so hostfile runs pay nothing for the Slurm branch."""
    if hostfile is None:
        return None
    try:
        with open(hostfile, encoding="utf-8", errors="replace") as fh:
            first = next((ln.split("#")[0].strip() for ln in fh if ln.split("#")[0].strip()), "")
    except OSError:
        return None  # the hostfile reader names the problem
    if first != "slurm:":
        return None
    from launcher.core import slurm as core
    return core.read_target(hostfile)


def service(registry: reg.Registry, factory, say: Callable[[str], None] = lambda s: None, progress=None):
    from launcher.ops.slurm import SlurmService
    env = environment.current()
    return SlurmService(registry, env.state_dir, say=say, progress=progress, exec_factory=factory)


def plan_text(job: Path, target: core.SlurmTarget, sets, master_port: int | None, bin_dir: str | None,
              job_id: str) -> str:
    from launcher.core.spec import load_job
    from launcher.ops.slurm import SlurmService
    spec = load_job(job)
    target = SlurmService.effective_target(spec, target, bin_dir)
    # prepare() reads neither the registry nor the hosts: a service without them renders the script
    service = SlurmService(None, Path("."), exec_factory=None)  # type: ignore[arg-type]
    _, batch = service.prepare(spec, target, job_id, sets,
                                                                        master_port=master_port)
    return batch.render()


def submit(job: Path, target: core.SlurmTarget, opts, factory, *, follow: bool, fetch: bool, fetch_dest: Path,
           runner_for, accept_new: bool, verbose: bool = False) -> None:
    """``submit -H target.yaml``: stage through the login node, sbatch; optionally follow/fetch."""
    import typer

    from launcher.ops import registry as reg
    env = environment.current()
    say = lambda text: env.stderr.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    from launcher.ops.stage import PlainProgress
    with reg.Registry.in_state_dir(env.state_dir) as registry:
        svc = service(registry, factory, say, PlainProgress(say))
        record = svc.submit(job, target, opts)
        say(f"submitted {record.name} to Slurm as job {record.meta['slurm_job_id']} "
            f"({len(record.nodes)} node(s) x {record.meta['target']['cards_per_node']} worker(s)); "
            f"{record.state}")
        from launcher.cli.live import finish_submit
        code = finish_submit(registry, record, svc, runner_for, follow=follow, fetch=fetch, fetch_dest=fetch_dest,
                             accept_new=accept_new, verbose=verbose)
    if code:
        raise typer.Exit(code)


def hosts_check(target: core.SlurmTarget, factory, as_json: bool) -> None:
    """``hosts check -H target.yaml``: the login node answers, sinfo shows the partition's nodes."""
    import json

    from rich.table import Table

    from launcher.errors import AlaunchError, ExitCode
    from launcher.ops import registry as reg
    env = environment.current()
    with reg.Registry(env.state_dir / reg.DB_NAME) as registry:
        nodes, problems = service(registry, factory).check(target)
    if as_json:
        env.stdout.print(json.dumps({"login": target.login, "partition": target.partition,
                                     "nodes": [n.__dict__ for n in nodes], "problems": problems}, indent=1),
                         markup=False, highlight=False, soft_wrap=True)
    else:
        table = Table(title=f"Slurm partition {target.partition or '(default)'} via {target.login}")
        for col in ("node", "state", "gres", "cpus"):
            table.add_column(col)
        for n in nodes:
            table.add_row(n.name, n.state, n.gres, n.cpus)
        env.stdout.print(table)
        for p in problems:
            env.stdout.print(f"problem: {p}", markup=False, highlight=False, soft_wrap=True)
    if problems:
        raise AlaunchError(f"Slurm check failed: {problems[0]}", exit_code=ExitCode.CHECK_FAILED)
