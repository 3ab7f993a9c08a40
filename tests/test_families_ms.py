"""Every family MindFormers 1.9 can build here: the real network on CPU at small sizes with LoRA,
its own trainable/total parameter counts against launcher.core.lora (tests/mf/build_count.py,
one process per build: 1.6+ models need use_legacy False in MindFormers' global context)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.core import lora

pytestmark = pytest.mark.slow
pytest.importorskip("mindformers")

SCRIPT = Path(__file__).parent / "mf" / "build_count.py"
F32 = dict(compute_dtype="float32", param_init_type="float32", layernorm_compute_type="float32",
           softmax_compute_type="float32", rotary_dtype="float32")
LLAMA = dict(num_layers=2, hidden_size=64, num_heads=4, n_kv_heads=2, vocab_size=128, seq_length=32, **F32)
GLM2 = dict(num_layers=2, hidden_size=64, num_attention_heads=4, kv_channels=16, multi_query_group_num=2,
            ffn_hidden_size=96, padded_vocab_size=128, seq_length=32, param_init_type="float32",
            compute_dtype="float32")
QWEN3 = dict(model_type="qwen3", vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64, seq_length=32,
             compute_dtype="float32", params_dtype="float32", layernorm_compute_dtype="float32")

CASES = [
    ("llama3-gqa", "llama", dict(LLAMA, intermediate_size=96), ".*wq|.*wv|.*w1"),
    ("qwen2-as-llama-bias-ffn-formula", "llama",
     dict(LLAMA, multiple_of=32, ffn_dim_multiplier=1.3, qkv_has_bias=True), ".*wq|.*wk|.*wv|.*wo|.*w1|.*w2|.*w3|.*lm_head"),
    ("llama-qkv-concat", "llama", dict(LLAMA, intermediate_size=96, qkv_concat=True), ".*w_qkv|.*w_gate_hidden|.*wo"),
    ("internlm-shape-biases", "llama", dict(LLAMA, n_kv_heads=None, intermediate_size=96, qkv_has_bias=True,
                                            attn_proj_has_bias=True), ".*wq|.*wk|.*wv|.*wo|.*w1|.*w2|.*w3"),
    ("glm2-concat", "glm2", GLM2, ".*query_key_value|.*dense_4h_to_h|.*output_layer"),
    ("glm2-split", "glm2", dict(GLM2, qkv_concat=False, mlp_concat=False), ".*wq|.*wk|.*wv|.*dense|.*dense_left"),
    ("qwen3-mcore", "mcore", QWEN3, ".*linear_qkv|.*linear_proj|.*linear_fc1|.*linear_fc2|.*output_layer"),
    ("qwen3-moe-mcore", "mcore", dict(QWEN3, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                                      moe_grouped_gemm=True), ".*linear_qkv|.*linear_fc1|.*linear_fc2"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_family_count_equals_the_built_network(case, tmp_path):
    _, family, mc, targets = case
    mc = {k: v for k, v in mc.items() if v is not None}
    pet = {"pet_type": "lora", "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": targets}
    if family == "mcore":
        pet.update(freeze_include=["*"], freeze_exclude=["*lora*"])
    proc = subprocess.run([sys.executable, str(SCRIPT), json.dumps({"family": family, "model_config": mc,
                                                                    "pet_config": pet})],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    real = json.loads(proc.stdout.strip().splitlines()[-1])
    counted = lora.count(mc, pet, family)
    assert (counted.trainable, counted.total) == (real["trainable"], real["total"]), real["lora_names"]
    assert counted.lora > 0
