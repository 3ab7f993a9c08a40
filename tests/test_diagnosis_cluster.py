"""Issue 26 on the SSH test cluster (2 hosts, real msrun, the follow tests' worker).

* One rank SIGKILLed while the other holds a link to it (rank 0 then reports EI0002 naming
  remote rank 1, as HCCL would after its timeout): whichever exit msrun reports first, the first
  failure named is the killed rank, and rank 0's timeout is listed as its consequence.
* One rank slowed by half: ``status`` and the ``logs -f`` story name it; an even job names none.
"""

from __future__ import annotations

import random
import re
import time

import pytest

from launcher.errors import ExitCode
from launcher.ops.registry import Registry
from tests.test_fault_worker_kill import RankKiller
from tests.test_follow_cluster import BIN, _hostfile, _marked, _ssh, write_follow_job

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_the_killed_rank_is_named_first_and_the_timeout_on_it_is_its_consequence(
        ssh_cluster, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = write_follow_job(tmp_path, "root1", steps=400, step_s=0.25,
                           env={"WATCH_PEER": "1", "PEER_PORT": random.randint(20000, 29999)})
    killer = RankKiller(ssh_cluster, "root1")
    killer.start()
    code, out, err = run_cli("submit", str(job), "-H", str(_hostfile(ssh_cluster, tmp_path)), "--bin-dir", BIN,
                             "--cluster-time-out", "60", "--follow", *_ssh(ssh_cluster))
    killer.join(5)
    assert killer.error == "" and killer.killed_at is not None, killer.error
    assert code == ExitCode.JOB_FAILED, err
    host0, host1 = ssh_cluster.hosts[0].address, ssh_cluster.hosts[1].address
    lines = err.splitlines()
    first = next((ln for ln in lines if ln.startswith("first failure:")), "")
    # (which msrun reports first varies; both orders name rank 1: test_signatures covers the other)
    assert first.startswith(f"first failure: {host1} rank 1"), err
    assert any(ln.strip().startswith(f"then {host0} rank 0") and "timed out waiting for remote rank 1" in ln
               for ln in lines), err
    job_id = out.strip().splitlines()[-1]
    with Registry.in_state_dir() as registry:
        record = registry.get(job_id)
    assert record.state == "failed" and f"rank 1 on {host1}" in record.reason, record.reason
    assert _marked(ssh_cluster, job_id) == []


def _wait_for_steps(run_cli, job_id: str, ssh: list[str], steps: int, timeout: float = 60) -> str:
    """`status` until every running rank has logged ``steps`` steps; its last output."""
    deadline, out = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        _, out, _ = run_cli("status", job_id, *ssh)
        done = [int(m) for m in re.findall(r"step (\d+)/", out)]
        if len(done) >= 2 and min(done) >= steps:
            return out
        time.sleep(1)
    raise AssertionError(f"the ranks never reached step {steps}: {out}")


def test_a_slowed_rank_is_named_in_status_and_the_story_and_an_even_job_names_none(
        ssh_cluster, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hosts, ssh = str(_hostfile(ssh_cluster, tmp_path)), _ssh(ssh_cluster)
    host1 = ssh_cluster.hosts[1].address
    for name, env in (("slow1", {"SLOW_RANK": 1, "SLOW_FACTOR": 1.5}), ("even1", {})):
        job = write_follow_job(tmp_path, name, steps=60, step_s=0.2, env=env)
        code, out, err = run_cli("submit", str(job), "-H", hosts, "--bin-dir", BIN, "--cluster-time-out", "60", *ssh)
        assert code == 0, err
        job_id = out.strip().splitlines()[-1]
        status = _wait_for_steps(run_cli, job_id, ssh, 15)
        code, _, story = run_cli("logs", job_id, "-f", *ssh)
        assert code == 0, story
        if env:
            assert f"straggler: rank 1 on {host1} is 50 % slower than the median" in status, status
            assert f"straggler: rank 1 on {host1} is 50 % slower than the median" in story, story
        else:
            assert "straggler" not in status and "straggler" not in story, (status, story)
