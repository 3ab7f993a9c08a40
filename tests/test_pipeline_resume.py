"""Resume and retry for real: a 2-worker tiny LoRA fine-tune under msrun on CPU, checkpoints
every 6 steps of an 8-step epoch (so the resume is from the *middle* of an epoch), one worker
SIGKILLed after the first checkpoint, ``retries: 1`` in the pipeline. The step must resume by
itself (same job directory, attempt 2), its loss lines must continue from the checkpoint's
global step (not from step 1), the last step must be the planned total, attempt 1's logs must
be kept under ``attempts/1/``, and the step's "last checkpoint" must be the one of the last
global step, read from the files' own metadata (a resumed MindSpore run names its files with
a shifted in-epoch step: issue 32 saw step 400 named ``_1-4_50`` after step 350's ``_1-4_100``).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.test_tiny_cpu import toy_data  # noqa: F401 - the module fixture (64 rows, SentencePiece)

pytestmark = [pytest.mark.slow, pytest.mark.ms]

STEP = re.compile(r"Epoch:\[\s*(\d+)/\s*(\d+)\], step:\[\s*(\d+)/\s*(\d+)\]")
EPOCHS, SAVE_EVERY = 6, 6  # 64 rows / (batch 4 x 2 workers) = 8 steps an epoch, 48 in all


def global_steps(log: Path) -> list[int]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = STEP.search(line)
        if m and "loss" in line:
            epoch, _, step, per_epoch = map(int, m.groups())
            out.append((epoch - 1) * per_epoch + step)
    return out


def _workers(job_id: str) -> dict[int, tuple[int, list[bytes]]]:
    """pid and environ of each run_cpu.py worker of the job, by rank."""
    want, out = f"ALAUNCH_JOB_ID={job_id}".encode(), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if want in env and b"run_cpu.py" in cmd:
            rank = next((int(e[8:]) for e in env if e.startswith(b"RANK_ID=")), -1)
            out[rank] = (int(pid), env)
    return out


def _kill_rank1_after_first_checkpoint(stop: threading.Event, killed: list, attempt2_env: list) -> None:
    """Kill rank 1 after its first checkpoint; then keep the environ of attempt 2's rank 0 (a
    worker seen once the resume has moved attempt 1 aside: attempt 1's processes are gone then)."""
    home = Path.home() / "alaunch"
    while not stop.is_set() and not killed:
        for ckpt in home.glob("tiny-resume-*/output/checkpoint/rank_1/*.ckpt"):
            job_id = ckpt.parents[3].name
            workers = _workers(job_id)
            if 1 in workers and 0 in workers:
                os.kill(workers[1][0], signal.SIGKILL)
                killed.append((job_id, workers[1][0], ckpt.name, workers[0][0]))
                break
        time.sleep(0.1)
    rotated = home / killed[0][0] / "attempts" / "1"  # made by the resume, after attempt 1 ended
    while not stop.is_set():
        workers = _workers(killed[0][0]) if rotated.exists() else {}
        if 0 in workers:
            attempt2_env.extend(workers[0][1])
            return
        time.sleep(0.2)


@pytest.mark.timeout(600)
def test_killed_worker_resumes_from_its_checkpoint(tmp_path, toy_data, run_cli):  # noqa: F811
    job = {"name": "tiny-resume", "kind": "finetune", "template": "tiny_llama_cpu/finetune.yaml", "seed": 42,
           "cards_per_node": "all", "entry": {"script": "alaunch:run_cpu"},
           "overrides": {"runner_config.epochs": EPOCHS,
                         "callbacks": [{"type": "MFLossMonitor"},
                                       {"type": "CheckpointMonitor", "prefix": "tiny", "integrated_save": False,
                                        "save_checkpoint_steps": SAVE_EVERY, "async_save": False}]},
           "inputs": {"train": {"remote": str(toy_data["mindrecord"]),
                                "fills": "train_dataset.data_loader.dataset_dir"}},
           "tokenizer": {"remote": str(toy_data["tokenizer"])},
           "env": {"API_KEY": {"value": "s3cr3t-token", "secret": True}},
           "outputs": {"checkpoints": ["output/checkpoint/**/*.ckpt"]}}
    pipeline = tmp_path / "resume.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "resume-test", "steps": {"train": {"job": job, "retries": 1}}}))
    stop, killed, attempt2_env = threading.Event(), [], []
    watcher = threading.Thread(target=_kill_rank1_after_first_checkpoint, args=(stop, killed, attempt2_env),
                               daemon=True)
    watcher.start()
    try:
        code, out, err = run_cli("run", str(pipeline), "--local", "--slots", "2", "--runs", str(tmp_path / "runs"))
    finally:
        stop.set()
    assert killed, "the watcher never found rank 1's worker after a checkpoint"
    assert code == 0, err[-3000:]
    assert "(transient): resuming, attempt 2 of 2" in err, err
    # attempt 2 ran with the secret's real value, not the registry's *** (it was, silently)
    assert b"API_KEY=s3cr3t-token" in attempt2_env, [e for e in attempt2_env if e.startswith(b"API_KEY")]
    from launcher.ops.registry import Registry
    with Registry.in_state_dir() as registry:
        run = registry.pipeline("resume-test")
        (step,) = run.steps
        assert (step.state, step.attempts) == ("succeeded", 2)
        record = registry.get(step.job_id)
    assert record.meta["attempt"] == 2 and record.state == "succeeded"
    root = Path(record.nodes[0].job_dir)
    assert root.name == killed[0][0]  # the same job directory
    first = global_steps(root / "attempts" / "1" / "msrun_log" / "worker_0.log")
    second = global_steps(root / "msrun_log" / "worker_0.log")
    resumed_at = record.meta["resumed_from_step"]
    assert first and first[0] == 1, first[:3]  # attempt 1 started at step 1, and its log is kept
    assert second[0] > 1, second[:3]  # attempt 2 did not start over
    assert resumed_at % SAVE_EVERY == 0 and resumed_at % 8, resumed_at  # a global step, mid-epoch
    assert second[0] == resumed_at + 1, (second[:3], resumed_at)  # continues after it
    assert second[-1] == EPOCHS * 8, second[-3:]  # the total steps equal the plan
    from launcher.core import pipeline as pl
    from launcher.ops.ckpt import checkpoints_of
    ckpts = checkpoints_of(step.outputs)
    names = sorted((c.step, c.path.rsplit("/", 1)[-1]) for c in ckpts if c.rank == 0)
    assert pl.last_checkpoint(ckpts).step == EPOCHS * 8, names  # the last global step, whatever its name
    assert pl.last_checkpoint(ckpts).attempt == 2 and {c.attempt for c in ckpts if c.step == resumed_at} == {1}
