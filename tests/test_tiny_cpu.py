"""The tiny CPU job really runs: render -> real msrun -> MindSpore on CPU -> checkpoint -> predict.

The training data is a toy QA set repeated (so loss falls fast), written as a MindRecord of
``input_ids``/``labels`` (int32, seq_length+1, prompt labelled -100) with MindSpore's own
FileWriter; the tokenizer is a SentencePiece model trained here. Budget: ~80 s in all.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from launcher.core.hostfile import Host
from launcher.core.layout import JobLayout
from launcher.core.render import render_job
from launcher.core.spec import parse_job
from launcher.core.validate import check_static

pytestmark = [pytest.mark.slow, pytest.mark.ms]

ROOT = Path(__file__).resolve().parent.parent
ENTRY = ROOT / "launcher" / "entry" / "run_cpu.py"
MSRUN = Path(sys.executable).with_name("msrun")
SEQ = yaml.safe_load((ROOT / "configs" / "tiny_llama_cpu" / "finetune.yaml").read_text())["model"]["model_config"]["seq_length"]
QA = [(f"计算 {a} + {b} 等于多少？", f"{a} + {b} = {a + b}")
      for a, b in [(3, 4), (12, 5), (7, 8), (20, 22), (9, 1), (6, 6), (15, 3), (2, 9)]]
LOSS = re.compile(r"loss:\s*\[?\s*([0-9.]+(?:e-?\d+)?)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> dict[str, Path]:
    """SentencePiece model (SentencePiece ids: unk 0 = pad, bos 1, eos 2) + 64-row MindRecord."""
    import sentencepiece as spm
    from mindspore.mindrecord import FileWriter

    out = tmp_path_factory.mktemp("toy")
    corpus = out / "corpus.txt"
    corpus.write_text("".join(f"{q}\n{a}\n" for _ in range(20) for q, a in QA), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(out / "tok"), vocab_size=1024,
                                   hard_vocab_limit=False, model_type="bpe", character_coverage=1.0,
                                   byte_fallback=True, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(out / "tok.model"))
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2) and sp.get_piece_size() <= 1024
    writer = FileWriter(str(out / "train.mindrecord"), shard_num=1, overwrite=True)
    writer.add_schema({"input_ids": {"type": "int32", "shape": [-1]}, "labels": {"type": "int32", "shape": [-1]}})
    rows = []
    for _ in range(8):
        for question, answer in QA:
            prompt, reply = [1] + sp.encode(question), sp.encode(answer) + [2]
            ids = (prompt + reply)[:SEQ + 1]
            labels = ([-100] * len(prompt) + reply)[:SEQ + 1]
            ids += [0] * (SEQ + 1 - len(ids))
            labels += [-100] * (SEQ + 1 - len(labels))
            rows.append({"input_ids": np.array(ids, np.int32), "labels": np.array(labels, np.int32)})
    writer.write_raw_data(rows)
    writer.commit()
    return {"mindrecord": out / "train.mindrecord", "tokenizer": out / "tok.model"}


def _render(job: dict, root: Path, slots: int) -> Path:
    """Render the job for ``slots`` local workers into ``root``'s layout; returns the config path."""
    spec = parse_job(job, "tiny.yaml", str(ROOT / "jobs"))
    layout = JobLayout(str(root))
    rendered = render_job(spec, [Host("localhost", slots)], layout)
    check_static(rendered.config, rendered.derived)
    path = Path(layout.config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rendered.text, encoding="utf-8")
    return path


def _msrun(root: Path, workers: int, config: Path, *args: str, timeout: int = 150) -> subprocess.CompletedProcess:
    layout = JobLayout(str(root))
    argv = [str(MSRUN), f"--worker_num={workers}", f"--local_worker_num={workers}",
            f"--master_port={_free_port()}", f"--log_dir={layout.msrun_log}", "--join=True",
            str(ENTRY), "--config", str(config), *args]
    # msrun starts workers with the `python` on PATH: make that this venv's
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=timeout, env=env)


def _finetune_job(data: dict, epochs: int) -> dict:
    return {"name": "tiny-test", "kind": "finetune", "template": "tiny_llama_cpu/finetune.yaml", "seed": 42,
            "cards_per_node": "all", "entry": {"script": "alaunch:run_cpu"},
            "overrides": {"runner_config.epochs": epochs},
            "inputs": {"train": {"remote": str(data["mindrecord"]), "fills": "train_dataset.data_loader.dataset_dir"}},
            "tokenizer": {"remote": str(data["tokenizer"])}}


def _losses(log: Path) -> list[float]:
    return [float(m.group(1)) for line in log.read_text(errors="replace").splitlines()
            if "step:[" in line and (m := LOSS.search(line))]


def _train(tmp_path_factory, data, workers: int, epochs: int) -> Path:
    root = tmp_path_factory.mktemp(f"job{workers}")
    config = _render(_finetune_job(data, epochs), root, workers)
    assert yaml.safe_load(config.read_text())["use_parallel"] is (workers > 1)
    result = _msrun(root, workers, config)
    logs = sorted((root / "msrun_log").glob("worker_*.log"))
    assert result.returncode == 0, (result.stdout[-3000:], [p.read_text()[-3000:] for p in logs])
    return root


@pytest.fixture(scope="module")
def trained_2(tmp_path_factory, toy_data) -> Path:
    return _train(tmp_path_factory, toy_data, workers=2, epochs=8)


def test_finetune_one_worker(tmp_path_factory, toy_data):
    root = _train(tmp_path_factory, toy_data, workers=1, epochs=3)
    losses = _losses(root / "msrun_log" / "worker_0.log")
    assert len(losses) == 3 * 16  # 64 rows / batch 4 x 3 epochs
    assert losses[-1] < losses[0] / 10, losses
    assert list((root / "output" / "checkpoint" / "rank_0").glob("*.ckpt"))


def test_finetune_two_workers(trained_2):
    for rank in (0, 1):
        losses = _losses(trained_2 / "msrun_log" / f"worker_{rank}.log")
        assert len(losses) == 8 * 8  # data parallel: each rank sees half the 16 batches per epoch
        assert losses[-1] < losses[0] / 10, losses
        assert list((trained_2 / "output" / "checkpoint" / f"rank_{rank}").glob("*.ckpt")), rank


def test_predict_from_checkpoint(trained_2, tmp_path, toy_data):
    ckpt = sorted((trained_2 / "output" / "checkpoint" / "rank_0").glob("*.ckpt"))[-1]
    job = {"name": "tiny-predict", "kind": "predict", "template": "tiny_llama_cpu/predict.yaml",
           "entry": {"script": "alaunch:run_cpu"}, "checkpoint": {"remote": str(ckpt)},
           "tokenizer": {"remote": str(toy_data["tokenizer"])}}
    config = _render(job, tmp_path, 1)
    prompts = [QA[0][0], QA[3][0]]
    result = _msrun(tmp_path, 1, config, "--predict_data", *prompts)
    assert result.returncode == 0, (tmp_path / "msrun_log" / "worker_0.log").read_text()[-3000:]
    rows = [yaml.safe_load(line) for line in (tmp_path / "output" / "predictions.jsonl").read_text().splitlines()]
    assert [r["input"] for r in rows] == prompts
    assert QA[0][1] in rows[0]["output"] and QA[3][1] in rows[1]["output"], rows


def test_predict_batched_jsonl_pairs_every_prompt(trained_2, tmp_path, toy_data):
    """A .jsonl of {problem} read in batches of 2 with an odd count: one prediction per row, in order."""
    ckpt = sorted((trained_2 / "output" / "checkpoint" / "rank_0").glob("*.ckpt"))[-1]
    job = {"name": "tiny-predict", "kind": "predict", "template": "tiny_llama_cpu/predict.yaml",
           "entry": {"script": "alaunch:run_cpu"}, "checkpoint": {"remote": str(ckpt)},
           "tokenizer": {"remote": str(toy_data["tokenizer"])}}
    config = _render(job, tmp_path, 1)
    picked = [QA[1], QA[4], QA[6]]
    prompts = tmp_path / "test.jsonl"
    prompts.write_text("".join(json.dumps({"problem": q, "solution": a}, ensure_ascii=False) + "\n"
                               for q, a in picked), encoding="utf-8")
    result = _msrun(tmp_path, 1, config, "--predict_data", str(prompts), "--predict_batch_size", "2")
    assert result.returncode == 0, (tmp_path / "msrun_log" / "worker_0.log").read_text()[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "output" / "predictions.jsonl").read_text().splitlines()]
    assert [r["input"] for r in rows] == [q for q, _ in picked]
    assert all(a in r["output"] for r, (_, a) in zip(rows, picked, strict=True)), rows


def test_two_workers_continue_from_checkpoint(trained_2, tmp_path, toy_data):
    """use_parallel + load_checkpoint reaches comm_func.barrier: the CPU patch (b) must carry it."""
    ckpt = sorted((trained_2 / "output" / "checkpoint" / "rank_0").glob("*.ckpt"))[-1]
    job = _finetune_job(toy_data, epochs=1) | {"checkpoint": {"remote": str(ckpt)}}
    config = _render(job, tmp_path, 2)
    assert yaml.safe_load(config.read_text())["load_checkpoint"] == str(ckpt)
    result = _msrun(tmp_path, 2, config)
    log = tmp_path / "msrun_log" / "worker_0.log"
    assert result.returncode == 0, log.read_text()[-3000:]
    losses = _losses(log)
    assert len(losses) == 8 and losses[0] < 1.0, losses  # a fresh model starts at ~ln(1024) = 6.9


def _predict_bytes(ckpt: Path, root: Path, toy_data) -> bytes:
    """predictions.jsonl of the tiny predict job from ``ckpt`` (two prompts), run in ``root``."""
    job = {"name": "tiny-predict", "kind": "predict", "template": "tiny_llama_cpu/predict.yaml",
           "entry": {"script": "alaunch:run_cpu"}, "checkpoint": {"remote": str(ckpt)},
           "tokenizer": {"remote": str(toy_data["tokenizer"])}}
    result = _msrun(root, 1, _render(job, root, 1), "--predict_data", QA[0][0], QA[3][0])
    assert result.returncode == 0, (root / "msrun_log" / "worker_0.log").read_text()[-3000:]
    return (root / "output" / "predictions.jsonl").read_bytes()


@pytest.fixture(scope="module")
def full_predictions(trained_2, tmp_path_factory, toy_data) -> bytes:
    """What the full checkpoint (rank 0's last) predicts: what every delta route must match."""
    full = sorted((trained_2 / "output" / "checkpoint" / "rank_0").glob("*.ckpt"))[-1]
    return _predict_bytes(full, tmp_path_factory.mktemp("predict_full"), toy_data)


def _base_without_lora(full: Path, out: Path, config: dict) -> set[str]:
    """``out``: ``full`` without its LoRA tensors (the frozen rest: what a base model holds); their names."""
    import mindspore as ms

    from launcher.core import lora
    mc = config["model"]["model_config"]
    names = set(lora.trainable_parameters(mc, mc["pet_config"], lora.family_for(config)))
    ms.save_checkpoint(ms.load_checkpoint(str(full), choice_func=lambda n: n not in names), str(out))
    return names


def test_fetch_lora_delta_is_the_trained_tensors_and_predicts_the_same(trained_2, tmp_path, toy_data,
                                                                        full_predictions):
    """`fetch --what lora` on the real 2-rank checkpoints, the host side run by the machine's own
    python3 (no mindspore there): the delta holds exactly the tensors render counts as
    trainable, byte for byte; the bytes moved are <= 1.1x theirs; base + delta predicts exactly
    what the full checkpoint predicts."""
    import mindspore as ms

    from launcher.core import lora
    from launcher.ops.collect import fetch_job
    from launcher.ops.registry import Registry

    config_text = (trained_2 / "config" / "job.yaml").read_text()
    config = yaml.safe_load(config_text)
    mc = config["model"]["model_config"]
    spec = parse_job(_finetune_job(toy_data, 8), "tiny.yaml", str(ROOT / "jobs"))
    trainable = render_job(spec, [Host("localhost", 2)], JobLayout(str(trained_2))).derived["trainable_params"]
    names = lora.trainable_parameters(mc, mc["pet_config"], lora.family_for(config))
    assert sum(names.values()) == trainable == 2 * 4 * 16 * (64 + 64) + 1024 * 64  # LoRA on wq..wo + lm_head

    with Registry(tmp_path / "state" / "registry.sqlite3") as registry:
        record = registry.create_job("tiny-test", "finetune", spec_text="name: tiny-test\nkind: finetune\n",
                                     config_text=config_text, hostfile_text="localhost slots=2\n",
                                     nodes=[("localhost", str(trained_2))],
                                     meta={"pythons": {"localhost": "/usr/bin/python3"}}, state="succeeded")
        report = fetch_job(registry, record.id, "lora", tmp_path / "runs", tmp_path / "state")
    here = tmp_path / "runs" / record.id / "localhost"
    group = report.groups()["lora"]
    assert group.files == 2 and group.moved <= 1.1 * 2 * trainable * 4  # two ranks, fp32
    assert group.on_host == sum(p.stat().st_size for p in (trained_2 / "output" / "checkpoint").rglob("*.ckpt"))
    fulls = sorted((trained_2 / "output" / "checkpoint").glob("rank_*/*.ckpt"))
    for full_path in fulls:
        rel = full_path.relative_to(trained_2)
        delta, full = ms.load_checkpoint(str(here / "lora" / rel)), ms.load_checkpoint(str(full_path))
        assert set(delta) == set(names), rel
        for name, param in delta.items():
            assert param.asnumpy().tobytes() == full[name].asnumpy().tobytes(), name

    base_path, merged_path = tmp_path / "base.ckpt", tmp_path / "merged.ckpt"  # base: the frozen rest
    full0 = sorted((trained_2 / "output" / "checkpoint" / "rank_0").glob("*.ckpt"))[-1]  # what full_predictions read
    _base_without_lora(full0, base_path, config)
    merged = ms.load_checkpoint(str(base_path))
    merged.update(ms.load_checkpoint(str(here / "lora" / full0.relative_to(trained_2))))
    ms.save_checkpoint(merged, str(merged_path))
    assert _predict_bytes(merged_path, tmp_path / "predict", toy_data) == full_predictions
    assert QA[0][1].encode() in full_predictions


@pytest.mark.cluster
def test_pipeline_step_takes_the_lora_delta_plus_a_base_on_another_host(trained_2, tmp_path, toy_data,
                                                                        full_predictions, ssh_cluster):
    """``checkpoint: {from: train, output: lora, base: PATH}`` with the training on host0 and a
    consumer on host0 and host1, each with the base (the frozen tensors): the delta is cut on
    host0, only its bytes cross to host1, base + delta are written on both, and the model read
    from host1's file predicts byte for byte what the full checkpoint predicts."""
    import shutil

    from launcher.core import pipeline as pl
    from launcher.ops.pipeline import PipelineRunner, lora_applied_path
    from launcher.ops.registry import Registry
    from launcher.ops.service import JobService
    from launcher.runners import make_runner
    from launcher.runners.ssh import ConnectOptions

    hosts = ssh_cluster.hosts_as_launcher_hosts(slots=1)[:2]
    host0, host1 = ssh_cluster.hosts[0], ssh_cluster.hosts[1]
    config_text = (trained_2 / "config" / "job.yaml").read_text()
    full0 = sorted((trained_2 / "output" / "checkpoint" / "rank_0").glob("*.ckpt"))[-1]
    names = _base_without_lora(full0, tmp_path / "base.ckpt", yaml.safe_load(config_text))
    base = "/root/models/tiny-base.ckpt"  # on the consumer's hosts
    for host in (host0, host1):
        host.path(base).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "base.ckpt", host.path(base))

    options = ConnectOptions(known_hosts=ssh_cluster.known_hosts, control_persist=0)
    service = JobService(Registry(tmp_path / "state" / "jobs.db"), tmp_path / "state",
                         exec_factory=lambda h: make_runner(h, options=options))
    record = service.registry.create_job("tiny-test", "finetune", spec_text="name: tiny-test\nkind: finetune\n",
                                         config_text=config_text, hostfile_text="", state="succeeded",
                                         nodes=[(hosts[0].name, "/root/alaunch/tinytrain")])
    trained = f"/root/alaunch/tinytrain/output/checkpoint/rank_0/{full0.name}"  # the training's file, on host0
    host0.path(trained).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(full0, host0.path(trained))
    text = yaml.safe_dump({"name": "p", "steps": {
        "train": {"job": str(ROOT / "jobs" / "tiny_lora_cpu.yaml")},
        "after": {"job": str(ROOT / "jobs" / "tiny_predict_cpu.yaml"),
                  "checkpoint": {"from": "train", "output": "lora", "base": base}}}})
    step = pl.parse_pipeline(yaml.safe_load(text), "p.yaml", None, text).step("after")
    said: list[str] = []
    runner = PipelineRunner(service.registry, service, hosts, say=said.append)
    producer = {"job_id": record.id, "host": hosts[0].name, "python": ssh_cluster.python,
                "root": "/root/alaunch/tinytrain", "paths": {"checkpoints": [trained]}, "files": {}}
    runner.outputs["train"] = producer
    spec = runner.job_spec(step)
    applied = lora_applied_path(producer, base)
    assert spec.checkpoint is not None and spec.checkpoint.remote == applied
    runner.place(step, spec, hosts)  # a 2-host consumer: host0 (the training's) and host1

    delta = runner.outputs["train"]["lora_delta"]
    moved = [line for line in said if "LoRA delta" in line and " bytes " in line]
    assert moved == [f"  after: checkpoint: train's LoRA delta {hosts[0].name} -> {hosts[1].name}: "
                     f"{delta['size']:,} bytes (the checkpoint it was cut from: {full0.stat().st_size:,})"], said
    trainable = 2 * 4 * 16 * (64 + 64) + 1024 * 64
    assert delta["size"] <= 1.1 * trainable * 4 < full0.stat().st_size / 4  # fp32; the tiny model is mostly LoRA
    assert not host1.path(trained).exists()  # the checkpoint the delta was cut from stayed on host0
    assert host1.path(delta["path"]).stat().st_size == delta["size"]
    assert " ".join(said).count(f"(0 replaced, {len(names)} added) -> {applied}") == 2, said  # the base had none
    assert host0.path(applied).read_bytes() == host1.path(applied).read_bytes()  # host0's: no copy, same bytes
    assert _predict_bytes(host1.path(applied), tmp_path / "predict", toy_data) == full_predictions
