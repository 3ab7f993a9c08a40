"""Transport: one :class:`CommandRunner` interface, a local and two SSH implementations.

``make_runner(host, options)`` picks the runner for a hostfile entry: ``localhost`` (no
user/port) runs here through subprocess, everything else over SSH.

Every runner has the same small interface (see :mod:`launcher.runners.base`): ``exec`` (argv,
stdin chunks, stdout returned or written to a file) and ``ping``; built on exec ``check``,
``call`` (the one host call: a program of ``launcher/remote/`` with the runner's interpreter,
``runner.python``, its answer decoded), ``download``, ``upload_stream``; the follower's
``process_argv``; lifecycle ``connect``/``warm``/``single_use``/``close``. What is local and
what is remote (the interpreter, the follower's process) is each runner's own answer. Which
SSH does what (decided by measurement on the test cluster, 2 shared cores):

- ``exec`` and ``ping`` — staging's stream, launch's, status's and fetch's host
  scripts, hosts check, bulk bytes — go through the OpenSSH client (:class:`OpenSSHRunner`):
  C, AES-NI, one process per host, so no Python thread does crypto per host. 256 MiB
  upload: ~260 MiB/s vs paramiko's 50–100 MB/s, and 64 hosts no longer serialize on our GIL.
  Handshake 0.15 s with curve25519 first (0.26 s with OpenSSH's post-quantum default); a
  ControlMaster makes each further command ~15 ms. A one-round-trip command (``status``,
  ``cancel``: :meth:`CommandRunner.single_use`) opens no master: it rides on one that is up
  or connects plainly, as pdsh (benchmarks/bench_scale.py).
- The follower runs the OpenSSH client per node too (``process_argv``: one ``ssh`` client per
  node, all read by one thread; 64 nodes: 0.5 CPU-s/min idle against 3.9 for paramiko threads,
  docs/performance.md). Paramiko (:class:`SSHRunner`, through fabric; ``stream`` there)
  remains the path where there is no ``ssh`` binary; the two share only
  :class:`ConnectOptions`, not a class.

Both paths enforce the same host-key policy (unknown refused unless
``--accept-new-host-keys``; a changed key always refused), tested through each.
"""

from __future__ import annotations

import os
import posixpath
import sys
from collections.abc import Sequence
from pathlib import Path

from launcher.core.hostfile import Host
from launcher.runners.base import (
    REMOTE_PYTHON,
    CommandFailed,
    CommandResult,
    CommandRunner,
    CommandTimeout,
    ConnectError,
    ExecResult,
    HostKeyError,
    LineStreamer,
)
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


# What differs between this machine and a host reached over SSH, decided here, next to the
# runners (ops asks these, never ``Host.is_local``).

def default_bin_dir(hosts: Sequence[Host]) -> str | None:
    """Local-only jobs use this interpreter's bin dir (msrun starts workers with the `python` on
    PATH); remote ones ``$ALAUNCH_REMOTE_BIN_DIR`` or none."""
    if all(h.is_local for h in hosts):
        return str(Path(sys.executable).parent)
    return os.environ.get("ALAUNCH_REMOTE_BIN_DIR") or None


def python_for(bin_dir: str | None, host: Host) -> str:
    """The interpreter a job records for ``host``: this one here, ``--bin-dir``'s on a remote
    host, else the remote runner's default."""
    if host.is_local:
        return LocalRunner.default_python
    return posixpath.join(bin_dir, REMOTE_PYTHON) if bin_dir else REMOTE_PYTHON


def resolve_address(host: Host, ssh_config: str | None = None) -> str:
    """An ssh alias as the other nodes reach it: its ``addr=``, else its ``HostName`` in the ssh
    config the run uses (``--ssh-config``, else ~/.ssh/config), else the name itself."""
    if host.addr:
        return host.addr
    if host.is_local:
        return host.name
    import paramiko
    path = Path(ssh_config).expanduser() if ssh_config else Path("~/.ssh/config").expanduser()
    if not path.is_file():
        return host.name
    return paramiko.SSHConfig.from_path(str(path)).lookup(host.name).get("hostname", host.name)


__all__ = ["CommandFailed", "CommandResult", "CommandRunner", "CommandTimeout", "ConnectError",
           "ConnectOptions", "ExecResult", "HostKeyError", "LineStreamer", "LocalRunner", "OpenSSHRunner", "SSHRunner",
           "default_bin_dir", "make_runner", "python_for", "resolve_address", "ssh_argv", "ssh_binary",
           "ssh_options"]
