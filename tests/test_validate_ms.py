"""The real-MindFormers layer: every shipped template, rendered, loads in MindFormerConfig;
LlamaConfig builds for Llama3-8B; the tiny model + LoRA builds and its parameter counts are
launcher.core.lora's. One module-scoped import of mindformers keeps this to a few seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.cli.commands.render import build
from launcher.core import lora, yamlio
from launcher.core.hostfile import Host

pytestmark = pytest.mark.ms

ROOT = Path(__file__).resolve().parent.parent
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))


@pytest.fixture(scope="module")
def mf_cwd(tmp_path_factory):
    """mindformers writes output/log into the cwd on import: keep it in a temp dir."""
    import os
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("mf"))
    pytest.importorskip("mindformers")
    yield
    os.chdir(cwd)


def _demo_inputs(tmp_path: Path, job: Path) -> Path:
    """A copy of the job whose local inputs exist (the demo builds them with `alaunch data`)."""
    import yaml
    data = yaml.safe_load(job.read_text())
    for ref in list(data.get("inputs", {}).values()) + [data.get("checkpoint"), data.get("tokenizer")]:
        if ref and ref.get("local"):
            target = tmp_path / Path(ref["local"]).name
            target.write_bytes(b"placeholder")
            ref["local"] = str(target)
    data["template"] = str(ROOT / "configs" / data["template"])
    out = tmp_path / job.name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


@pytest.mark.parametrize("job", JOBS, ids=[j.stem for j in JOBS])
def test_shipped_jobs_render_and_load_in_mindformers(job, tmp_path, mf_cwd):
    spec, rendered, check, _, _, _ = build(_demo_inputs(tmp_path, job), [Host("localhost", 2)], [])
    assert not check.skipped
    assert "MindFormerConfig loaded" in check.detail and "LlamaConfig built" in check.detail


def test_llama3_8b_llamaconfig_from_model_config(mf_cwd):
    from mindformers.models.llama import LlamaConfig
    config = yamlio.load_file(ROOT / "configs" / "llama3_8b" / "finetune_lora.yaml", allow_aliases=True)
    mc = {k: v for k, v in config["model"]["model_config"].items() if k not in ("type", "pet_config")}
    built = LlamaConfig(**mc)
    assert (built.num_layers, built.hidden_size, built.n_kv_heads, built.vocab_size) == (32, 4096, 8, 128256)


def test_mindformers_refuses_a_broken_model_config(mf_cwd):
    from launcher.errors import InputError
    from launcher.ops.mfcheck import check_with_mindformers
    config = yamlio.load_file(ROOT / "configs" / "tiny_llama_cpu" / "finetune.yaml", allow_aliases=True)
    config["model"]["model_config"]["compute_dtype"] = "float99"
    with pytest.raises(InputError, match="LlamaConfig refuses model_config"):
        check_with_mindformers(yamlio.dumps(config), config)


@pytest.mark.parametrize("freeze_exclude", [True, False])
def test_tiny_model_and_lora_build_with_launcher_counts(mf_cwd, freeze_exclude):
    import mindspore as ms
    from mindformers.models.llama import LlamaConfig, LlamaForCausalLM
    from mindformers.pet import get_pet_model

    ms.set_context(mode=0, device_target="CPU")
    config = yamlio.load_file(ROOT / "configs" / "tiny_llama_cpu" / "finetune.yaml", allow_aliases=True)
    model_config = config["model"]["model_config"]
    if not freeze_exclude:
        model_config["pet_config"].pop("freeze_exclude")
    mc = {k: v for k, v in model_config.items() if k not in ("type", "pet_config")}
    net = get_pet_model(LlamaForCausalLM(LlamaConfig(**mc)), dict(model_config["pet_config"]))
    trainable = sum(p.size for p in net.trainable_params())
    total = sum(p.size for p in net.get_parameters())
    counted = lora.count(model_config)
    assert trainable == counted.trainable
    assert total == counted.total
    assert counted.lora == 2 * 16 * (4 * (64 + 64))  # 2 layers x rank 16 x q,k,v,o (64 -> 64)
    assert counted.trainable == counted.lora + (1024 * 64 if freeze_exclude else 0)


def test_the_mindformers_check_leaves_this_process_as_it_was(tmp_path, monkeypatch):
    """It runs in a child: this process's cwd, fds 1 and 2 and environment are untouched
    (pipeline steps run in threads of it), with the same answers as before."""
    import os
    import threading

    from launcher.ops.mfcheck import check_with_mindformers
    pytest.importorskip("mindformers")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GLOG_v", raising=False)
    config = yamlio.load_file(ROOT / "configs" / "tiny_llama_cpu" / "finetune.yaml", allow_aliases=True)
    fds = [os.fstat(1).st_ino, os.fstat(2).st_ino]
    seen = []
    stop = threading.Event()

    def watch():  # what another thread of this process sees while the check runs
        while not stop.is_set():
            seen.append((os.getcwd(), [os.fstat(1).st_ino, os.fstat(2).st_ino], os.environ.get("GLOG_v")))
            stop.wait(0.01)
    t = threading.Thread(target=watch)
    t.start()
    try:
        check = check_with_mindformers(yamlio.dumps(config), config)
    finally:
        stop.set()
        t.join()
    assert not check.skipped and "LlamaConfig built (2 layers, hidden 64)" in check.detail
    assert seen and all(s == (str(tmp_path), fds, None) for s in seen), seen[:3]
    assert os.getcwd() == str(tmp_path) and "GLOG_v" not in os.environ and not (tmp_path / "output").exists()
