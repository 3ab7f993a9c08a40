"""Transport: one :class:`CommandRunner` interface, a local and an SSH implementation.

``make_runner(host, options)`` picks the runner for a hostfile entry: ``localhost`` (no
user/port) runs here through subprocess, everything else over SSH.
"""

from __future__ import annotations

from launcher.hostfile import Host
from launcher.runners.base import (CommandFailed, CommandResult, CommandRunner, CommandTimeout,
                                   ConnectError, HostKeyError, ProcessState)
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
           "ConnectOptions", "HostKeyError", "LocalRunner", "OpenSSHRunner", "ProcessState", "SSHRunner",
           "make_runner", "ssh_argv", "ssh_binary", "ssh_options"]
