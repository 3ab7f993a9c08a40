"""The one transport interface (SkyPilot's CommandRunner): run, stream, move files, detach.

Local and SSH runners implement the same small set of primitives, so everything above
(hosts check, stage, launch, follow, collect) is written once. Results are typed; failures
are :class:`RemoteError` subclasses that name the host and say what happened.
"""

from __future__ import annotations

import subprocess
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from launcher.errors import RemoteError
from launcher.core.hostfile import Host
from launcher.runners import shell

LineCallback = Callable[[str], "bool | None"]  # return False to stop streaming


@dataclass(frozen=True)
class CommandResult:
    host: str
    argv: tuple[str, ...]
    exit_code: int | None  # None: stopped (stream) before the command ended
    stdout: str
    stderr: str
    duration: float  # seconds

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class ProcessState:
    pid: int
    state: str | None  # /proc/PID/stat state letter; None when there is no such process

    @property
    def alive(self) -> bool:
        """Zombies (Z) and dead (X) are not alive, although `kill -0` would say they are."""
        return self.state is not None and self.state not in ("Z", "X")


class CommandFailed(RemoteError):
    """A command ran and exited non-zero (``check=True``)."""

    def __init__(self, result: CommandResult):
        tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
        cmd = shell.join_argv(result.argv)
        if len(cmd) > 120:
            cmd = cmd[:117] + "..."
        msg = f"`{cmd}` exited {result.exit_code}"
        if tail:
            msg += ": " + " | ".join(tail)
        super().__init__(result.host, msg)
        self.result = result


class ConnectError(RemoteError):
    """The host could not be reached or would not let us in; ``reason`` is a short phrase."""

    def __init__(self, host: str, reason: str, hint: str = ""):
        super().__init__(host, reason + (f" ({hint})" if hint else ""))
        self.reason = reason
        self.hint = hint


class HostKeyError(ConnectError):
    """Unknown or changed host key: never accepted silently."""


class CommandTimeout(RemoteError):
    pass


class CommandRunner(ABC):
    """Run commands and move files on one host. Constructing one touches no network."""

    def __init__(self, host: Host):
        self.host = host

    @property
    def name(self) -> str:
        return self.host.name

    # --- primitives each runner implements
    @abstractmethod
    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
            cwd: str | None = None, timeout: float | None = None, check: bool = True,
            stdin: str | bytes | None = None) -> CommandResult:
        """Run argv to completion and capture its output."""

    @abstractmethod
    def stream(self, argv: Sequence[str], on_line: LineCallback, *,
               env: Mapping[str, str] | None = None, cwd: str | None = None,
               stop: threading.Event | None = None, timeout: float | None = None) -> CommandResult:
        """Run argv, calling ``on_line`` per stdout line as it arrives; stops when ``stop`` is
        set or ``on_line`` returns False (then ``exit_code`` is None)."""

    @abstractmethod
    def put(self, local_path: str | Path, remote_path: str) -> None:
        """Copy one file to the host, streamed in chunks."""

    @abstractmethod
    def get(self, remote_path: str, local_path: str | Path) -> None:
        """Copy one file from the host, streamed in chunks."""

    @abstractmethod
    def put_tar(self, local_root: str | Path, files: Sequence[str], remote_root: str) -> int:
        """Copy many files (paths relative to local_root) as one tar stream; returns bytes sent."""

    @abstractmethod
    def ping(self) -> float:
        """One round trip on the open connection, in seconds (connects first if needed)."""

    def close(self) -> None:
        """Release the connection (idempotent)."""

    # --- built on run()
    def start_detached(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                       cwd: str | None = None, log_path: str, pid_path: str,
                       exit_code_path: str) -> int:
        """Start argv in its own session; returns its pid (= its process group id)."""
        script = shell.detached_script(argv, env=env, cwd=cwd, log_path=log_path,
                                       pid_path=pid_path, exit_code_path=exit_code_path)
        res = self.run(["sh", "-c", script], timeout=shell.DETACHED_START_WAIT_S + 20)
        try:
            return int(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RemoteError(self.name, f"detached start printed no pid: {res.stdout!r}") from None

    def signal_group(self, pgid: int, sig: int | str) -> bool:
        """Signal a whole process group; False when no such group exists any more."""
        return self.run(shell.signal_argv(pgid, sig), check=False).exit_code == 0

    def process_state(self, pid: int) -> ProcessState:
        res = self.run(shell.stat_argv(pid), check=False)
        return ProcessState(pid, shell.parse_proc_stat(res.stdout) if res.ok else None)

    def __enter__(self) -> "CommandRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def feed_stdin(proc, chunks) -> None:
    """Write ``chunks`` to a subprocess's stdin and close it.

    A remote side that ends early closes the pipe; that is not an error here: its exit code
    and stderr, read by the caller, say why.
    """
    import contextlib

    with contextlib.suppress(BrokenPipeError):
        for chunk in chunks:
            proc.stdin.write(chunk)
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()


def widen_pipe(f) -> None:
    """Grow a pipe to 1 MiB (Linux ``F_SETPIPE_SZ``): a bulk stream then moves in 1 MiB reads
    instead of 64 KiB ones, 16x fewer wake-ups and Python loop turns per MiB. Best effort."""
    try:
        import fcntl
        fcntl.fcntl(f.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError, ValueError):
        return


def run_piped(argv, stdin=(), stdout=None, timeout: float | None = None) -> tuple[int | None, bytes, bytes]:
    """Run ``argv`` with ``stdin`` chunks streamed in, through 1 MiB pipes; stdout goes to
    ``stdout`` (a binary file object, written as it arrives) or is returned.

    Returns (exit code, stdout, stderr); the code is None when ``timeout`` passed (the
    process was killed). One implementation for every subprocess that moves bytes (the
    local node, the ssh client, the local fetch), so draining and stdin errors are alike.
    """
    proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    widen_pipe(proc.stdout)
    widen_pipe(proc.stdin)
    out, err = bytearray(), bytearray()

    def pump_out() -> None:
        while block := proc.stdout.read1(1 << 20):
            if stdout is not None:
                stdout.write(block)
            else:
                out.extend(block)

    readers = [threading.Thread(target=pump_out, daemon=True),
               threading.Thread(target=lambda: err.extend(proc.stderr.read()), daemon=True)]
    for t in readers:
        t.start()
    feed_stdin(proc, stdin)
    try:
        code: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    for t in readers:
        t.join()
    return code, bytes(out), bytes(err)
