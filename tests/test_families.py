"""Issue 16 against real files from other people's runs: model families, config layouts, log
generations, prediction files. Every real config renders with a count or a one-line reason."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest

from launcher.core import lora, render, validate, yamlio
from launcher.errors import InputError
from launcher.metrics.logparse import END_MARKERS, LOSS_FORMATS, LogState
from launcher.metrics.predictions import parse_generation_result

REAL = Path(__file__).parent / "fixtures" / "real-world"


def _load(rel: str) -> dict:
    return yamlio.load_file(REAL / rel, allow_aliases=True)


def _render(config: dict, cards: int = 1):
    cfg, derived = render.render_config(config, world=render.World(1, cards), source="t.yaml")
    return cfg, derived, validate.check_static(cfg, derived, source="t.yaml")


# ---------------------------------------------------------------- real configs

@pytest.mark.parametrize("rel, cards, family, trainable, matched", [
    # the log of this run says "Network Parameters: 3407872"
    ("train/dian-team_run_llama3_8b_lora_dis_256.yaml", 4, "llama", 3_407_872, ("wq", "wv")),
    ("configs/lzma_run_llama3_8b_lora_dis_256_single.yaml", 1, "llama", 3_407_872, ("wq", "wv")),
    # r64 on q/k/v/o of Llama3-8B: 32 x 64 x (2 x 8192 + 2 x 5120)
    ("configs/debias_world1_run_llama3_8b_lora_dis_768.yaml", 4, "llama", 32 * 64 * (2 * 8192 + 2 * 5120),
     ("wq", "wk", "wv", "wo")),
    # InternLM-7B r8 on all seven: 32 x 8 x (4 x 8192 + 3 x (4096 + 11008))
    ("configs/nju-websoft_finetune_internlm_7b_lora_mmlu_64G.yaml", 4, "internlm",
     32 * 8 * (4 * 8192 + 3 * (4096 + 11008)), ("wq", "wk", "wv", "wo", "w1", "w3", "w2")),
    # 0.x GLM-6B: default target query_key_value, 28 x 8 x (4096 + 3 x 4096)
    ("configs/llm-action_run_glm_6b_lora.yaml", 4, "glm-0.x", 28 * 8 * (4096 + 3 * 4096), ("query_key_value",)),
])
def test_real_configs_render_with_their_family_count(rel, cards, family, trainable, matched):
    _, derived, _ = _render(_load(rel), cards)
    assert derived["family"] == family
    assert derived["trainable_params"] == trainable
    assert tuple(derived["lora_matched"]) == matched


def test_internlm_and_glm0x_warn_what_mindformers_1_9_lacks():
    _, _, warnings = _render(_load("configs/nju-websoft_finetune_internlm_7b_lora_mmlu_64G.yaml"), 4)
    assert any("InternLMForCausalLM is not in MindFormers 1.9" in w for w in warnings)
    _, _, warnings = _render(_load("configs/llm-action_run_glm_6b_lora.yaml"), 4)
    assert any("model.arch.pet is the MindFormers 0.x layout" in w for w in warnings)


def test_target_matching_nothing_is_refused_with_the_family_names():
    config = _load("configs/nju-websoft_finetune_internlm_7b_lora_mmlu_64G.yaml")
    config["model"]["model_config"]["pet_config"]["target_modules"] = ".*q_proj|.*v_proj"
    with pytest.raises(InputError, match=r"matches no projection LoRA can reach in InternLM 1 .*projections: wq, wk"):
        _render(config, 4)


def test_lm_head_is_outside_llamas_lora_root():
    """LoraModel wraps ``base_model.model``: lm_head is never replaced (the real build agrees)."""
    config = _load("configs/lzma_run_llama3_8b_lora_dis_256_single.yaml")
    config["model"]["model_config"]["pet_config"]["target_modules"] = ".*lm_head"
    with pytest.raises(InputError, match="matches no projection"):
        _render(config)


def test_dotstar_stops_at_the_first_cell_as_mindformers_does():
    mc = _load("configs/lzma_run_llama3_8b_lora_dis_256_single.yaml")["model"]["model_config"]
    assert lora.matched_projections(mc, {"pet_type": "lora", "target_modules": ".*"}, "llama") == []


def test_unknown_family_warns_and_has_no_count():
    config = _load("configs/lzma_run_llama3_8b_lora_dis_256_single.yaml")
    config["model"]["arch"]["type"] = "MysteryForCausalLM"
    config["model"]["model_config"]["type"] = "MysteryConfig"
    _, derived, warnings = _render(config)
    assert derived["trainable_params"] is None and derived["family"] is None
    assert any("MysteryForCausalLM: not a model family alaunch knows" in w and "count unknown" in w for w in warnings)


def test_batch_size_difference_is_a_warning_naming_the_value_used():
    config = _load("configs/lzma_run_llama3_8b_lora_dis_256_single.yaml")
    config["runner_config"]["batch_size"], config["train_dataset"]["batch_size"] = 2, 4
    _, derived, warnings = _render(config)
    assert "train_dataset.batch_size 4 differs from runner_config.batch_size 2: MindFormers overwrites it and uses 2" \
        in warnings


MCORE = {
    "use_legacy": False, "pretrained_model_dir": "/models/Qwen3-8B", "run_mode": "finetune",
    "runner_config": {"batch_size": 1}, "parallel_config": {"data_parallel": 1, "model_parallel": 1},
    "model": {"model_config": {"model_type": "qwen3", "hidden_size": 4096, "num_hidden_layers": 36,
                               "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                               "intermediate_size": 12288, "vocab_size": 151936,
                               "pet_config": {"pet_type": "lora", "lora_rank": 8, "lora_alpha": 16,
                                              "target_modules": ".*linear_qkv|.*linear_proj",
                                              "freeze_include": ["*"], "freeze_exclude": ["*lora*"]}}},
}


def test_mcore_qwen3_counts_fused_qkv():
    _, derived, _ = _render(copy.deepcopy(MCORE))
    assert derived["family"] == "mcore"
    assert derived["trainable_params"] == 36 * 8 * ((4096 + (32 + 16) * 128) + (4096 + 4096))


def test_mcore_lora_without_freeze_lists_is_refused():
    config = copy.deepcopy(MCORE)
    for key in ("freeze_include", "freeze_exclude"):
        config["model"]["model_config"]["pet_config"].pop(key)
    with pytest.raises(InputError, match="needs freeze_include and/or freeze_exclude"):
        _render(config)


def test_mcore_moe_experts_are_not_lora_targets():
    """1.9's MoE keeps routed experts as grouped weights: an expert-only target reaches nothing."""
    config = copy.deepcopy(MCORE)
    mc = config["model"]["model_config"]
    mc.update(num_experts=128, moe_intermediate_size=768)
    mc["pet_config"]["target_modules"] = ".*linear_fc1|.*linear_fc2"
    with pytest.raises(InputError, match="matches no projection LoRA can reach"):
        _render(config)


def test_mcore_config_without_sizes_warns_count_unknown():
    config = copy.deepcopy(MCORE)
    config["model"]["model_config"] = {"qkv_concat": True, "pet_config": MCORE["model"]["model_config"]["pet_config"]}
    _, derived, warnings = _render(config)
    assert derived["trainable_params"] is None
    assert any("count unknown" in w for w in warnings)


# ---------------------------------------------------------------- logs of every generation

def _state(lines) -> LogState:
    st = LogState().feed_lines(lines)
    st.finish()
    return st


def test_r11_log_with_sink_gaps_spinner_and_end_marker():
    st = _state((REAL / "train" / "dian-team_worker_0.log").read_text(encoding="utf-8", errors="replace").splitlines())
    s = st.summary()
    assert (s.kind, s.loss_lines, s.first_loss, s.last_loss) == ("train", 4687, 1.392, 0.206)
    assert (s.steps_done, s.steps_total, s.network_params, s.ended) == (9374, 9375, 3_407_872, "train")
    assert 1400 < s.mean_step_ms < 1430
    assert st.first_time is not None and st.first_time.hour == 2  # the spinner-prefixed line has a time


def test_mf15_lines_without_prefix_or_brace():
    st = _state((REAL / "train" / "mf15_worker_0_excerpt.log").read_text(encoding="utf-8").splitlines())
    assert [p.loss for p in st.losses] == [10.649, 10.633, 9.673, 9.287, 8.867]
    assert st.losses[-1].global_norm == 16.986555 and st.losses[-1].tflops_per_npu == 170.173
    assert st.progress() == (5, 38) and st.ended is None


def test_2x_dynamic_graph_line():
    line = ("2025-06-01 10:00:00,000 - mindformers./output/log[mindformers/pynative/callback/loss_callback.py:190] - "
            "INFO - { step:[    1/   10], loss:  11.813965, per_step_time:  13570ms, lr: 1.000000e-05, "
            "grad_norm:   5.123456, throughput:   1.36T }")
    nan_line = "2025-06-01 10:00:02,000 - INFO - { step:[   10/   10], loss:   9.5, per_step_time:   1570ms, grad_norm: NaN }"
    st = _state([line, nan_line])
    first, last = st.losses
    assert (first.generation, first.step, first.steps, first.loss) == ("2.x", 1, 10, 11.813965)
    assert (first.per_step_ms, first.lr, first.global_norm, first.tflops_per_npu) == (13570, 1e-5, 5.123456, 1.36)
    assert math.isnan(last.global_norm) and st.progress() == (10, 10) and st.kind == "train"


def test_0x_line():
    line = ("[INFO] 2023-08-01 10:00:00,000 [mindformers/core/callback/callback.py:200] print_output_info: "
            "Epoch:[  1/  1], step:[  124/  125], loss:[2.346/2.346], time:1949.995 ms, lr:0.0001")
    (point,) = _state([line]).losses
    assert (point.generation, point.epoch, point.step, point.steps, point.loss, point.avg_loss, point.per_step_ms) \
        == ("0.x", 1, 124, 125, 2.346, 2.346, 1949)


def test_formats_and_end_markers_are_plain_data():
    assert [f.generation for f in LOSS_FORMATS] == ["2.x", "1.x", "0.x"]
    assert {kind for kind, _ in END_MARKERS} == {"train", "eval", "predict"}
    st = _state(["2024-01-01 00:00:00,000 - INFO - .........Predict Over!............."])
    assert st.ended == "predict"


# ---------------------------------------------------------------- predictions

def test_text_generation_result_is_a_python_repr():
    texts = parse_generation_result((REAL / "predictions" / "qwen1_5_72b_text_generation_result.txt")
                                    .read_text(encoding="utf-8"), "text_generation_result.txt")
    assert len(texts) == 1 and texts[0].startswith("世界上最高的山是什么")


@pytest.mark.parametrize("text, message", [
    ("[1, 2", "not a Python literal list"),
    ("__import__('os').system('true')", "not valid JSON"),
    ("[{'text_generation_text': 3}]", "has no text_generation_text string"),
])
def test_other_prediction_files_are_one_line_errors_naming_the_file(text, message):
    with pytest.raises(InputError, match=message) as info:
        parse_generation_result(text, "preds.txt")
    assert str(info.value).startswith("preds.txt") and "\n" not in str(info.value)
