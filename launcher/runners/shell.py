"""Pure builders of the shell text a runner sends: argv lists in, quoted strings out.

Nothing here does I/O, so each rule is a one-line test. A user value (path, argument,
environment value) only ever reaches a shell as one ``shlex.quote``-d word; the only
unquoted text is the fixed scaffolding written here. ``~/`` at the start of a path is kept
expandable as ``"$HOME"/...`` because remote workdirs default to ``~``.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import signal
from typing import Mapping, Sequence

from launcher.errors import InputError

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Runs as `sh -c INNER alaunch-detached PIDFILE EXITFILE CMD...`: writes its own pid (the
# process group id, it is the session leader) atomically, runs CMD as its child, then writes
# CMD's exit code atomically. TERM/INT/HUP are caught (not ignored: ignoring would be
# inherited by CMD) so a group signal still lets it record CMD's code (143 for TERM).
DETACHED_INNER = ('p=$1; e=$2; shift 2; trap : TERM INT HUP; '
                  'echo $$ >"$p.tmp" && mv -f "$p.tmp" "$p"; '
                  '"$@"; c=$?; echo $c >"$e.tmp" && mv -f "$e.tmp" "$e"; exit $c')
DETACHED_START_WAIT_S = 10


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


def detached_script(argv: Sequence[str], *, env: Mapping[str, str] | None, cwd: str | None,
                    log_path: str, pid_path: str, exit_code_path: str) -> str:
    """Start ``argv`` in its own session, all streams redirected, and print its pid.

    ``setsid`` makes it a session and process-group leader, so it survives the SSH
    connection and ``signal_group(pid)`` reaches everything it starts. The caller's shell
    waits only until the pid file appears (never for the process itself).
    """
    dirs = sorted({posixpath.dirname(p) or "." for p in (log_path, pid_path, exit_code_path)})
    pid_q, exit_q, log_q = quote_path(pid_path), quote_path(exit_code_path), quote_path(log_path)
    inner = join_argv(["setsid", "sh", "-c", DETACHED_INNER, "alaunch-detached"])
    cmd = join_argv(env_argv(env) + list(argv))
    parts = [f"cd {quote_path(cwd)}"] if cwd else []  # first: relative paths are from cwd
    parts += ["mkdir -p -- " + " ".join(quote_path(d) for d in dirs), f"rm -f -- {pid_q} {exit_q}"]
    # `;`/newline, not `&&`, before the `&`: `a && b &` would background the whole list.
    start = f"{inner} {pid_q} {exit_q} {cmd} >{log_q} 2>&1 </dev/null &"
    wait = (f"n=0; while [ ! -s {pid_q} ]; do n=$((n+1)); "
            f"if [ $n -gt {DETACHED_START_WAIT_S * 100} ]; then "
            f"echo 'detached process did not start' >&2; cat {log_q} >&2; exit 1; fi; "
            f"sleep 0.01; done; cat {pid_q}")
    return " && ".join(parts) + " || exit 1\n" + start + "\n" + wait


def signal_argv(pgid: int, sig: int | str) -> list[str]:
    """Signal a whole process group by id, never by a name pattern.

    The POSIX shell's builtin ``kill`` is used: procps' /usr/bin/kill reads ``-- -59`` as a
    signal number when the group id is below 65 (common in a fresh pid namespace).
    """
    if int(pgid) <= 1:
        raise ValueError(f"refusing to signal process group {pgid}")
    name = sig if isinstance(sig, str) else signal.Signals(sig).name
    return ["sh", "-c", 'kill -s "$1" -- "-$2"', "alaunch-kill", name.removeprefix("SIG"), str(int(pgid))]


def stat_argv(pid: int) -> list[str]:
    return ["cat", f"/proc/{int(pid)}/stat"]


def parse_proc_stat(text: str) -> str | None:
    """The state letter of ``/proc/PID/stat`` (after the last ')': comm may hold spaces)."""
    if ")" not in text:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0] if fields else None
