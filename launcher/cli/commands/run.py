"""`alaunch run PIPELINE` and `alaunch resume JOB`: the recipe as one command, and attempt n+1.

``run`` prints one line per step (start, skip, re-attach, done or failure) and the steps
table at the end; a job step's logs are not streamed (``alaunch logs JOB`` has them;
``--logs`` streams them). ``--dry-run`` prints each step in order, whether it would run (and
what changed) or be skipped, what its references resolve to and its plan. Ctrl-C stops this
process at once: the jobs keep running (``alaunch run`` again re-attaches) unless
``--cancel-on-interrupt``.
"""

from __future__ import annotations

from pathlib import Path

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

ORDER = 32


def _results_step(env):
    """The pipeline's `results` built-in, drawn by the terminal (the runs table and the loss plot)."""
    from launcher.cli.runfacts import plot_losses, results_table
    from launcher.metrics.runfacts import collect

    def results(runner, step) -> dict:
        from launcher.core import pipeline as pl
        refs = list(pl.iter_refs(step.options.get("runs") or []))
        dirs = [runner.resolve(ref, "run_dir") for ref in refs]
        facts = [collect(Path(d)) for d in dirs]
        env.stdout.print(results_table(facts))
        local: dict[str, list[str]] = {"runs": dirs}
        out = {"local": local, "default": "runs"}
        if step.options.get("plot"):
            plot = runner.local_path(step.options["plot"])
            plot.parent.mkdir(parents=True, exist_ok=True)
            plot_losses(facts, plot)
            local["plot"] = [str(plot)]
            runner.say(f"  {step.name}: loss curves in {plot}")
        return out

    return results


def register(app: typer.Typer) -> None:

    @app.command("run", help="Run a pipeline of jobs and built-in steps (skips steps that are unchanged).")
    def run_cmd(
        pipeline: Path = typer.Argument(..., help="Pipeline file (jobs/pipelines/*.yaml)."),
        hostfile: HostfileOpt = None, local: LocalOpt = False, slots: SlotsOpt = 1,
        include: IncludeOpt = None, exclude: ExcludeOpt = None,
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the steps, their references and plans; "
                                                              "send nothing."),
        from_step: str | None = typer.Option(None, "--from", help="Run this step and everything after it."),
        only: list[str] = typer.Option([], "--only", help="Run only this step (repeatable)."),
        runs: Path = typer.Option(Path("runs"), "--runs", help="Where fetched runs go (runs/<job-id>/)."),
        logs: bool = typer.Option(False, "--logs", help="Stream each job step's logs (the steps then run one at "
                                                        "a time; without it, independent steps run together)."),
        bin_dir: str | None = typer.Option(None, "--bin-dir", envvar="ALAUNCH_REMOTE_BIN_DIR",
                                              help="Directory with msrun/python on the hosts (first on PATH)."),
        cancel_on_interrupt: bool = typer.Option(False, "--cancel-on-interrupt",
                                                 help="On Ctrl-C, cancel the running steps' jobs (without it they "
                                                      "keep running and `alaunch run` again re-attaches)."),
        force_reuse: bool = typer.Option(False, "--force-reuse",
                                         help="With --from/--only: use a step's earlier outputs even when it is not "
                                              "current or they are gone (warns instead of refusing)."),
        verbose: bool = typer.Option(False, "--verbose", "-v",
                                     help="--dry-run: also each job step's exact commands, per node."),
        known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None, accept_new: AcceptNewOpt = False,
    ) -> None:
        from launcher.cli.connect import runner_factory
        from launcher.cli.pipelineview import dry_facts, dry_head, steps_table
        from launcher.core.pipeline import load_pipeline
        from launcher.ops import registry as reg
        from launcher.ops.engines import engine_for, read_target
        from launcher.ops.pipeline import PipelineRunner
        from launcher.ops.service import SubmitOptions
        from launcher.ops.stage import Progress

        env = environment.current()
        say = lambda text: env.stderr.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
        spec = load_pipeline(pipeline)
        target = read_target(hostfile, local=local, slots=slots, include=include, exclude=exclude)
        factory = runner_factory(known_hosts, ssh_config, accept_new)
        with reg.Registry.in_state_dir(env.state_dir) as registry:
            service = engine_for(target, registry, env.state_dir, say=say, progress=Progress(), exec_factory=factory)
            follow = None
            if logs:
                from launcher.cli.live import follow_job
                follow = lambda record: follow_job(record, service, factory, raw=env.raw)  # noqa: E731
            runner = PipelineRunner(registry, service, target, say=say, runs_dir=runs,
                                    opts=SubmitOptions(bin_dir=bin_dir), follow=follow,
                                    builtins={"results": _results_step(env)}, concurrent=not logs,
                                    cancel_on_interrupt=cancel_on_interrupt, force_reuse=force_reuse)
            if dry_run:
                for i, view in enumerate(runner.describe(spec, from_step, only), 1):
                    env.stdout.print(dry_head(i, view), markup=False, highlight=False, soft_wrap=True)
                    for line in dry_facts(view) + view.resolves:
                        env.stdout.print(f"#   {line}", markup=False, highlight=False, soft_wrap=True)
                    if verbose or not view.job:  # a built-in's plan is one line; a job's, its commands
                        env.stdout.print(view.plan.rstrip(), markup=False, highlight=False, soft_wrap=True)
                    env.stdout.print("", markup=False, highlight=False)
                if not verbose:
                    env.stdout.print("# each job step's exact commands, per node: --dry-run --verbose",
                                     markup=False, highlight=False, soft_wrap=True)
                return
            record = runner.run(spec, from_step, only)
            env.stderr.print(steps_table(record, env.stderr.width, ids=registry.ids_and_names()))
            env.stdout.print(record.id, markup=False, highlight=False)
        if record.state != "succeeded":
            raise typer.Exit(100)

    @app.command("resume", help="Restart a failed or cancelled training job from its last checkpoint.",
                 short_help="Restart a failed or cancelled training job from its checkpoint.")
    def resume_cmd(
        job: str = typer.Argument(..., help="Job id, unique id prefix, or name (newest)."),
        follow: bool = typer.Option(False, "--follow", "-f", help="Follow the logs until the end."),
        known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None, accept_new: AcceptNewOpt = False,
    ) -> None:
        from launcher.cli.connect import job_service, runner_factory
        from launcher.ops.service import STATE_EXIT

        env = environment.current()
        say = lambda text: env.stderr.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
        registry, service = job_service(env, known_hosts, ssh_config, accept_new, job)
        code = 0
        with registry:
            record = service.resume(job, say)
            if follow:
                from launcher.cli.live import follow_job
                code = follow_job(record, service, runner_factory(known_hosts, ssh_config, accept_new), raw=env.raw)
                record = registry.get(record.id)
                code = int(STATE_EXIT[record.state])
            env.stdout.print(record.id, markup=False, highlight=False)
        if code:
            raise typer.Exit(code)

