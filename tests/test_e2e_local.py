"""End to end on this machine through the CLI: submit -> stage -> real msrun on CPU -> status.

(a) one worker, (b) two workers (data parallel 2, gradients all-reduced), an unchanged
resubmit that stages 0 bytes, and cancel during training that leaves a second job running.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from launcher.errors import ExitCode
from launcher.ops.registry import Registry

pytestmark = [pytest.mark.slow, pytest.mark.ms]

ROOT = Path(__file__).resolve().parent.parent
# rows must be the template's seq_length + 1 (the tiny config's length is tuned for the demo)
SEQ = yaml.safe_load((ROOT / "configs" / "tiny_llama_cpu" / "finetune.yaml").read_text())["model"]["model_config"]["seq_length"]
QA = [(f"计算 {a} + {b} 等于多少？", f"{a} + {b} = {a + b}")
      for a, b in [(3, 4), (12, 5), (7, 8), (20, 22), (9, 1), (6, 6), (15, 3), (2, 9)]]
LOSS = re.compile(r"loss:\s*\[?\s*([0-9.]+(?:e-?\d+)?)")


def write_toy_data(out: Path) -> dict[str, Path]:
    """SentencePiece tokenizer + a 64-row MindRecord (prompt labelled -100), as the tiny job reads."""
    import sentencepiece as spm
    from mindspore.mindrecord import FileWriter

    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "corpus.txt"
    corpus.write_text("".join(f"{q}\n{a}\n" for _ in range(20) for q, a in QA), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(out / "tok"), vocab_size=1024,
                                   hard_vocab_limit=False, model_type="bpe", character_coverage=1.0,
                                   byte_fallback=True, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(out / "tok.model"))
    writer = FileWriter(str(out / "train.mindrecord"), shard_num=1, overwrite=True)
    writer.add_schema({"input_ids": {"type": "int32", "shape": [-1]}, "labels": {"type": "int32", "shape": [-1]}})
    rows = []
    for _ in range(8):
        for question, answer in QA:
            prompt, reply = [1] + sp.encode(question), sp.encode(answer) + [2]
            ids = (prompt + reply)[:SEQ + 1]
            labels = ([-100] * len(prompt) + reply)[:SEQ + 1]
            rows.append({"input_ids": np.array(ids + [0] * (SEQ + 1 - len(ids)), np.int32),
                         "labels": np.array(labels + [-100] * (SEQ + 1 - len(labels)), np.int32)})
    writer.write_raw_data(rows)
    writer.commit()
    return {"mindrecord": out / "train.mindrecord", "tokenizer": out / "tok.model"}


def write_job(dirpath: Path, data: dict[str, Path], epochs: int, name: str = "e2e") -> Path:
    job = {"name": name, "kind": "finetune", "template": "tiny_llama_cpu/finetune.yaml", "seed": 42,
           "nodes": "all", "cards_per_node": "all", "entry": {"script": "alaunch:run_cpu"},
           "overrides": {"runner_config.epochs": epochs},
           "inputs": {"train": {"local": str(data["mindrecord"]), "fills": "train_dataset.data_loader.dataset_dir"}},
           "tokenizer": {"local": str(data["tokenizer"])}, "env": {"GLOG_v": 2},
           "outputs": {"logs": ["msrun_log/*.log"], "checkpoints": ["output/checkpoint/**/*.ckpt"]}}
    path = dirpath / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, allow_unicode=True), encoding="utf-8")
    return path


def losses(log: Path) -> list[float]:
    return [float(m.group(1)) for line in log.read_text(errors="replace").splitlines()
            if "step:[" in line and (m := LOSS.search(line))]


def wait_state(run_cli, job_id: str, codes: set[int], timeout: float = 240) -> int:
    end = time.time() + timeout
    while time.time() < end:
        code, _, _ = run_cli("status", job_id)
        if code in codes:
            return code
        time.sleep(2)
    raise AssertionError(f"{job_id} not in {codes} after {timeout} s")


def job_procs(job_id: str) -> list[int]:
    """Processes on this machine carrying the job's environment marker."""
    want = f"ALAUNCH_JOB_ID={job_id}".encode()
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if want in (p / "environ").read_bytes().split(b"\0"):
                    out.append(int(p.name))
            except OSError:
                pass
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_data(tmp_path_factory.mktemp("toy"))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path / "wd"


def _hostfile(tmp_path: Path, slots: int, workdir: Path) -> Path:
    hf = tmp_path / "hosts"
    hf.write_text(f"localhost slots={slots} workdir={workdir}\n")
    return hf


def _check_trained(root: Path, ranks: range) -> None:
    for rank in ranks:
        values = losses(root / "msrun_log" / f"worker_{rank}.log")
        assert len(values) >= 4 and values[-1] < values[0], values
        assert list((root / "output" / "checkpoint" / f"rank_{rank}").glob("*.ckpt")), rank


def test_one_worker_then_unchanged_resubmit_stages_nothing(run_cli, toy, tmp_path, workdir):
    job = write_job(tmp_path, toy, epochs=1)
    hf = _hostfile(tmp_path, 1, workdir)
    code, out, err = run_cli("submit", str(job), "-H", str(hf), "--follow")
    assert code == 0, err
    job_id = out.strip().splitlines()[-1]
    with Registry.in_state_dir() as registry:
        record = registry.get(job_id)
        assert record.state == "succeeded" and record.nodes[0].exit_code == 0
        assert record.meta["staged_bytes"] > 0
    root = Path(record.nodes[0].job_dir)
    assert root == workdir / "alaunch" / job_id
    _check_trained(root, range(1))
    assert run_cli("status", job_id)[0] == ExitCode.OK

    code, out, err = run_cli("submit", str(job), "-H", str(hf))
    assert code == 0, err
    second = out.strip().splitlines()[-1]
    with Registry.in_state_dir() as registry:
        assert registry.get(second).meta["staged_bytes"] == 0
    assert "localhost: nothing to send (all already there); linked" in err, err
    run_cli("cancel", second, "--grace", "2")
    code, out, _ = run_cli("jobs", "--json")
    states = {row["id"]: row["state"] for row in yaml.safe_load(out)}
    assert states == {job_id: "succeeded", second: "cancelled"}


def test_two_workers_data_parallel(run_cli, toy, tmp_path, workdir):
    job = write_job(tmp_path, toy, epochs=1)
    runs = tmp_path / "runs"
    code, out, err = run_cli("submit", str(job), "-H", str(_hostfile(tmp_path, 2, workdir)), "--fetch",
                             "--fetch-dest", str(runs))
    assert code == 0, err
    job_id = out.strip().splitlines()[-1]
    with Registry.in_state_dir() as registry:
        record = registry.get(job_id)
    assert record.state == "succeeded"
    root = Path(record.nodes[0].job_dir)
    _check_trained(root, range(2))
    # --fetch brought the logs and both ranks' checkpoints home, byte for byte
    fetched = sorted(p.relative_to(runs / job_id / "localhost") for p in (runs / job_id / "localhost").rglob("*")
                     if p.is_file())
    assert Path("msrun_log/worker_0.log") in fetched and Path("msrun_log/worker_1.log") in fetched
    ckpts = [p for p in fetched if p.suffix == ".ckpt"]
    assert {p.parts[-2] for p in ckpts} >= {"rank_0", "rank_1"}, ckpts
    for rel in ckpts:
        assert (runs / job_id / "localhost" / rel).read_bytes() == (root / rel).read_bytes()
    assert (runs / job_id / "job.json").is_file()


def test_cancel_leaves_other_job_running(run_cli, toy, tmp_path, workdir):
    job = write_job(tmp_path, toy, epochs=200, name="long")
    spec = yaml.safe_load(job.read_text())
    job.write_text(yaml.safe_dump({**spec, "cards_per_node": 1}))  # one card each (issue #14: cards per job)
    hf = _hostfile(tmp_path, 2, workdir)
    ids = []
    for _ in range(2):
        code, out, err = run_cli("submit", str(job), "-H", str(hf))
        assert code == 0, err
        ids.append(out.strip().splitlines()[-1])
    a, b = ids
    with Registry.in_state_dir() as registry:
        log = Path(registry.get(a).nodes[0].job_dir) / "msrun_log" / "worker_0.log"
    end = time.time() + 120
    while time.time() < end and not (log.exists() and losses(log)):
        time.sleep(1)
    assert losses(log), "training never started"
    assert job_procs(a) and job_procs(b)
    code, out, _ = run_cli("cancel", a, "--grace", "5")
    assert code == 0 and f"{a}: cancelled" in out
    assert job_procs(a) == []
    assert run_cli("status", a)[0] == ExitCode.JOB_CANCELLED
    assert job_procs(b) and run_cli("status", b)[0] == ExitCode.JOB_RUNNING
    run_cli("cancel", b, "--grace", "2")
    assert job_procs(b) == []
