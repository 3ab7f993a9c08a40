"""Two real SSH hosts (own addresses, private filesystems), one worker each, through real msrun.

Node 1's worker connects to node 0's scheduler at node 0's address; each host ends with its
own rank's worker log and checkpoint; the LoRA weights are identical on both ranks (the
gradients were all-reduced). Plus: a node whose sshd is down -> nothing started anywhere.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import pytest

from launcher.errors import RemoteError
from launcher.ops.registry import Registry
from launcher.ops.service import JobService, SubmitOptions
from launcher.runners import ConnectOptions
from launcher.runners import make_runner as make_exec
from tests.test_e2e_local import losses, write_job, write_toy_data

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.ms]

BIN = str(Path(sys.executable).parent)


def _service(cluster, registry, state_dir) -> JobService:
    options = ConnectOptions(known_hosts=cluster.known_hosts)
    lines: list[str] = []
    service = JobService(registry, state_dir, say=lines.append, exec_factory=partial(make_exec, options=options))
    service.lines = lines
    return service


def _on_host(cluster, i: int, path: str) -> Path:
    return cluster.hosts[i].path(path)


def _lora(ckpt: Path) -> dict:
    import mindspore as ms
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(ckpt)).items() if "lora" in k.lower()}


def test_two_hosts_one_worker_each(ssh_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    toy = write_toy_data(tmp_path / "toy")
    job = write_job(tmp_path, toy, epochs=1, name="two-hosts")
    hosts = ssh_cluster.hosts_as_launcher_hosts(slots=1)[:2]
    with Registry(tmp_path / "state" / "r.sqlite3") as registry:
        service = _service(ssh_cluster, registry, tmp_path / "state")
        record = service.submit(job, hosts, SubmitOptions(bin_dir=BIN, cluster_time_out=120))
        assert record.meta["master_addr"] == ssh_cluster.hosts[0].address
        record = service.wait(record.id, poll=2, timeout=300)
        if record.state != "succeeded":  # show what the hosts logged, then fail
            for i, node in enumerate(record.nodes):
                for log in sorted(_on_host(ssh_cluster, i, f"{node.job_dir}/msrun_log").glob("*.log")):
                    print(f"--- host {i} {log.name}\n" + log.read_text(errors="replace")[-3000:])
        assert record.state == "succeeded", (record.reason, service.refresh(record.id))
        assert [n.exit_code for n in record.nodes] == [0, 0]
        roots = [n.job_dir for n in record.nodes]
        assert roots[0] == f"/root/alaunch/{record.id}"
        for rank in (0, 1):
            log = _on_host(ssh_cluster, rank, f"{roots[rank]}/msrun_log/worker_{rank}.log")
            values = losses(log)
            assert len(values) >= 4 and values[-1] < values[0], values
            other = _on_host(ssh_cluster, 1 - rank, f"{roots[1 - rank]}/msrun_log/worker_{rank}.log")
            assert not other.exists()  # each rank ran on its own host
        ckpts = [sorted(_on_host(ssh_cluster, r, f"{roots[r]}/output/checkpoint/rank_{r}").glob("*.ckpt"))[-1]
                 for r in (0, 1)]
        w0, w1 = _lora(ckpts[0]), _lora(ckpts[1])
        assert w0 and w0.keys() == w1.keys()
        assert all((w0[k] == w1[k]).all() for k in w0)
        # the same weights on two hosts with private filesystems: node 1 joined node 0's scheduler
        # (the plan gave it node 0's address) and the gradients were all-reduced across hosts
        assert not all((w0[k] == 0).all() for k in w0)
        # unchanged resubmit: nothing sent to either host
        again = service.submit(job, hosts, SubmitOptions(bin_dir=BIN, cluster_time_out=120))
        assert again.meta["staged_bytes"] == 0
        service.cancel(again.id, grace=2)


def test_sshd_down_at_launch_starts_nothing(cluster_sshd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy").mkdir()
    toy = {"mindrecord": tmp_path / "toy" / "t.mindrecord", "tokenizer": tmp_path / "toy" / "tok.model"}
    for p in (*toy.values(), Path(str(toy["mindrecord"]) + ".db")):
        p.write_bytes(b"x")
    job = write_job(tmp_path, toy, epochs=1, name="down")
    hosts = cluster_sshd.hosts_as_launcher_hosts(slots=1)[:2]
    cluster_sshd.stop_sshd(1)
    with Registry(tmp_path / "state" / "r.sqlite3") as registry:
        service = _service(cluster_sshd, registry, tmp_path / "state")
        with pytest.raises(RemoteError, match=cluster_sshd.hosts[1].address):
            service.submit(job, hosts, SubmitOptions(bin_dir=BIN))
        record = registry.list()[0]
        assert record.state == "failed" and cluster_sshd.hosts[1].address in record.reason
    out = cluster_sshd.exec_on(0, ["sh", "-c", f"ls /root/alaunch/ 2>/dev/null; "
                                             f"grep -l ALAUNCH_JOB_ID={record.id} /proc/[0-9]*/environ 2>/dev/null"])
    assert record.id not in out.stdout


# ------------------------------------------------------------ a cluster shaped like a real one
def _job_with_args(path: Path, args: list[str], msrun_args: list[str] | None = None) -> Path:
    import yaml
    job = yaml.safe_load(path.read_text())
    job["entry"]["args"] = args
    if msrun_args:
        job["msrun_args"] = msrun_args
    path.write_text(yaml.safe_dump(job))
    return path


def test_shared_workdir_unprivileged_user_chatty_shell_cann_stub(real_cluster, tmp_path, monkeypatch):
    """Two hosts whose workdir is ONE directory (/srv/shared), reached as an unprivileged
    user whose shell prints banners on every command, with CANN's set_env.sh at its usual
    path: real msrun, one worker each, identical LoRA weights; each node's own state; the
    stub's variable reached the job; fetch takes the shared files once. The job file passes
    an msrun option (``msrun_args``): checked against the host's msrun at preflight, taken by
    the real msrun (an unknown one makes msrun exit 2 before any worker starts)."""
    from launcher.ops.collect import fetch_job
    from tests.cluster.cluster import CANN_STUB_VAR, UID, USER
    monkeypatch.chdir(tmp_path)
    toy = write_toy_data(tmp_path / "toy")
    job = _job_with_args(write_job(tmp_path, toy, epochs=1, name="shared"), ["--require_env", CANN_STUB_VAR],
                         msrun_args=["--tail_worker_log=-1"])
    hosts = real_cluster.hosts_as_launcher_hosts(slots=1, user=USER, workdir="/srv/shared")
    with Registry(tmp_path / "state" / "r.sqlite3") as registry:
        service = _service(real_cluster, registry, tmp_path / "state")
        record = service.submit(job, hosts, SubmitOptions(bin_dir=BIN, cluster_time_out=120))
        root = f"/srv/shared/alaunch/{record.id}"
        assert [n.job_dir for n in record.nodes] == [root, root] and record.meta["shared_with"] == {"1": 0}
        record = service.wait(record.id, poll=2, timeout=300)
        shared = real_cluster.shared_dir / "alaunch" / record.id
        if record.state != "succeeded":
            for log in sorted(shared.rglob("*.log")):
                print(f"--- {log}\n" + log.read_text(errors="replace")[-3000:])
        assert record.state == "succeeded", (record.reason, service.refresh(record.id))
        assert [n.exit_code for n in record.nodes] == [0, 0]
        for rank in (0, 1):  # each node's own pid, exit code and msrun output
            state = shared / "state" / f"node-{rank}"
            assert (state / "exit_code").read_text().strip() == "0" and (state / "pid").is_file()
            log = shared / "msrun_log" / f"worker_{rank}.log"
            assert f"run_cpu: {CANN_STUB_VAR}=sourced-on-host{rank}" in log.read_text()
            values = losses(log)
            assert len(values) >= 4 and values[-1] < values[0], values
        assert (shared / "msrun_log" / "worker_0.log").stat().st_uid == UID  # ran as the login user
        w0, w1 = (_lora(sorted((shared / f"output/checkpoint/rank_{r}").glob("*.ckpt"))[-1]) for r in (0, 1))
        assert w0 and w0.keys() == w1.keys() and all((w0[k] == w1[k]).all() for k in w0)
        assert not all((w0[k] == 0).all() for k in w0)
        report = fetch_job(registry, record.id, "logs", dest=tmp_path / "runs",
                           options=ConnectOptions(known_hosts=real_cluster.known_hosts))
        got = sorted(p.relative_to(tmp_path / "runs" / record.id).as_posix()
                     for p in (tmp_path / "runs" / record.id).rglob("worker_*.log"))
        assert got == [f"{hosts[0].name}/msrun_log/worker_0.log", f"{hosts[0].name}/msrun_log/worker_1.log"]
        assert len(report.nodes) == 1  # the shared job dir was read once


def test_wrong_node0_address_broken_env_script_and_version_skew_fail_fast(real_cluster, tmp_path, monkeypatch):
    """Before anything starts: node 1 cannot reach a wrong addr= of node 0 (seconds, node 1
    named, not msrun's cluster timeout); a failing env script is refused with its stderr; a
    node with another CANN driver is refused naming both versions."""
    import dataclasses
    import time

    from launcher.errors import InputError
    from launcher.ops.launch import Unreachable
    from tests.cluster.cluster import DRIVER_VERSION, USER
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy").mkdir()
    toy = {"mindrecord": tmp_path / "toy" / "t.mindrecord", "tokenizer": tmp_path / "toy" / "tok.model"}
    for p in (*toy.values(), Path(str(toy["mindrecord"]) + ".db")):
        p.write_bytes(b"x")
    job = write_job(tmp_path, toy, epochs=1, name="fast")
    hosts = real_cluster.hosts_as_launcher_hosts(slots=1, user=USER)
    wrong = real_cluster.hosts[0].address.rsplit(".", 1)[0] + ".99"  # nobody there
    with Registry(tmp_path / "state" / "r.sqlite3") as registry:
        service = _service(real_cluster, registry, tmp_path / "state")
        start = time.monotonic()
        with pytest.raises(Unreachable, match=rf"node 1 \({hosts[1].name}\) cannot reach node 0 at {wrong}:"):
            service.submit(job, [dataclasses.replace(hosts[0], addr=wrong), hosts[1]], SubmitOptions(bin_dir=BIN))
        assert time.monotonic() - start < 60
        assert registry.list()[0].state == "failed"
        bad = real_cluster.hosts[1].path("/home/alaunch/bad_env.sh")
        bad.write_text("echo 'nnal: ATB needs CANN >= 8.0' >&2\nreturn 3\n")
        broken = [hosts[0], dataclasses.replace(hosts[1], env_scripts=("/usr/local/Ascend/ascend-toolkit/set_env.sh",
                                                                        "~/bad_env.sh"))]
        with pytest.raises(RemoteError, match=r"env script /home/alaunch/bad_env.sh failed \(exit 3\): "
                                              r"nnal: ATB needs CANN >= 8.0"):
            service.submit(job, broken, SubmitOptions(bin_dir=BIN))
        info = real_cluster.hosts[1].dir / "usr-local/upper/Ascend/driver/version.info"
        info.write_text("Version=23.0.6\n")
        try:
            with pytest.raises(InputError, match=rf"driver differs between nodes: {DRIVER_VERSION} on "
                                                 rf"{hosts[0].name}; 23.0.6 on {hosts[1].name}"):
                service.submit(job, hosts, SubmitOptions(bin_dir=BIN))
        finally:
            info.write_text(f"Version={DRIVER_VERSION}\n")
    for i in (0, 1):
        out = real_cluster.exec_on(i, ["sh", "-c", "grep -l ALAUNCH_JOB_ID= /proc/[0-9]*/environ 2>/dev/null"])
        assert out.stdout.strip() == ""  # nothing started anywhere
