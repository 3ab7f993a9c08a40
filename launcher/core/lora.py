"""LoRA parameter counts of MindFormers model families from ``model_config`` + ``pet_config``, no MindSpore.

Lets ``render --summary`` print the trainable LoRA parameters (the number MindFormers logs as
"Network Parameters:") before anything runs, and lets ``validate`` refuse target_modules
that match no projection. Mirrors MindFormers' rules (``pet/tuners/lora_adapter.py``,
``recursive_replace_dense_cell``, read in 1.9 and unchanged in substance since 1.1):

* LoRA walks the cells under one *root* attribute of the network (``model`` for the Llama
  family, so ``lm_head`` is never reached; ``transformer`` for ChatGLM2, whose
  ``output_layer`` is inside it; the whole ``GPTModel`` for the 1.6+ "mcore" models).
* At every level it tests ``re.match(target_modules, attribute_name)``. A match on a Linear
  replaces it and adds ``rank * (in + out)`` parameters; a match on anything else (a
  ``layers`` list, an ``attention`` block) *stops the walk there*: ``.*`` matches nothing.
* ``exclude_layers`` (regexes, same ``re.match``) skips a cell and its subtree.
* ``freeze_exclude`` (fnmatch patterns on full parameter names) keeps base parameters
  trainable too.
* 1.9's mcore MoE layers hold their routed experts as two grouped weights
  (``mlp.experts.weight1/weight2``), not Linears: LoRA cannot reach them. Measured: a
  2-layer Qwen3-MoE with 4 experts and ``.*linear_fc1|.*linear_fc2`` has 0 trainable
  parameters. Shared experts and dense (``first_k_dense_replace``) layers are Linears.

Each family is one :class:`Family` row in :data:`FAMILIES` (architectures, config types,
LoRA root, a function giving every Linear with its shape). docs/lora-families.md has the
table of which counts were checked against a network MindFormers built.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Linear:
    """One projection of one layer: attribute name, full parameter prefix, shape, bias."""

    name: str
    path: str
    in_features: int
    out_features: int
    bias: bool = False

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class ParamCount:
    trainable: int  # LoRA parameters + base parameters kept trainable by freeze_exclude
    lora: int
    total: int  # base model + LoRA
    matched: tuple[str, ...]  # distinct projection names LoRA replaced (``wq``, ``wk``...)
    family: str = "llama"

    @property
    def ratio(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    @property
    def percent_text(self) -> str:
        """``0.17%``: the ratio as the recipe reports it (two decimals)."""
        return f"{100 * self.ratio:.2f}%"


class ModelShapeError(ValueError):
    """model_config lacks what is needed to count parameters (names the key)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"model.model_config.{key}: {message}")
        self.key = key
        self.detail = message


class UnknownShape(ValueError):
    """The family is known but this config does not carry its sizes (1.6+ configs read them from
    ``pretrained_model_dir``/config.json) or uses a variant not modelled: no count, never a fake one."""


# ---------------------------------------------------------------- reading model_config

def _get(mc: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if mc.get(key) is not None:
            return mc[key]
    return None


def _int(mc: Mapping[str, Any], key: str, default: int | None = None, *aliases: str) -> int:
    value = _get(mc, key, *aliases)
    if value is None:
        value = default
    if value is None:
        raise UnknownShape(f"model_config has no {' / '.join((key,) + aliases)}")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelShapeError(key, f"needs a positive integer, got {value!r}")
    return value


def ffn_width(model_config: Mapping[str, Any]) -> int:
    """``intermediate_size``, else LlamaFeedForward's SwiGLU rounding of 4 * hidden."""
    if model_config.get("intermediate_size"):
        return _int(model_config, "intermediate_size")
    hidden = 4 * _int(model_config, "hidden_size")
    multiplier = model_config.get("ffn_dim_multiplier")
    if multiplier is not None:
        hidden = int((multiplier + 0.01) * hidden)
    hidden = int(2 * hidden / 3)
    multiple_of = _int(model_config, "multiple_of", 256)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


def _shape(mc: Mapping[str, Any]) -> Shape:
    hidden = _int(mc, "hidden_size")
    layers = _int(mc, "num_layers", None, "num_hidden_layers")
    heads = _int(mc, "num_heads", None, "num_attention_heads")
    kv_heads = _int(mc, "n_kv_heads", heads, "num_key_value_heads")
    explicit_head_dim = _get(mc, "head_dim", "kv_channels")
    if explicit_head_dim is None and hidden % heads:
        raise ModelShapeError("hidden_size", f"{hidden} is not divisible by num_heads {heads}")
    head_dim = _int(mc, "head_dim", hidden // heads, "kv_channels")
    vocab = _int(mc, "vocab_size", None, "padded_vocab_size")
    return Shape(hidden, layers, heads, kv_heads, head_dim, vocab)


# ---------------------------------------------------------------- families: every Linear

def _llama_like(mc: Mapping[str, Any], *, qkv_bias: bool, o_bias: bool, fused_qkv: str | None,
                fused_ffn: bool) -> list[Linear]:
    s = _shape(mc)
    ffn = ffn_width(mc)
    out: list[Linear] = []
    for i in range(s.layers):
        attn, mlp = f"model.layers.{i}.attention", f"model.layers.{i}.feed_forward"
        if fused_qkv:
            out.append(Linear(fused_qkv, f"{attn}.{fused_qkv}", s.hidden, s.q_dim + 2 * s.kv_dim, qkv_bias))
        else:
            out += [Linear("wq", f"{attn}.wq", s.hidden, s.q_dim, qkv_bias),
                    Linear("wk", f"{attn}.wk", s.hidden, s.kv_dim, qkv_bias),
                    Linear("wv", f"{attn}.wv", s.hidden, s.kv_dim, qkv_bias)]
        out.append(Linear("wo", f"{attn}.wo", s.q_dim, s.hidden, o_bias))
        if fused_ffn:
            out.append(Linear("w_gate_hidden", f"{mlp}.w_gate_hidden", s.hidden, 2 * ffn))
        else:
            out += [Linear("w1", f"{mlp}.w1", s.hidden, ffn), Linear("w3", f"{mlp}.w3", s.hidden, ffn)]
        out.append(Linear("w2", f"{mlp}.w2", ffn, s.hidden))
    if not mc.get("tie_word_embeddings"):
        out.append(Linear("lm_head", "lm_head", s.hidden, s.vocab))
    return out


def llama_linears(mc: Mapping[str, Any]) -> list[Linear]:
    """LlamaForCausalLM (legacy, models/llama/llama_transformer.py): ``qkv_concat`` fuses q/k/v into
    ``w_qkv`` *and* w1/w3 into ``w_gate_hidden`` (LLamaDecodeLayer passes ffn_concat=qkv_concat);
    ``qkv_has_bias`` (Qwen 1.5/2 run as Llama) and ``attn_proj_has_bias`` add biases."""
    concat = bool(mc.get("qkv_concat"))
    return _llama_like(mc, qkv_bias=bool(mc.get("qkv_has_bias")), o_bias=bool(mc.get("attn_proj_has_bias")),
                       fused_qkv="w_qkv" if concat else None, fused_ffn=concat)


def internlm_linears(mc: Mapping[str, Any]) -> list[Linear]:
    """research/internlm/internlm_transformer.py: LLamaAttention whose wq/wk/wv/wo carry a bias when
    ``has_bias`` (InternLM-7B: True); the FFN is Llama's w1/w2/w3."""
    bias = bool(mc.get("has_bias"))
    return _llama_like(mc, qkv_bias=bias, o_bias=bias, fused_qkv=None, fused_ffn=False)


def internlm2_linears(mc: Mapping[str, Any]) -> list[Linear]:
    """research/internlm2/internlm2_transformer.py: ``qkv_concat`` fuses q/k/v into one Linear named
    ``w`` (Hugging Face calls it ``wqkv``); no biases; FFN w1/w2/w3 (not fused)."""
    return _llama_like(mc, qkv_bias=False, o_bias=False, fused_qkv="w" if mc.get("qkv_concat") else None,
                       fused_ffn=False)


def glm2_linears(mc: Mapping[str, Any]) -> list[Linear]:
    """ChatGLM2ForConditionalGeneration (models/glm2, GLM 2/3/4 legacy): ``qkv_concat`` (default True)
    -> ``query_key_value`` else wq/wk/wv, bias if add_bias_linear or add_qkv_bias (default True);
    ``dense``; ``mlp_concat`` (default True) -> ``dense_h_to_4h`` (2 x ffn) else dense_left/dense_right;
    ``dense_4h_to_h``; ``output_layer`` sits inside ``transformer`` so LoRA can reach it."""
    hidden = _int(mc, "hidden_size")
    layers = _int(mc, "num_layers", None, "num_hidden_layers")
    heads = _int(mc, "num_attention_heads", None, "num_heads")
    head_dim = _int(mc, "kv_channels", hidden // heads)
    groups = _int(mc, "multi_query_group_num", 2) if mc.get("multi_query_attention", True) else heads
    ffn = _int(mc, "ffn_hidden_size", 13696)
    vocab = _int(mc, "padded_vocab_size", None, "vocab_size")
    linear_bias = bool(mc.get("add_bias_linear", False))
    qkv_bias = linear_bias or bool(mc.get("add_qkv_bias", True))
    q_dim, kv_dim = heads * head_dim, groups * head_dim
    out: list[Linear] = []
    for i in range(layers):
        attn, mlp = f"transformer.encoder.layers.{i}.self_attention", f"transformer.encoder.layers.{i}.mlp"
        if mc.get("qkv_concat", True):
            out.append(Linear("query_key_value", f"{attn}.query_key_value", hidden, q_dim + 2 * kv_dim, qkv_bias))
        else:
            out += [Linear("wq", f"{attn}.wq", hidden, q_dim, qkv_bias),
                    Linear("wk", f"{attn}.wk", hidden, kv_dim, qkv_bias),
                    Linear("wv", f"{attn}.wv", hidden, kv_dim, qkv_bias)]
        out.append(Linear("dense", f"{attn}.dense", q_dim, hidden, linear_bias))
        if mc.get("mlp_concat", True):
            out.append(Linear("dense_h_to_4h", f"{mlp}.dense_h_to_4h", hidden, 2 * ffn, linear_bias))
        else:
            out += [Linear("dense_left", f"{mlp}.dense_left", hidden, ffn, linear_bias),
                    Linear("dense_right", f"{mlp}.dense_right", hidden, ffn, linear_bias)]
        out.append(Linear("dense_4h_to_h", f"{mlp}.dense_4h_to_h", ffn, hidden, linear_bias))
    out.append(Linear("output_layer", "transformer.output_layer", hidden, vocab))
    return out


def glm_v0_linears(mc: Mapping[str, Any]) -> list[Linear]:
    """MindFormers 0.x GLM-6B (GLMForPreTraining, ``model.arch.pet``): per layer
    ``attention.query_key_value`` (h -> 3h, bias), ``attention.dense``, ``mlp.dense_h_to_4h``
    (h -> inner_hidden_size), ``mlp.dense_4h_to_h``, all with bias (ChatGLM-6B layout)."""
    hidden = _int(mc, "hidden_size")
    layers = _int(mc, "num_layers")
    inner = _int(mc, "inner_hidden_size", 4 * hidden)
    vocab = _int(mc, "vocab_size")
    out: list[Linear] = []
    for i in range(layers):
        p = f"transformer.layers.{i}"
        out += [Linear("query_key_value", f"{p}.attention.query_key_value", hidden, 3 * hidden, True),
                Linear("dense", f"{p}.attention.dense", hidden, hidden, True),
                Linear("dense_h_to_4h", f"{p}.mlp.dense_h_to_4h", hidden, inner, True),
                Linear("dense_4h_to_h", f"{p}.mlp.dense_4h_to_h", inner, hidden, True)]
    out.append(Linear("lm_head", "lm_head", hidden, vocab))
    return out


def mcore_linears(mc: Mapping[str, Any]) -> list[Linear]:
    """1.6+ models built from parallel_core (``use_legacy: False``: Qwen2/2.5/3, Qwen3-MoE, GLM4,
    DeepSeek-style MoE with standard attention). Names as in training_graph/transformer:
    ``self_attention.linear_qkv`` (always fused, heads + 2 kv heads), ``linear_proj``;
    ``mlp.linear_fc1`` (gate and up fused: 2 x ffn) and ``linear_fc2``. MoE layers: routed
    experts are grouped weights LoRA cannot reach; ``mlp.shared_experts.linear_fc1/fc2`` are Linears."""
    if mc.get("multi_latent_attention") or mc.get("kv_lora_rank") or mc.get("q_lora_rank"):
        raise UnknownShape("multi-latent attention (DeepSeek-V3 style) is not modelled")
    s = _shape(mc)
    qkv_bias = bool(_get(mc, "attention_bias", "add_qkv_bias"))
    if mc.get("model_type") in ("qwen2",) and mc.get("attention_bias") is None:
        qkv_bias = True  # Qwen2/2.5 carry q/k/v biases (HF config has no attention_bias key)
    experts = _get(mc, "num_experts", "n_routed_experts", "num_moe_experts") or 0
    dense_first = int(_get(mc, "first_k_dense_replace") or 0)
    shared = int(_get(mc, "n_shared_experts", "shared_expert_num") or 0)
    ffn = _int(mc, "intermediate_size", None, "ffn_hidden_size")
    out: list[Linear] = []
    for i in range(s.layers):
        attn, mlp = f"decoder.layers.{i}.self_attention", f"decoder.layers.{i}.mlp"
        out += [Linear("linear_qkv", f"{attn}.linear_qkv", s.hidden, s.q_dim + 2 * s.kv_dim, qkv_bias),
                Linear("linear_proj", f"{attn}.linear_proj", s.q_dim, s.hidden)]
        if experts and i >= dense_first:
            if shared:
                width = _int(mc, "moe_intermediate_size", ffn) * shared
                out += [Linear("linear_fc1", f"{mlp}.shared_experts.linear_fc1", s.hidden, 2 * width),
                        Linear("linear_fc2", f"{mlp}.shared_experts.linear_fc2", width, s.hidden)]
            continue
        out += [Linear("linear_fc1", f"{mlp}.linear_fc1", s.hidden, 2 * ffn),
                Linear("linear_fc2", f"{mlp}.linear_fc2", ffn, s.hidden)]
    if not mc.get("tie_word_embeddings"):
        out.append(Linear("output_layer", "output_layer", s.hidden, s.vocab))
    return out


@dataclass(frozen=True)
class Family:
    """One model family as MindFormers builds it: how to recognise it, where LoRA starts, its Linears."""

    key: str
    label: str
    archs: tuple[str, ...]  # model.arch.type values
    configs: tuple[str, ...]  # model.model_config.type values
    root: str  # parameter prefix of the cell LoRA walks ("" = everything)
    linears: Callable[[Mapping[str, Any]], list[Linear]]
    projections: tuple[str, ...]  # the names to list when a target matches nothing
    legacy_layout: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)


FAMILIES: tuple[Family, ...] = (
    Family("llama", "Llama 2/3/3.1, Baichuan2 7B/13B, Qwen 1.5/2 run as Llama (legacy LlamaForCausalLM)",
           ("LlamaForCausalLM", "Baichuan7BV2ForCausalLM", "Baichuan13BV2ForCausalLM", "QwenForCausalLM"),
           ("LlamaConfig", "Baichuan2Config"), "model.", llama_linears,
           ("wq", "wk", "wv", "wo", "w1", "w2", "w3", "w_qkv", "w_gate_hidden")),
    Family("internlm", "InternLM 1 (research InternLMForCausalLM)", ("InternLMForCausalLM",), ("InternLMConfig",),
           "model.", internlm_linears, ("wq", "wk", "wv", "wo", "w1", "w2", "w3")),
    Family("internlm2", "InternLM 2 (research InternLM2ForCausalLM)", ("InternLM2ForCausalLM",),
           ("InternLM2Config",), "model.", internlm2_linears, ("wq", "wk", "wv", "w", "wo", "w1", "w2", "w3")),
    Family("glm2", "GLM 2/3/4 (legacy ChatGLM2ForConditionalGeneration)",
           ("ChatGLM2ForConditionalGeneration", "ChatGLM3ForConditionalGeneration",
            "ChatGLM4ForConditionalGeneration", "GLM4ForConditionalGeneration"),
           ("ChatGLM2Config", "ChatGLM3Config", "ChatGLM4Config"), "transformer.", glm2_linears,
           ("query_key_value", "wq", "wk", "wv", "dense", "dense_h_to_4h", "dense_left", "dense_right",
            "dense_4h_to_h", "output_layer")),
    Family("glm-0.x", "GLM-6B (MindFormers 0.x GLMForPreTraining)",
           ("GLMForPreTraining", "GLMForPreTrainingWithLora", "GLMChatModel", "GLMChatModelWithLora"),
           ("GLMConfig",), "transformer.", glm_v0_linears,
           ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")),
    Family("mcore", "1.6+/2.x parallel_core models: Qwen2/2.5/3, Qwen3-MoE, GLM4, MoE (use_legacy: False)",
           ("Qwen2ForCausalLM", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM", "Glm4ForCausalLM",
            "Glm4MoeForCausalLM", "DeepseekV3ForCausalLM", "TeleChat2ForCausalLM", "TeleChat3ForCausalLM",
            "TeleChat3MoeForCausalLM"),
           (), "", mcore_linears, ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2", "output_layer"),
           legacy_layout=False),
)

#: the 0.x default target when ``model.arch.pet`` gives none (GLMForPreTrainingWithLora)
V0_DEFAULT_TARGETS = {"glm-0.x": r".*query_key_value*"}
DEFAULT_TARGETS = r".*dense*|.*linear*"  # LoraAdapter.get_pet_model's default


def is_legacy(config: Mapping[str, Any]) -> bool:
    return config.get("use_legacy") is not False


def _section(config: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``config[key]`` when it is a mapping, else an empty one (a config may lack or mistype it)."""
    value = config.get(key)
    return value if isinstance(value, Mapping) else {}


def family_for(config: Mapping[str, Any]) -> Family | None:
    """The family of a whole MindFormers config (arch type, model_config type, ``use_legacy``)."""
    model = _section(config, "model")
    arch, mc = _section(model, "arch"), _section(model, "model_config")
    arch_type = str(arch.get("type") or "")
    config_type = str(mc.get("type") or "")
    if not is_legacy(config):
        return next(f for f in FAMILIES if f.key == "mcore")
    for fam in FAMILIES:
        if fam.legacy_layout and (arch_type in fam.archs or (not arch_type and config_type in fam.configs)):
            return fam
    if arch_type.endswith("ForCausalLM") and config_type == "LlamaConfig":
        return FAMILIES[0]  # research models built on LLamaDecodeLayer (Yi, Baichuan...) name Llama's modules
    return None


def family_for_model_config(mc: Mapping[str, Any]) -> Family | None:
    """For callers holding only model_config (results): by its ``type``; a LoRA'd Llama if untyped."""
    config_type = str(mc.get("type") or "")
    for fam in FAMILIES:
        if config_type and config_type in fam.configs:
            return fam
    if not config_type and "num_layers" in mc:
        return FAMILIES[0]
    if mc.get("num_hidden_layers"):
        return next(f for f in FAMILIES if f.key == "mcore")
    return None


def pet_config_of(config: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """(pet config, where it was found): ``model.model_config.pet_config`` (1.x/2.x) or the 0.x
    ``model.arch.pet`` (``pet_type`` outside, the rest under ``pet_config``)."""
    model = _section(config, "model")
    mc = _section(model, "model_config")
    if isinstance(mc.get("pet_config"), Mapping):
        return dict(mc["pet_config"]), "model.model_config.pet_config"
    arch = _section(model, "arch")
    old = arch.get("pet")
    if isinstance(old, Mapping):
        merged = {"pet_type": old.get("pet_type")}
        merged.update(old.get("pet_config") or {})
        return merged, "model.arch.pet"
    return {}, ""


def target_regex(pet_config: Mapping[str, Any], default: str = DEFAULT_TARGETS) -> re.Pattern[str]:
    """The compiled target_modules (MindFormers' default when absent); ValueError if invalid."""
    pattern = pet_config.get("target_modules") or default
    try:
        return re.compile(str(pattern))
    except re.error as exc:
        raise ValueError(f"target_modules {pattern!r} is not a valid regular expression: {exc}") from None


def _exclude(pet_config: Mapping[str, Any]) -> list[re.Pattern[str]]:
    return [re.compile(str(p)) for p in (pet_config.get("exclude_layers") or [])]


def lora_reaches(linear: Linear, root: str, regex: re.Pattern[str], exclude: Sequence[re.Pattern[str]] = ()) -> bool:
    """Does MindFormers' recursive walk replace this Linear? Outside the root: never. On the way
    down, a cell whose name matches (and is not a Linear) stops the walk; an excluded one too."""
    if not linear.path.startswith(root):
        return False
    parts = linear.path[len(root):].split(".")
    for depth, part in enumerate(parts):
        if any(rx.match(part) for rx in exclude):
            return False
        if regex.match(part):
            return depth == len(parts) - 1
    return False


def _family(model_config: Mapping[str, Any], family: Family | str | None) -> Family:
    if isinstance(family, Family):
        return family
    if isinstance(family, str):
        return next(f for f in FAMILIES if f.key == family)
    found = family_for_model_config(model_config)
    if found is None:
        raise UnknownShape(f"model_config type {model_config.get('type')!r} is not a known family")
    return found


def matched_projections(model_config: Mapping[str, Any], pet_config: Mapping[str, Any],
                        family: Family | str | None = None) -> list[str]:
    """Distinct projection names that target_modules selects (empty = LoRA does nothing)."""
    fam = _family(model_config, family)
    regex = target_regex(pet_config, V0_DEFAULT_TARGETS.get(fam.key, DEFAULT_TARGETS))
    exclude = _exclude(pet_config)
    names: list[str] = []
    for linear in fam.linears(model_config):
        if lora_reaches(linear, fam.root, regex, exclude) and linear.name not in names:
            names.append(linear.name)
    return names


def base_parameters(model_config: Mapping[str, Any], family: Family | str | None = None) -> dict[str, int]:
    """Full parameter name -> element count of the base model (no LoRA): Linears, embedding, norms.
    Norms are the families' RMSNorm/LayerNorm weights (2 per layer + final); exact for Llama."""
    fam = _family(model_config, family)
    hidden = _int(model_config, "hidden_size")
    vocab = _int(model_config, "vocab_size", None, "padded_vocab_size")
    params: dict[str, int] = {}
    for linear in fam.linears(model_config):
        params[f"{linear.path}.weight"] = linear.in_features * linear.out_features
        if linear.bias:
            params[f"{linear.path}.bias"] = linear.out_features
    layers = len({lin.path.split(".layers.")[1].split(".")[0] for lin in fam.linears(model_config)
                  if ".layers." in lin.path})
    if fam.key in ("llama", "internlm", "internlm2"):
        params["model.tok_embeddings.embedding_weight"] = vocab * hidden
        for i in range(layers):
            params[f"model.layers.{i}.attention_norm.weight"] = hidden
            params[f"model.layers.{i}.ffn_norm.weight"] = hidden
        params["model.norm_out.weight"] = hidden
    elif fam.key == "glm2":
        params["transformer.embedding.embedding_weight"] = vocab * hidden
        for i in range(layers):
            params[f"transformer.encoder.layers.{i}.input_layernorm.weight"] = hidden
            params[f"transformer.encoder.layers.{i}.post_attention_layernorm.weight"] = hidden
        params["transformer.encoder.final_layernorm.weight"] = hidden
    elif fam.key == "mcore":
        params["embedding.word_embeddings.weight"] = vocab * hidden
        qk_norm = model_config.get("qk_layernorm", str(model_config.get("model_type", "")).startswith("qwen3"))
        head_dim = _shape(model_config).head_dim
        experts = _get(model_config, "num_experts", "n_routed_experts", "num_moe_experts") or 0
        dense_first = int(_get(model_config, "first_k_dense_replace") or 0)
        for i in range(layers):
            params[f"decoder.layers.{i}.input_layernorm.weight"] = hidden
            params[f"decoder.layers.{i}.pre_mlp_layernorm.weight"] = hidden
            if qk_norm:
                params[f"decoder.layers.{i}.self_attention.q_layernorm.weight"] = head_dim
                params[f"decoder.layers.{i}.self_attention.k_layernorm.weight"] = head_dim
            if experts and i >= dense_first:  # router + grouped expert weights (fc1 gated: 2 x width)
                width = _int(model_config, "moe_intermediate_size", None, "moe_ffn_hidden_size")
                params[f"decoder.layers.{i}.mlp.router.weight"] = experts * hidden
                params[f"decoder.layers.{i}.mlp.experts.weight1"] = experts * hidden * 2 * width
                params[f"decoder.layers.{i}.mlp.experts.weight2"] = experts * width * hidden
        params["decoder.final_layernorm.weight"] = hidden
    else:  # glm-0.x: word embeddings + LayerNorm weight and bias
        params["transformer.word_embeddings.embedding_table"] = vocab * hidden
        for i in range(layers):
            params[f"transformer.layers.{i}.input_layernorm"] = 2 * hidden
            params[f"transformer.layers.{i}.post_attention_layernorm"] = 2 * hidden
        params["transformer.final_layernorm"] = 2 * hidden
    return params


def count(model_config: Mapping[str, Any], pet_config: Mapping[str, Any] | None = None,
          family: Family | str | None = None) -> ParamCount:
    """Trainable and total parameters for ``model_config`` (with ``pet_config``, by default its own).

    Raises :class:`UnknownShape` when the family or its sizes are unknown: callers say "count
    unknown", never print a guess."""
    fam = _family(model_config, family)
    base = base_parameters(model_config, fam)
    total_base = sum(base.values())
    pet = dict(pet_config if pet_config is not None else (model_config.get("pet_config") or {}))
    if not pet or str(pet.get("pet_type", "")).lower() != "lora":
        return ParamCount(trainable=total_base, lora=0, total=total_base, matched=(), family=fam.key)
    rank = pet.get("lora_rank", 8)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ModelShapeError("pet_config.lora_rank", f"needs a positive integer, got {rank!r}")
    regex = target_regex(pet, V0_DEFAULT_TARGETS.get(fam.key, DEFAULT_TARGETS))
    exclude = _exclude(pet)
    lora = 0
    matched: list[str] = []
    for linear in fam.linears(model_config):
        if lora_reaches(linear, fam.root, regex, exclude):
            lora += rank * (linear.in_features + linear.out_features)
            if linear.name not in matched:
                matched.append(linear.name)
    kept = 0
    for pattern in pet.get("freeze_exclude") or []:
        for name, size in base.items():
            if fnmatch.fnmatch(name, str(pattern)):
                kept += size
    return ParamCount(trainable=lora + kept, lora=lora, total=total_base + lora, matched=tuple(matched),
                      family=fam.key)


#: the two parameters LoRA adds to a Linear at ``<path>``, per family: mindpet's LoRADense for the
#: legacy models (read in a real tiny-Llama checkpoint: ``model.layers.0.attention.wq.mindpet_delta_lora_a``
#: [rank, in], ``..._lora_b`` [out, rank]); parallel_core's ``lora_A``/``lora_B`` Linears for mcore
#: (tensor_parallel/lora_layers.py; not yet seen in a saved checkpoint)
LORA_PARAMS = {"mcore": ("lora_A.weight", "lora_B.weight")}
MINDPET_PARAMS = ("mindpet_delta_lora_a", "mindpet_delta_lora_b")


def trainable_parameters(model_config: Mapping[str, Any], pet_config: Mapping[str, Any] | None = None,
                         family: Family | str | None = None) -> dict[str, int]:
    """Full name -> element count of every parameter a LoRA fine-tune trains (what a checkpoint
    holds beyond the base it started from): the two LoRA matrices of every Linear LoRA reaches
    and the base parameters ``freeze_exclude`` keeps trainable. Their sum is :func:`count`'s
    ``trainable``; {} when the config has no LoRA."""
    fam = _family(model_config, family)
    pet = dict(pet_config if pet_config is not None else (model_config.get("pet_config") or {}))
    if not pet or str(pet.get("pet_type", "")).lower() != "lora":
        return {}
    rank = pet.get("lora_rank", 8)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ModelShapeError("pet_config.lora_rank", f"needs a positive integer, got {rank!r}")
    regex = target_regex(pet, V0_DEFAULT_TARGETS.get(fam.key, DEFAULT_TARGETS))
    exclude = _exclude(pet)
    a, b = LORA_PARAMS.get(fam.key, MINDPET_PARAMS)
    out: dict[str, int] = {}
    for linear in fam.linears(model_config):
        if lora_reaches(linear, fam.root, regex, exclude):
            out[f"{linear.path}.{a}"] = rank * linear.in_features
            out[f"{linear.path}.{b}"] = linear.out_features * rank
    for pattern in pet.get("freeze_exclude") or []:
        for name, size in base_parameters(model_config, fam).items():
            if fnmatch.fnmatch(name, str(pattern)):
                out[name] = size
    return out
