"""The recipe model (jobs/data/math_recipe.yaml): what `alaunch data prepare` samples and how.

A recipe names a quota per bucket (families, with arithmetic split by operation and
powers by exponent, as the seed report sampled them), what to do with rows of no
family (``unclassified: drop | keep`` — required, so it is never silent), which
answers get reasoning templates or one-decimal rounding, and the prompt. Bad recipes
fail with the file, line and key named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from launcher.data import families as F
from launcher.data.templates import ALPACA_PROMPT, ROUNDABLE, TEMPLATED
from launcher.errors import InputError

UNCLASSIFIED = "unclassified"


class Recipe(BaseModel):
    """A validated data recipe; quotas keep the file's order (it fixes the sampling order)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "math"
    seed: int = 42
    prompt: str = ALPACA_PROMPT
    unclassified: Literal["drop", "keep"]
    quotas: dict[str, int]
    default_quota: int = Field(0, ge=0)
    templates: list[str] = []
    round_one_decimal: list[str] = []

    @field_validator("prompt")
    @classmethod
    def _has_question(cls, v: str) -> str:
        if "{question}" not in v:
            raise ValueError("must contain {question}, where the problem goes")
        return v

    @field_validator("quotas")
    @classmethod
    def _known_buckets(cls, v: dict[str, int]) -> dict[str, int]:
        for name, quota in v.items():
            if name != UNCLASSIFIED and not F.is_bucket(name):
                raise ValueError(f"unknown bucket {name!r}; valid: {', '.join(valid_buckets())}")
            if not isinstance(quota, int) or quota < 0:
                raise ValueError(f"quota of {name!r} must be a whole number >= 0, got {quota!r}")
        return v

    @field_validator("templates")
    @classmethod
    def _known_templates(cls, v: list[str]) -> list[str]:
        return _subset(v, TEMPLATED)

    @field_validator("round_one_decimal")
    @classmethod
    def _known_rounding(cls, v: list[str]) -> list[str]:
        return _subset(v, ROUNDABLE)

    def quota(self, bucket: str) -> int | None:
        """The bucket's quota; None for `unclassified: keep` without a quota (take all)."""
        if bucket == UNCLASSIFIED and UNCLASSIFIED not in self.quotas:
            return None
        return self.quotas.get(bucket, self.default_quota)


def _subset(values: list[str], allowed: tuple[str, ...]) -> list[str]:
    for value in values:
        if value not in allowed:
            raise ValueError(f"unknown {value!r}; valid: {', '.join(allowed)}")
    return values


def valid_buckets() -> list[str]:
    ops = list(F.OPERATION_BUCKETS.values())
    rest = [f for f in F.FAMILIES if f not in (F.ARITHMETIC, F.POWER)]
    return ops + ["power_<N>"] + rest + [UNCLASSIFIED]


def _key_lines(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    """(key, subkey, ...) -> 1-based line of that key in the YAML source."""
    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            path = prefix + (k.value,)
            lines[path] = k.start_mark.line + 1
            lines.update(_key_lines(v, path))
    return lines


def load_recipe(path: Path) -> Recipe:
    """Read and validate a recipe file; every problem names file, line and key."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read recipe: {exc}", source=source) from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text) if data else None
        lines = _key_lines(node) if node is not None else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(f"not valid YAML: {getattr(exc, 'problem', exc)}", source=source,
                         line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise InputError("a recipe is a YAML mapping with at least `unclassified` and `quotas`",
                         source=source)
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(p) for p in err["loc"])
        line = None
        for n in range(len(loc), 0, -1):
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "literal_error" and loc == ("unclassified",):
            msg = "must be `drop` or `keep` (what to do with rows of no family)"
        raise InputError(msg, source=source, line=line, key=".".join(loc)) from None
