"""This machine as a host (``localhost`` in a hostfile, ``--local``): subprocess, no SSH.

argv is executed directly (no shell), so quoting cannot go wrong here; the host scripts
(launcher/remote/) run as the same subprocess argv the SSH runners send.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import BinaryIO, overload

from launcher.runners.base import (
    CommandFailed,
    CommandResult,
    CommandRunner,
    CommandTimeout,
    ExecResult,
    LineCallback,
    run_piped,
)
from launcher.runners.shell import env_argv


@overload
def _expand(path: str) -> str: ...
@overload
def _expand(path: None) -> None: ...
def _expand(path: str | None) -> str | None:
    return None if path is None else os.path.expanduser(path)


class LocalRunner(CommandRunner):
    default_python = sys.executable  # host programs run with this interpreter, as the jobs here
    local = True

    def exec(self, argv: Sequence[str], stdin: Iterable[bytes] = (), *, stdout: BinaryIO | None = None,
             timeout: float | None = None) -> ExecResult:
        start = time.monotonic()
        try:
            code, out, err = run_piped([str(a) for a in argv], stdin, stdout, timeout)
        except FileNotFoundError as exc:
            code, out, err = 127, b"", f"{argv[0]}: command not found ({exc.strerror})".encode()
        if code is None:
            raise CommandTimeout(self.name, f"`{argv[0]}` timed out after {timeout:g} s")
        return ExecResult(self.name, code, out, err, time.monotonic() - start)

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str] | None:
        if not env:
            return None
        env_argv(env)  # same validation of names as the SSH side
        return {**os.environ, **env}

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
            cwd: str | None = None, timeout: float | None = None, check: bool = True,
            stdin: str | bytes | None = None) -> CommandResult:
        argv = tuple(str(a) for a in argv)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        start = time.monotonic()
        try:
            proc = subprocess.run(argv, env=self._env(env), cwd=_expand(cwd), input=data,
                                  stdin=None if data is not None else subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired:
            raise CommandTimeout(self.name, f"`{argv[0]}` timed out after {timeout:g} s") from None
        except FileNotFoundError as exc:
            if cwd and not os.path.isdir(_expand(cwd)):
                code, out, err = 1, b"", f"cd: {cwd}: No such file or directory".encode()
            else:
                code, out, err = 127, b"", f"{argv[0]}: command not found ({exc.strerror})".encode()
        result = CommandResult(self.name, argv, code, out.decode(errors="replace"),
                               err.decode(errors="replace"), time.monotonic() - start)
        if check and code != 0:
            raise CommandFailed(result)
        return result

    def stream(self, argv: Sequence[str], on_line: LineCallback, *,
               env: Mapping[str, str] | None = None, cwd: str | None = None,
               stop: threading.Event | None = None, timeout: float | None = None) -> CommandResult:
        argv = tuple(str(a) for a in argv)
        start = time.monotonic()
        proc = subprocess.Popen(argv, env=self._env(env), cwd=_expand(cwd), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        lines: queue.Queue[bytes | None] = queue.Queue()
        err_chunks: list[bytes] = []
        out_pipe, err_pipe = proc.stdout, proc.stderr
        assert out_pipe is not None and err_pipe is not None  # both PIPE

        def read_lines() -> None:
            for line in out_pipe:
                lines.put(line)
            lines.put(None)

        readers = [threading.Thread(target=read_lines, daemon=True),
                   threading.Thread(target=lambda: err_chunks.append(err_pipe.read()), daemon=True)]
        for t in readers:
            t.start()
        out: list[str] = []
        stopped = False
        while True:
            if (stop is not None and stop.is_set()) or (timeout and time.monotonic() - start > timeout):
                stopped = True
                break
            try:
                raw = lines.get(timeout=0.05)
            except queue.Empty:
                continue
            if raw is None:
                break
            line = raw.decode(errors="replace").rstrip("\n")
            out.append(line)
            if on_line(line) is False:
                stopped = True
                break
        if stopped:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        code = proc.wait()
        for t in readers:
            t.join(timeout=2)
        return CommandResult(self.name, argv, None if stopped else code, "\n".join(out),
                             b"".join(err_chunks).decode(errors="replace"), time.monotonic() - start)

    def ping(self) -> float:
        return 0.0

    def process_argv(self, argv: Sequence[str], fresh: bool = False) -> list[str] | None:
        """The command itself: this machine is the host."""
        return [str(a) for a in argv]
