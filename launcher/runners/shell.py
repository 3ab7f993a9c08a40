"""Pure builders of the shell text a runner sends: argv lists in, quoted strings out.

Nothing here does I/O, so each rule is a one-line test. A user value (path, argument,
environment value) only ever reaches a shell as one ``shlex.quote``-d word; the only
unquoted text is the fixed scaffolding written here. ``~/`` at the start of a path is kept
expandable as ``"$HOME"/...`` because remote workdirs default to ``~``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

from launcher.errors import InputError

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")



def quote_path(path: str) -> str:
    """One shell word for a path; a leading ``~`` or ``~/`` stays the remote user's home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        rest = path[2:]
        return '"$HOME"/' + shlex.quote(rest) if rest else '"$HOME"/'
    return shlex.quote(path)


def sftp_path(path: str) -> str:
    """SFTP paths are literal (no shell); relative ones start at the home directory."""
    if path == "~":
        return "."
    if path.startswith("~/"):
        return path[2:] or "."
    return path


def env_argv(env: Mapping[str, str] | None) -> list[str]:
    """``env K=V ...`` as argv words (empty when there is nothing to set)."""
    if not env:
        return []
    words = ["env"]
    for key, value in env.items():
        if not _ENV_KEY.fullmatch(key):
            raise InputError(f"invalid environment variable name {key!r}; use letters, digits "
                             "and '_' (not starting with a digit)", key="env")
        words.append(f"{key}={value}")
    return words


def join_argv(argv: Sequence[str]) -> str:
    if not argv:
        raise ValueError("empty argv")
    return " ".join(shlex.quote(str(a)) for a in argv)


def command_line(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: str | None = None) -> str:
    """The one shell line that runs ``argv`` with ``env`` in ``cwd`` (exec: no extra shell)."""
    cmd = "exec " + join_argv(env_argv(env) + list(argv))
    if cwd:
        cmd = f"cd {quote_path(cwd)} && {cmd}"
    return cmd
