"""issue #14 through the CLI, fast, on this machine (a ``localhost`` host with its own workdir):
``prune --dry-run`` and ``prune`` run the real host script; ``submit --devices`` refuses bad
pins in one line; ``submit`` refuses busy cards (exit 4) naming the claim's job, and
``submit --wait`` queues, is cancelled while queued, or — its process killed — is marked
failed by ``jobs`` instead of reading ``queued`` forever. The claims are written by the real
CLAIM op (as another submit leaves them); nothing here starts msrun."""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from launcher.errors import ExitCode
from launcher.ops.registry import Registry
from launcher.remote import wire
from tests.test_e2e_local import write_job
from tests.test_prune import DAY, _job, _obj
from tests.test_remote_scripts import run_script

ROOT = Path(__file__).resolve().parent.parent


def _hostfile(tmp_path: Path, slots: int = 4) -> tuple[Path, Path]:
    workdir = tmp_path / "work"
    hf = tmp_path / "hosts"
    hf.write_text(f"localhost slots={slots} workdir={workdir}\n")
    return hf, workdir / "alaunch"


def _two_card_job(tmp_path: Path) -> Path:
    """The tiny CPU job on 2 cards of 1 node; its inputs only need to exist (nothing trains)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.mindrecord").write_bytes(b"not read: nothing starts")
    (data / "train.mindrecord.db").write_bytes(b"nor its index")
    (data / "tokenizer.model").write_bytes(b"not read either")
    path = write_job(tmp_path, {"mindrecord": data / "train.mindrecord", "tokenizer": data / "tokenizer.model"},
                     epochs=1, name="share")
    job = yaml.safe_load(path.read_text())
    job.update(nodes=1, cards_per_node=2)
    path.write_text(yaml.safe_dump(job))
    return path


ME = getpass.getuser()  # the user a claim names (its file's owner)

def _hold(base: Path, job_id: str, cards: list[int]) -> None:
    """A claim as a submit that is about to launch leaves it (no pid file yet: it holds for CLAIM_TTL)."""
    assert wire.answer(run_script("stage", {"op": "claim", "base": str(base), "job_id": job_id, "cards": cards,
                                            "state_dir": "", "smi": False}).stdout)["ok"]


def _jobs(run_cli, *args: str) -> list[dict]:
    code, out, err = run_cli("jobs", "--json", *args)
    assert code == 0, err
    return json.loads(out)


# ----------------------------------------------------------------------------- prune

def test_prune_dry_run_lists_then_prune_removes_and_records(run_cli, tmp_path):
    hf, base = _hostfile(tmp_path)
    cas = base / "cas"
    (cas / "tmp").mkdir(parents=True)
    shared, orphan = _obj(cas, b"shared by both jobs"), _obj(cas, b"orphan" * 50)
    now = time.time()
    old = _job(base, "old-20250101-000000-aaaa", [shared], None, now - 10 * DAY)
    new = _job(base, "new-20250102-000000-bbbb", [shared], None, now - 1 * DAY)
    # the registry says this one runs (its dir looks finished): prune must never touch it
    kept = _job(base, "run-20250101-000000-cccc", [shared], None, now - 20 * DAY)
    # a running pipeline's finished step: the input of its later steps, never pruned while it runs
    step = _job(base, "step-20250101-000000-dddd", [shared], None, now - 20 * DAY)
    with Registry.in_state_dir() as registry:
        registry.create_job("old", "finetune", nodes=[("localhost", str(old))], job_id=old.name, state="failed")
        registry.create_job("run", "finetune", nodes=[("localhost", str(kept))], job_id=kept.name, state="running")
        registry.create_job("step", "finetune", nodes=[("localhost", str(step))], job_id=step.name,
                            state="succeeded")
        from launcher.ops import proc
        run = registry.create_pipeline("p", "p.yaml", [("train", "job"), ("eval", "job")], runner=proc.me())
        registry.set_step(run.id, "train", state="succeeded", job_id=step.name)

    code, out, err = run_cli("prune", "-H", str(hf), "--dry-run", "--older-than", "7d")
    assert code == 0, err
    assert "prune (dry run): would remove" in out and old.name in out, out
    assert new.name not in out and kept.name not in out and step.name not in out, out
    row = next(line for line in out.splitlines() if "localhost" in line)
    cells = [c.strip() for c in row.split("│")]
    assert cells[3:5] == ["0", "1"], cells  # no staged tree; one orphan object (the shared one stays)
    assert old.exists() and orphan.exists()  # a dry run changes nothing
    with Registry.in_state_dir() as registry:
        assert not [e for e in registry.events(old.name) if e.kind == "pruned"]

    code, out, err = run_cli("prune", "-H", str(hf), "--older-than", "7d")
    assert code == 0, err
    assert "prune (done): removed" in out and old.name in out, out
    assert not old.exists() and not orphan.exists()
    for still in (new, kept, step, shared):
        assert still.exists(), still
    with Registry.in_state_dir() as registry:
        events = [e for e in registry.events(old.name) if e.kind == "pruned"]
        assert len(events) == 1 and "job dir removed (whole directory)" in events[0].message, events
        assert registry.get(old.name).meta["pruned"]["localhost"] > 1000


def test_prune_needs_the_hosts(run_cli):
    code, _, err = run_cli("prune", "--dry-run")
    assert code == ExitCode.USAGE and "-H" in err and len(err.strip().splitlines()) == 1, err


# ----------------------------------------------------------------------------- submit --devices

def test_submit_devices_refuses_bad_pins_in_one_line_before_any_host(run_cli, tmp_path):
    hf, base = _hostfile(tmp_path)
    job = _two_card_job(tmp_path)
    for devices, want in (("2,x", "--devices: malformed device list '2,x'; expected comma-separated card ids"),
                          ("1,1", "--devices: device list '1,1' names a card twice"),
                          ("3,9", "--devices: card 9 is not among localhost's slots (0,1,2,3)")):
        code, out, err = run_cli("submit", str(job), "-H", str(hf), "--devices", devices)
        assert code == ExitCode.USAGE, (devices, err)
        assert want in err and len(err.strip().splitlines()) == 1, (devices, err)
    assert f"{hf}:1" in err  # the hostfile line of the host that lacks the card
    assert _jobs(run_cli) == [] and not base.exists()  # refused before any host was asked


# ----------------------------------------------------------------------------- busy, --wait

def test_submit_refuses_busy_cards_naming_the_holder_exit_4(run_cli, tmp_path):
    hf, base = _hostfile(tmp_path)
    _hold(base, "other-job", [0, 1, 2])
    job = _two_card_job(tmp_path)
    code, out, err = run_cli("submit", str(job), "-H", str(hf))
    assert code == ExitCode.CARDS_BUSY == 4, err
    line = [ln for ln in err.strip().splitlines() if ln.startswith("alaunch: error:")]
    assert line == ["alaunch: error: cards busy: localhost: needs 2 free card(s) of 0,1,2,3, 1 free "
                    f"(0,1,2 held by job other-job (user {ME})); wait for them with --wait, or pick others with "
                    "--devices / --include"], err
    assert _jobs(run_cli) == []  # refused before launch: not among the jobs (issue #33)
    [row] = _jobs(run_cli, "--all")
    assert row["state"] == "failed" and row["refused"] and row["reason"].startswith("cards busy: localhost"), row
    # pinned to the free card and one held: refused as well, naming only what it asked for
    code, _, err = run_cli("submit", str(job), "-H", str(hf), "--devices", "2,3")
    assert code == 4 and f"needs 2 free card(s) of 2,3, 1 free (2 held by job other-job (user {ME}))" in err, err


def _submit_wait(job: Path, hf: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ALAUNCH_RAW": "1"}
    return subprocess.Popen([sys.executable, "-m", "launcher", "submit", str(job), "-H", str(hf), "--wait",
                             "--poll", "0.3"], stdout=subprocess.PIPE, stderr=log.open("wb"), env=env,
                            start_new_session=True)


def _until_queued(run_cli, proc: subprocess.Popen, log: Path, timeout: float = 120) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rows = [r for r in _jobs(run_cli) if r["state"] == "queued"]
        if rows:
            return rows[0]
        assert proc.poll() is None, log.read_text()
        time.sleep(0.3)
    raise AssertionError(f"never queued: {log.read_text()}")


def test_submit_wait_queues_is_cancelled_or_failed_when_its_waiter_dies(run_cli, tmp_path):
    hf, base = _hostfile(tmp_path)
    _hold(base, "other-job", [0, 1, 2])
    job = _two_card_job(tmp_path)

    # 1. queued, then cancelled while queued: the waiting submit ends with the cancel's code
    log = tmp_path / "wait1.err"
    proc = _submit_wait(job, hf, log)
    try:
        row = _until_queued(run_cli, proc, log)
        assert row["reason"].startswith("cards busy") and "--wait" not in row["reason"], row  # it waits already
        code, out, err = run_cli("cancel", row["id"])
        assert code == 0 and "queued: nothing was running" in out, (out, err)
        assert proc.wait(timeout=60) == ExitCode.JOB_CANCELLED
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert ("queued (position 1): cards busy: localhost: needs 2 free card(s) of 0,1,2,3, 1 free "
            f"(0,1,2 held by job other-job (user {ME}))") in text, text
    assert f"job {row['id']} was cancelled while queued" in text, text

    # 2. queued, then its submit killed: `jobs` marks it failed, naming the waiter that is gone
    log = tmp_path / "wait2.err"
    proc = _submit_wait(job, hf, log)
    try:
        row = _until_queued(run_cli, proc, log)
        with Registry.in_state_dir() as registry:
            assert registry.get(row["id"]).meta["waiter"]["pid"] == proc.pid
        assert [r["state"] for r in _jobs(run_cli) if r["id"] == row["id"]] == ["queued"]  # alive: stays queued
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    [after] = [r for r in _jobs(run_cli) if r["id"] == row["id"]]
    assert after["state"] == "failed", after
    assert after["reason"] == f"the waiting submit (pid {proc.pid} on this machine) is gone", after
    code, out, _ = run_cli("status", row["id"])
    assert code == ExitCode.JOB_FAILED and f"pid {proc.pid}" in out


def test_a_waiter_is_gone_when_its_pid_is_gone_or_reused_never_on_another_machine():
    from launcher.ops import waiter
    mine = waiter.me()
    assert mine["pid"] == os.getpid() and mine["start"] and not waiter.gone(mine)
    assert waiter.gone({**mine, "start": "not-when-it-started"})  # the pid now belongs to another process
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert waiter.gone({**mine, "pid": dead.pid, "start": None})
    assert not waiter.gone({**mine, "pid": dead.pid, "host": "another-laptop"})  # not judged from here
    assert not waiter.gone({})  # a queued job without a waiter (Slurm's): never
