"""Refuse a job before anything is sent: static checks, then (if installed) real MindFormers.

``check_static(config, derived, spec=None)`` returns nothing and raises the first problem
as an :class:`InputError` naming the key and what would be valid. ``check_local_paths(spec)``
refuses local inputs that do not exist. ``check_with_mindformers(text, config)`` loads the
rendered YAML with ``mindformers.MindFormerConfig`` and builds ``LlamaConfig`` from its
model_config (no weights); it returns a :class:`MindFormersCheck` whose ``skipped`` says
when mindformers is not installed, so callers can warn visibly instead of staying silent.
"""

from __future__ import annotations

import math

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass

from launcher.core import lora
from launcher.errors import InputError
from launcher.core.render import get_dotted

# Longest sequence each model family was trained for, when model_config has no
# max_position_embedding (Llama3-8B in these configs is the 8k variant).
MODEL_SEQ_LIMITS = {"llama3_8b": 8192}


def _model_limit(config: dict) -> tuple[int | None, str]:
    model_config = get_dotted(config, "model.model_config", {}) or {}
    if model_config.get("max_position_embedding"):
        return int(model_config["max_position_embedding"]), "model.model_config.max_position_embedding"
    name = str(get_dotted(config, "trainer.model_name", "") or "")
    for prefix, limit in MODEL_SEQ_LIMITS.items():
        if name.startswith(prefix):
            return limit, f"the {prefix} model's context length"
    return None, ""


def _finite_non_negative(value) -> bool:
    """A number, or text that reads as one (PyYAML keeps ``1e-5`` as a string; MindFormers casts it)."""
    if isinstance(value, bool):
        return False
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number >= 0


def _check_numbers(config: dict, source: str | None) -> None:
    """Run-time numbers MindFormers only reads after staging and launch: a wrong type would fail
    there, minutes later and on the hosts, so refuse it here (epochs "three", a learning rate of inf)."""
    epochs = get_dotted(config, "runner_config.epochs")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise InputError(f"must be a positive integer, got {epochs!r}", source=source, key="runner_config.epochs")
    for key in ("lr_schedule.learning_rate", "optimizer.learning_rate"):
        lr = get_dotted(config, key)
        if lr is not None and not _finite_non_negative(lr):
            raise InputError(f"must be a finite number >= 0, got {lr!r}", source=source, key=key)


def check_static(config: dict, derived: dict, source: str | None = None) -> None:
    """The checks of issue 3, in the order a user would fix them."""
    world = derived["world_size"]
    dp, mp, pp = derived["data_parallel"], derived["model_parallel"], derived["pipeline_stage"]
    if dp * mp * pp != world:
        raise InputError(f"data_parallel x model_parallel x pipeline_stage = {dp} x {mp} x {pp} = {dp * mp * pp}, "
                         f"but the job runs on {world} card(s)", source=source, key="parallel_config")
    if world > 1 and config.get("use_parallel") is False:
        raise InputError(f"use_parallel is False but the job runs on {world} cards; set it to True",
                         source=source, key="use_parallel")
    if world == 1 and mp * pp > 1:
        raise InputError(f"model_parallel x pipeline_stage = {mp * pp} needs that many cards, the job has 1",
                         source=source, key="parallel_config")
    model_config = get_dotted(config, "model.model_config", {}) or {}
    heads = model_config.get("num_heads")
    kv_heads = model_config.get("n_kv_heads") or heads
    hidden = model_config.get("hidden_size")
    if isinstance(heads, int) and heads % mp:
        raise InputError(f"num_heads {heads} is not divisible by model_parallel {mp}; "
                         f"use a model_parallel that divides {heads}", source=source, key="model.model_config.num_heads")
    if isinstance(kv_heads, int) and kv_heads % mp:
        raise InputError(f"n_kv_heads {kv_heads} is not divisible by model_parallel {mp}; "
                         f"use a model_parallel that divides {kv_heads}", source=source,
                         key="model.model_config.n_kv_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and hidden % heads:
        raise InputError(f"hidden_size {hidden} is not divisible by num_heads {heads}", source=source,
                         key="model.model_config.hidden_size")
    micro = derived["micro_batch_num"]
    layers = model_config.get("num_layers")
    if pp > 1:
        if micro < pp:
            raise InputError(f"micro_batch_num {micro} is smaller than pipeline_stage {pp}; "
                             f"use at least {pp}", source=source, key="parallel_config.micro_batch_num")
        if isinstance(layers, int) and layers < pp:
            raise InputError(f"num_layers {layers} cannot be split into {pp} pipeline stages", source=source,
                             key="parallel_config.pipeline_stage")
    batch = derived["batch_size"]
    dataset_batch = get_dotted(config, "train_dataset.batch_size")
    if config.get("run_mode") in ("finetune", "train") and isinstance(dataset_batch, int) \
            and "runner_config" in config and dataset_batch != batch and dataset_batch != 1:
        raise InputError(f"train_dataset.batch_size {dataset_batch} differs from runner_config.batch_size {batch} "
                         f"(MindFormers uses runner_config's; make them equal)", source=source,
                         key="train_dataset.batch_size")
    _check_numbers(config, source)
    seq = model_config.get("seq_length")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 1):
        raise InputError(f"seq_length must be a positive integer, got {seq!r}", source=source,
                         key="model.model_config.seq_length")
    limit, why = _model_limit(config)
    if isinstance(seq, int) and limit is not None and seq > limit:
        raise InputError(f"seq_length {seq} is beyond {why} ({limit})", source=source,
                         key="model.model_config.seq_length")
    pet = model_config.get("pet_config") or {}
    if pet and str(pet.get("pet_type", "")).lower() == "lora":
        for key in ("lora_rank", "lora_alpha"):
            value = pet.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise InputError(f"must be a positive number, got {value!r}", source=source,
                                 key=f"model.model_config.pet_config.{key}")
        try:
            matched = lora.matched_projections(model_config, pet)
        except (ValueError, lora.ModelShapeError) as exc:
            raise InputError(str(exc), source=source, key="model.model_config.pet_config.target_modules") from None
        if not matched:
            names = "wq, wk, wv, wo, w1, w2, w3, lm_head"
            raise InputError(f"target_modules {pet.get('target_modules')!r} matches no projection of the model "
                             f"(projections: {names}; e.g. '.*wq|.*wv')", source=source,
                             key="model.model_config.pet_config.target_modules")
    device = str(get_dotted(config, "context.device_target", "") or "")
    if device == "CPU" and world > 1:
        mode = get_dotted(config, "parallel.parallel_mode", 0)
        if mode not in (0, "data_parallel"):
            raise InputError(f"parallel_mode {mode} does not run on CPU (MindSpore: 'Invalid backend: CPU'); "
                             f"use 0 (data parallel)", source=source, key="parallel.parallel_mode")
    if device == "CPU":
        for key in ("compute_dtype", "param_init_type"):
            dtype = model_config.get(key)
            if dtype in ("float16", "bfloat16"):
                raise InputError(f"{dtype} does not train on CPU (float16: NaN loss, bfloat16: Gather "
                                 f"unsupported); use float32", source=source, key=f"model.model_config.{key}")


def check_local_paths(spec) -> None:
    """Every input, checkpoint, tokenizer or code tree the job says is local must exist here."""
    items: list[tuple[str, str]] = [(f"inputs.{name}.local", ref.local) for name, ref in spec.inputs.items()
                                    if ref.is_local]
    for key in ("checkpoint", "tokenizer"):
        ref = getattr(spec, key)
        if ref is not None and ref.is_local:
            items.append((f"{key}.local", ref.local))
    if not isinstance(spec.code, str):
        items.append(("code.local", spec.code.local))
    for key, path in items:
        if not os.path.exists(path):
            raise InputError(f"local path {path} does not exist (relative paths are relative to the job file)",
                             source=spec.source, key=key)


@dataclass(frozen=True)
class MindFormersCheck:
    skipped: bool
    detail: str


def mindformers_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("mindformers") is not None


@contextlib.contextmanager
def _quiet_output(log_path: str):
    """Send what MindSpore/MindFormers print on import (C++ and Python loggers, fd 1 and 2) to a file.

    Their warnings (deprecations, optional models that cannot import) are not the user's
    business when all we do is load a config; our own errors still surface as exceptions.
    """
    os.environ.setdefault("GLOG_v", "3")
    saved = [os.dup(1), os.dup(2)]
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log_path, "wb") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def check_with_mindformers(text: str, config: dict, source: str | None = None) -> MindFormersCheck:
    """Load ``text`` with MindFormerConfig and build LlamaConfig (no weights). Imports are slow (~8 s).

    MindFormers creates ``output/log`` in the current directory on import, so this runs with
    the current directory set to a temporary one.
    """
    if not mindformers_available():
        return MindFormersCheck(True, "mindformers is not installed: the MindFormers validation layer was skipped "
                                      "(install the 'ms' extra to enable it)")
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="alaunch-mf-") as tmp, _quiet_output(os.path.join(tmp, "import.log")):
        os.chdir(tmp)
        try:
            from mindformers.tools.register import MindFormerConfig
            path = os.path.join(tmp, "rendered.yaml")
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
            try:
                mf_config = MindFormerConfig(path)
            except Exception as exc:  # MindFormers raises assorted types for a bad config
                raise InputError(f"MindFormers refuses the rendered config: {exc}", source=source) from None
            detail = "MindFormerConfig loaded"
            model_type = str(get_dotted(config, "model.model_config.type", "") or "")
            if model_type == "LlamaConfig":
                from mindformers.models.llama import LlamaConfig
                model_config = {k: v for k, v in mf_config.model.model_config.items() if k != "type"}
                try:
                    built = LlamaConfig(**model_config)
                except Exception as exc:
                    raise InputError(f"MindFormers LlamaConfig refuses model_config: {exc}", source=source,
                                     key="model.model_config") from None
                detail += f"; LlamaConfig built ({built.num_layers} layers, hidden {built.hidden_size})"
        finally:
            os.chdir(previous)
    return MindFormersCheck(False, detail)


