"""One primitive the staging and launch code need from a host: run an argv, stream bytes into it.

``exec(argv, stdin_chunks)`` runs a program on the host (local: subprocess; SSH: one
paramiko channel with a large window) and feeds it an iterable of byte chunks as stdin —
a tar stream of many files, or a JSON request — without holding it in memory. Everything
staging and launch do on a host is a fixed stdlib-only Python script run this way with its
request on stdin, so user values never become shell text.

The SSH side uses the fabric ``Connection`` of ``launcher.runners`` when that package
provides one (host keys, TCP_NODELAY, ssh_config live there), else its own fabric
``Connection`` built from the :class:`~launcher.hostfile.Host`.
"""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

from launcher.errors import RemoteError
from launcher.hostfile import Host

WINDOW = 1 << 27  # 128 MiB flow-control window: the default 2 MiB caps throughput on a fast link
CHUNK = 1 << 20
CONNECT_TIMEOUT = 10.0


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

    def close(self) -> None:
        """Release the connection (no-op locally)."""


class LocalExec(NodeExec):
    """This machine (``localhost`` / ``--local``): a subprocess, same scripts as remote."""

    def exec(self, argv: list[str], stdin: Iterable[bytes] = (), timeout: float | None = None) -> ExecResult:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out: dict[str, bytes] = {}
        readers = [threading.Thread(target=lambda k=k, f=f: out.__setitem__(k, f.read()), daemon=True)
                   for k, f in (("out", proc.stdout), ("err", proc.stderr))]
        for t in readers:
            t.start()
        try:
            for chunk in stdin:
                proc.stdin.write(chunk)
        except BrokenPipeError:
            pass
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        for t in readers:
            t.join()
        return ExecResult(self.host.name, code, out.get("out", b""), out.get("err", b""), time.monotonic() - start)


def _connection(host: Host):
    """A fabric Connection: launcher.runners' when available (its host-key policy), else our own."""
    try:  # the transport package owns SSH policy; use it when it is there
        from launcher.runners import make_runner  # type: ignore[attr-defined]
        runner = make_runner(host, None)
        conn = getattr(runner, "connection", None) or getattr(runner, "conn", None)
        if conn is not None:
            return conn
    except (ImportError, TypeError, AttributeError):
        pass
    from fabric import Connection
    kwargs: dict = {"timeout": CONNECT_TIMEOUT}
    if host.identity:
        kwargs["key_filename"] = [host.identity]
    sock = socket.create_connection((_resolve(host), host.port or 22), timeout=CONNECT_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    kwargs["sock"] = sock
    return Connection(host.name, user=host.user, port=host.port, connect_kwargs=kwargs,
                      connect_timeout=CONNECT_TIMEOUT)


def _resolve(host: Host) -> str:
    """The address ssh would use: ``HostName`` from ~/.ssh/config for an alias, else the name."""
    from fabric import Config
    return Config().base_ssh_config.lookup(host.name).get("hostname", host.name)


class SSHExec(NodeExec):
    """A host over SSH: one connection (lazy), one channel per exec."""

    def __init__(self, host: Host):
        super().__init__(host)
        self._conn = None
        self._lock = threading.Lock()

    def _transport(self):
        with self._lock:
            if self._conn is None:
                try:
                    self._conn = _connection(self.host)
                    self._conn.open()
                except (OSError, socket.timeout) as exc:
                    self._conn = None
                    raise RemoteError(self.host.name, f"unreachable: {exc}") from None
                except Exception as exc:  # paramiko auth / host-key errors: one line, named host
                    self._conn = None
                    raise RemoteError(self.host.name, f"cannot connect: {type(exc).__name__}: {exc}") from None
            return self._conn.client.get_transport()

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
            try:
                for chunk in stdin:
                    chan.sendall(chunk)
            except OSError:
                pass  # the remote side ended early: its exit code and stderr say why
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
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _drain(chan, out: list[bytes]) -> None:
    while data := chan.recv(CHUNK):
        out.append(data)


def make_exec(host: Host) -> NodeExec:
    return LocalExec(host) if host.is_local else SSHExec(host)


def chunks(data: bytes) -> Iterator[bytes]:
    yield data
