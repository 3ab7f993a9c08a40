"""A real multi-host SSH cluster on this machine: one sshd per network + mount namespace.

Each host is an OpenSSH ``sshd`` in its own network namespace (its own 10.x address on a
bridge the cluster creates) and its own mount/UTS/PID namespace, so it has its own hostname
and private ``/root``, ``/srv``, ``/tmp``, ``/home`` and ``/var/tmp`` (where the host-wide card
claims live; the cluster's own state dir is bound back into it): a file one host writes is not
on another.
The python of the project's venv stays usable inside (its base install is bind-mounted
read-only when it lives under a private directory), and each host has an ``npu-smi``
emulator on its PATH (sshd ``SetEnv PATH``) for a configured set of cards.

With ``realistic=True`` the hosts look like a real Ascend cluster's: unprivileged login
users (:data:`USER`, and :data:`OTHER_USERS` sharing the hosts with it; each its own
``/home``, its own ``/etc/passwd`` line bound over the host's copy inside the namespace), a chatty shell (its ``.bashrc`` and ``~/.ssh/rc`` print banners to
stdout on every command), a stub CANN ``set_env.sh`` at the usual path (an overlay on
``/usr/local`` inside the namespace; it exports :data:`CANN_STUB_VAR`) with toolkit and
driver version files, and the shared directory ``/srv/shared`` owned by that user, as an
NFS workdir would be.

Nothing here touches processes or interfaces the cluster did not create: every pid, netns
and link is recorded in ``state.json`` and torn down by name/pid from that record.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SSHD = "/usr/sbin/sshd"
PRIVATE_DIRS = ("/root", "/srv", "/tmp", "/home")
USER, UID = "alaunch", 2001  # the unprivileged login user of a realistic cluster
OTHER_USERS = (("alaunch2", 2002), ("alaunch3", 2003))  # more people sharing its hosts (card claims)
CANN_STUB_VAR = "ASCEND_STUB_SET_ENV"  # exported by the stub set_env.sh
CANN_VERSION, DRIVER_VERSION = "8.0.RC3.stub", "24.1.rc3.stub"
BANNER = "Welcome to the Ascend cluster {host} (a chatty .bashrc)"
SUBNET_BASE = "10.213"  # 10.213.N.0/24, N picked free at bring-up (several suites may run)
STATE_ROOT = Path("/var/tmp/alaunch-cluster")  # not under /tmp: hosts overmount /tmp


class ClusterUnavailable(RuntimeError):
    """This machine cannot run the cluster (not root, no sshd, no `ip netns`)."""


def unavailable_reason() -> str | None:
    """Why the cluster cannot start here, or None when it can."""
    if os.geteuid() != 0:
        return "the SSH test cluster needs root (network namespaces)"
    for tool in (SSHD, "ip", "unshare", "nsenter", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} not found (run scripts/install-test-deps)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` unavailable: {probe.stderr.strip()}"
    return None


def _sh(*argv: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, env=env)


def process_state(pid: int) -> str | None:
    """State letter from /proc/PID/stat (R, S, Z, ...) or None if gone; zombies count as dead."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()[0]


def _alive(pid: int | None) -> bool:
    return pid is not None and process_state(pid) not in (None, "Z", "X")


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status when it is our child (no zombie left); nothing otherwise."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_pid(pid: int | None, sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
    """Signal one recorded pid, wait for it, SIGKILL when it outlives ``wait``; reap if ours."""
    if not _alive(pid):
        return
    for s, limit in ((sig, wait), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, s)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + limit
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if not _alive(pid):
            break
    _reap(pid)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


class Subnet:
    """One cluster's network: a bridge with its own ``BASE.N.0/24`` (gateway ``.1``, host k at
    ``.10+k``), each host a network namespace with a veth on the bridge. Creating the bridge
    ``<prefix>N`` is the lock on N (``ip link add`` fails when another suite holds it), and with
    it on the state dir ``<root>/N``: several suites run at once, each on its own N.

    The SSH cluster (``alabr``, 10.213) and the Slurm one (``alasl``, 10.214) both use it."""

    def __init__(self, base: str, prefix: str, unavailable: type[Exception] = RuntimeError):
        self.base, self.prefix, self.unavailable = base, prefix, unavailable
        self.index: int | None = None

    @property
    def bridge(self) -> str:
        return f"{self.prefix}{self.index}"

    @property
    def gateway(self) -> str:
        return f"{self.base}.{self.index}.1"

    def address(self, k: int) -> str:
        return f"{self.base}.{self.index}.{10 + k}"

    def claim(self) -> int:
        """Creating the bridge is the lock: the first free index wins."""
        for n in range(0, 250):
            if _sh("ip", "link", "add", f"{self.prefix}{n}", "type", "bridge", check=False).returncode == 0:
                self.index = n
                _sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
                _sh("ip", "link", "set", self.bridge, "up")
                return n
        raise self.unavailable(f"no free bridge name {self.prefix}0..{self.prefix}249")

    def state_dir(self, root: Path, given: Path | None = None) -> Path:
        """``given`` or ``root/N``, empty and ours: what a killed run left there is removed (we
        hold the bridge, the lock on N)."""
        state_dir = given if given is not None else root / str(self.index)
        if state_dir.exists():
            shutil.rmtree(state_dir, ignore_errors=True)
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        state_dir.chmod(0o755)
        return state_dir

    def add_netns(self, netns: str, veth: str, address: str) -> None:
        """A veth pair, one end on the bridge, the other as eth0 (``address``) in a new netns."""
        _sh("ip", "netns", "add", netns)
        _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _sh("ip", "link", "set", veth, "master", self.bridge, "up")
        for argv in (["ip", "addr", "add", f"{address}/24", "dev", "eth0"],
                     ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "lo", "up"],
                     ["ip", "route", "add", "default", "via", self.gateway]):
            _sh("ip", "netns", "exec", netns, *argv)

    @staticmethod
    def remove_netns(pairs: list[tuple[str, str]]) -> None:
        """(veth, netns) pairs gone: veths first, as `ip netns del` removes them asynchronously."""
        for veth, _ in pairs:
            _sh("ip", "link", "del", veth, check=False)
        for _, netns in pairs:
            _sh("ip", "netns", "del", netns, check=False)

    def release(self) -> None:
        """The bridge gone: last, it is the lock on this subnet and its state dir."""
        if self.index is not None:
            _sh("ip", "link", "del", self.bridge, check=False)


def save_state(state_dir: Path | None, data: dict) -> None:
    """``state.json`` (every pid, netns and link to tear down) replaced atomically."""
    if state_dir is None or not state_dir.exists():
        return
    tmp = state_dir / "state.json.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(state_dir / "state.json")


class OnSubnet:
    """A cluster on its own :class:`Subnet` (``self.net``): the index, bridge and gateway it got."""

    net: Subnet

    @property
    def subnet(self) -> int | None:
        return self.net.index

    @subnet.setter
    def subnet(self, index: int | None) -> None:
        self.net.index = index

    @property
    def bridge(self) -> str:
        return self.net.bridge

    @property
    def gateway(self) -> str:
        return self.net.gateway


@dataclass
class HostSpec:
    """What a test host looks like: its NPU cards (emulated) and their state."""

    cards: int = 8
    health: str | list[str] = "OK"
    hbm_used_mb: int | list[int] = 3347
    processes: dict[str, list] = field(default_factory=dict)

    def npu_config(self) -> dict:
        return {"cards": self.cards, "health": self.health, "hbm_used_mb": self.hbm_used_mb,
                "processes": self.processes}


@dataclass
class ClusterHost:
    index: int
    name: str  # also the ssh_config alias and the hostname inside
    address: str
    netns: str
    veth: str
    dir: Path
    init_pid: int | None = None  # the `unshare` process (root pid namespace)
    sshd_pid: int | None = None  # the nsenter wrapper whose child is sshd

    def path(self, inside: str) -> Path:
        """Where a path under /root, /srv or /tmp of this host lives on the real disk."""
        for private in PRIVATE_DIRS:
            if inside == private or inside.startswith(private + "/"):
                return self.dir / private.lstrip("/") / inside[len(private) + 1:]
        raise ValueError(f"{inside} is not under a private dir {PRIVATE_DIRS}")


class Cluster(OnSubnet):
    """Bring up / tear down N hosts. ``Cluster.load(dir)`` reattaches to a running one."""

    def __init__(self, n: int = 3, *, state_dir: Path | None = None,
                 specs: list[HostSpec] | None = None, shared: bool = True,
                 python: str | None = None, realistic: bool = False):
        self.n = n
        self.realistic = realistic
        self.specs = specs or [HostSpec() for _ in range(n)]
        self.shared = shared
        self.python = python or str(REPO / ".venv" / "bin" / "python")
        self.state_dir = state_dir
        self.net = Subnet(SUBNET_BASE, "alabr", ClusterUnavailable)
        self.hosts: list[ClusterHost] = []

    # ------------------------------------------------------------------ paths
    @property
    def client_key(self) -> Path:
        return self.state_dir / "client_key"

    @property
    def mesh_key(self) -> Path:
        """The hosts' own client key (each host's ~/.ssh/id_ed25519): hosts trust each other,
        as relay staging needs (every host's known_hosts lists every host)."""
        return self.state_dir / "mesh_key"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def shared_dir(self) -> Path:
        """Bound at /srv/shared on every host (same files everywhere) when ``shared``."""
        return self.state_dir / "shared"

    # ------------------------------------------------------------------ bring-up
    def up(self) -> Cluster:
        reason = unavailable_reason()
        if reason:
            raise ClusterUnavailable(reason)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.net.claim()
        try:
            self.state_dir = self.net.state_dir(STATE_ROOT, self.state_dir)
            self.shared_dir.mkdir()
            _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alaunch-test-client",
                "-f", str(self.client_key))
            _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alaunch-test-mesh",
                "-f", str(self.mesh_key))
            self.hosts = [self._make_host(i) for i in range(self.n)]
            self.save()
            for h in self.hosts:
                self._prepare_host(h)
            self.save()
            for h in self.hosts:
                self._start_init(h)
            self.save()
            self._wait_ready()
            for h in self.hosts:
                self.start_sshd(h.index)
            self.save()
            self._write_client_files()
            self._wait_listening()
        except BaseException:
            self.down()
            raise
        return self

    def _make_host(self, i: int) -> ClusterHost:
        return ClusterHost(index=i, name=f"host{i}", address=self.net.address(i),
                           netns=f"alaunch{self.subnet}-h{i}", veth=f"alv{self.subnet}h{i}",
                           dir=self.state_dir / f"host{i}")

    def _prepare_host(self, h: ClusterHost) -> None:
        for sub in ("root/.ssh", "srv", "tmp", "bin", "home", "var-tmp"):
            (h.dir / sub).mkdir(parents=True, exist_ok=True)
        (h.dir / "tmp").chmod(0o1777)
        (h.dir / "var-tmp").chmod(0o1777)
        pub = Path(str(self.client_key) + ".pub").read_text()
        mesh = Path(str(self.mesh_key) + ".pub").read_text()
        (h.dir / "root/.ssh/authorized_keys").write_text(pub + mesh)
        shutil.copyfile(self.mesh_key, h.dir / "root/.ssh/id_ed25519")
        (h.dir / "root/.ssh/id_ed25519").chmod(0o600)
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name,
            "-f", str(h.dir / "ssh_host_ed25519_key"))
        self.write_npu_config(h.index, self.specs[h.index])
        venv_bin = Path(self.python).parent
        wrappers = {
            "python3": f'exec {shlex.quote(self.python)} "$@"',
            "python": f'exec {shlex.quote(self.python)} "$@"',
            "msrun": f'exec {shlex.quote(str(venv_bin / "msrun"))} "$@"',
            "npu-smi": (f"cd {shlex.quote(str(REPO))} && exec {shlex.quote(self.python)} -m "
                        f"tests.cluster.npu_smi --config {shlex.quote(str(h.dir / 'npu.json'))} \"$@\""),
        }
        for name, body in wrappers.items():
            f = h.dir / "bin" / name
            f.write_text(f"#!/bin/sh\n{body}\n")
            f.chmod(0o755)
        if self.realistic:
            self._prepare_realistic(h, pub)
        (h.dir / "sshd_config").write_text("\n".join([
            f"ListenAddress {h.address}", "Port 22",
            f"HostKey {h.dir / 'ssh_host_ed25519_key'}",
            "PidFile none", "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "Subsystem sftp internal-sftp", "UseDNS no",
            "MaxStartups 100:30:200", "MaxSessions 100", "LogLevel ERROR",
            f"SetEnv PATH={h.dir / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        ]) + "\n")
        self.net.add_netns(h.netns, h.veth, h.address)

    def _prepare_realistic(self, h: ClusterHost, pub: str) -> None:
        """The login user, its chatty shell, the CANN stub (see the module docstring)."""
        etc = h.dir / "etc"
        etc.mkdir()
        users = ((USER, UID),) + OTHER_USERS
        for name, fmt in (("passwd", "{u}:x:{i}:{i}::/home/{u}:/bin/bash"), ("group", "{u}:x:{i}:"),
                          ("shadow", "{u}:*:19000:0:99999:7:::")):
            lines = "".join(fmt.format(u=u, i=i) + "\n" for u, i in users)
            (etc / name).write_text(Path(f"/etc/{name}").read_text().rstrip("\n") + "\n" + lines)
        (etc / "shadow").chmod(0o640)
        banner = BANNER.format(host=h.name)
        for user, uid in users:
            home = h.dir / "home" / user
            (home / ".ssh").mkdir(parents=True)
            (home / ".ssh/authorized_keys").write_text(pub)
            (home / ".bashrc").write_text(f'echo "{banner}"\necho "last login: yesterday"\n')
            (home / ".ssh/rc").write_text('echo "*** motd: maintenance on Sunday ***"\n')
            (home / ".profile").write_text('[ -f ~/.bashrc ] && . ~/.bashrc\n')
            for p in [home, *home.rglob("*")]:
                os.chown(p, uid, uid)
            (home / ".ssh").chmod(0o700)
        os.chown(self.shared_dir, UID, UID)
        upper = h.dir / "usr-local" / "upper"
        toolkit = upper / "Ascend" / "ascend-toolkit"
        (toolkit / "latest" / "x86_64-linux").mkdir(parents=True)
        (h.dir / "usr-local" / "work").mkdir()
        (toolkit / "set_env.sh").write_text(
            "# stub of CANN's set_env.sh: exports what the job checks\n"
            f"export {CANN_STUB_VAR}=sourced-on-{h.name}\n"
            "export ASCEND_TOOLKIT_HOME=/usr/local/Ascend/ascend-toolkit/latest\n"
            "echo 'CANN environment set (stub)'\n")
        (toolkit / "latest" / "x86_64-linux" / "ascend_toolkit_install.info").write_text(
            f"package_name=Ascend-cann-toolkit\nversion={CANN_VERSION}\narch=x86_64\nos=linux\n")
        (upper / "Ascend" / "driver").mkdir()
        (upper / "Ascend" / "driver" / "version.info").write_text(f"Version={DRIVER_VERSION}\nascendhal_version=7.35.23\n")

    def _keep_paths(self) -> list[str]:
        """Paths under a private dir that must stay visible (the venv's base python, the repo)."""
        keep = []
        for p in {os.path.realpath(sys.base_prefix), str(REPO),
                  os.path.realpath(Path(self.python).parent.parent)}:
            if any(p == d or p.startswith(d + "/") for d in PRIVATE_DIRS):
                keep.append(p)
        return sorted(keep)

    def _init_script(self, h: ClusterHost) -> str:
        q = shlex.quote
        lines = ["set -e", f"hostname {q(h.name)}"]
        for keep in self._keep_paths():
            top = next(d for d in PRIVATE_DIRS if keep == d or keep.startswith(d + "/"))
            target = h.dir / top.lstrip("/") / keep[len(top) + 1:]
            lines += [f"mkdir -p {q(str(target))}", f"mount --bind {q(keep)} {q(str(target))}",
                      f"mount -o remount,bind,ro {q(str(target))}"]
        for d in PRIVATE_DIRS:
            lines.append(f"mount --rbind {q(str(h.dir / d.lstrip('/')))} {d}")
        # a private /var/tmp (the default host-wide claims dir is there), with this cluster's
        # state dir (sshd_config, keys, the npu-smi wrapper and its config) bound back in
        vt, state = h.dir / "var-tmp", str(self.state_dir)
        if state.startswith("/var/tmp/"):
            inner = vt / state[len("/var/tmp/"):]
            lines += [f"mkdir -p {q(str(inner))}", f"mount --bind {q(state)} {q(str(inner))}"]
        lines.append(f"mount --rbind {q(str(vt))} /var/tmp")
        if self.shared:
            lines += ["mkdir -p /srv/shared", f"mount --bind {q(str(self.shared_dir))} /srv/shared"]
        if self.realistic:
            for name in ("passwd", "group", "shadow"):
                lines.append(f"mount --bind {q(str(h.dir / 'etc' / name))} /etc/{name}")
            ul = h.dir / "usr-local"
            lines.append(f"mount -t overlay overlay -o lowerdir=/usr/local,upperdir={q(str(ul / 'upper'))},"
                         f"workdir={q(str(ul / 'work'))} /usr/local")
        lines += [f"touch {q(str(h.dir / 'ready'))}", "exec sleep infinity"]
        return "\n".join(lines)

    def _start_init(self, h: ClusterHost) -> None:
        log = open(h.dir / "init.log", "wb")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", h.netns, "unshare", "--mount", "--uts", "--pid", "--fork",
             "--kill-child", "--mount-proc", "--propagation", "private",
             "/bin/sh", "-c", self._init_script(h)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        h.init_pid = proc.pid  # `ip netns exec` execs unshare: same pid

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        for h in self.hosts:
            while not (h.dir / "ready").exists():
                if not _alive(h.init_pid) or time.monotonic() > deadline:
                    raise RuntimeError(f"{h.name} did not start: {(h.dir / 'init.log').read_text()}")
                time.sleep(0.02)

    def _inner_pid(self, h: ClusterHost) -> int:
        """pid 1 of the host's pid namespace, as seen from here (the child of `unshare`)."""
        kids = _children(h.init_pid)
        if not kids:
            raise RuntimeError(f"{h.name}: the host's init process is gone")
        return kids[0]

    # ------------------------------------------------------------------ sshd control
    def nsenter_argv(self, i: int) -> list[str]:
        return ["nsenter", "--target", str(self._inner_pid(self.hosts[i])), "--mount", "--uts",
                "--net", "--pid", "--"]

    def start_sshd(self, i: int) -> None:
        h = self.hosts[i]
        log = open(h.dir / "sshd.log", "ab")
        proc = subprocess.Popen(self.nsenter_argv(i) + [SSHD, "-D", "-e", "-f", str(h.dir / "sshd_config")],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        h.sshd_pid = proc.pid
        self.save()

    def stop_sshd(self, i: int) -> None:
        """Stop the listener (new connections are refused; the host itself stays up)."""
        h = self.hosts[i]
        if h.sshd_pid is None:
            return
        for kid in _children(h.sshd_pid):
            os.kill(kid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _alive(h.sshd_pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        _reap(h.sshd_pid)
        h.sshd_pid = None
        self.save()

    def wait_listening(self, i: int, timeout: float = 10.0) -> None:
        import socket
        h = self.hosts[i]
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((h.address, 22), timeout=1).close()
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{h.name}: sshd not listening; {(h.dir / 'sshd.log').read_text()}") from exc
                time.sleep(0.02)

    def _wait_listening(self) -> None:
        for h in self.hosts:
            self.wait_listening(h.index)

    def _write_client_files(self) -> None:
        entries, config = [], []
        for h in self.hosts:
            key = (h.dir / "ssh_host_ed25519_key.pub").read_text().split()
            entries.append(f"{h.address} {key[0]} {key[1]}")
            config += [f"Host {h.name}", f"    HostName {h.address}", "    User root",
                       f"    IdentityFile {self.client_key}",
                       f"    UserKnownHostsFile {self.known_hosts}", "    StrictHostKeyChecking yes",
                       ""]
        self.known_hosts.write_text("\n".join(entries) + "\n")
        for h in self.hosts:  # the hosts trust each other (relay staging)
            (h.dir / "root/.ssh/known_hosts").write_text("\n".join(entries) + "\n")
        self.ssh_config.write_text("\n".join(config))
        (self.state_dir / "hostfile").write_text(self.hostfile_text())

    def write_npu_config(self, i: int, spec: HostSpec) -> None:
        """Change what a host's npu-smi reports (takes effect on its next run)."""
        (self.state_dir / f"host{i}" / "npu.json").write_text(json.dumps(spec.npu_config()))

    def host_key_line(self, i: int) -> str:
        h = self.hosts[i]
        key = (h.dir / "ssh_host_ed25519_key.pub").read_text().split()
        return f"{h.address} {key[0]} {key[1]}"

    # ------------------------------------------------------------------ helpers for tests
    def cpu_seconds(self) -> float:
        """CPU time the hosts' sshds and everything under them have used so far (sessions, host
        scripts, the ssh clients of relay hops): user+sys plus reaped children of every live
        process under each listening sshd. For benchmarks: the hosts' share of the cores."""
        tick = os.sysconf("SC_CLK_TCK")
        total, todo = 0, [h.sshd_pid for h in self.hosts if h.sshd_pid]
        while todo:
            pid = todo.pop()
            try:
                f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += sum(int(v) for v in f[11:15])
            todo += _children(pid)
        return total / tick

    def exec_on(self, i: int, argv: list[str], *, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run argv inside host i's namespaces directly (no SSH): to check host-side facts."""
        path = f"PATH={self.hosts[i].dir / 'bin'}:/usr/local/bin:/usr/bin:/bin"  # as sshd's SetEnv
        return subprocess.run(self.nsenter_argv(i) + ["env", path] + list(argv), capture_output=True,
                              text=True, timeout=timeout)

    def hosts_as_launcher_hosts(self, *, slots: int = 8, by_alias: bool = False, user: str = "root",
                                workdir: str | None = None) -> list:
        from launcher.core.hostfile import Host
        if by_alias:
            return [Host(h.name, slots, workdir=workdir) for h in self.hosts]
        return [Host(h.address, slots, user=user, identity=str(self.client_key), workdir=workdir) for h in self.hosts]

    def hostfile_text(self, *, slots: int = 8) -> str:
        return "".join(f"{h.address} slots={slots} user=root identity={self.client_key}\n"
                       for h in self.hosts)

    # ------------------------------------------------------------------ teardown / state
    def down(self) -> None:
        for h in self.hosts:
            for pid in (h.sshd_pid, h.init_pid):
                if pid is not None and process_state(pid) is not None:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for h in self.hosts:
            for pid in (h.sshd_pid, h.init_pid):
                if pid is None:
                    continue
                deadline = time.monotonic() + 5
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.01)
                _reap(pid)
        Subnet.remove_netns([(h.veth, h.netns) for h in self.hosts])
        if self.state_dir is not None and self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self.net.release()
        self.hosts = []

    def save(self) -> None:
        save_state(self.state_dir, {
            "n": self.n, "subnet": self.subnet, "python": self.python, "shared": self.shared,
            "realistic": self.realistic,
            "hosts": [{"index": h.index, "init_pid": h.init_pid, "sshd_pid": h.sshd_pid} for h in self.hosts]})

    @classmethod
    def load(cls, state_dir: Path) -> Cluster:
        data = json.loads((state_dir / "state.json").read_text())
        c = cls(data["n"], state_dir=state_dir, shared=data["shared"], python=data["python"],
                realistic=data.get("realistic", False))
        c.subnet = data["subnet"]
        for rec in data["hosts"]:
            h = c._make_host(rec["index"])
            h.init_pid, h.sshd_pid = rec["init_pid"], rec["sshd_pid"]
            c.hosts.append(h)
        return c

    def describe(self) -> str:
        lines = [f"{self.n} hosts on {self.bridge} ({SUBNET_BASE}.{self.subnet}.0/24), state in {self.state_dir}"]
        for h in self.hosts:
            up = "up" if h.sshd_pid and _alive(h.sshd_pid) else "sshd stopped"
            lines.append(f"  {h.name:<6} {h.address:<15} {up}")
        lines += ["", "ssh into a host by hand:",
                  f"  ssh -F {self.ssh_config} host0",
                  f"  ssh -i {self.client_key} -o UserKnownHostsFile={self.known_hosts} root@{self.hosts[0].address}"
                  if self.hosts else "",
                  "alaunch against them:",
                  f"  alaunch hosts check -H {self.state_dir / 'hostfile'} --known-hosts {self.known_hosts}"]
        return "\n".join(lines)
