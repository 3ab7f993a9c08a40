"""Re-attach instead of re-train, for real: a 1-worker tiny LoRA training under msrun on CPU
(``--local``). The driver (`alaunch run`) is SIGKILLed while the step's job trains; the next
`alaunch run` re-attaches to that job (no second training); that one gets Ctrl-C (SIGINT):
it ends at once, says the job keeps running and how to re-attach, and the job's worker is
still alive; a third `alaunch run` re-attaches again and the step succeeds with the first
job (re-attached, or used as it is if it ended meanwhile), the only job of the pipeline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.test_tiny_cpu import toy_data  # noqa: F401 - the module fixture (64 rows, SentencePiece)

pytestmark = [pytest.mark.slow, pytest.mark.ms]
ROOT = Path(__file__).resolve().parent.parent


def _alaunch(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    return subprocess.Popen([sys.executable, "-m", "launcher", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _train_job(deadline: float) -> tuple[str, int]:
    """Poll the registry until the train step has a running job with a pid: (job id, pid)."""
    from launcher.ops.registry import Registry
    while time.monotonic() < deadline:
        with Registry.in_state_dir() as registry:
            try:
                run = registry.pipeline("reattach-test")
            except Exception:  # noqa: BLE001 - not created yet
                run = None
            step = run.steps[0] if run else None
            if step and step.job_id:
                job = registry.get(step.job_id)
                if job.state == "running" and job.nodes[0].pid:
                    return job.id, job.nodes[0].pid
        time.sleep(0.5)
    raise AssertionError("the train step's job never ran")


@pytest.mark.timeout(600)
def test_a_killed_driver_is_reattached_not_retrained(tmp_path, toy_data):  # noqa: F811
    job = {"name": "tiny-reattach", "kind": "finetune", "template": "tiny_llama_cpu/finetune.yaml", "seed": 42,
           "cards_per_node": 1, "entry": {"script": "alaunch:run_cpu"},
           "overrides": {"runner_config.epochs": 12},
           "inputs": {"train": {"remote": str(toy_data["mindrecord"]),
                                "fills": "train_dataset.data_loader.dataset_dir"}},
           "tokenizer": {"remote": str(toy_data["tokenizer"])},
           "outputs": {"checkpoints": ["output/checkpoint/**/*.ckpt"]}}
    pipeline = tmp_path / "reattach.yaml"
    pipeline.write_text(yaml.safe_dump({"name": "reattach-test", "steps": {"train": {"job": job}}}))
    args = ("run", str(pipeline), "--local", "--slots", "1", "--runs", str(tmp_path / "runs"))

    first = _alaunch(*args)
    job_id, pid = _train_job(time.monotonic() + 300)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()

    second = _alaunch(*args)
    out = ""
    for line in second.stderr:  # wait for the re-attach line, then Ctrl-C
        out += line
        if "re-attached to" in line:
            break
    assert f"train: re-attached to {job_id}" in out, out
    os.kill(second.pid, signal.SIGINT)
    _, err = second.communicate(timeout=60)
    err = out + err
    assert second.returncode == 130, err
    assert f"job {job_id} keeps running" in err and "again re-attaches" in err, err
    os.kill(pid, 0)  # the job's process outlived its driver (ProcessLookupError otherwise)

    third = subprocess.run([sys.executable, "-m", "launcher", *args], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                           capture_output=True, text=True, timeout=500)
    assert third.returncode == 0, third.stderr[-3000:]
    assert (f"train: re-attached to {job_id}" in third.stderr  # or it ended meanwhile: used as it is
            or f"train: {job_id} of run " in third.stderr and "succeeded after its driver stopped" in third.stderr), \
        third.stderr
    from launcher.ops.registry import Registry
    with Registry.in_state_dir() as registry:
        run = registry.pipeline("reattach-test")
        assert [(s.step, s.state, s.job_id) for s in run.steps] == [("train", "succeeded", job_id)]
        assert [j.id for j in registry.list(limit=None)] == [job_id]  # one training, never two
        assert run.steps[0].outputs["paths"]["checkpoints"]
