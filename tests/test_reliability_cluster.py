"""Issue #19 on the real SSH test cluster with real msrun: watching never harms a job, a link
that drops is survived, and the gang rules have no holes.

* a rank that logs a handled traceback and HCCL-looking INFO/WARNING lines keeps running while
  followed, and the job succeeds;
* the laptop->host path of one host is cut while following (a blackhole route to the laptop's
  address inside that host's namespace; host-to-host traffic untouched): the node shows
  ``unreachable since`` within ~15 s, the job runs on, the link comes back, the follower resumes
  with no line lost or doubled (the numbered loss lines of that rank), the job succeeds;
* ``status`` finding a dead rank stops the other node;
* a cancel during staging wins: nothing starts, the state is CANCELLED;
* cancel of a FAILED job whose other node survives stops the survivor and says so.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

import pytest

from launcher.core.layout import JobLayout
from launcher.errors import ExitCode
from launcher.ops.registry import Registry
from tests.test_follow_cluster import BIN, _hostfile, _marked, _ssh, write_follow_job

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
STEP = re.compile(r"^(\S+)/(\d+)\s+\| .*step:\[\s*(\d+)/\s*(\d+)\]")


def _submit(run_cli, cluster, tmp_path, job) -> str:
    code, out, err = run_cli("submit", str(job), "-H", str(_hostfile(cluster, tmp_path)), "--bin-dir", BIN,
                             "--cluster-time-out", "60", *_ssh(cluster))
    assert code == 0, err
    return out.strip().splitlines()[-1]


def _record(job_id):
    with Registry.in_state_dir() as registry:
        return registry.get(job_id)


def _wait_file(cluster, i: int, path: str, timeout: float = 60) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        p = cluster.hosts[i].path(path)
        if p.exists() and p.read_text().strip():
            return p.read_text().strip()
        time.sleep(0.2)
    raise AssertionError(f"{path} never appeared on host{i}")


def test_handled_traceback_and_hccl_warnings_do_not_stop_a_followed_job(ssh_cluster, run_cli, tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = write_follow_job(tmp_path, "handled", steps=24, step_s=0.25, handled_at=3)
    code, out, err = run_cli("submit", str(job), "-H", str(_hostfile(ssh_cluster, tmp_path)), "--bin-dir", BIN,
                             "--cluster-time-out", "60", "--follow", *_ssh(ssh_cluster))
    job_id = out.strip().splitlines()[-1]
    assert code == ExitCode.OK, err
    assert _record(job_id).state == "succeeded"
    # the short story: the traceback shown (errors in full), the HCCL warning once per rank at most,
    # and not the firehose of loss lines
    assert "Traceback (most recent call last):" in out and "HcclInit failed" in out
    assert "first failure" not in err
    assert len(re.findall(r"step:\[", out)) < 10, out


def _blackhole(cluster, i: int, on: bool) -> None:
    subprocess.run(["ip", "netns", "exec", cluster.hosts[i].netns, "ip", "route", "add" if on else "del",
                    "blackhole", f"{cluster.gateway}/32"], check=True, capture_output=True)


def test_link_cut_shows_unreachable_job_runs_on_follower_resumes_without_loss(ssh_cluster, run_cli, tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    steps = 240
    job_id = _submit(run_cli, ssh_cluster, tmp_path, write_follow_job(tmp_path, "linkcut", steps=steps, step_s=0.2))
    host1 = ssh_cluster.hosts[1].address
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "logs", job_id, "-f", "--verbose", *_ssh(ssh_cluster)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    err: list[str] = []
    threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    cut = False
    try:
        deadline = time.monotonic() + 90
        while not any(f"{host1}/1" in ln and "step:[   20/" in ln for ln in list(out)):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(err[-20:])
            time.sleep(0.2)
        _blackhole(ssh_cluster, 1, True)
        cut, cut_at = True, time.monotonic()
        log = f"{_record(job_id).nodes[1].job_dir}/msrun_log/worker_1.log"
        size_at_cut = ssh_cluster.hosts[1].path(log).stat().st_size
        while not any("unreachable since" in ln for ln in list(err)):
            assert time.monotonic() - cut_at < 20, "".join(err[-20:])
            time.sleep(0.2)
        seen_after = time.monotonic() - cut_at
        note = next(ln for ln in err if "unreachable since" in ln)
        assert host1 in note and re.search(r"unreachable since \d\d:\d\d:\d\d", note), note
        # the job runs on on the cut host (read inside the host, not over the cut link)
        time.sleep(3)
        assert ssh_cluster.hosts[1].path(log).stat().st_size > size_at_cut
        code, status_out, _ = run_cli("status", job_id, *_ssh(ssh_cluster))
        flat = re.sub(r"[\s│]+", " ", status_out)
        assert code == ExitCode.JOB_UNKNOWN and "unreachable since" in flat, status_out
        _blackhole(ssh_cluster, 1, False)
        cut = False
        assert proc.wait(timeout=120) == ExitCode.OK, "".join(err[-30:])
    finally:
        if cut:
            _blackhole(ssh_cluster, 1, False)
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.5)
    print(f"unreachable shown {seen_after:.1f} s after the cut")  # -s
    assert seen_after < 15
    steps_seen = [int(m.group(3)) for m in map(STEP.match, out) if m and m.group(1) == host1 and m.group(2) == "1"]
    assert steps_seen == list(range(1, steps + 1)), steps_seen  # nothing lost, nothing doubled
    assert any("reachable again" in ln for ln in err), "".join(err[-20:])
    assert _record(job_id).state == "succeeded"


def test_status_finding_a_dead_rank_stops_the_other_node(ssh_cluster, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job_id = _submit(run_cli, ssh_cluster, tmp_path,
                     write_follow_job(tmp_path, "deadrank", steps=400, step_s=0.25, fail_rank=1, fail_at=3))
    record = _record(job_id)
    _wait_file(ssh_cluster, 1, f"{JobLayout(record.nodes[1].job_dir).node_state(1)}/exit_code")
    assert any(m.startswith("host0") for m in _marked(ssh_cluster, job_id))  # node 0 runs on, alone
    code, out, _ = run_cli("status", job_id, *_ssh(ssh_cluster))
    assert code == ExitCode.JOB_FAILED, out
    assert "stopped (gang rule)" in re.sub(r"[\s│]+", " ", out), out
    assert _marked(ssh_cluster, job_id) == []
    assert _record(job_id).state == "failed"


def test_cancel_during_staging_wins_nothing_starts(ssh_cluster, tmp_path, monkeypatch):
    from launcher.cli.connect import runner_factory
    from launcher.core.hostfile import read_hostfile
    from launcher.ops.service import JobCancelled, JobService
    from launcher.ops.stage import Progress

    monkeypatch.chdir(tmp_path)
    job = write_follow_job(tmp_path, "stagecancel", steps=400, step_s=0.25)
    factory = runner_factory(ssh_cluster.known_hosts, None, False)
    cancelled = {}

    class CancelWhileStaging(Progress):
        """Another terminal runs `alaunch cancel` while the first host is being staged."""

        lock = threading.Lock()

        def start(self, host: str, total: int, files: int) -> None:
            with self.lock:  # hosts are staged in parallel: the first one cancels
                if cancelled:
                    return
                cancelled["by"] = host
                self._cancel()

        def _cancel(self) -> None:
            with Registry.in_state_dir() as other:
                job_id = other.list(limit=1)[0].id
                assert other.get(job_id).state == "staging"
                cancelled["record"], cancelled["outcome"] = JobService(other, tmp_path, exec_factory=factory).cancel(
                    job_id, grace=2)

    with Registry.in_state_dir() as registry:
        service = JobService(registry, tmp_path, progress=CancelWhileStaging(), exec_factory=factory)
        with pytest.raises(JobCancelled, match="cancelled during submit; nothing was started"):
            service.submit(job, read_hostfile(_hostfile(ssh_cluster, tmp_path)))
        record = registry.list(limit=1)[0]
    assert cancelled["record"].state == "cancelled" and "during staging" in cancelled["record"].reason
    assert record.state == "cancelled" and all(n.pid is None for n in record.nodes)
    assert _marked(ssh_cluster, record.id) == []
    for i, node in enumerate(record.nodes):  # msrun never started: no supervisor pid file
        assert not ssh_cluster.hosts[i].path(f"{JobLayout(node.job_dir).node_state(i)}/pid").exists()


def test_cancel_a_failed_job_stops_its_survivor_and_says_so(ssh_cluster, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job_id = _submit(run_cli, ssh_cluster, tmp_path,
                     write_follow_job(tmp_path, "survivor", steps=400, step_s=0.25, fail_rank=1, fail_at=3))
    record = _record(job_id)
    _wait_file(ssh_cluster, 1, f"{JobLayout(record.nodes[1].job_dir).node_state(1)}/exit_code")
    # recorded FAILED with node 0 still running (what an older alaunch's `status`, or a gang stop
    # that could not reach node 0, left behind)
    with Registry.in_state_dir() as registry:
        registry.set_state(job_id, "failed", "node 1 exited with code 1")
    assert any(m.startswith("host0") for m in _marked(ssh_cluster, job_id))
    code, out, err = run_cli("cancel", job_id, "--grace", "2", *_ssh(ssh_cluster))
    assert code == 0, out + err
    host0 = ssh_cluster.hosts[0].address
    assert re.search(rf"^{re.escape(host0)}: stopped \d+ process\(es\).*survivors of a failed job", out, re.M), out
    assert f"{job_id}: had already ended (failed" in out
    assert _marked(ssh_cluster, job_id) == []
    with Registry.in_state_dir() as registry:
        assert any("stopped what survived" in e.message for e in registry.events(job_id))


@pytest.mark.ms
def test_eth0_down_mindspore_fails_the_job_and_the_cause_names_the_lost_node(ssh_cluster, run_cli, tmp_path,
                                                                              monkeypatch):
    """Real MindSpore across two hosts; host 1's eth0 goes down mid-training (this also cuts
    msrun's own traffic). MindSpore fails the job by itself; the follower must say why in words:
    a node lost from the cluster network, not just a SIGTERM."""
    from tests.test_e2e_local import write_job, write_toy_data

    monkeypatch.chdir(tmp_path)
    job = write_job(tmp_path, write_toy_data(tmp_path / "toy"), epochs=200, name="eth0down")
    ns1 = ssh_cluster.hosts[1].netns
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "submit", str(job), "-H",
                             str(_hostfile(ssh_cluster, tmp_path)), "--bin-dir", BIN, "--cluster-time-out", "120",
                             "--follow", "--verbose", *_ssh(ssh_cluster)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: list[str] = []
    err: list[str] = []
    threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    host1 = ssh_cluster.hosts[1].address
    down = False
    try:
        deadline = time.monotonic() + 240
        while sum(f"{host1}/1" in ln and "loss" in ln for ln in list(out)) < 3:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(err[-30:])
            time.sleep(0.5)
        subprocess.run(["ip", "netns", "exec", ns1, "ip", "link", "set", "eth0", "down"], check=True)
        down = True
        code = proc.wait(timeout=240)
    finally:
        if down:
            subprocess.run(["ip", "netns", "exec", ns1, "ip", "link", "set", "eth0", "up"], check=True)
            subprocess.run(["ip", "netns", "exec", ns1, "ip", "route", "replace", "default", "via",
                            ssh_cluster.gateway], check=False)
        if proc.poll() is None:
            proc.kill()
    text = "".join(err)
    sys.__stderr__.write(text[-3000:])  # -s: what the user read (past the CLI fixture's capture)
    job_id = "".join(out).strip().splitlines()[-1]
    run_cli("cancel", job_id, "--grace", "2", *_ssh(ssh_cluster))  # whatever survived on host 1
    assert code == ExitCode.JOB_FAILED, text[-3000:]
    first = [ln for ln in err if ln.startswith("first failure:") or ln.startswith("  cause:")]
    assert first, text[-3000:]
    assert re.search(r"node 1 lost from the cluster network|never joined the cluster or dropped out", text), \
        text[-3000:]
    assert _marked(ssh_cluster, job_id) == []
