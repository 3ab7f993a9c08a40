"""fetch against real sshd hosts: two nodes at once, a connection killed mid-file then resumed,
a symlink leaving the job dir refused, already-fetched files skipped."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from launcher.cli.environment import Environment
from launcher.ops.collect import FetchError, fetch_job
from launcher.ops.registry import Registry
from launcher.runners import ConnectOptions

pytestmark = [pytest.mark.cluster]

BIG = 96 << 20


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def make_job(cluster, tmp_path, n_hosts: int, files_per_host) -> tuple[Registry, str, list[Path]]:
    """A job recorded as submit would, with files of known content in each host's job dir."""
    hosts = cluster.hosts[:n_hosts]
    registry = Registry(tmp_path / "state" / "registry.sqlite3")
    record = registry.create_job(
        "fetchme", "finetune",
        spec_text="name: fetchme\noutputs:\n  checkpoints: ['output/checkpoint/**/*.ckpt']\n",
        config_text="model: {model_config: {pet_config: {lora_rank: 4, lora_alpha: 8}}}\n",
        hostfile_text="".join(f"{h.address} slots=1 user=root identity={cluster.client_key}\n" for h in hosts),
        nodes=[(h.address, "/root/alaunch/alaunch/JOB") for h in hosts],
        meta={"pythons": {h.address: sys.executable for h in hosts},
              "ssh": {"known_hosts": str(cluster.known_hosts)}}, state="succeeded")
    roots = []
    for rank, h in enumerate(hosts):
        job_dir = f"/root/alaunch/alaunch/{record.id}"
        registry.set_node(record.id, rank, job_dir=job_dir)
        root = h.path(job_dir)
        for rel, data in files_per_host(rank).items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        roots.append(root)
    return registry, record.id, roots


def test_two_hosts_in_parallel_then_nothing(ssh_cluster, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = lambda rank: {f"msrun_log/worker_{rank}.log": f"rank {rank} loss 1.5\n".encode() * 500,  # noqa: E731
                          "config/job.yaml": b"model: {}\n",
                          f"output/checkpoint/rank_{rank}/llama_rank_{rank}-1_4.ckpt": os.urandom(2 << 20)}
    registry, job, roots = make_job(ssh_cluster, tmp_path, 2, files)
    registry.close()
    code, out, err = run_cli("fetch", job, "--json")
    assert code == 0, err
    report = json.loads(out)
    for rank, h in enumerate(ssh_cluster.hosts[:2]):
        here = tmp_path / "runs" / job / h.address
        for rel in files(rank):
            assert sha(here / rel) == sha(roots[rank] / rel), (h.address, rel)
        node = report["nodes"][rank]
        assert node["fetched"] == 3 and node["bytes_transferred"] == sum(
            (roots[rank] / rel).stat().st_size for rel in files(rank))
    assert json.loads((tmp_path / "runs" / job / "job.json").read_text())["lora"]["rank"] == 4

    code, out, err = run_cli("fetch", job, "--json")
    again = json.loads(out)
    assert code == 0 and again["bytes_transferred"] == 0
    assert [n["skipped"] for n in again["nodes"]] == [3, 3]


def _ssh_children() -> list[int]:
    """This process's own `ssh` children (the transfer's client), by pid."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            if comm == "ssh" and int(rest[1]) == os.getpid():
                out.append(int(d.name))
    return out


class KillAfter:
    """Progress that kills the ssh connection once ``limit`` bytes of the file have arrived."""

    def __init__(self, limit: int):
        self.limit, self.seen, self.killed = limit, 0, []

    def start(self, host, files, total_bytes):
        pass

    def advance(self, host, n):
        self.seen += n
        if self.seen >= self.limit and not self.killed:
            for pid in _ssh_children():
                os.kill(pid, signal.SIGKILL)
                self.killed.append(pid)

    def done(self, host, node):
        pass


def test_killed_mid_file_resumes_with_only_the_rest(ssh_cluster, tmp_path):
    big = os.urandom(BIG)
    rel = "output/checkpoint/rank_0/big.ckpt"
    registry, job, roots = make_job(ssh_cluster, tmp_path, 1, lambda rank: {rel: big})
    env = Environment(state_dir=tmp_path / "state")
    options = ConnectOptions(known_hosts=ssh_cluster.known_hosts, control_persist=0)  # ssh owns the connection
    cut = KillAfter(16 << 20)
    with pytest.raises(FetchError, match="transfer of .*big.ckpt stopped"):
        fetch_job(registry, job, "checkpoints", tmp_path / "runs", env.state_dir, progress=cut, options=options)
    assert cut.killed
    here = tmp_path / "runs" / job / ssh_cluster.hosts[0].address
    part = here / (rel + ".part")
    assert not (here / rel).exists()  # never a truncated file under the final name
    have = part.stat().st_size
    assert (16 << 20) <= have < BIG
    assert part.read_bytes() == big[:have]

    report = fetch_job(registry, job, "checkpoints", tmp_path / "runs", env.state_dir, options=options)
    node = report.nodes[0]
    assert node.resumed == 1 and node.restarted == 0
    assert node.bytes_transferred == BIG - have < BIG
    assert sha(here / rel) == hashlib.sha256(big).hexdigest() and not part.exists()
    registry.close()


def test_symlink_outside_refused_over_ssh(ssh_cluster, tmp_path):
    registry, job, roots = make_job(ssh_cluster, tmp_path, 2, lambda rank: {"msrun_log/worker_0.log": b"ok\n"})
    (roots[1] / "msrun_log" / "passwd.log").symlink_to("/etc/passwd")
    env = Environment(state_dir=tmp_path / "state")
    with pytest.raises(FetchError) as info:
        fetch_job(registry, job, "logs", tmp_path / "runs", env.state_dir)
    h0, h1 = (h.address for h in ssh_cluster.hosts[:2])
    assert f"{h1}: outputs.logs glob 'msrun_log/*.log' matches 'msrun_log/passwd.log': it resolves to " \
           f"/etc/passwd, outside the job directory; refusing" in info.value.message
    assert (tmp_path / "runs" / job / h0 / "msrun_log" / "worker_0.log").read_bytes() == b"ok\n"
    assert not (tmp_path / "runs" / job / h1 / "msrun_log").exists()
    registry.close()


def test_without_an_ssh_binary_paramiko_carries_the_same_stream(ssh_cluster, tmp_path):
    from launcher.runners import SSHRunner
    data = {"msrun_log/worker_0.log": b"a\n" * 1000, "output/checkpoint/rank_0/x.ckpt": os.urandom(1 << 20)}
    registry, job, roots = make_job(ssh_cluster, tmp_path, 1, lambda rank: data)
    options = ConnectOptions(known_hosts=ssh_cluster.known_hosts)
    report = fetch_job(registry, job, "all", tmp_path / "runs", tmp_path / "state",
                       runner_factory=lambda h: SSHRunner(h, options))
    here = tmp_path / "runs" / job / ssh_cluster.hosts[0].address
    assert report.nodes[0].fetched == 2 and report.bytes_transferred == sum(map(len, data.values()))
    assert all((here / rel).read_bytes() == content for rel, content in data.items())
    registry.close()
