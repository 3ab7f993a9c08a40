"""The `alaunch` command line: parse, run the verb, map errors to exit codes.

Verbs live in ``launcher/commands/<name>.py``; each module defines
``register(app: typer.Typer)`` and an ``ORDER`` (its place in ``--help``). The CLI
finds them by listing that package, so adding a verb is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path
from typing import Optional

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


def build_app() -> typer.Typer:
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
        state_dir: Optional[Path] = typer.Option(
            None, "--state-dir", envvar="ALAUNCH_STATE_DIR",
            help="Where the job registry lives (default: $XDG_STATE_HOME/alaunch)."),
    ) -> None:
        env = environment.Environment.for_output(state_dir=state_dir)
        environment.set_current(env)

    import launcher.cli.commands as commands_pkg

    modules = []
    for info in pkgutil.iter_modules(commands_pkg.__path__):
        if info.name.startswith("_"):
            continue
        modules.append(importlib.import_module(f"launcher.cli.commands.{info.name}"))
    for module in sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__)):
        module.register(app)
    return app


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns (and exits with) the exit code."""
    app = build_app()
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
