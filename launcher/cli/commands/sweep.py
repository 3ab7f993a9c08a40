"""`alaunch sweep FILE -H TARGET`: many trials of one job (or pipeline) packed onto free cards.

``--dry-run`` checks the sweep file against its base (every swept key must exist in the
template: "did you mean" otherwise), lists every trial (id, overrides, LoRA trainable count,
cards) and sends nothing; it works on a hostfile and on a Slurm target alike (the engine
chooser reads ``-H``). Without it the driver runs the trials (``ops/sweep.py``), one line per
trial event, and prints the sweep id last; ``alaunch results SWEEP`` is the leaderboard.
Ctrl-C or a killed driver loses nothing: the trials run detached, and the same command again
keeps the finished ones and re-attaches the running ones.
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

ORDER = 33


def register(app: typer.Typer) -> None:

    @app.command("sweep", help="Run a sweep: many trials of a job or pipeline on the free cards, pruned, ranked.")
    def sweep_cmd(
        sweep_file: Path = typer.Argument(..., metavar="FILE", help="Sweep file (jobs/sweeps/*.yaml)."),
        hostfile: HostfileOpt = None, local: LocalOpt = False, slots: SlotsOpt = 1,
        include: IncludeOpt = None, exclude: ExcludeOpt = None,
        dry_run: bool = typer.Option(False, "--dry-run", help="List the trials (overrides, trainable "
                                                              "parameters, cards); send nothing."),
        bin_dir: str | None = typer.Option(None, "--bin-dir", envvar="ALAUNCH_REMOTE_BIN_DIR",
                                              help="Directory with msrun/python on the hosts (first on PATH)."),
        poll: float = typer.Option(1.0, "--poll", help="Seconds between the driver's looks (pruning, free cards)."),
        known_hosts: KnownHostsOpt = None, ssh_config: SshConfigOpt = None, accept_new: AcceptNewOpt = False,
    ) -> None:
        from launcher.cli.connect import runner_factory
        from launcher.cli.sweepview import plan_table
        from launcher.core.sweep import load_sweep
        from launcher.ops import registry as reg
        from launcher.ops import sweep as ops_sweep
        from launcher.ops.engines import engine_for, read_target
        from launcher.ops.service import SubmitOptions

        env = environment.current()
        say = lambda text: env.stderr.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
        sweep = load_sweep(sweep_file)
        base = ops_sweep.load_base(sweep)
        target = read_target(hostfile, local=local, slots=slots, include=include, exclude=exclude)
        plans = ops_sweep.plan(sweep, base, target)
        if dry_run:
            b = sweep.budget
            what = f"pipeline {Path(base.path).name} (step {base.step})" if base.pipeline else Path(base.path).name
            rules = [r for r, on in (("nan/inf", sweep.prune.nan),
                                     (f"median x{sweep.prune.k:g} from step {sweep.prune.min_steps}",
                                      sweep.prune.median)) if on]
            for line in (f"sweep {sweep.name}: {len(plans)} trial(s) of {what} on {target.source or '-'}",
                         f"objective: {sweep.objective.metric} ({sweep.objective.goal}); at most {b.max_parallel} "
                         f"at once" + (f"; budget {b.card_hours:g} card-hours" if b.card_hours else "")
                         + f"; pruning: {', '.join(rules) or 'off'}"):
                env.stdout.print(line, markup=False, highlight=False, soft_wrap=True)
            schedule = None
            if not target.schedules:  # a hostfile: the driver places them (a scheduler's target: it does)
                from launcher.core.sweep import waves
                capacity = {h.name: len(h.slot_ids) for h in target.node_hosts()}
                schedule = waves(capacity, [(p.nodes, p.cards_per_node) for p in plans], b.max_parallel)
            env.stdout.print(plan_table(plans, schedule))
            return
        factory = runner_factory(known_hosts, ssh_config, accept_new)
        with reg.Registry.in_state_dir(env.state_dir) as registry:
            engine = engine_for(target, registry, env.state_dir, say=say, exec_factory=factory)
            driver = ops_sweep.SweepDriver(registry, engine, target, sweep, base, say=say,
                                           opts=SubmitOptions(bin_dir=bin_dir), poll=poll)
            record = driver.run(plans)
            states = [t["state"] for t in record.trials]
            say(f"sweep {record.name}: " + ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
                + f"; `alaunch results {record.name}` ranks them")
            env.stdout.print(record.id, markup=False, highlight=False)
        if record.state != reg.SUCCEEDED:
            raise typer.Exit(100)

    @app.command("sweeps", help="List the sweeps, newest first, each with its best trial.")
    def sweeps_cmd(
        limit: int = typer.Option(20, "--limit", "-n", help="How many sweeps to show."),
        as_json: bool = typer.Option(False, "--json", help="The rows as JSON (the dashboard's /api/sweeps)."),
        wide: bool = typer.Option(False, "--wide", help="Every column whole (the terminal wraps)."),
    ) -> None:
        import datetime as dt
        import json

        from launcher.cli.sweepview import duration_text, sweeps_table
        from launcher.cli.tables import print_table
        from launcher.core.sweep import summary
        from launcher.ops import registry as reg

        env = environment.current()
        with reg.Registry.in_state_dir(env.state_dir) as registry:
            records = registry.sweeps(limit=limit)
        rows = [{"id": r.id, "name": r.name, "state": r.state, "reason": r.reason, "source": r.source,
                 "created_at": r.created_at, "ended_at": r.ended_at, **summary(r.trials, r.info)} for r in records]
        if as_json:
            env.stdout.file.write(json.dumps(rows, indent=1, default=str) + "\n")
            return
        if not rows:
            env.stdout.print("no sweeps yet: alaunch sweep jobs/sweeps/FILE.yaml -H HOSTFILE", markup=False)
            return
        now = dt.datetime.now(dt.timezone.utc)
        ages = [duration_text((now - dt.datetime.fromisoformat(r["created_at"].replace("Z", "+00:00"))
                               .replace(tzinfo=dt.timezone.utc)).total_seconds()) for r in rows]
        print_table(env.stdout, sweeps_table(rows, ages, env.stdout.width, wide), wide=wide)
