"""Template + job + hosts + layout -> the MindFormers YAML the hosts run, and what it implies.

Pure: the template's text is passed in (``render_job`` reads it from the spec only as a
convenience at the edge), nothing is written. Public interface::

    render_job(spec, hosts, layout, sets=[...], template_text=None) -> Rendered
    render_config(template, overrides, sets, world, ...) -> (config, derived)   # the core

Rules: every override / ``--set`` key must exist in the template (``+key=value`` adds one);
values are YAML-typed. Derived: ``run_mode`` from the job kind, ``use_parallel`` (world > 1),
``parallel_config.data_parallel`` = world / (mp x pp), ``seed``, and the paths
(``output_dir``, inputs' ``fills`` keys, ``load_checkpoint``, tokenizer ``vocab_file``)
rewritten to where staging puts them (:class:`launcher.core.layout.JobLayout`). A value the
user set explicitly is never silently replaced: a conflict is an InputError.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from launcher.core import lora, yamlio
from launcher.core.layout import JobLayout
from launcher.core.units import count
from launcher.errors import InputError

if TYPE_CHECKING:
    from launcher.core.hostfile import Host
    from launcher.core.spec import JobSpec, PathRef

Config = dict[str, Any]  # a MindFormers config as parsed YAML

RUN_MODES = {"finetune": ("finetune", "train"), "eval": ("eval",), "predict": ("predict",)}
TOKENIZER_KEY = "processor.tokenizer.vocab_file"
CHECKPOINT_KEY = "load_checkpoint"


@dataclass(frozen=True)
class World:
    """How many cards the job uses: ``nodes`` hosts with ``cards_per_node`` each."""

    nodes: int
    cards_per_node: int
    host_names: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return self.nodes * self.cards_per_node


@dataclass(frozen=True)
class Rendered:
    config: Config
    text: str
    sha256: str
    derived: dict[str, Any]
    changes: tuple[tuple[str, Any, Any], ...]  # (dotted key, template value, rendered value)
    source: str = "<template>"

    def summary_rows(self) -> list[tuple[str, str]]:
        """(label, value) rows for ``render --summary``."""
        d = self.derived
        rows = [
            ("model family", str(d.get("family") or "unknown")),
            ("world size", f"{d['world_size']} ({d['nodes']} node(s) x {d['cards_per_node']} card(s))"),
            ("parallel (dp x mp x pp)", f"{d['data_parallel']} x {d['model_parallel']} x {d['pipeline_stage']}"
                                        f"  use_parallel={d['use_parallel']}"),
            ("micro_batch_num", str(d["micro_batch_num"])),
            ("batch size (per card / global)", f"{d['batch_size']} / {d['global_batch_size']}"),
            ("seq_length", str(d["seq_length"])),
            ("run_mode", str(d["run_mode"])),
        ]
        if d.get("lora_rank") is not None:
            reached = ", ".join(d["lora_matched"]) or ("nothing" if d.get("trainable_params") is not None
                                                       else "unknown")
            rows += [("LoRA rank / alpha", f"{d['lora_rank']} / {d['lora_alpha']}"),
                     ("LoRA targets", f"{d['target_modules']} -> {reached}")]
        if d.get("trainable_params") is not None:
            rows.append(("trainable params", f"{d['trainable_params']:,} ({d['trainable_percent']}) of "
                                             f"{count(d['total_params'])} ({count(d['base_params'])} base + LoRA)"))
        return rows


# ---------------------------------------------------------------- dotted keys

def get_dotted(config: Config, key: str, default: Any = None) -> Any:
    node: Any = config
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return default
    return node


def has_dotted(config: Config, key: str) -> bool:
    sentinel = object()
    return get_dotted(config, key, sentinel) is not sentinel


def set_dotted(config: Config, key: str, value: Any, *, create: bool, source: str) -> None:
    """Set ``key``; unless ``create``, every part must already exist (did-you-mean otherwise)."""
    parts = key.split(".")
    node = config
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if not isinstance(node, dict):
            prefix = ".".join(parts[:depth])
            raise InputError(f"cannot set {key}: {prefix} is a {type(node).__name__}, not a mapping",
                             source=source, key=key)
        if part not in node:
            if not create:
                close = difflib.get_close_matches(part, [str(k) for k in node], n=1, cutoff=0.6)
                where = ".".join(parts[:depth]) or "the top level"
                hint = f"did you mean {'.'.join(parts[:depth] + [close[0]])!r}? " if close else ""
                raise InputError(f"no such key in the template (under {where}); {hint}"
                                 f"write +{key}=VALUE to add it", source=source, key=key)
            if not last:
                node[part] = {}
        if last:
            node[part] = value
        else:
            node = node[part]


def parse_set(item: str) -> tuple[str, Any, bool]:
    """``key=value`` / ``+key=value`` -> (key, YAML-typed value, create)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    create = key.startswith("+")
    key = key.lstrip("+")
    if not sep or not key:
        raise InputError(f"--set {item!r}: expected key=value (or +key=value to add a key)", key=key or None)
    if not all(part.replace("_", "a").isalnum() for part in key.split(".")):
        raise InputError(f"--set {item!r}: {key!r} is not a dotted key like runner_config.epochs", key=key)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise InputError(f"--set {item!r}: the value is not valid YAML ({getattr(exc, 'problem', exc)})",
                         key=key) from None
    return key, value, create


# --set keys that belong to the job file, not the template (issue #33: `--set nodes=all` was
# refused as "no such key in the template"); they go through the job file's own validation
JOB_SET_KEYS = ("name", "nodes", "cards_per_node", "env", "seed")


def is_job_set(item: str) -> bool:
    return item.partition("=")[0].strip().lstrip("+").split(".")[0] in JOB_SET_KEYS


def template_sets(sets: Iterable[str]) -> list[str]:
    """The ``--set`` items for the template (the job-file ones are applied by :func:`apply_job_sets`)."""
    return [s for s in sets if not is_job_set(s)]


def with_sets(data: Mapping[str, Any], sets: Mapping[str, Any]) -> dict[str, Any]:
    """A job file's mapping with a pipeline step's ``set:`` (or a sweep trial's) applied: the
    job-file keys (``nodes``, ``cards_per_node``, ``seed``, ``name``, ``env.X``) on the job itself,
    the rest as template overrides. A step could not make a job of ``cards_per_node: all`` take
    one card (``set: {cards_per_node: 1}`` went to the template and was refused there), so a
    sweep of the tiny job's pipeline took every card of a host per trial. The job is validated
    afterwards, as its file is (``parse_job``)."""
    out = dict(data)
    overrides = dict(out.get("overrides") or {})
    for key, value in sets.items():
        parts = key.lstrip("+").split(".")
        if parts[0] not in JOB_SET_KEYS:
            overrides[key] = value
        elif parts[0] == "env" and len(parts) == 2:
            out["env"] = {**(out.get("env") or {}), parts[1]: value}
        elif len(parts) == 1 and parts[0] != "env":
            out[parts[0]] = value
        else:
            raise InputError("a job-file key: give nodes, cards_per_node, seed, name or env.VARIABLE "
                             "(one variable)", key=key)
    if overrides:
        out["overrides"] = overrides
    return out


def apply_job_sets(spec: JobSpec, sets: Iterable[str]) -> JobSpec:
    """``--set nodes=all``, ``cards_per_node=1``, ``name=x``, ``env.HCCL_BUFFSIZE=120``,
    ``seed=7`` applied to the job, validated as the job file is (one line naming ``--set KEY``
    and what is valid)."""
    from launcher.core.spec import JobSpec, parse_job

    items = [parse_set(s) for s in sets if is_job_set(s)]
    if not items:
        return spec
    data = spec.model_dump(mode="python", exclude={"source", "base_dir"}, exclude_none=True)
    for key, value, _ in items:
        parts = key.split(".")
        if parts[0] != "env" and len(parts) > 1:
            raise InputError(f"--set {key}: {parts[0]} is a job-file key with no sub-keys", key=key)
        if parts[0] == "env" and len(parts) != 2:
            raise InputError(f"--set {key}: give one variable, e.g. env.HCCL_BUFFSIZE=120", key=key)
        if len(parts) == 2:
            data.setdefault("env", {})[parts[1]] = value
        else:
            data[key] = value
    out = parse_job(data, source="--set")  # "--set: nodes: ..." with what is valid
    assert isinstance(out, JobSpec)
    return out.model_copy(update={"source": spec.source, "base_dir": spec.base_dir})


# ---------------------------------------------------------------- the core

def _int_at(config: Config, key: str, default: int, source: str) -> int:
    value = get_dotted(config, key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"must be a positive integer, got {value!r}", source=source, key=key)
    return value


def render_config(template: Config, *, overrides: dict[str, Any] | None = None, sets: Sequence[str] = (),
                  world: World | None = None, kind: str | None = None, seed: int | None = None,
                  paths: dict[str, str] | None = None, source: str = "<template>") -> tuple[Config, dict[str, Any]]:
    """Apply overrides, then --set, then derived values; returns (config, derived).

    ``paths`` maps dotted keys to host paths (output_dir, dataset dirs...) and is applied
    last (they only exist once a layout is known). Keys the user set explicitly are
    recorded so derived values never overwrite them silently.
    """
    config = copy.deepcopy(template)
    explicit: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        create = key.startswith("+")
        key = key.lstrip("+")
        set_dotted(config, key, value, create=create, source=source)
        explicit[key] = value
    for item in sets:
        key, value, create = parse_set(item)
        try:
            set_dotted(config, key, value, create=create, source="--set")
        except InputError:
            job_key = difflib.get_close_matches(key, JOB_SET_KEYS, n=1, cutoff=0.6)
            if "." in key or not job_key:
                raise
            raise InputError(f"no such key in the template or the job file; did you mean {job_key[0]!r} "
                             f"(a job-file key)? write +{key}=VALUE to add it to the template",
                             source="--set", key=key) from None
        explicit[key] = value

    if seed is not None:
        if "seed" in explicit and explicit["seed"] != seed:
            raise InputError(f"seed is {seed} in the job but {explicit['seed']} in the overrides; keep one",
                             source=source, key="seed")
        config["seed"] = seed
    if kind is not None:
        allowed = RUN_MODES[kind]
        current = config.get("run_mode")
        if "run_mode" in explicit and current not in allowed:
            raise InputError(f"run_mode {current!r} contradicts the job kind {kind!r} (use {' or '.join(allowed)})",
                             source=source, key="run_mode")
        if current not in allowed:
            config["run_mode"] = allowed[0]

    mp = _int_at(config, "parallel_config.model_parallel", 1, source)
    pp = _int_at(config, "parallel_config.pipeline_stage", 1, source)
    dp_template = _int_at(config, "parallel_config.data_parallel", 1, source)
    if world is not None:
        size = world.size
        if "parallel_config.data_parallel" in explicit:
            if dp_template * mp * pp != size:
                raise InputError(f"data_parallel x model_parallel x pipeline_stage = {dp_template} x {mp} x {pp} = "
                                 f"{dp_template * mp * pp}, but the job runs on {size} card(s)",
                                 source=source, key="parallel_config.data_parallel")
            dp = dp_template
        else:
            if size % (mp * pp):
                raise InputError(f"world size {size} is not divisible by model_parallel x pipeline_stage = "
                                 f"{mp} x {pp}; use a card count that is a multiple of {mp * pp}",
                                 source=source, key="parallel_config.model_parallel")
            dp = size // (mp * pp)
            if "parallel_config" in config and isinstance(config["parallel_config"], dict):
                config["parallel_config"]["data_parallel"] = dp
        use_parallel = size > 1
        if "use_parallel" in explicit and bool(explicit["use_parallel"]) != use_parallel:
            raise InputError(f"use_parallel: {explicit['use_parallel']} but the job runs on {size} card(s) "
                             f"(it must be {use_parallel})", source=source, key="use_parallel")
        config["use_parallel"] = use_parallel
    else:
        dp = dp_template
        size = dp * mp * pp

    for key, value in (paths or {}).items():
        if key in explicit and explicit[key] != value:
            raise InputError("set both by the job's inputs/checkpoint/tokenizer and by an override; keep one",
                             source=source, key=key)
        set_dotted(config, key, value, create=True, source=source)

    derived = derive(config, world or World(1, size), dp=dp, mp=mp, pp=pp, source=source)
    return config, derived


def derive(config: Config, world: World, *, dp: int, mp: int, pp: int, source: str) -> dict[str, Any]:
    """Numbers a human checks before launching: parallel layout, batch sizes, LoRA size."""
    batch = _int_at(config, "runner_config.batch_size", 1, source)
    micro = _int_at(config, "parallel_config.micro_batch_num", 1, source)
    accumulation = _int_at(config, "runner_config.gradient_accumulation_steps", 1, source)
    model_config = get_dotted(config, "model.model_config", {}) or {}
    pet, pet_key = lora.pet_config_of(config)
    family = lora.family_for(config)
    derived: dict[str, Any] = {
        "world_size": world.size, "nodes": world.nodes, "cards_per_node": world.cards_per_node,
        "hosts": list(world.host_names),
        "data_parallel": dp, "model_parallel": mp, "pipeline_stage": pp, "micro_batch_num": micro,
        "use_parallel": bool(config.get("use_parallel")),
        "batch_size": batch,
        "global_batch_size": batch * dp * (micro if pp > 1 else 1) * accumulation,
        "seq_length": model_config.get("seq_length"),
        "run_mode": config.get("run_mode"),
        "lora_rank": pet.get("lora_rank") if pet else None,
        "lora_alpha": pet.get("lora_alpha") if pet else None,
        "target_modules": pet.get("target_modules") if pet else None,
        "lora_matched": [], "trainable_params": None, "total_params": None, "trainable_percent": None,
        "base_params": None,
        "family": family.key if family else None, "warnings": [],
    }
    if pet_key == "model.arch.pet":
        derived["warnings"].append("model.arch.pet is the MindFormers 0.x layout (1.x reads "
                                   "model.model_config.pet_config); read here for counting only")
    if not model_config:
        return derived
    if family is None:
        arch = get_dotted(config, "model.arch.type") or model_config.get("type") or "?"
        derived["warnings"].append(f"model {arch}: not a model family alaunch knows "
                                   f"({', '.join(f.key for f in lora.FAMILIES)}); trainable parameter count unknown")
        return derived
    try:
        counted = lora.count(model_config, pet, family)
    except lora.ModelShapeError as exc:
        raise InputError(exc.detail, source=source, key=f"model.model_config.{exc.key}") from None
    except lora.UnknownShape as exc:
        derived["warnings"].append(f"{family.label}: {exc}; trainable parameter count unknown")
        return derived
    except ValueError as exc:
        raise InputError(str(exc), source=source, key=f"{pet_key}.target_modules") from None
    derived.update(lora_matched=list(counted.matched), trainable_params=counted.trainable,
                   total_params=counted.total, trainable_percent=counted.percent_text,
                   base_params=counted.total - counted.lora)
    return derived


def diff_changes(before: Any, after: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Leaf-level differences as (dotted key, before, after); missing side is ``None``."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in list(before) + [k for k in after if k not in before]:
            child = f"{prefix}.{key}" if prefix else str(key)
            out += diff_changes(before.get(key), after.get(key), child)
        return out
    return [] if before == after else [(prefix, before, after)]


# ---------------------------------------------------------------- job level

def resolve_world(spec: JobSpec, hosts: Sequence[Host]) -> World:
    """nodes / cards_per_node of the job against the hosts (``all`` = every host / every slot)."""
    if not hosts:
        raise InputError("no hosts to run on (give -H HOSTFILE or --local)", source=spec.source, key="nodes")
    nodes = len(hosts) if spec.nodes == "all" else spec.nodes
    if nodes > len(hosts):
        raise InputError(f"the job asks for {nodes} node(s) but the hostfile has {len(hosts)} "
                         f"({', '.join(h.name for h in hosts)})", source=spec.source, key="nodes")
    chosen = list(hosts)[:nodes]
    slots = [len(h.slot_ids) for h in chosen]
    if spec.cards_per_node == "all":
        cards = min(slots)
        if len(set(slots)) > 1:
            raise InputError(f"cards_per_node: all, but the hosts have different slot counts {slots}; "
                             f"give a number (msrun needs the same count on every node)",
                             source=spec.source, key="cards_per_node")
    else:
        cards = spec.cards_per_node
        short = [h.name for h, n in zip(chosen, slots, strict=False) if n < cards]
        if short:
            raise InputError(f"the job asks for {cards} card(s) per node but {', '.join(short)} "
                             f"has fewer slots", source=spec.source, key="cards_per_node")
    return World(nodes, cards, tuple(h.name for h in chosen))


def host_paths(spec: JobSpec, layout: JobLayout) -> dict[str, str]:
    """Dotted config key -> the path on the hosts (staged local files live under the layout)."""
    paths = {"output_dir": layout.output}
    for name, ref in spec.inputs.items():
        if ref.fills:
            paths[ref.fills] = (layout.data_path(name, posixpath.basename(ref.local.rstrip("/")))
                                if ref.local is not None else _remote(ref))
    if (ckpt := spec.checkpoint) is not None:
        paths[CHECKPOINT_KEY] = (posixpath.join(layout.checkpoint_in, posixpath.basename(ckpt.local.rstrip("/")))
                                 if ckpt.local is not None else _remote(ckpt))
    if (tok := spec.tokenizer) is not None:
        paths[TOKENIZER_KEY] = (posixpath.join(layout.tokenizer, posixpath.basename(tok.local))
                                if tok.local is not None else _remote(tok))
    return paths


def _remote(ref: PathRef) -> str:
    """The path on the hosts of a ref that is not local (PathRef's validator: exactly one is given)."""
    assert ref.remote is not None, ref
    return ref.remote


def render_job(spec: JobSpec, hosts: Sequence[Host], layout: JobLayout, sets: Iterable[str] = (),
               template_text: str | None = None) -> Rendered:
    """The whole render for one job on these hosts (static checks are in launcher.core.validate)."""
    template_source = str(spec.template_path()) if template_text is None else spec.template
    if template_text is None:
        with open(template_source, encoding="utf-8") as handle:
            template_text = handle.read()
    template = yamlio.loads(template_text, template_source, allow_aliases=True)
    world = resolve_world(spec, hosts)
    config, derived = render_config(template, overrides=spec.overrides, sets=template_sets(sets), world=world,
                                    kind=spec.kind, seed=spec.seed, paths=host_paths(spec, layout),
                                    source=spec.source or template_source)
    text = yamlio.dumps(config)
    return Rendered(config=config, text=text, sha256=hashlib.sha256(text.encode()).hexdigest(),
                    derived=derived, changes=tuple(diff_changes(template, config)), source=template_source)
