"""Faults injected on the real SSH test cluster; each test's docstring says what the user sees.

Faults covered elsewhere (referenced in docs/reliability.md, not duplicated here): host down at
submit (test_e2e_cluster), a failing rank stopping every node within 10 s and alaunch SIGKILLed
while following (test_follow_cluster), cancel one of two jobs on a host (test_e2e_local),
registry crash mid-write and two writers (test_registry), host keys (test_runners_ssh).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from launcher.core.hostfile import Host
from launcher.core.plan import StageItem
from launcher.errors import RemoteError
from launcher.ops.launch import master_port
from launcher.ops.stage import HashCache, Progress, Stager, collect, inventory
from launcher.runners import ConnectOptions
from launcher.runners import make_runner as make_exec

pytestmark = [pytest.mark.cluster]

PY = sys.executable
BIG = 48 << 20


def _exec(cluster, host: Host):
    return make_exec(host, options=ConnectOptions(known_hosts=cluster.known_hosts, control_persist=0)).using(PY)


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


SSHD_SESSIONS_KILL = ("for d in /proc/[0-9]*; do case \"$(cat $d/comm 2>/dev/null)\" in sshd*) "
                      "kill -9 ${d#/proc/} 2>/dev/null;; esac; done; true")


class KillSshdAfter(Progress):
    """Stops host i's sshd (listener and live sessions) once ``limit`` bytes have streamed."""

    def __init__(self, cluster, index: int, limit: int):
        self.cluster, self.index, self.limit = cluster, index, limit
        self.sent = 0
        self.killed = False
        self.lock = threading.Lock()

    def advance(self, host: str, n: int) -> None:
        with self.lock:
            self.sent += n
            if self.sent >= self.limit and not self.killed:
                self.killed = True
                self.cluster.stop_sshd(self.index)
                # stop_sshd kills the listener and its direct children; the per-connection
                # sshd processes below them may live on, so end them too (by pid, inside the host)
                self.cluster.exec_on(self.index, ["sh", "-c", SSHD_SESSIONS_KILL])


def _staged_tree(tmp_path: Path) -> list[StageItem]:
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    for i in range(20):
        (code / "pkg" / f"m{i}.py").write_text(f"x = {i}\n")
    (tmp_path / "data.bin").write_bytes(os.urandom(BIG))
    (tmp_path / "small.bin").write_bytes(os.urandom(4096))
    return [StageItem("code", local=str(code)), StageItem("data/big/data.bin", local=str(tmp_path / "data.bin")),
            StageItem("data/small/small.bin", local=str(tmp_path / "small.bin")),
            StageItem("config/job.yaml", text="a: 1\n")]


def test_sshd_killed_mid_staging_rerun_resumes_nothing_truncated(cluster_sshd, tmp_path):
    """User sees: `staging` fails naming the host (connection lost); rerunning sends only what is
    missing and the job dir then matches the laptop's files sha256 for sha256. At no time is a
    file on the host under its final name with the wrong content (partial data lives in cas/tmp)."""
    cluster = cluster_sshd
    host = cluster.hosts_as_launcher_hosts(slots=1)[1]
    local = collect(_staged_tree(tmp_path), HashCache(None))
    root = f"/root/alaunch/alaunch/fault-stage-{os.getpid()}"
    cut = KillSshdAfter(cluster, 1, 40 << 20)
    node = _exec(cluster, host)
    with pytest.raises(RemoteError) as err:
        Stager({host.name: node}, progress=cut).stage(local, {host.name: root})
    assert cut.killed and host.name in str(err.value)
    cluster.start_sshd(1)
    cluster.wait_listening(1)
    # after the cut: every object under its final name in the store is whole; the job dir is not made yet
    base = Stager({host.name: _exec(cluster, host)}).survey(local)[host.name].base
    store = cluster.hosts[1].path(f"{base}/cas")
    finals = [p for p in store.glob("??/*") if p.is_file()]
    assert all(_sha(p) == p.name for p in finals), "a truncated object under its final name"
    big_sha = next(f.sha256 for f in local.files if f.dest == "data/big/data.bin")
    assert not (store / big_sha[:2] / big_sha).exists()
    assert not cluster.hosts[1].path(root).exists()

    objects = local.objects
    missing = {sha for sha in objects if not (store / sha[:2] / sha).exists()}
    assert big_sha in missing  # the cut object is not in the store under its final name

    again = Stager({host.name: _exec(cluster, host)}).stage(local, {host.name: root})
    report = again.reports[host.name]
    # the rerun sends exactly what the cut left missing (whole objects: the cut one restarts from 0)
    assert report.objects_sent == len(missing)
    assert report.bytes_sent == sum(objects[sha].size for sha in missing)
    # hashed on the host itself (code/ may be a symlink into the host's store)
    sums = cluster.exec_on(1, ["sh", "-c", 'cd "$1" && shift && sha256sum -- "$@"', "sh", root,
                               *[f.dest for f in local.files], "config/job.yaml"]).stdout
    got = {line.split(None, 1)[1]: line.split(None, 1)[0] for line in sums.splitlines()}
    assert got == {**{f.dest: f.sha256 for f in local.files}, "config/job.yaml": hashlib.sha256(b"a: 1\n").hexdigest()}
    leftovers = list(store.glob("tmp/*.part"))  # a killed receiver's temp file; never under a final name
    assert all(p.name.startswith(big_sha) for p in leftovers)


@pytest.fixture
def small_disk(ssh_cluster):
    """A 5 MiB tmpfs mounted inside host 2's mount namespace (only that host sees it)."""
    mnt = "/srv/small-disk"
    r = ssh_cluster.exec_on(2, ["sh", "-c", f"mkdir -p {mnt} && mount -t tmpfs -o size=5m tmpfs {mnt}"])
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs in the host namespace: {r.stderr.strip()}")
    yield mnt
    ssh_cluster.exec_on(2, ["umount", "-l", mnt])


@pytest.mark.slow
@pytest.mark.ms
def test_disk_full_during_staging_names_host_and_bytes_nothing_launched(ssh_cluster, small_disk, tmp_path, monkeypatch):
    """User sees: `alaunch: error: <host>: not enough disk space under <workdir>/alaunch: need
    N bytes ... , M free`; the job is FAILED in `alaunch jobs` and no process of it runs."""
    from launcher.ops.registry import Registry
    from launcher.ops.service import JobService, SubmitOptions
    from tests.test_e2e_local import write_job

    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy").mkdir()
    data = {"mindrecord": tmp_path / "toy" / "t.mindrecord", "tokenizer": tmp_path / "toy" / "tok.model"}
    data["mindrecord"].write_bytes(os.urandom(8 << 20))
    Path(str(data["mindrecord"]) + ".db").write_bytes(b"x")
    data["tokenizer"].write_bytes(b"x")
    job = write_job(tmp_path, data, epochs=1, name="diskfull")
    host = replace(ssh_cluster.hosts_as_launcher_hosts(slots=1)[2], workdir=small_disk)
    with Registry(tmp_path / "state" / "r.sqlite3") as registry:
        service = JobService(registry, tmp_path / "state",
                             exec_factory=partial(make_exec, options=ConnectOptions(known_hosts=ssh_cluster.known_hosts)))
        with pytest.raises(RemoteError) as err:
            service.submit(job, [host], SubmitOptions(bin_dir=str(Path(PY).parent)))
        text = str(err.value)
        assert host.name in text and "not enough disk space" in text and "need 8," in text, text
        record = registry.list()[0]
        assert record.state == "failed" and "disk" in (record.reason or "")
    procs = ssh_cluster.exec_on(2, ["sh", "-c", f"grep -l ALAUNCH_JOB_ID={record.id} /proc/[0-9]*/environ 2>/dev/null"])
    assert [p for p in procs.stdout.split() if "/self/" not in p] == []
    assert ssh_cluster.exec_on(2, ["ls", f"{small_disk}/alaunch"]).stdout.split() == ["cas"]  # no job dir


def test_master_port_taken_on_node0(ssh_cluster):
    """User sees: with --master-port P and P in use on node 0, `alaunch: error: <node 0>: master port
    P is in use; pick another ...` before anything starts; without --master-port a free one is chosen."""
    host = ssh_cluster.hosts_as_launcher_hosts(slots=1)[0]
    holder = ("import socket, time; s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(); "
              "print(s.getsockname()[1], flush=True); time.sleep(60)")
    r = ssh_cluster.exec_on(0, ["sh", "-c", f"{PY} -c \"{holder}\" > /tmp/port-holder 2>&1 & echo $!"])
    pid = int(r.stdout.strip())
    try:
        port = 0
        for _ in range(200):
            text = ssh_cluster.hosts[0].path("/tmp/port-holder").read_text().strip()
            if text:
                port = int(text)
                break
            threading.Event().wait(0.02)
        assert port
        runner = _exec(ssh_cluster, host)  # submit's preflight: the port rides on node 0's inventory
        pinned = inventory(runner, [], port=port, pinned=True)
        with pytest.raises(RemoteError) as err:
            master_port(host.name, pinned.port, port)
        assert host.name in str(err.value) and f"master port {port} is in use" in str(err.value)
        chosen = master_port(host.name, inventory(runner, [], port=port).port, port)
        assert chosen != port and 0 < chosen < 65536
        assert master_port(host.name, inventory(runner, [], port=None).port, None) > 0
    finally:
        ssh_cluster.exec_on(0, ["kill", str(pid)])
