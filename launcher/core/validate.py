"""Refuse a job before anything is sent: static checks, then (if installed) real MindFormers.

``check_static(config, derived, spec=None)`` returns nothing and raises the first problem
as an :class:`InputError` naming the key and what would be valid. ``check_local_paths(spec)``
refuses local inputs that do not exist. The real-MindFormers layer (``--validate``) is
:mod:`launcher.ops.mfcheck`: it runs MindFormers in a child process, since importing it
changes the cwd's contents and prints on fds 1 and 2 (nothing here touches the process's cwd,
fds or environment).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from launcher.core import lora
from launcher.core.render import Config, get_dotted
from launcher.errors import InputError

if TYPE_CHECKING:
    from launcher.core.spec import JobSpec

# Longest sequence each model family was trained for, when model_config has no
# max_position_embedding (Llama3-8B in these configs is the 8k variant).
MODEL_SEQ_LIMITS = {"llama3_8b": 8192}


def _model_limit(config: Config) -> tuple[int | None, str]:
    model_config = get_dotted(config, "model.model_config", {}) or {}
    if model_config.get("max_position_embedding"):
        return int(model_config["max_position_embedding"]), "model.model_config.max_position_embedding"
    name = str(get_dotted(config, "trainer.model_name", "") or "")
    for prefix, limit in MODEL_SEQ_LIMITS.items():
        if name.startswith(prefix):
            return limit, f"the {prefix} model's context length"
    return None, ""


def _finite_non_negative(value: Any) -> bool:
    """A number, or text that reads as one (PyYAML keeps ``1e-5`` as a string; MindFormers casts it)."""
    if isinstance(value, bool):
        return False
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number >= 0


def _check_numbers(config: Config, source: str | None) -> None:
    """Run-time numbers MindFormers only reads after staging and launch: a wrong type would fail
    there, minutes later and on the hosts, so refuse it here (epochs "three", a learning rate of inf)."""
    epochs = get_dotted(config, "runner_config.epochs")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise InputError(f"must be a positive integer, got {epochs!r}", source=source, key="runner_config.epochs")
    for key in ("lr_schedule.learning_rate", "optimizer.learning_rate"):
        lr = get_dotted(config, key)
        if lr is not None and not _finite_non_negative(lr):
            raise InputError(f"must be a finite number >= 0, got {lr!r}", source=source, key=key)


def _check_lora(config: Config, source: str | None) -> list[str]:
    """LoRA settings MindFormers would reject or silently ignore. Returns warnings; raises for refusals."""
    pet, pet_key = lora.pet_config_of(config)
    if not pet or str(pet.get("pet_type", "")).lower() != "lora":
        return []
    warnings: list[str] = []
    for key in ("lora_rank", "lora_alpha"):
        value = pet.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise InputError(f"must be a positive number, got {value!r}", source=source, key=f"{pet_key}.{key}")
    family = lora.family_for(config)
    model_config = get_dotted(config, "model.model_config", {}) or {}
    if family is None:
        return warnings  # render already warned: family unknown, no count
    arch = str(get_dotted(config, "model.arch.type", "") or "")
    if family.key in ("internlm", "internlm2", "glm-0.x") or arch.startswith("Baichuan"):
        warnings.append(f"{arch or family.label} is not in MindFormers 1.9 (a research/ or 0.x model): the hosts "
                        f"must run the MindFormers version that has it")
    if family.key == "mcore" and not pet.get("freeze_include") and not pet.get("freeze_exclude"):
        # pet_model.py -> PetAdapter.freeze_mcore_pretrained_model -> mindpet freeze_modules raises
        # "Argument 'include' (pos 2) and 'exclude' (pos 3) can't be None together." (measured, 1.9)
        raise InputError("a 1.6+ model (use_legacy: False) needs freeze_include and/or freeze_exclude for LoRA "
                         "(MindFormers refuses both unset); e.g. freeze_include: ['*'], freeze_exclude: ['*lora*']",
                         source=source, key=f"{pet_key}.freeze_include")
    try:
        matched = lora.matched_projections(model_config, pet, family)
    except lora.ModelShapeError as exc:
        raise InputError(exc.detail, source=source, key=f"model.model_config.{exc.key}") from None
    except lora.UnknownShape:
        probe = {"pet_type": "lora", "target_modules": pet.get("target_modules")}
        names = [n for n in family.projections if lora.target_regex(probe).match(n)]
        if pet.get("target_modules") and not names:
            raise InputError(f"target_modules {pet.get('target_modules')!r} matches no projection of {family.label} "
                             f"(projections: {', '.join(family.projections)})", source=source,
                             key=f"{pet_key}.target_modules") from None
        return warnings
    except ValueError as exc:
        raise InputError(str(exc), source=source, key=f"{pet_key}.target_modules") from None
    if not matched:
        example = "|".join(f".*{n}" for n in family.projections[:2])
        raise InputError(f"target_modules {pet.get('target_modules')!r} matches no projection LoRA can reach in "
                         f"{family.label} (projections: {', '.join(family.projections)}; e.g. '{example}')",
                         source=source, key=f"{pet_key}.target_modules")
    return warnings


def check_static(config: Config, derived: dict[str, Any], source: str | None = None) -> list[str]:
    """The static checks of a rendered config, in the order a user would fix them. Raises the first refusal; returns
    warnings for what MindFormers resolves by itself (each says which value it will use)."""
    warnings: list[str] = list(derived.get("warnings") or [])
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
                         f"use a model_parallel that divides {heads}", source=source,
                         key="model.model_config.num_heads")
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
            and "runner_config" in config and dataset_batch != batch:
        # mindformers/dataset/utils.py check_dataset_config: train_dataset.batch_size = runner_config.batch_size
        warnings.append(f"train_dataset.batch_size {dataset_batch} differs from runner_config.batch_size {batch}: "
                        f"MindFormers overwrites it and uses {batch}")
    _check_numbers(config, source)
    seq = model_config.get("seq_length")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 1):
        raise InputError(f"seq_length must be a positive integer, got {seq!r}", source=source,
                         key="model.model_config.seq_length")
    limit, why = _model_limit(config)
    if isinstance(seq, int) and limit is not None and seq > limit:
        raise InputError(f"seq_length {seq} is beyond {why} ({limit})", source=source,
                         key="model.model_config.seq_length")
    warnings += _check_lora(config, source)
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
    warnings += _check_layout(config)
    return warnings


def _check_layout(config: Config) -> list[str]:
    """The 1.6+/2.x layout (use_legacy: False, pretrained_model_dir, safetensors, HF data loaders)
    against the legacy one: mixes MindFormers does not resolve the way a user expects."""
    out: list[str] = []
    legacy = lora.is_legacy(config)
    loader = str(get_dotted(config, "train_dataset.data_loader.type", "") or "")
    if legacy and loader == "HFDataLoader":
        out.append("train_dataset.data_loader HFDataLoader belongs to the 1.6+ layout; with use_legacy "
                   "unset (legacy models) check the MindFormers version on the hosts supports it")
    sized = config.get("pretrained_model_dir") or get_dotted(config, "model.model_config.num_hidden_layers")
    if not legacy and not sized:
        out.append("use_legacy: False without pretrained_model_dir: MindFormers reads the model's sizes "
                   "from pretrained_model_dir/config.json; set it")
    fmt = str(config.get("load_ckpt_format", "") or "")
    ckpt = str(config.get("load_checkpoint", "") or "")
    if fmt == "safetensors" and ckpt.endswith(".ckpt"):
        out.append(f"load_checkpoint {ckpt} is a .ckpt file but load_ckpt_format is safetensors")
    return out


def check_local_paths(spec: JobSpec) -> None:
    """Every input, checkpoint, tokenizer or code tree the job says is local must exist here."""
    items: list[tuple[str, str]] = [(f"inputs.{name}.local", ref.local) for name, ref in spec.inputs.items()
                                    if ref.local is not None]
    for key in ("checkpoint", "tokenizer"):
        ref = getattr(spec, key)
        if ref is not None and ref.local is not None:
            items.append((f"{key}.local", ref.local))
    if not isinstance(spec.code, str):
        items.append(("code.local", spec.code.local))
    for key, path in items:
        if not os.path.exists(path):
            raise InputError(f"local path {path} does not exist (relative paths are relative to the job file)",
                             source=spec.source, key=key)
