"""`alaunch render JOB`: write the MindFormers YAML the hosts will run, after every check.

Order: load the job -> refuse missing local paths -> render (overrides, --set, derived
values, host paths) -> static checks -> with ``--validate``, real MindFormers (or a visible
warning that the layer was skipped) -> only then print or write. A refused job writes nothing.
Without ``--validate`` nothing imports MindFormers: render took 3.1-3.5 s (its imports) where
plan took 0.4 s (issue #33); tests/test_state_words.py fails if a plain render imports it.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import typer

from launcher.cli import environment
from launcher.cli.options import ExcludeOpt, IncludeOpt, SlotsOpt

ORDER = 20
PREVIEW_JOB_ID = "<job-id>"


def _hosts(hostfile: Path | None, local: bool, local_slots: int, include: str | None = None,
           exclude: str | None = None, devices: str | None = None):
    """The hosts the target's engine counts (a scheduler target: its nodes and workdir), with
    submit's filters: ``render --include h1`` renders the world ``submit --include h1`` runs
    (render counted the whole hostfile: 16 where submit ran 2, issue #33). No key file is
    checked: render connects to nothing."""
    from launcher.ops.engines import read_target
    hosts = read_target(hostfile, local=local, slots=local_slots, include=include, exclude=exclude,
                        keys=False).node_hosts()
    if devices is not None:
        from launcher.core.cards import parse_devices, pin_devices
        hosts = pin_devices(hosts, parse_devices(devices))
    return hosts


def build(job: Path, hosts, sets: list[str], job_id: str = PREVIEW_JOB_ID, check_mindformers: bool = True):
    """Everything `render` checks, with no output: (spec, rendered, mindformers check). Raises InputError."""
    from launcher.core import render as render_mod
    from launcher.core import validate
    from launcher.core.hostfile import DEFAULT_WORKDIR
    from launcher.core.layout import JobLayout
    from launcher.core.spec import load_job
    from launcher.ops import mfcheck

    spec = render_mod.apply_job_sets(load_job(job), sets)  # --set nodes=all, cards_per_node=1, env.X=...
    validate.check_local_paths(spec)
    workdir = hosts[0].remote_workdir if hosts else DEFAULT_WORKDIR
    layout = JobLayout.for_job(workdir, job_id)
    template_path = spec.template_path()
    template_text = template_path.read_text(encoding="utf-8")
    rendered = render_mod.render_job(spec, hosts, layout, sets, template_text=template_text)
    warnings = validate.check_static(rendered.config, rendered.derived, source=spec.source)
    mf = mfcheck.check_with_mindformers(rendered.text, rendered.config, source=spec.source) \
        if check_mindformers else mfcheck.NOT_REQUESTED
    return spec, rendered, mf, template_text, str(template_path), warnings


def register(app: typer.Typer) -> None:
    @app.command("render", help="Render and check a job's MindFormers YAML (nothing is sent).")
    def render_cmd(
        job: Path = typer.Argument(..., help="Job file (YAML)."),
        hostfile: Path | None = typer.Option(None, "-H", "--hostfile", help="Hostfile (DeepSpeed format)."),
        local: bool = typer.Option(False, "--local", help="Run on this machine (the default without -H)."),
        local_slots: SlotsOpt = 1,
        include: IncludeOpt = None, exclude: ExcludeOpt = None,
        devices: str | None = typer.Option(None, "--devices",
                                              help="Pin the cards on every node, e.g. 4,5,6,7 (as submit)."),
        sets: list[str] = typer.Option([], "--set",
                                       help="Override a key: key=value (YAML-typed); +key=value adds one."),
        output: Path | None = typer.Option(None, "-o", "--output", help="Write the rendered YAML here."),
        summary: bool = typer.Option(False, "--summary", help="Print a table of the derived values."),
        diff: bool = typer.Option(False, "--diff", help="Print a unified diff against the template."),
        validate_mf: bool = typer.Option(False, "--validate",
                                         help="Also load the config with the real MindFormers (~3 s of imports)."),
        no_mindformers: bool = typer.Option(False, "--no-mindformers", hidden=True,
                                            help="Skip the real-MindFormers validation (the default now)."),
    ) -> None:
        from launcher.ops import mfcheck

        env = environment.current()
        hosts = _hosts(hostfile, local, local_slots, include, exclude, devices)
        spec, rendered, mf, template_text, template_path, warnings = build(job, hosts, sets,
                                                                           check_mindformers=validate_mf
                                                                           and not no_mindformers)
        for warning in warnings:
            env.stderr.print(f"warning: {warning}", style="yellow", markup=False, soft_wrap=True)
        if mf.skipped and mf is not mfcheck.NOT_REQUESTED:  # asked for, but not installed: say so
            env.stderr.print(f"warning: {mf.detail}", style="yellow", markup=False, soft_wrap=True)
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(rendered.text, encoding="utf-8")
        if summary:
            from rich.table import Table

            table = Table(title=f"{spec.name} ({spec.kind}) <- {spec.template}", show_header=False)
            table.add_column("what", style="bold")
            table.add_column("value")
            for label, value in rendered.summary_rows():
                table.add_row(label, value)
            env.stdout.print(table)
        if diff:
            from launcher.core import yamlio

            template = yamlio.loads(template_text, template_path, allow_aliases=True)
            before = yamlio.dumps(template).splitlines(keepends=True)
            after = rendered.text.splitlines(keepends=True)
            text = "".join(difflib.unified_diff(before, after, fromfile=spec.template, tofile="rendered"))
            env.stdout.print(text or "(no change against the template)", markup=False, highlight=False,
                             soft_wrap=True)
        if not (summary or diff or output):
            env.stdout.print(rendered.text, markup=False, highlight=False, soft_wrap=True, end="")
        if output is not None:
            env.stderr.print(f"wrote {output} (sha256 {rendered.sha256[:12]}); {mf.detail}", markup=False)
