"""One primitive the staging and launch code need from a host: run an argv, stream bytes into it.

``exec(argv, stdin_chunks)`` runs a program on the host (local: subprocess; SSH: one
paramiko channel with a large window) and feeds it an iterable of byte chunks as stdin —
a tar stream of many files, or a JSON request — without holding it in memory. Everything
staging and launch do on a host is a fixed stdlib-only Python script run this way with its
request on stdin, so user values never become shell text.

The SSH side uses the fabric ``Connection`` of :class:`launcher.runners.SSHRunner` (host-key
policy, TCP_NODELAY, ssh_config live there) and opens its own channels on it, because
staging needs stdin streamed into a program, which ``CommandRunner.run`` does not offer.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
from abc import ABC, abstractmethod
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

from launcher.runners.base import run_piped
from launcher.errors import RemoteError
from launcher.core.hostfile import Host

WINDOW = 1 << 27  # 128 MiB flow-control window: the default 2 MiB caps throughput on a fast link
CHUNK = 1 << 20


@dataclass(frozen=True)
class ExecResult:
    host: str
    exit_code: int
    stdout: bytes
    stderr: bytes
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def error_line(self) -> str:
        lines = self.stderr.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {self.exit_code}"


class NodeExec(ABC):
    """Run argv on one host with streamed stdin; subclasses say how to reach the host."""

    def __init__(self, host: Host):
        self.host = host

    @abstractmethod
    def exec(self, argv: list[str], stdin: Iterable[bytes] = (), timeout: float | None = None) -> ExecResult:
        """Run ``argv`` with ``stdin`` streamed in; the exit code is data, not an exception."""

    def check(self, argv: list[str], stdin: Iterable[bytes] = (), timeout: float | None = None,
              what: str = "command") -> ExecResult:
        result = self.exec(argv, stdin, timeout)
        if not result.ok:
            raise RemoteError(self.host.name, f"{what} failed: {result.error_line()}")
        return result

    def warm(self) -> None:
        """Start connecting in the background (so the handshake overlaps local work); the next
        exec waits for it. Nothing to do where there is no connection."""

    def close(self) -> None:
        """Release the connection (no-op locally)."""


class LocalExec(NodeExec):
    """This machine (``localhost`` / ``--local``): a subprocess, same scripts as remote."""

    def exec(self, argv: list[str], stdin: Iterable[bytes] = (), timeout: float | None = None) -> ExecResult:
        start = time.monotonic()
        code, out, err = run_piped(argv, stdin, timeout=timeout)
        return ExecResult(self.host.name, -signal.SIGKILL if code is None else code, out, err,
                          time.monotonic() - start)


class SSHExec(NodeExec):
    """A host over SSH: one connection (lazy), one channel per exec."""

    def __init__(self, host: Host, options=None):
        super().__init__(host)
        from launcher.runners import SSHRunner
        self.runner = SSHRunner(host, options)  # owns the connection, host keys, TCP_NODELAY

    def _transport(self):
        try:
            return self.runner.connection.client.get_transport()
        except RemoteError:
            raise
        except (OSError, socket.timeout) as exc:
            raise RemoteError(self.host.name, f"unreachable: {exc}") from None

    def exec(self, argv: list[str], stdin: Iterable[bytes] = (), timeout: float | None = None) -> ExecResult:
        start = time.monotonic()
        chan = self._transport().open_session(window_size=WINDOW, max_packet_size=1 << 15)
        try:
            chan.settimeout(timeout)
            chan.exec_command(" ".join(shlex.quote(a) for a in argv))
            out: list[bytes] = []
            err: list[bytes] = []

            def drain_err() -> None:
                while data := chan.recv_stderr(CHUNK):
                    err.append(data)

            t = threading.Thread(target=drain_err, daemon=True)
            t.start()
            t_out = threading.Thread(target=lambda: _drain(chan, out), daemon=True)
            t_out.start()
            with contextlib.suppress(OSError):  # the remote side ended early: its exit code and stderr say why
                for chunk in stdin:
                    chan.sendall(chunk)
            chan.shutdown_write()
            code = chan.recv_exit_status()
            t_out.join()
            t.join()
            return ExecResult(self.host.name, code, b"".join(out), b"".join(err), time.monotonic() - start)
        except socket.timeout:
            raise RemoteError(self.host.name, f"timed out after {timeout} s: {argv[0]}") from None
        finally:
            chan.close()

    def close(self) -> None:
        self.runner.close()


def _drain(chan, out: list[bytes]) -> None:
    while data := chan.recv(CHUNK):
        out.append(data)


class OpenSSHExec(NodeExec):
    """A host through the OpenSSH client: one ``ssh`` process per exec over this exec's own
    ControlMaster connection. The C client encrypts (AES-NI) outside our GIL, so a tar stream
    to 8 hosts runs in 8 processes at once (paramiko's were serialized on one core)."""

    def __init__(self, host: Host, options=None):
        super().__init__(host)
        from launcher.runners.openssh import OpenSSHRunner
        self.runner = OpenSSHRunner(host, options)

    def exec(self, argv: list[str], stdin: Iterable[bytes] = (), timeout: float | None = None) -> ExecResult:
        start = time.monotonic()
        code, out, err = self.runner.exec(argv, stdin, timeout=timeout)
        return ExecResult(self.host.name, code, out, err, time.monotonic() - start)

    def warm(self) -> None:
        self.runner.warm()

    def close(self) -> None:
        self.runner.close()


def make_exec(host: Host, options=None) -> NodeExec:
    """Local subprocess for ``localhost``; else the OpenSSH client when installed (paramiko if
    not), with ``options`` (launcher.runners.ConnectOptions)."""
    if host.is_local:
        return LocalExec(host)
    from launcher.runners.openssh import ssh_binary
    return OpenSSHExec(host, options) if ssh_binary() else SSHExec(host, options)


def chunks(data: bytes) -> Iterator[bytes]:
    yield data
