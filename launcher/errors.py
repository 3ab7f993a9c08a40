"""Exit codes and the error types that map to them: the one place both are defined.

Every verb raises an :class:`AlaunchError` (or a subclass) for anything the user
should read as one line; ``launcher.cli.app.main`` turns it into ``alaunch: error: ...``
on stderr and the exit code it carries. Tracebacks are for bugs only.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # a command failed (remote command, I/O, ...)
    USAGE = 2  # bad input: job file, hostfile, override, option
    CHECK_FAILED = 3  # `hosts check` (or another check) found a host that does not pass
    CARDS_BUSY = 4  # submit: too few free cards on a node (without --wait)
    INTERRUPTED = 130  # Ctrl-C
    # Job status codes, as `sky logs --status` does: scripts branch on these.
    JOB_FAILED = 100
    JOB_RUNNING = 101
    JOB_CANCELLED = 102
    JOB_UNKNOWN = 103


class AlaunchError(Exception):
    """An error the user should see as one clear line (no traceback)."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, exit_code: ExitCode | None = None):
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


class InputError(AlaunchError):
    """Bad user input: names the file (and line or key) and what would be valid."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None,
                 key: str | None = None):
        where = ""
        if source is not None:
            where = source
            if line is not None:
                where += f":{line}"
            if key is not None:
                where += f": {key}"
            where += ": "
        elif key is not None:
            where = f"{key}: "
        super().__init__(where + message)
        self.source = source
        self.line = line
        self.key = key
        self.detail = message


class RemoteError(AlaunchError):
    """A command or transfer on a host failed; the message names the host."""

    exit_code = ExitCode.ERROR

    def __init__(self, host: str, message: str):
        super().__init__(f"{host}: {message}")
        self.host = host
        self.detail = message


class UnsafeDirectory(AlaunchError):
    """A directory alaunch keeps private things in (the ssh control sockets) is not private:
    a symlink, another user's, or writable by others. The message says what to do."""


class RegistryCorrupt(AlaunchError):
    """The job registry's sqlite file is damaged: the message names it and how to recover."""

    exit_code = ExitCode.ERROR


class NothingToResume(AlaunchError):
    """A training job has no checkpoint every rank saved: a retry submits it again from scratch."""

    exit_code = ExitCode.ERROR


class ResumeBusy(AlaunchError):
    """Another ``alaunch resume`` (or a pipeline's retry) of the same job is under way."""

    exit_code = ExitCode.ERROR
