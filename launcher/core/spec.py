"""Job files: YAML -> frozen pydantic models, refused with the file, the key and a "did you mean".

A job file names a MindFormers template and says what to change in it, where it runs and
what to bring along. Public interface (used by render, plan, stage, launch, fetch)::

    load_job(path) -> JobSpec        # InputError naming file[:line] and dotted key
    parse_job(data, source, base_dir, text=None) -> JobSpec   # the pure core

Local paths in a job file are relative to the job file's directory; ``load_job`` stores
them absolute. ``template`` is looked up next to the job file first, then in the shipped
``configs/``. Secrets (``env: {X: {value: ..., secret: true}}`` or ``from_local``) print as
``***`` through :meth:`EnvValue.display` / :meth:`JobSpec.env_display`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from launcher.core import yamlio
from launcher.errors import InputError
from launcher.resources import package_path

CONFIGS_DIR = package_path("configs")  # the top-level configs/, shipped as launcher/configs
BUILTIN_ENTRY = "alaunch:run_cpu"  # the CPU entry shipped in launcher/entry/, staged with the job
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
DOTTED_KEY = re.compile(r"^\+?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
SECRET_MASK = "***"
MAX_JOB_BYTES = 1 << 20  # a job file is a short text file; refuse anything bigger before parsing it
# Values handed to the job verbatim (env values, entry args): never stripped, spaces are data.
LiteralStr = Annotated[str, StringConstraints(strip_whitespace=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class PathRef(_Model):
    """A file or directory: ``local`` (staged from this machine) or ``remote`` (already on every host)."""

    local: str | None = None
    remote: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> PathRef:
        if (self.local is None) == (self.remote is None):
            raise ValueError("give exactly one of 'local' (a path on this machine) or 'remote' (a path on the hosts)")
        if self.remote is not None and not self.remote.startswith(("/", "~")):
            raise ValueError(f"remote path {self.remote!r} must be absolute (or start with ~)")
        return self

    @property
    def is_local(self) -> bool:
        return self.local is not None


class InputSpec(PathRef):
    """A named input; ``fills`` is the dotted config key that gets its path on the hosts."""

    fills: str | None = None

    @field_validator("fills")
    @classmethod
    def _dotted(cls, value: str | None) -> str | None:
        if value is not None and not DOTTED_KEY.match(value):
            raise ValueError(f"{value!r} is not a dotted config key like train_dataset.data_loader.dataset_dir")
        return value


class EntrySpec(_Model):
    """What msrun starts: MindFormers' run_mindformer.py, a research script, or alaunch's CPU entry.

    ``script``: ``alaunch:run_cpu`` (the built-in CPU entry), a path relative to the staged
    ``code`` tree (``run_mindformer.py``), or an absolute path on the hosts.
    """

    script: str = "run_mindformer.py"
    args: tuple[LiteralStr, ...] = ()

    @property
    def builtin(self) -> bool:
        return self.script == BUILTIN_ENTRY

    @field_validator("script")
    @classmethod
    def _script(cls, value: str) -> str:
        if value.startswith("alaunch:") and value != BUILTIN_ENTRY:
            raise ValueError(f"unknown built-in entry {value!r}; the built-in one is {BUILTIN_ENTRY!r}")
        if not value.startswith("alaunch:") and not value.endswith(".py"):
            raise ValueError(f"script {value!r} must be a .py file (or {BUILTIN_ENTRY!r})")
        return value


class CodeSpec(_Model):
    """A local MindFormers (or research) source tree to stage into the job's ``code/``."""

    local: str
    exclude: tuple[str, ...] = (".git", "__pycache__", "output", "*.ckpt")


class EnvValue(_Model):
    """An env value: literal, read from this machine's env at launch, and/or secret (printed ``***``)."""

    value: LiteralStr | None = None
    from_local: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    secret: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> EnvValue:
        if (self.value is None) == (self.from_local is None):
            raise ValueError("give exactly one of 'value' or 'from_local'")
        return self

    @property
    def is_secret(self) -> bool:
        """Values taken from the local environment are treated as secret too (tokens live there)."""
        return self.secret or self.from_local is not None

    def display(self) -> str:
        """What may be printed: the value, or ``***`` for secrets."""
        if self.is_secret:
            return SECRET_MASK
        return self.value or ""

    def resolve(self, environ: Mapping[str, str]) -> str:
        """The real value to send (never print it): InputError if from_local is unset here."""
        if self.from_local is not None:
            if self.from_local not in environ:
                raise InputError(f"environment variable {self.from_local} is not set on this machine",
                                 key=f"env.{self.from_local}")
            return environ[self.from_local]
        return self.value or ""


class OutputsSpec(_Model):
    """Globs relative to the job directory, fetched home by group."""

    logs: tuple[str, ...] = ("msrun_log/*.log", "output/log/**/*.log")
    checkpoints: tuple[str, ...] = ()
    predictions: tuple[str, ...] = ()
    # MindFormers' per-rank event files, where a config with ``tensorboard.tensorboard_dir:
    # output/tensorboard`` (relative: the workers run in the job dir) puts them
    tensorboard: tuple[str, ...] = ("output/tensorboard/**/events.out.tfevents.*",)

    @field_validator("logs", "checkpoints", "predictions", "tensorboard")
    @classmethod
    def _relative(cls, globs: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in globs:
            if pattern.startswith("/") or ".." in pattern.split("/"):
                raise ValueError(f"glob {pattern!r} must be relative to the job directory, without '..'")
        return globs


ScalarOverride = bool | int | float | str | None | list[Any] | dict[Any, Any]


# msrun flags alaunch sets itself (plan.build_plan): not allowed in msrun_args.
MSRUN_OWN_FLAGS = frozenset({"--worker_num", "--local_worker_num", "--master_addr", "--master_port", "--node_rank",
                             "--log_dir", "--join", "--cluster_time_out"})


class JobSpec(_Model):
    """One job file. ``source`` and ``base_dir`` are set by the loader, not written by users."""

    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["finetune", "eval", "predict"]
    template: str
    overrides: dict[str, ScalarOverride] = Field(default_factory=dict)
    nodes: int | Literal["all"] = 1
    cards_per_node: int | Literal["all"] = 1
    entry: EntrySpec = Field(default_factory=EntrySpec)
    code: Literal["installed"] | CodeSpec = "installed"
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    checkpoint: PathRef | None = None
    tokenizer: PathRef | None = None
    env: dict[str, LiteralStr | int | float | bool | EnvValue] = Field(default_factory=dict)
    outputs: OutputsSpec = Field(default_factory=OutputsSpec)
    seed: int | None = None
    msrun_args: list[LiteralStr] = Field(default_factory=list)  # extra msrun flags, e.g. --bind_core=True
    telemetry_every: float = Field(default=5.0, ge=0)  # s between npu-smi samples while followed; 0: off
    source: str | None = Field(default=None, exclude=True)
    base_dir: str | None = Field(default=None, exclude=True)

    @field_validator("msrun_args")
    @classmethod
    def _msrun_args(cls, value: list[str]) -> list[str]:
        for arg in value:
            flag = arg.split("=", 1)[0]
            if not re.fullmatch(r"--[a-z][a-z0-9_]*", flag):
                raise ValueError(f"{arg!r} is not an msrun flag; write '--name=value' (e.g. '--bind_core=True')")
            if flag in MSRUN_OWN_FLAGS:
                raise ValueError(f"{flag} is set by alaunch (from the hostfile, the job and submit's options); "
                                 "remove it from msrun_args")
        return value

    @field_validator("nodes", "cards_per_node")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"must be a positive integer or 'all', got {value}")
        return value

    @field_validator("overrides")
    @classmethod
    def _dotted_keys(cls, value: dict[Any, Any]) -> dict[Any, Any]:
        for key in value:
            if not isinstance(key, str) or not DOTTED_KEY.match(key):
                raise ValueError(f"override key {key!r} is not a dotted config key like runner_config.epochs")
        return value

    @field_validator("inputs", "env")
    @classmethod
    def _names(cls, value: dict[Any, Any], info: ValidationInfo) -> dict[Any, Any]:
        pattern = ENV_NAME_PATTERN if info.field_name == "env" else r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"
        for key in value:
            if not re.match(pattern, str(key)):
                raise ValueError(f"name {key!r} is not allowed (use letters, digits and _)")
        return value

    @model_validator(mode="after")
    def _entry_needs_code(self) -> JobSpec:
        script = self.entry.script
        if self.code == "installed" and not self.entry.builtin and not script.startswith(("/", "~")):
            raise ValueError(f"entry.script {script!r} is relative but code is 'installed': give an absolute "
                             f"path on the hosts, stage a code tree (code: {{local: PATH}}), or use {BUILTIN_ENTRY!r}")
        return self

    def env_values(self) -> dict[str, EnvValue]:
        """Every env entry as an EnvValue (plain scalars become non-secret values)."""
        out: dict[str, EnvValue] = {}
        for key, value in self.env.items():
            if isinstance(value, EnvValue):
                out[key] = value
            else:
                text = ("true" if value else "false") if isinstance(value, bool) else str(value)
                out[key] = EnvValue(value=text)
        return out

    def env_display(self) -> dict[str, str]:
        """Env safe to print: secrets masked as ``***``."""
        return {key: value.display() for key, value in self.env_values().items()}

    def template_path(self) -> Path:
        """The template file: next to the job file if it exists there, else under configs/."""
        candidates = []
        if self.base_dir:
            candidates.append(Path(self.base_dir) / self.template)
        candidates.append(CONFIGS_DIR / self.template)
        for path in candidates:
            if path.is_file():
                return path.resolve()
        raise InputError(f"template {self.template!r} not found (looked in "
                         f"{', '.join(str(p.parent) for p in candidates)}); shipped: {', '.join(shipped_templates())}",
                         source=self.source, key="template")


def shipped_templates() -> list[str]:
    return sorted(str(p.relative_to(CONFIGS_DIR)) for p in CONFIGS_DIR.rglob("*.yaml"))


def _field_names(model: type[BaseModel]) -> list[str]:
    return [name for name in model.model_fields if name not in ("source", "base_dir")]


# fields whose values are name -> model mappings: the name part of a loc is skipped
_MAPPED = {"inputs": "InputSpec", "env": "EnvValue"}


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The pydantic model whose field names are valid at ``loc`` (for did-you-mean)."""
    model: Any = JobSpec
    parts = list(loc)
    while parts and model is not None:
        part = parts.pop(0)
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return _unwrap_model(model)
        model = _unwrap_model(fields[part].annotation)
        if part in _MAPPED and parts:
            parts.pop(0)  # the input / env name
    return _unwrap_model(model)


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _friendly(error: Mapping[str, Any], loc: tuple[str | int, ...]) -> str:
    kind = str(error.get("type", ""))
    message = str(error.get("msg", "invalid"))
    if kind == "extra_forbidden":
        unknown = str(loc[-1])
        parent_model = _model_at(loc[:-1]) if len(loc) > 1 else JobSpec
        valid = _field_names(parent_model) if parent_model else []
        close = difflib.get_close_matches(unknown, valid, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key{hint} (valid: {', '.join(valid)})"
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch" and loc and loc[0] == "name":
        return ("must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
                "(no spaces or shell characters)")
    if loc and loc[0] in ("nodes", "cards_per_node") and len(loc) == 1 and kind != "value_error":
        return "must be a positive integer or 'all'"
    if loc == ("code",):
        return "must be 'installed' (use the hosts' mindformers) or {local: PATH} (a source tree to stage)"
    if kind == "literal_error":
        return message.replace("Input should be", "must be")
    return message.removeprefix("Value error, ")


def _clean_loc(loc: tuple[str | int, ...], data: Any) -> tuple[str | int, ...]:
    """Keep the parts of pydantic's loc that are real keys in ``data`` (drops union-branch tags)."""
    out: list[str | int] = []
    node = data
    for index, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            out.append(part)
            node = node[part]
        elif index == len(loc) - 1 and isinstance(node, dict) and isinstance(part, str) \
                and part.isidentifier():
            out.append(part)  # a missing key: name it
    return tuple(out)


_RANK = {"extra_forbidden": 0, "value_error": 1, "missing": 2, "literal_error": 3}


def _pick(errors: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The most useful of pydantic's errors: unknown keys first, then our own checks, deepest first."""
    return sorted(errors, key=lambda e: (_RANK.get(e.get("type", ""), 5), -len(e["loc"])))[0]


def parse_job(data: Any, source: str = "<job>", base_dir: str | None = None, text: str | None = None) -> JobSpec:
    """Validate a parsed job mapping; the first problem becomes an InputError (file:line: key: what)."""
    if not isinstance(data, dict):
        raise InputError("a job file must be a mapping of keys to values", source=source, line=1)
    try:
        spec = JobSpec.model_validate({**data, "source": source, "base_dir": base_dir})
    except ValidationError as exc:
        first = _pick(exc.errors())
        loc = _clean_loc(tuple(first["loc"]), data)
        dotted = ".".join(str(p) for p in loc) or None
        line = yamlio.line_of(text, loc) if text else None
        raise InputError(_friendly(first, loc), source=source, line=line, key=dotted) from None
    if base_dir:
        spec = _absolute_locals(spec, Path(base_dir))
    return spec


R = TypeVar("R", bound=PathRef)


def _absolute_locals(spec: JobSpec, base: Path) -> JobSpec:
    """Local paths become absolute (relative to the job file), so later stages need no base_dir."""

    def absolute(path: str) -> str:
        return str((base / os.path.expanduser(path)).resolve()) if not os.path.isabs(path) else path

    def fix(ref: R | None) -> R | None:
        if ref is not None and ref.local is not None:
            return ref.model_copy(update={"local": absolute(ref.local)})
        return ref

    update: dict[str, Any] = {
        "inputs": {name: fix(ref) for name, ref in spec.inputs.items()},
        "checkpoint": fix(spec.checkpoint),
        "tokenizer": fix(spec.tokenizer),
    }
    if isinstance(spec.code, CodeSpec):
        update["code"] = spec.code.model_copy(update={"local": absolute(spec.code.local)})
    return spec.model_copy(update=update)


def redacted_text(spec: JobSpec, text: str) -> str:
    """The job file's text as it may be stored (registry) or shown: literal secret values as ``***``.

    Without literal secrets the text is returned unchanged (comments kept); with them, the
    parsed mapping is dumped again with each ``env.X.value`` of a ``secret: true`` entry masked.
    """
    if not any(getattr(ev, "secret", False) and getattr(ev, "value", None) for ev in spec.env.values()):
        return text
    import yaml

    data = yaml.safe_load(text)
    for raw in (data.get("env") or {}).values():
        if isinstance(raw, dict) and raw.get("secret") and "value" in raw:
            raw["value"] = SECRET_MASK
    return "# secret values replaced by *** by alaunch\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def masked_secrets(spec: JobSpec) -> list[str]:
    """The env names whose literal secret value was stored as ``***`` (see :func:`redacted_text`)."""
    return [name for name, ev in spec.env.items()
            if getattr(ev, "secret", False) and getattr(ev, "value", None) == SECRET_MASK]


def restore_secrets(stored: JobSpec, original: JobSpec | None, where: str) -> JobSpec:
    """``stored`` (rebuilt from the registry's redacted text) with its masked secret values taken
    from ``original`` (the job file read again), so a resume or a retry runs with the real
    values, not ``***`` (reproduced: attempt 2 ran with ``API_KEY=***``, silently). A secret
    the job file no longer gives is refused, naming it and the file (``where``)."""
    names = masked_secrets(stored)
    if not names:
        return stored
    env = dict(stored.env)
    for name in names:
        ev = original.env.get(name) if original is not None else None
        value = getattr(ev, "value", None) if ev is not None else None
        if value is None or value == SECRET_MASK:
            why = "is gone" if original is None else f"no longer sets env.{name}.value"
            raise InputError(f"env.{name} is a secret alaunch does not store, and the job file {why}; "
                             f"put the file back (or submit the job again)", source=where, key=f"env.{name}")
        current = env[name]
        if isinstance(current, EnvValue):  # masked_secrets names only these
            env[name] = current.model_copy(update={"value": value})
    return stored.model_copy(update={"env": env})


def load_job(path: str | os.PathLike[str]) -> JobSpec:
    """Read, parse and validate a job file (duplicate keys, anchors and non-mappings refused)."""
    source = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_JOB_BYTES:
            raise InputError(f"job file is {size} bytes; expected a short YAML text file "
                             f"(at most {MAX_JOB_BYTES} bytes)", source=source)
        data_bytes = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read job file: {exc.strerror}", source=source) from None
    try:
        text = data_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data_bytes[: exc.start].count(b"\n") + 1
        raise InputError(f"not UTF-8 text (byte 0x{data_bytes[exc.start]:02x}); save the job file as UTF-8",
                         source=source, line=line) from None
    data = yamlio.loads(text, source)
    return parse_job(data, source, str(Path(path).resolve().parent), text=text)
