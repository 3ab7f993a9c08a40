"""Transport: one :class:`CommandRunner` interface, a local and two SSH implementations.

``make_runner(host, options)`` picks the runner for a hostfile entry: ``localhost`` (no
user/port) runs here through subprocess, everything else over SSH.

Every runner has the same primitives (see :mod:`launcher.runners.base`): ``exec`` (argv,
stdin chunks, stdout returned or written to a file), and built on it ``check``,
``download``, ``upload_stream``; plus ``run``/``stream`` (text and line streams), ``put``,
``get``, ``put_tar``, ``ping``. Which SSH does what (decided by measurement on the test
cluster, 2 shared cores):

- ``exec`` — staging's stream, launch's and fetch's host scripts, bulk bytes — goes through
  the OpenSSH client (:class:`OpenSSHRunner`): C, AES-NI, one process per host. 256 MiB
  upload: ~260 MiB/s vs paramiko's 50–100 MB/s, and 8 hosts no longer serialize on our GIL.
  Handshake 0.15 s with curve25519 first (0.26 s with OpenSSH's post-quantum default); a
  ControlMaster makes each further command ~15 ms.
- ``run``/``stream``/``ping`` (hosts check, follow, status) stay on paramiko through fabric
  (:class:`SSHRunner`): a round trip on an open connection is ~2 ms and ``stream`` needs
  fine control of the channel. :class:`OpenSSHRunner` subclasses it, so every SSH runner has
  both; the paramiko connection opens only if those are used. Without an ``ssh`` binary,
  :class:`SSHRunner` does ``exec`` over one paramiko channel (slower, same protocol).

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
