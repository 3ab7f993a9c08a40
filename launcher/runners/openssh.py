"""Bulk bytes through the OpenSSH client (``ssh``), a C program in its own process.

Why: paramiko encrypts in pure Python under the GIL — ~50–100 MB/s for one host, and 8 hosts
in threads share that one core. ``/usr/bin/ssh`` (what rsync itself runs) is C, uses AES-NI,
and each host gets its own process, so fan-out really runs in parallel.

Everything here derives from ONE pure function, :func:`ssh_options`, computed from a
:class:`~launcher.core.hostfile.Host` and the shared :class:`~launcher.runners.ssh.ConnectOptions`
(SkyPilot's pattern: the same options serve ``ssh`` and ``rsync -e``). The host-key policy is
exactly the paramiko path's: ``StrictHostKeyChecking=yes`` (unknown key refused), or
``accept-new`` with ``--accept-new-host-keys`` (unknown key appended; a CHANGED key is still
refused — OpenSSH never accepts a changed key in either mode).

Speed choices (measured on the test cluster, see benchmarks/bench_transport.py):
``curve25519-sha256`` key exchange first (0.15 s per connect vs 0.26 s for the post-quantum
default ``sntrup761x25519``; the server may still pick any other it offers), ``aes128-gcm``
first (AES-NI), and a ControlMaster socket, so the second command to a host costs one
round trip (~15 ms), not a handshake (~150 ms). By default (``control_persist=0``) the
master is the runner's own and :meth:`OpenSSHRunner.close` ends it; with
``control_persist=N`` masters are shared across runs and live N idle seconds (see
:func:`control_path`), which makes a re-submit within a minute skip the handshake too.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from launcher.core.hostfile import Host
from launcher.errors import UnsafeDirectory
from launcher.runners import shell
from launcher.runners.base import (
    CommandFailed,
    CommandResult,
    CommandRunner,
    CommandTimeout,
    ConnectError,
    ExecResult,
    HostKeyError,
    run_piped,
)
from launcher.runners.ssh import ConnectOptions

CHUNK = 1 << 20
KEX_FIRST = "curve25519-sha256,curve25519-sha256@libssh.org"
CIPHERS_FIRST = "aes128-gcm@openssh.com,aes256-gcm@openssh.com"
SSH_FAILED = 255  # ssh's own exit code when it could not connect (or the remote exited 255)


def ssh_binary() -> str | None:
    """The OpenSSH client on PATH, or None (then the paramiko path is used)."""
    return shutil.which("ssh")


def _opt_value(value: str) -> str:
    """An ``-o Key=value`` value as ssh's config tokenizer reads it (quotes only when needed)."""
    return f'"{value}"' if re.search(r'\s', value) else value


def control_dir() -> Path:
    """Where ControlMaster sockets live: private to this user (0700), short enough for AF_UNIX.

    The name is predictable, so another local user can create it first: a directory that is
    a symlink, not ours, or writable by others is refused (:class:`UnsafeDirectory`, one line
    saying what to do), never used — whoever can write there can put a socket where ``ssh``
    looks for our master and read or drive every session through it (before: as root such a
    directory was taken over, as a user every ssh verb failed with a traceback)."""
    d = Path(tempfile.gettempdir()) / f"alaunch-ssh-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        d.mkdir(mode=0o700)
    st = os.lstat(d)
    problem = ""
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symlink"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != os.getuid():
        problem = f"belongs to uid {st.st_uid}, not to you (uid {os.getuid()})"
    elif st.st_mode & 0o022:
        problem = f"is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    if problem:
        raise UnsafeDirectory(f"the ssh control directory {d} {problem}: another user could take over alaunch's "
                              f"ssh connections through it; remove it (its owner or root can), or set TMPDIR to a "
                              f"directory only you can write, and run again")
    os.chmod(d, 0o700)
    return d


def _file_tag(path: Path | str | None) -> str:
    try:
        return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest() if path else ""
    except OSError:
        return "missing"


def control_path(options: ConnectOptions, base: Path | None = None) -> str:
    """The master socket path for a runner with these options (``%C``: ssh's hash of host,
    port and user).

    ``control_persist > 0``: shared by every runner with the same options AND the same
    known_hosts / ssh_config *contents*, and left running that many idle seconds, so the
    next alaunch command skips the handshake; an edited known_hosts never reuses a master
    opened under the old one. ``control_persist == 0``: private to one runner, closed by it.
    """
    d = base or control_dir()
    if options.control_persist <= 0:
        return str(d / f"r{os.urandom(5).hex()}-%C")
    key = "\0".join((str(options.known_hosts), _file_tag(options.known_hosts), str(options.ssh_config),
                     _file_tag(options.ssh_config), str(options.accept_new_host_keys)))
    return str(d / f"s{hashlib.sha256(key.encode()).hexdigest()[:12]}-%C")


def ssh_options(host: Host, options: ConnectOptions, *, control: str | None = None,
                master: bool = True) -> list[str]:
    """The ssh flags for one host (pure): config file, host keys, identity, port, user, timeouts.

    ``control``: the master socket. ``master=True`` (``ControlMaster=auto``): use the master
    there, or become it (ssh forks it to the background for ``ControlPersist`` seconds and runs
    the command as its client); ``master=False`` (``ControlMaster=no``): use a master that is
    up, else connect plainly and open none — one process and one local round trip less."""
    argv: list[str] = []
    if options.ssh_config:
        argv += ["-F", str(Path(options.ssh_config).expanduser())]
    argv += ["-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=" + ("accept-new" if options.accept_new_host_keys else "yes"),
             "-o", f"ConnectTimeout={max(1, int(round(options.connect_timeout)))}",
             "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3",
             "-o", f"KexAlgorithms=^{KEX_FIRST}",
             "-o", f"Ciphers=^{CIPHERS_FIRST}"]
    if options.known_hosts:
        argv += ["-o", "UserKnownHostsFile=" + _opt_value(str(Path(options.known_hosts).expanduser()))]
    if control and not master:
        argv += ["-o", "ControlMaster=no", "-o", "ControlPath=" + _opt_value(control)]
    elif control:
        persist = int(options.control_persist) if options.control_persist > 0 else 30  # 30: orphan bound
        argv += ["-o", "ControlMaster=auto", "-o", "ControlPath=" + _opt_value(control),
                 "-o", f"ControlPersist={max(1, persist)}"]
    if host.identity:
        argv += ["-i", os.path.expanduser(host.identity)]
    if host.port:
        argv += ["-p", str(host.port)]
    if host.user:
        argv += ["-l", host.user]
    return argv


def ssh_argv(host: Host, options: ConnectOptions, remote_argv: Sequence[str], *,
             control: str | None = None, ssh: str = "ssh", master: bool = True) -> list[str]:
    """``ssh <options> <host> -- <remote argv, every word shlex-quoted>`` (pure)."""
    remote = " ".join(shlex.quote(str(a)) for a in remote_argv)
    return [ssh, *ssh_options(host, options, control=control, master=master), "--", host.name, remote]


def rsync_rsh(host: Host, options: ConnectOptions, *, control: str | None = None) -> str:
    """The same options as one ``rsync -e`` string."""
    return shlex.join(["ssh", *ssh_options(host, options, control=control)])


def classify(host: str, stderr: str, known_hosts: Path | str | None) -> ConnectError | None:
    """ssh's own failure (exit 255) as the same errors the paramiko path raises; None if not ssh's."""
    text = stderr.strip()
    where = known_hosts or "known_hosts"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "Host key for" in text and "has changed" in text:
        return HostKeyError(host, "host key CHANGED, refusing to connect",
                            f"the key in {where} does not match; if the host was really reinstalled, "
                            f"remove its line from {where}; otherwise someone may be intercepting the connection")
    if "Host key verification failed" in text or "No " in text and "host key is known" in text:
        return HostKeyError(host, "unknown host key", f"not in {where}; verify the host and rerun with "
                                                      f"--accept-new-host-keys to add it")
    if "Permission denied" in text:
        return ConnectError(host, "authentication failed", "check identity= / ssh-agent; " + text.splitlines()[-1])
    if "Connection refused" in text:
        return ConnectError(host, "connection refused", "nothing listens there; is sshd running?")
    if "Could not resolve hostname" in text:
        return ConnectError(host, "unreachable", text.splitlines()[-1])
    if "timed out" in text or "No route to host" in text or "Network is unreachable" in text:
        return ConnectError(host, "unreachable" if "timed out" not in text else "timed out", text.splitlines()[-1])
    if text.startswith("ssh:") or "kex_exchange_identification" in text or "Connection closed by" in text:
        return ConnectError(host, f"ssh failed: {text.splitlines()[-1]}")
    return None


class OpenSSHRunner(CommandRunner):
    """A host through ``ssh`` processes: :meth:`exec`, :meth:`run` and :meth:`ping` (and so
    staging, launch, status, cancel, fetch and hosts check), and the follower's streams
    (:meth:`process_argv`, one ``ssh`` client per node): no Python thread does crypto per host.
    It shares only its :class:`ConnectOptions` with paramiko's :class:`SSHRunner` (the path
    where there is no ``ssh`` binary), never its connection: nothing here opens paramiko.

    Masters: every exec rides on the host's master connection when one is up. A runner
    opens one itself (``ControlMaster=auto``) unless told :meth:`single_use`: then its first
    exec connects plainly (``ControlMaster=no``), as pdsh does — a new master costs a fork and
    one more local round trip per host (16 hosts ``ssh true``: 0.382 s plain, 0.415 s opening
    masters), worth it only when the connection is used again. A second exec on such a runner
    opens the master after all."""

    def __init__(self, host: Host, options: ConnectOptions | None = None, ssh: str | None = None):
        super().__init__(host)
        self.options = options or ConnectOptions()
        self.ssh = ssh or ssh_binary() or "ssh"
        self._control = control_path(self.options)
        self._warming: subprocess.Popen | None = None
        self._open_master = True

    def argv(self, remote_argv: Sequence[str], *, master: bool | None = None) -> list[str]:
        """The ssh argv that runs ``remote_argv`` on the host (``master``: see :func:`ssh_options`;
        default: this runner's choice)."""
        return ssh_argv(self.host, self.options, remote_argv, control=self._control, ssh=self.ssh,
                        master=self._open_master if master is None else master)

    def process_argv(self, argv: Sequence[str], fresh: bool = False) -> list[str]:
        """An ``ssh`` client for a long stream (the follower's, one per node, read by one thread).
        It opens no master (``ControlMaster=no``): it rides one that is up — right after
        ``submit`` the stream starts without a handshake — else holds its own plain connection,
        and 64 idle streams keep no 64 masters besides. ``fresh``: no ControlPath at all: a
        reconnect after a cut link must not wait on a master still hung on the dead TCP
        connection (ServerAlive ends that one only after ~30 s)."""
        if fresh:
            return [self.ssh, *ssh_options(self.host, self.options), "--", self.host.name,
                    " ".join(shlex.quote(str(a)) for a in argv)]
        return self.argv(argv, master=False)

    def single_use(self) -> OpenSSHRunner:
        self._open_master = False
        return self

    def warm(self) -> None:
        """Start the connection (handshake, ControlMaster) in the background and return at once,
        so it overlaps the caller's local work (hashing, rendering); the first :meth:`exec`
        waits for it. A failure here is not reported: that exec reconnects and reports it."""
        if self._warming is None:
            self._open_master = True
            self._warming = subprocess.Popen(self._connect_argv(), stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _connect_argv(self) -> list[str]:
        """``ssh -N -f``: authenticate, leave the master in the background, run nothing on the
        host (no session, no remote process: ``ssh true`` would start a shell there)."""
        return [self.ssh, *ssh_options(self.host, self.options, control=self._control), "-N", "-f",
                "--", self.host.name]

    def connect(self) -> None:
        """Open this host's master connection now (or find it up); ConnectError / HostKeyError
        as ``exec`` raises them."""
        self._wait_warm()
        self._open_master = True
        try:
            res = subprocess.run(self._connect_argv(), stdin=subprocess.DEVNULL, capture_output=True,
                                 timeout=self.options.connect_timeout + 30)
        except subprocess.TimeoutExpired:
            raise CommandTimeout(self.name, "connecting timed out") from None
        if res.returncode != 0:
            text = res.stderr.decode(errors="replace")
            raise classify(self.name, text, self.options.known_hosts) or ConnectError(
                self.name, f"ssh failed (exit {res.returncode})", (text.strip().splitlines() or [""])[-1])

    def _wait_warm(self) -> None:
        proc, self._warming = self._warming, None
        if proc is not None:
            try:
                proc.wait(timeout=self.options.connect_timeout + 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def exec(self, remote_argv: Sequence[str], stdin: Iterable[bytes] = (), *,
             stdout: BinaryIO | None = None, timeout: float | None = None) -> ExecResult:
        """One ``ssh`` process over this runner's ControlMaster: ``stdin`` chunks streamed in,
        stdout to ``stdout`` (as it arrives) or returned. Connection failures raise
        ConnectError / HostKeyError (ssh's exit 255 with its message classified)."""
        return self._exec(self.argv(remote_argv), str(remote_argv[0]), stdin, stdout, timeout)

    def _exec(self, argv: list[str], what: str, stdin: Iterable[bytes] = (), stdout: BinaryIO | None = None,
              timeout: float | None = None) -> ExecResult:
        self._wait_warm()
        self._open_master = True  # a runner used again keeps a master (single_use: from its 2nd exec)
        start = time.monotonic()
        code, out, err = run_piped(argv, stdin, stdout, timeout)
        if code is None:
            raise CommandTimeout(self.name, f"`{what}` timed out after {timeout:g} s")
        if code == SSH_FAILED:
            conn = classify(self.name, err.decode(errors="replace"), self.options.known_hosts)
            if conn is not None:
                raise conn
        return ExecResult(self.name, code, out, err, time.monotonic() - start)

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
            cwd: str | None = None, timeout: float | None = None, check: bool = True,
            stdin: str | bytes | None = None) -> CommandResult:
        """The paramiko path's ``run`` through an ``ssh`` process: the same one shell line
        (``shell.command_line``: every word quoted, ``exec``, no extra shell), text results."""
        argv = tuple(str(a) for a in argv)
        line = shell.command_line(argv, env=env, cwd=cwd)
        ssh = [self.ssh, *ssh_options(self.host, self.options, control=self._control, master=self._open_master),
               "--", self.host.name, line]
        data = [] if stdin is None else [stdin.encode() if isinstance(stdin, str) else stdin]
        res = self._exec(ssh, argv[0], data, None, timeout)
        result = CommandResult(self.name, argv, res.exit_code, res.stdout.decode(errors="replace"),
                               res.stderr.decode(errors="replace"), res.duration)
        if check and res.exit_code != 0:
            raise CommandFailed(result)
        return result

    def ping(self) -> float:
        """Seconds for one command round trip (``true`` on the host) — over the master once
        one is up: what each further step costs per host (~10 ms on the test cluster; paramiko's
        keepalive, which starts no process, measured ~2 ms)."""
        return self._exec(self.argv(["true"]), "true", timeout=self.options.connect_timeout + 30).duration

    def close(self) -> None:
        """End this runner's ControlMaster (if it started one and masters are not shared)."""
        self._wait_warm()
        if self.options.control_persist <= 0:
            close_master(self.ssh, self.host, self.options, self._control)


def close_master(ssh: str, host: Host, options: ConnectOptions, control: str) -> None:
    """``ssh -O exit`` on our own master socket; nothing to do when none was started."""
    sock_dir = Path(control).parent
    prefix = Path(control).name.split("%", 1)[0]
    if not any(p.name.startswith(prefix) for p in sock_dir.iterdir()):
        return
    def ours() -> set[str]:
        return {p.name for p in sock_dir.iterdir() if p.name.startswith(prefix)}

    before = ours()
    argv = [ssh, *ssh_options(host, options, control=control), "-O", "exit", "--", host.name]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=10, check=False)
    # The master answers "exit", then removes its socket on its way out: wait (at most 2 s)
    # for it to go, so a closed runner has left nothing behind (a test saw it just after).
    deadline = time.monotonic() + 2.0
    while done.returncode == 0 and time.monotonic() < deadline and ours() >= before:
        time.sleep(0.01)
