"""The injected environment (streams, state dir, terminal facts), as httpie does.

Verbs take an :class:`Environment` instead of reaching for ``sys.stdout`` or the
user's home directly, so tests can give them their own consoles and state dirs.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich and the registry load when a verb runs, not for `alaunch --help`
    from rich.console import Console


def _console(**kwargs: Any) -> Console:
    from rich.console import Console

    return Console(**kwargs)


def _default_state_dir() -> Path:
    from launcher.ops.registry import default_state_dir

    return default_state_dir()


@dataclass
class Environment:
    stdout: Console = field(default_factory=lambda: _console(highlight=False))
    stderr: Console = field(default_factory=lambda: _console(stderr=True, highlight=False))
    state_dir: Path = field(default_factory=_default_state_dir)
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    raw: bool = False  # plain lines, no colour, no live widgets (pipes, scripts)

    @property
    def interactive(self) -> bool:
        return self.stdout.is_terminal and not self.raw

    @classmethod
    def for_output(cls, *, raw: bool = False, state_dir: Path | None = None) -> Environment:
        no_colour = raw or bool(os.environ.get("NO_COLOR")) or not sys.stdout.isatty()
        env = cls(
            stdout=_console(highlight=False, no_color=no_colour, soft_wrap=raw),
            stderr=_console(stderr=True, highlight=False, no_color=raw or bool(os.environ.get("NO_COLOR"))),
            raw=raw,
        )
        if state_dir is not None:
            env.state_dir = state_dir
        return env


_current: Environment | None = None


def current() -> Environment:
    """The environment of this invocation (set by the CLI's callback; a default otherwise)."""
    global _current
    if _current is None:
        _current = Environment.for_output()
    return _current


def set_current(env: Environment | None) -> None:
    global _current
    _current = env
