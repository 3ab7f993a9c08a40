"""Parameter counts of a MindFormers Llama from ``model_config`` + ``pet_config``, no MindSpore.

Lets ``render --summary`` print the trainable LoRA parameters (the number MindFormers logs as
"Network Parameters:") before anything runs, and lets ``validate`` refuse target_modules
that match no projection. Mirrors MindFormers' rules:

* LoRA replaces each Linear whose *attribute name* (``wq``, ``w1``, ``lm_head``...) satisfies
  ``re.match(target_modules, name)`` and adds ``rank * (in + out)`` parameters to it.
* ``freeze_exclude`` (fnmatch patterns on full parameter names) keeps those base parameters
  trainable too.
* The FFN width is ``intermediate_size``, else LlamaFeedForward's formula from
  ``multiple_of`` / ``ffn_dim_multiplier``.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Linear:
    """One projection of one layer: attribute name, full parameter prefix, shape."""

    name: str
    path: str
    in_features: int
    out_features: int

    @property
    def params(self) -> int:
        return self.in_features * self.out_features


@dataclass(frozen=True)
class ParamCount:
    trainable: int  # LoRA parameters + base parameters kept trainable by freeze_exclude
    lora: int
    total: int  # base model + LoRA
    matched: tuple[str, ...]  # distinct projection names LoRA replaced (``wq``, ``wk``...)

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


def _int(model_config: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = model_config.get(key, default)
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


def llama_linears(model_config: Mapping[str, Any]) -> list[Linear]:
    """Every Linear of a (legacy, MindFormers 1.x) LlamaForCausalLM with its shape."""
    hidden = _int(model_config, "hidden_size")
    layers = _int(model_config, "num_layers")
    heads = _int(model_config, "num_heads")
    kv_heads = _int(model_config, "n_kv_heads", heads) if model_config.get("n_kv_heads") else heads
    vocab = _int(model_config, "vocab_size")
    if hidden % heads:
        raise ModelShapeError("hidden_size", f"{hidden} is not divisible by num_heads {heads}")
    head_dim = hidden // heads
    kv_dim = kv_heads * head_dim
    ffn = ffn_width(model_config)
    out: list[Linear] = []
    for i in range(layers):
        attn = f"model.layers.{i}.attention"
        mlp = f"model.layers.{i}.feed_forward"
        if model_config.get("qkv_concat"):
            out.append(Linear("w_qkv", f"{attn}.w_qkv", hidden, hidden + 2 * kv_dim))
        else:
            out += [Linear("wq", f"{attn}.wq", hidden, hidden),
                    Linear("wk", f"{attn}.wk", hidden, kv_dim),
                    Linear("wv", f"{attn}.wv", hidden, kv_dim)]
        out.append(Linear("wo", f"{attn}.wo", hidden, hidden))
        out += [Linear("w1", f"{mlp}.w1", hidden, ffn),
                Linear("w3", f"{mlp}.w3", hidden, ffn),
                Linear("w2", f"{mlp}.w2", ffn, hidden)]
    out.append(Linear("lm_head", "lm_head", hidden, vocab))
    return out


def base_parameters(model_config: Mapping[str, Any]) -> dict[str, int]:
    """Full parameter name -> element count of the base model (no LoRA)."""
    hidden = _int(model_config, "hidden_size")
    vocab = _int(model_config, "vocab_size")
    params = {"model.tok_embeddings.embedding_weight": vocab * hidden}
    for linear in llama_linears(model_config):
        if linear.name == "lm_head" and model_config.get("tie_word_embeddings"):
            continue
        params[f"{linear.path}.weight"] = linear.params
    for i in range(_int(model_config, "num_layers")):
        params[f"model.layers.{i}.attention_norm.weight"] = hidden
        params[f"model.layers.{i}.ffn_norm.weight"] = hidden
    params["model.norm_out.weight"] = hidden
    return params


def target_regex(pet_config: Mapping[str, Any]) -> re.Pattern[str]:
    """The compiled target_modules (MindFormers' default when absent); ValueError if invalid."""
    pattern = pet_config.get("target_modules") or r".*dense*|.*linear*"
    try:
        return re.compile(str(pattern))
    except re.error as exc:
        raise ValueError(f"target_modules {pattern!r} is not a valid regular expression: {exc}") from None


def matched_projections(model_config: Mapping[str, Any], pet_config: Mapping[str, Any]) -> list[str]:
    """Distinct projection names that target_modules selects (empty = LoRA does nothing)."""
    regex = target_regex(pet_config)
    names: list[str] = []
    for linear in llama_linears(model_config):
        if regex.match(linear.name) and linear.name not in names:
            names.append(linear.name)
    return names


def count(model_config: Mapping[str, Any]) -> ParamCount:
    """Trainable and total parameters for ``model_config`` (with its ``pet_config``, if any)."""
    base = base_parameters(model_config)
    total_base = sum(base.values())
    pet = model_config.get("pet_config") or {}
    if not pet or str(pet.get("pet_type", "")).lower() != "lora":
        return ParamCount(trainable=total_base, lora=0, total=total_base, matched=())
    rank = pet.get("lora_rank", 8)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ModelShapeError("pet_config.lora_rank", f"needs a positive integer, got {rank!r}")
    regex = target_regex(pet)
    lora = 0
    matched: list[str] = []
    for linear in llama_linears(model_config):
        if regex.match(linear.name):
            lora += rank * (linear.in_features + linear.out_features)
            if linear.name not in matched:
                matched.append(linear.name)
    kept = 0
    for pattern in pet.get("freeze_exclude") or []:
        for name, size in base.items():
            if fnmatch.fnmatch(name, str(pattern)):
                kept += size
    return ParamCount(trainable=lora + kept, lora=lora, total=total_base + lora, matched=tuple(matched))
