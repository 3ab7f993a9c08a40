"""Submit at its edges. A submit interrupted after its job was recorded (Ctrl-C, SIGTERM/SIGHUP, SIGKILL) must not
leave the job ``staging`` forever (prune then protected its dir, ``logs`` refused, the dashboard
polled it) nor leave nodes that launched before the interrupt running unwatched. Real local
host (this machine through the local runner), real registry, real host scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launcher.core.hostfile import Host
from launcher.core.layout import JobLayout
from launcher.ops import cards as card_ops
from launcher.ops import proc
from launcher.ops import registry as reg
from launcher.ops.service import JobService
from launcher.ops.stage import Progress, store_base
from launcher.runners import make_runner


def _marked(job_id: str) -> list[int]:
    want = f"ALAUNCH_JOB_ID={job_id}".encode()
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if want in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                out.append(int(pid))
        except OSError:
            continue
    return out


def test_a_submit_killed_before_the_start_is_ended_by_the_next_look_and_its_node_stopped(tmp_path):
    """SIGKILL cannot be caught: the record names its submitter, and a refresh (status, jobs,
    the dashboard) that finds it gone while no pid was recorded ends the job FAILED and stops
    whatever of it started on the hosts (found by its marker)."""
    registry = reg.Registry(tmp_path / "state" / reg.DB_NAME)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # plays the killed `alaunch submit`
    dead.wait()
    root = tmp_path / "w" / "job"
    job = registry.create_job("killed", "finetune", hostfile_text=f"localhost slots=1 workdir={tmp_path / 'w'}\n",
                              nodes=[("localhost", str(root))],
                              meta={"pythons": {"localhost": sys.executable},
                                    "submitter": {**proc.me(), "pid": dead.pid, "start": "1"}})
    registry.set_state(job.id, reg.STAGING)
    host = Host("localhost", 1, workdir=str(tmp_path / "w"))
    state_dir = JobLayout(str(root)).node_state(0)
    with make_runner(host) as runner:  # the killed submit had claimed card 0 (no pid file yet)
        assert card_ops.claim(runner.using(sys.executable), store_base(host), job.id, [0], state_dir).ok
    # a node that launched just before the kill (its pid never recorded)
    node = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                            env={**os.environ, "ALAUNCH_JOB_ID": job.id})
    try:
        record, _ = JobService(registry, tmp_path / "state").refresh(job.id)
        assert record.state == reg.FAILED and "interrupted" in record.reason, (record.state, record.reason)
        assert str(dead.pid) in record.reason
        assert node.wait(timeout=30) is not None and _marked(job.id) == []
        with make_runner(host) as runner:  # its claim went with it (it held the card for 5 min)
            assert card_ops.claim(runner.using(sys.executable), store_base(host), "looker", [], "").held == {}
    finally:
        if node.poll() is None:
            node.kill()
    # a live submitter (this process) is left alone: it is still staging
    alive = registry.create_job("alive", "finetune", hostfile_text="localhost slots=1\n",
                                nodes=[("localhost", str(root))], meta={"submitter": proc.me()})
    registry.set_state(alive.id, reg.STAGING)
    assert JobService(registry, tmp_path / "state").refresh(alive.id)[0].state == reg.STAGING
    registry.close()


class _CtrlCWhileStaging(Progress):
    def start(self, host: str, total: int, files: int) -> None:
        raise KeyboardInterrupt


def _tiny_job(tmp_path, name: str) -> Path:
    """A one-card job file whose code tree is one print: what these submits stage."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print('hi')\n")
    job = {"name": name, "kind": "finetune", "template": "tiny_llama_cpu/finetune.yaml", "seed": 42,
           "nodes": "all", "cards_per_node": "all", "code": {"local": str(code)}, "entry": {"script": "train.py"}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_ctrl_c_during_staging_records_the_end(tmp_path):
    path = _tiny_job(tmp_path, "ctrlc")
    host = Host("localhost", 1, workdir=str(tmp_path / "work"), slot_ids=(0,))
    registry = reg.Registry(tmp_path / "state" / reg.DB_NAME)
    service = JobService(registry, tmp_path / "state", progress=_CtrlCWhileStaging(), exec_factory=make_runner)
    with pytest.raises(KeyboardInterrupt):
        service.submit(path, [host])
    (record,) = registry.list(limit=None)
    assert record.state == reg.FAILED and "interrupted" in record.reason, (record.state, record.reason)
    assert all(n.pid is None for n in record.nodes)
    assert not Path(JobLayout(record.nodes[0].job_dir).node_state(0), "pid").exists()
    registry.close()


def test_a_submit_without_wait_does_not_jump_a_queued_job(tmp_path):
    """An earlier job queued for cards on this host (its waiting submit alive): a submit without
    --wait is refused (exit 4, naming it) before anything is recorded or staged, instead of
    taking the cards that job waits for. Only --wait submits looked at the queue before."""
    import time as _time

    from launcher.core.cards import CardsBusy
    from launcher.errors import ExitCode
    path = _tiny_job(tmp_path, "late")
    host = Host("localhost", 1, workdir=str(tmp_path / "work"), slot_ids=(0,))
    registry = reg.Registry(tmp_path / "state" / reg.DB_NAME)
    first = registry.create_job("first", "finetune", hostfile_text="localhost slots=1\n", nodes=[("localhost", "/w")],
                                meta={"waiter": proc.me(), "queue_beat": _time.time()})
    registry.set_state(first.id, reg.QUEUED, "cards busy")
    service = JobService(registry, tmp_path / "state", exec_factory=make_runner)
    with pytest.raises(CardsBusy) as info:
        service.submit(path, [host])
    assert first.id in info.value.message and "--wait" in info.value.message
    assert info.value.exit_code == ExitCode.CARDS_BUSY
    assert [r.id for r in registry.list(limit=None) if r.state != reg.FAILED] == [first.id]
    registry.close()
