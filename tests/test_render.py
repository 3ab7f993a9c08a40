"""Golden tests of render: the reference recipe, the official configs, the parameter counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher.core import lora, render, yamlio
from launcher.core.hostfile import Host
from launcher.core.layout import JobLayout
from launcher.core.spec import load_job
from launcher.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
FIX = Path(__file__).resolve().parent / "fixtures" / "configs"
OFFICIAL = {
    "run_llama3_8b_8k_800T_A2_64G_lora_dis_256.yaml": 4,  # mp 4 -> 4 cards
    "run_llama3_8b_8k_800T_A2_64G_lora_dis8_256.yaml": 8,  # mp 8 -> 8 cards
    "run_llama3_8b_8k_800T_A2_64G_lora_256_base_eval.yaml": 1,
    "run_llama3_8b_8k_800T_A2_64G_lora_256_eval.yaml": 1,
}


def _fixture(name: str) -> dict:
    return yamlio.load_file(FIX / name, allow_aliases=True)


def test_reference_recipe_renders_to_its_hyperparameters():
    spec = load_job(ROOT / "jobs" / "llama3_8b_lora_math.yaml")
    r = render.render_job(spec, [Host("localhost", 1)], JobLayout("/w/alaunch/j1"))
    c = yaml.safe_load(r.text)  # what the host will read
    mc = c["model"]["model_config"]
    pet = mc["pet_config"]
    assert c["seed"] == 42
    assert c["runner_config"]["epochs"] == 1 and c["runner_config"]["batch_size"] == 4
    assert mc["seq_length"] == 512
    assert (pet["lora_rank"], pet["lora_alpha"], pet["target_modules"]) == (16, 32, ".*wq|.*wk|.*wv|.*wo")
    assert c["use_parallel"] is False and r.derived["world_size"] == 1
    assert c["parallel_config"]["data_parallel"] * c["parallel_config"]["model_parallel"] == 1
    assert c["run_mode"] == "finetune"
    assert c["output_dir"] == "/w/alaunch/j1/output"
    assert c["train_dataset"]["data_loader"]["dataset_dir"] == "/home/ma-user/work/train-math40k-512.mindrecord"
    # the anchor's other use (train_dataset_task.dataset_config) got the same path
    assert c["train_dataset_task"]["dataset_config"]["data_loader"]["dataset_dir"] == \
        c["train_dataset"]["data_loader"]["dataset_dir"]
    assert c["load_checkpoint"] == "/home/ma-user/work/llama3-8B.ckpt"
    assert r.derived["trainable_params"] == 13_631_488 and r.derived["trainable_percent"] == "0.17%"
    assert r.derived["global_batch_size"] == 4
    assert "&id" not in r.text and "*id" not in r.text  # no YAML anchors/aliases in the output


@pytest.mark.parametrize("name,cards", sorted(OFFICIAL.items()))
def test_official_configs_round_trip(name, cards):
    template = _fixture(name)
    config, derived = render.render_config(template, world=render.World(1, cards))
    assert yaml.safe_load(yamlio.dumps(config)) == template
    assert derived["data_parallel"] * derived["model_parallel"] * derived["pipeline_stage"] == cards


@pytest.mark.parametrize("name,expected,targets", [
    ("run_llama3_8b_8k_800T_A2_64G_lora_dis_256.yaml", 3_407_872, ("wq", "wv")),
    ("train_run_4card_wq_wk_wv.yaml", 4_718_592, ("wq", "wk", "wv")),
])
def test_trainable_counts_match_real_logs(name, expected, targets):
    counted = lora.count(_fixture(name)["model"]["model_config"])
    assert counted.trainable == expected and counted.matched == targets


def test_reference_count_and_llama3_total():
    mc = _fixture("run_llama3_8b_8k_800T_A2_64G_lora_dis_256.yaml")["model"]["model_config"]
    mc["pet_config"].update(lora_rank=16, lora_alpha=32, target_modules=".*wq|.*wk|.*wv|.*wo")
    counted = lora.count(mc)
    assert counted.trainable == 13_631_488 == 32 * 16 * ((4096 + 4096) * 2 + (4096 + 1024) * 2)
    base = counted.total - counted.lora
    assert base == 8_030_261_248 and round(base / 1e9, 2) == 8.03
    assert counted.percent_text == "0.17%"
    names = lora.trainable_parameters(mc)  # what fetch --what lora keeps: one name per LoRA matrix
    assert len(names) == 32 * 4 * 2 and sum(names.values()) == counted.trainable
    assert names["model.layers.31.attention.wk.mindpet_delta_lora_b"] == 1024 * 16


def test_ffn_width_formula_without_intermediate_size():
    # LlamaFeedForward: 4*4096 -> *1.3 -> *2/3 -> round up to 1024 = 14336 (the Llama3-8B value)
    assert lora.ffn_width({"hidden_size": 4096, "ffn_dim_multiplier": 1.3, "multiple_of": 1024}) == 14336


def test_set_is_yaml_typed_and_plus_adds():
    template = _fixture("run_llama3_8b_8k_800T_A2_64G_lora_256_eval.yaml")
    config, _ = render.render_config(template, sets=["runner_config.epochs=3", "model.model_config.top_p=0.5",
                                                     "+model.model_config.foo=[1, 2]",
                                                     "model.model_config.use_past=false"],
                                     world=render.World(1, 1))
    mc = config["model"]["model_config"]
    assert config["runner_config"]["epochs"] == 3 and mc["top_p"] == 0.5
    assert mc["foo"] == [1, 2] and mc["use_past"] is False


def test_set_unknown_key_suggests():
    template = _fixture("run_llama3_8b_8k_800T_A2_64G_lora_256_eval.yaml")
    with pytest.raises(InputError, match=r"did you mean 'runner_config.epochs'\?.*\+runner_config.epoch"):
        render.render_config(template, sets=["runner_config.epoch=3"], world=render.World(1, 1))


def test_data_parallel_derived_from_world():
    template = _fixture("run_llama3_8b_8k_800T_A2_64G_lora_dis_256.yaml")  # mp 4
    config, derived = render.render_config(template, world=render.World(2, 8))
    assert config["parallel_config"]["data_parallel"] == 4 and config["use_parallel"] is True
    assert derived["global_batch_size"] == 64 * 4


def test_diff_and_summary_cli(run_cli, tmp_path):
    code, out, err = run_cli("render", str(ROOT / "jobs" / "llama3_8b_lora_math.yaml"), "--summary", "--diff",
                             "--no-mindformers")
    assert code == 0, err
    assert "13,631,488 (0.17%) of 8.04 B (8.03 B base +" in out  # was "8.03e9"; a LoRA of 81,920 read "0.00e9"
    assert "-  epochs: 5" in out and "+  epochs: 1" in out and "+seed: 42" in out
    assert "1 x 1 x 1" in out and "4 / 4" in out


def test_render_writes_output(run_cli, tmp_path):
    out_file = tmp_path / "r.yaml"
    code, _, err = run_cli("render", str(ROOT / "jobs" / "llama3_8b_squad_eval.yaml"), "-o", str(out_file),
                           "--no-mindformers", "--set", "runner_config.batch_size=2")
    assert code == 0, err
    data = yaml.safe_load(out_file.read_text())
    assert data["run_mode"] == "eval" and data["metric"]["type"] == "EmF1Metric"
    assert data["runner_config"]["batch_size"] == 2
    assert data["processor"]["tokenizer"]["vocab_file"] == "/home/ma-user/work/tokenizer.model"


def test_skipped_mindformers_layer_is_visible(run_cli, monkeypatch):
    from launcher.ops import mfcheck
    monkeypatch.setattr(mfcheck, "mindformers_available", lambda: False)
    code, out, err = run_cli("render", str(ROOT / "jobs" / "llama3_8b_lora_math.yaml"), "--summary", "--validate")
    assert code == 0
    assert "MindFormers validation layer was skipped" in err


def test_layout_paths():
    layout = JobLayout.for_job("/data/w", "j-1")
    assert layout.root == "/data/w/alaunch/j-1"
    assert layout.config == "/data/w/alaunch/j-1/config/job.yaml"
    assert layout.data_path("train", "x.mindrecord") == "/data/w/alaunch/j-1/data/train/x.mindrecord"
    assert layout.msrun_log.endswith("/msrun_log") and layout.output.endswith("/output")
