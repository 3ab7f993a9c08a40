"""The `alaunch` command line: parse, run the verb, map errors to exit codes.

Verbs live in ``launcher/cli/commands/<name>.py``; each module defines
``register(app: typer.Typer)`` and an ``ORDER`` (its place in ``--help``). The CLI
finds them by listing that package, so adding a verb is adding one file.

Start-up is part of the interface (benchmarks/bench_cli.py, goal < 0.15 s): a verb
module imports only typer and the light launcher.cli/errors modules at its top, and its
stack (ops, runners/paramiko, pydantic models, rich widgets, metrics) inside the
function that runs. When the verb on the command line names a module (``alaunch jobs``
-> ``commands/jobs.py``), only that module is loaded; anything else (``--help``, a verb
registered by a module of another name, a typo) loads them all.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import typer

from launcher import __version__
from launcher.cli import environment
from launcher.errors import AlaunchError, ExitCode

HELP = (
    "Launch MindSpore/MindFormers LoRA fine-tuning, eval and predict jobs on one or many "
    "Ascend hosts over SSH, follow them, and bring the results home."
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"alaunch {__version__}")
        raise typer.Exit()


ROOT_VALUE_OPTIONS = ("--state-dir",)  # root options that take a value (see _root below)


def _verb_of(argv: list[str]) -> str | None:
    """The verb on the command line: the first word that is not a root option (or None)."""
    args = iter(argv)
    for arg in args:
        if arg in ROOT_VALUE_OPTIONS:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def _verb_modules(verb: str | None) -> list[str]:
    """Names of the verb modules to load for this command line (see the module docstring)."""
    import launcher.cli.commands as commands_pkg

    if verb and not verb.startswith("_"):
        for path in commands_pkg.__path__:
            if os.path.isfile(os.path.join(path, f"{verb}.py")):
                return [verb]
    import pkgutil  # 5 ms: only when every verb is needed

    return [info.name for info in pkgutil.iter_modules(commands_pkg.__path__) if not info.name.startswith("_")]


def build_app(argv: list[str] | None = None) -> typer.Typer:
    """The app with the verbs ``argv`` needs (all of them when argv is None)."""
    app = typer.Typer(
        name="alaunch",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        rich_markup_mode=None,
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                     help="Print the version and exit."),
        state_dir: Path | None = typer.Option(
            None, "--state-dir", envvar="ALAUNCH_STATE_DIR",
            help="Where the job registry lives (default: $XDG_STATE_HOME/alaunch)."),
    ) -> None:
        env = environment.Environment.for_output(state_dir=state_dir)
        environment.set_current(env)

    names = _verb_modules(None if argv is None else _verb_of(argv))
    modules = [importlib.import_module(f"launcher.cli.commands.{name}") for name in names]
    for module in sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__)):
        module.register(app)
    _short_helps(app)
    return app


SHORT_HELP = 65  # click cuts a one-liner longer than this with "..." in an 80-column --help


def short_help(text: str, limit: int = SHORT_HELP) -> str:
    """A command's ``--help`` one-liner that fits whole: the first sentence, else cut at the
    last clause boundary that fits ("...", click's own cut, read as if words were missing)."""
    first = " ".join(text.split("\n\n")[0].split())
    first = first.split(". ")[0].rstrip(".") if len(first) > limit else first
    if len(first) <= limit:
        return first
    for mark in (" (", "; ", ", ", ": ", " "):
        at = first.rfind(mark, 0, limit + 1)
        if at > 10:
            return first[:at].rstrip(",;:")
    return first[:limit]


def _short_helps(app: typer.Typer) -> None:
    """Every registered command (and sub-command) gets a one-liner that fits (:func:`short_help`)."""
    for info in app.registered_commands:
        text = info.help or (info.callback.__doc__ if info.callback else None)
        if info.short_help is None and text:
            info.short_help = short_help(text)
    for group in app.registered_groups:
        sub = group.typer_instance
        text = group.help if isinstance(group.help, str) else getattr(sub.info, "help", None) if sub else None
        if isinstance(text, str):
            group.short_help = short_help(text)
            if sub is not None:
                sub.info.short_help = group.short_help
        if sub is not None:
            _short_helps(sub)


def _as_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns (and exits with) the exit code.

    SIGTERM and SIGHUP (``kill``, a closed terminal) take Ctrl-C's path, not Python's default
    of dying on the spot: ``logs -f`` then kills and reaps its ssh clients, and ``submit``
    cleans up as on Ctrl-C (tests/test_follow_cluster.py sends both)."""
    if argv is None:
        import signal
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _as_ctrl_c)
    app = build_app(sys.argv[1:] if argv is None else argv)
    try:
        # standalone mode: click/typer print usage errors and help themselves and exit
        # through SystemExit with their codes (2 for usage); our errors come through here.
        app(args=argv, prog_name="alaunch")
        code = int(ExitCode.OK)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except AlaunchError as exc:
        environment.current().stderr.print(f"alaunch: error: {exc.message}", markup=False,
                                           highlight=False, soft_wrap=True)
        code = int(exc.exit_code)
    except KeyboardInterrupt:
        environment.current().stderr.print("alaunch: interrupted", markup=False)
        code = int(ExitCode.INTERRUPTED)
    finally:
        environment.set_current(None)
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    main()
