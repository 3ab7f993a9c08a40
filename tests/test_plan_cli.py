"""The verbs without hosts: `plan` prints every node's block, `jobs`/`status`/`cancel` read the registry."""

from __future__ import annotations

import getpass
import json
import re
import shlex
from pathlib import Path

from launcher.errors import ExitCode
from launcher.ops.registry import Registry

ROOT = Path(__file__).resolve().parent.parent


def test_plan_prints_each_node(run_cli, tmp_path):
    hf = tmp_path / "hosts"
    hf.write_text("10.1.0.1 slots=2\n10.1.0.2 slots=2\n")
    code, out, err = run_cli("plan", str(ROOT / "jobs" / "tiny_lora_cpu.yaml"), "-H", str(hf),
                             "--master-port", "29500", "--job-id", "tiny-x", "--include", "10.1.0.1:1@10.1.0.2:0",
                             "--offline")
    assert code == 0, err
    assert "#   node 0 (10.1.0.1): 1 - pinned (host not asked: --offline)" in out
    assert "#   node 1 (10.1.0.2): 0 - pinned (host not asked: --offline)" in out
    assert "# node 0: 10.1.0.1" in out and "# node 1: 10.1.0.2" in out
    assert "\n# staging: laptop -> 10.1.0.1 -> 10.1.0.2 (relay when >= 16 MiB is missing;" in out, out
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
    assert code == ExitCode.JOB_UNKNOWN and "h1: not verified" in out, (out, err)
    assert f"{rec.id}: had already ended (failed at " in out and "its state is kept" in out, out
    rows = json.loads(run_cli("jobs", "--json")[1])
    assert [(r["id"], r["state"], r["nodes"][0]["host"]) for r in rows] == [(rec.id, "failed", "h1")]


def test_jobs_table_keeps_id_and_state_at_80_columns(run_cli):
    """One line per job at 80 columns; the id, when cut, is a prefix `status` takes."""
    with Registry.in_state_dir() as registry:
        rec = registry.create_job("a-job-with-a-long-name", "finetune", nodes=[("10.213.0.10", "/x"), ("10.213.0.11", "/y")],
                                  state="failed")
        registry.set_state(rec.id, "failed", "node 1 (10.213.0.11) exited with code 1: " + "a long reason " * 8)
    code, out, _ = run_cli("jobs")
    assert code == 0
    assert all(len(line) <= 80 for line in out.splitlines()), out
    row = out.splitlines()[3]
    shown = row.split("│")[1].strip()
    assert rec.id.startswith(shown) and "failed" in row and "10.213.0.10" in row, out
    code, out, _ = run_cli("status", shown)
    assert code == ExitCode.JOB_FAILED and rec.id in out
    code, out, _ = run_cli("jobs", "--wide")
    assert rec.id in out and "a long reason " * 8 in out, out


def _two_card_job(tmp_path: Path) -> Path:
    text = (ROOT / "jobs" / "tiny_lora_cpu.yaml").read_text().replace("cards_per_node: all", "cards_per_node: 2")
    text = text.replace("../build/", str(ROOT / "build") + "/")
    job = tmp_path / "two.yaml"
    job.write_text(text)
    return job


def _node_block(out: str, rank: int) -> str:
    return out.split("\n# node ")[1 + rank]


def test_plan_asks_the_host_and_shows_the_cards_submit_would_pick(run_cli, tmp_path):
    """A real claim (the host script's CLAIM, as a running submit leaves it) holds 0,1 of a
    4-slot local host: plan asks the host (read-only) and picks 2,3, as submit would."""
    from launcher.remote import wire
    from tests.test_remote_scripts import run_script
    workdir = tmp_path / "work"
    hf = tmp_path / "hosts"
    hf.write_text(f"localhost slots=4 workdir={workdir}\n")
    base = workdir / "alaunch"
    took = wire.answer(run_script("stage", {"op": "claim", "base": str(base), "job_id": "other-job", "cards": [0, 1],
                                            "state_dir": "", "smi": False}).stdout)
    assert took["ok"]
    job = _two_card_job(tmp_path)
    code, out, err = run_cli("plan", str(job), "-H", str(hf), "--job-id", "p-1")
    assert code == 0, err
    assert "#   node 0 (localhost): 2,3 - free; 0,1 held by job other-job" in out, out
    assert "ASCEND_RT_VISIBLE_DEVICES=2,3" in _node_block(out, 0)
    # plan took no claim: the host still shows only the other job's
    look = wire.answer(run_script("stage", {"op": "claim", "base": str(base), "job_id": "x", "cards": []}).stdout)
    assert [(c["job_id"], c["cards"]) for c in look["claims"]] == [("other-job", [0, 1])]
    # pinned cards that are held: shown pinned and busy, plan still prints the commands
    code, out, err = run_cli("plan", str(job), "-H", str(hf), "--job-id", "p-1", "--devices", "1,2")
    assert code == 0, err
    assert ("#   node 0 (localhost): 1,2 - pinned, busy now, submit would refuse or queue with --wait "
            f"(needs 2 free card(s) of 1,2, 1 free (1 held by job other-job (user {getpass.getuser()})))") in out, out
    code, out, err = run_cli("plan", str(job), "-H", str(hf), "--job-id", "p-1", "--include", "localhost:2,3")
    assert code == 0, err
    assert "#   node 0 (localhost): 2,3 - pinned, free; " not in out and \
        "#   node 0 (localhost): 2,3 - pinned, free\n" in out, out
    # --offline: the first two, said not asked; a bad --devices is the one-line error naming the key
    code, out, err = run_cli("plan", str(job), "-H", str(hf), "--job-id", "p-1", "--offline")
    assert code == 0 and "#   node 0 (localhost): 0,1 - first 2 (host not asked: --offline)" in out, (out, err)
    code, out, err = run_cli("plan", str(job), "-H", str(hf), "--devices", "2,x")
    assert code == ExitCode.USAGE and "--devices" in err and "malformed device list '2,x'" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_plan_falls_back_to_the_first_cards_for_a_host_it_cannot_reach(run_cli, tmp_path):
    hf = tmp_path / "hosts"
    hf.write_text("127.0.0.2 port=1 slots=4\n127.0.0.3 port=1 slots=4\n")  # port 1: refused
    code, out, err = run_cli("plan", str(_two_card_job(tmp_path)), "-H", str(hf), "--job-id", "p-2",
                             "--known-hosts", str(tmp_path / "kh"))
    assert code == 0, err
    for rank in (0, 1):
        assert f"#   node {rank} (127.0.0.{rank + 2}): 0,1 - first 2 (host not asked: " in out, out
    assert "ASCEND_RT_VISIBLE_DEVICES=0,1" in _node_block(out, 1)


def test_jobs_pages_and_filters_by_state(run_cli):
    with Registry.in_state_dir() as registry:
        ids = [registry.create_job(f"j{i}", "finetune").id for i in range(5)]
        registry.set_state(ids[1], "running")
    page = json.loads(run_cli("jobs", "--json", "-n", "2", "--offset", "2")[1])
    assert [r["id"] for r in page] == [ids[2], ids[1]]
    running = json.loads(run_cli("jobs", "--json", "--state", "running")[1])
    assert [r["id"] for r in running] == [ids[1]]
    code, _, err = run_cli("jobs", "--state", "done")
    assert code == ExitCode.USAGE and "unknown job state(s) ['done']" in err


def test_local_slots_env_is_read_when_the_command_runs(run_cli, monkeypatch):
    """$ALAUNCH_LOCAL_SLOTS is --slots' env var: read at each run, not once at the verb's import."""
    job = str(ROOT / "jobs" / "tiny_lora_cpu.yaml")
    for slots in ("2", "3", None):
        if slots is None:
            monkeypatch.delenv("ALAUNCH_LOCAL_SLOTS", raising=False)
        else:
            monkeypatch.setenv("ALAUNCH_LOCAL_SLOTS", slots)
        code, out, err = run_cli("plan", job, "--local", "--offline", "--job-id", "slots-1")
        assert code == 0, err
        assert f"1 node(s), {slots or 1} worker(s)" in out, out
    monkeypatch.setenv("ALAUNCH_LOCAL_SLOTS", "two")
    code, _, err = run_cli("plan", job, "--local", "--offline")
    assert code == ExitCode.USAGE and "ALAUNCH_LOCAL_SLOTS" in err, err


def test_plan_picks_the_master_port_as_submit_does(run_cli, tmp_path):
    """plan printed msrun's --master_port=8118 while submit picked a free one from 29500-29899:
    node 0 is now asked with submit's own request; --offline says what submit will do."""
    hf = tmp_path / "hosts"
    hf.write_text(f"localhost slots=4 workdir={tmp_path / 'work'}\n")
    job = _two_card_job(tmp_path)
    code, out, err = run_cli("plan", str(job), "-H", str(hf), "--job-id", "p-1")
    assert code == 0, err
    port = int(re.search(r"^# master port: (\d+), free on localhost now \(submit picks again there, "
                         r"from 29500-29899\)$", out, re.M).group(1))
    assert 29500 <= port <= 29899 and f"--master_port={port}" in out and "8118" not in out, out
    code, out, err = run_cli("plan", str(job), "-H", str(hf), "--job-id", "p-1", "--offline",
                             "--master-port-range", "30000-30010")
    assert code == 0, err
    assert ("# master port: a free one from 30000-30010 is picked on localhost at submit (--offline; shown: 30000)"
            in out and "--master_port=30000" in out), out
