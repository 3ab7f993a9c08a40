"""Transport: one :class:`CommandRunner` interface, a local and two SSH implementations.

``make_runner(host, options)`` picks the runner for a hostfile entry: ``localhost`` (no
user/port) runs here through subprocess, everything else over SSH.

Which SSH for what (decided by measurement on the test cluster, 2 shared cores):
- BULK bytes (staging's tar stream, put/get/put_tar, ``OpenSSHRunner.download`` /
  ``upload_stream`` for fetch) and staging/launch's scripts go through the OpenSSH client
  (:mod:`launcher.runners.openssh`): C, AES-NI, one process per host. 256 MiB upload:
  ~260 MiB/s vs paramiko's 50–100 MB/s, and 8 hosts no longer serialize on our GIL.
  Handshake 0.15 s with curve25519 first (0.26 s with OpenSSH's post-quantum default);
  a ControlMaster makes each further command ~15 ms.
- Interactive commands (``run``/``stream``/``ping``: hosts check, follow) stay on paramiko
  through fabric (:class:`SSHRunner`): a round trip on an open connection is ~2 ms and
  ``stream`` needs fine control of the channel. :class:`OpenSSHRunner` subclasses it, so
  every runner has both; the paramiko connection opens only if those are used.
Both paths enforce the same host-key policy (unknown refused unless
``--accept-new-host-keys``; a changed key always refused), tested through each.
"""

from __future__ import annotations

from launcher.core.hostfile import Host
from launcher.runners.base import (CommandFailed, CommandResult, CommandRunner, CommandTimeout,
                                   ConnectError, ExecResult, HostKeyError)
from launcher.runners.local import LocalRunner
from launcher.runners.openssh import OpenSSHRunner, ssh_argv, ssh_binary, ssh_options
from launcher.runners.ssh import ConnectOptions, SSHRunner


def make_runner(host: Host, options: ConnectOptions | None = None) -> CommandRunner:
    """The runner for one host (constructing it touches no network)."""
    if host.is_local:
        return LocalRunner(host)
    if ssh_binary():
        return OpenSSHRunner(host, options)
    return SSHRunner(host, options)


__all__ = ["CommandFailed", "CommandResult", "CommandRunner", "CommandTimeout", "ConnectError",
           "ConnectOptions", "ExecResult", "HostKeyError", "LocalRunner", "OpenSSHRunner", "SSHRunner",
           "make_runner", "ssh_argv", "ssh_binary", "ssh_options"]
