"""The verbs without hosts: `plan` prints every node's block, `jobs`/`status`/`cancel` read the registry."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from launcher.errors import ExitCode
from launcher.ops.registry import Registry

ROOT = Path(__file__).resolve().parent.parent


def test_plan_prints_each_node(run_cli, tmp_path):
    hf = tmp_path / "hosts"
    hf.write_text("10.1.0.1 slots=2\n10.1.0.2 slots=2\n")
    code, out, err = run_cli("plan", str(ROOT / "jobs" / "tiny_lora_cpu.yaml"), "-H", str(hf),
                             "--master-port", "29500", "--job-id", "tiny-x", "--include", "10.1.0.1:1@10.1.0.2:0")
    assert code == 0, err
    assert "# node 0: 10.1.0.1" in out and "# node 1: 10.1.0.2" in out
    blocks = out.split("# node ")[1:]
    assert "ASCEND_RT_VISIBLE_DEVICES=1" in blocks[0] and "ASCEND_RT_VISIBLE_DEVICES=0" in blocks[1]
    words = shlex.split(blocks[1].split("\n", 1)[1].replace("\\\n", " "))
    assert "--worker_num=2" in words and "--local_worker_num=1" in words and "--node_rank=1" in words
    assert "--master_addr=10.1.0.1" in words and "--master_port=29500" in words


def test_jobs_status_cancel_from_the_registry(run_cli):
    assert run_cli("jobs", "--json")[:2] == (0, "[]\n")
    code, _, err = run_cli("status", "nope")
    assert code == ExitCode.USAGE and "no job 'nope'" in err
    with Registry.in_state_dir() as registry:
        rec = registry.create_job("old", "finetune", nodes=[("h1", "/x")], state="failed")
        registry.set_state(rec.id, "failed", "node 0 exited with code 1")
    code, out, _ = run_cli("status", rec.id)
    assert code == ExitCode.JOB_FAILED and "node 0 exited with code 1" in out
    # cancel of an ended job still looks for survivors; a node it cannot reach is said, not hidden
    code, out, err = run_cli("cancel", rec.id)
    assert code == ExitCode.JOB_UNKNOWN and "h1: not verified" in out and f"{rec.id}: failed" in out, (out, err)
    rows = json.loads(run_cli("jobs", "--json")[1])
    assert [(r["id"], r["state"], r["nodes"][0]["host"]) for r in rows] == [(rec.id, "failed", "h1")]


def test_jobs_table_keeps_id_and_state_at_80_columns(run_cli):
    with Registry.in_state_dir() as registry:
        rec = registry.create_job("a-job-with-a-long-name", "finetune", nodes=[("10.213.0.10", "/x"), ("10.213.0.11", "/y")],
                                  state="failed")
        registry.set_state(rec.id, "failed", "node 1 (10.213.0.11) exited with code 1: " + "a long reason " * 8)
    code, out, _ = run_cli("jobs")
    assert code == 0
    assert rec.id in out and "failed" in out, out  # not collapsed to nothing
    assert all(len(line) <= 80 for line in out.splitlines()), out
