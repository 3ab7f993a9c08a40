"""Sweep files: a base (job or pipeline file), a search space, an objective, a budget; pure.

A sweep (``jobs/sweeps/*.yaml``) is "try these settings on my hosts and tell me which is best"::

    name: tiny-lr
    base: ../tiny_lora_cpu.yaml           # a job file, or a pipeline file (then ``step:`` names
    job: {nodes: 1, cards_per_node: 1}    # the job step the overrides go to)
    set: {runner_config.epochs: 1}        # fixed overrides for every trial
    space:
      grid: {learning_rate: [1.e-3, 1.e-2], lora_rank: [8, 16]}   # or list: [{...}, ...]
      derived: {lora_alpha: "{lora_rank} * 2"}                    # or random: {n, seed, params}
    objective: {metric: final_loss, goal: min}
    budget: {max_parallel: 4, max_trials: 16, card_hours: 10}
    prune: {nan: true, median: {k: 2, min_steps: 5}}              # both off by default

A space key is a dotted template key, or the last part of exactly one (``lora_rank`` ->
``model.model_config.pet_config.lora_rank``); ``seed``, ``nodes`` and ``cards_per_node`` are the
job's own fields. A key the template lacks is refused with "did you mean" before anything runs
(:func:`resolve_keys`). Derived values are arithmetic over the other keys, parsed with ``ast``
and evaluated by :func:`safe_eval` (numbers, + - * / // % **, min/max/int/round, never
``eval``). A trial's identity is the hash of its resolved overrides, job fields, seed and the
base's identity: a re-run with the same file and base finds its finished trials again.

Public interface::

    parse_sweep(data, source, base_dir, text) -> Sweep      # InputError: file:line: key: what
    load_sweep(path) -> Sweep
    settings(sweep) -> list[dict]                         # the space's points, in order, seeded
    template_keys(config) -> list[str]                    # every dotted key of a template
    resolve_keys(sweep, keys) -> dict[name, dotted]       # did-you-mean for unknown keys
    trials(sweep, keymap, base_identity, base_seed) -> list[Trial]
    prune_reason(curve, others, rules) -> str | None      # NaN/inf and the median-stopping rule
    order(rows, goal) -> rows                             # the leaderboard's order
    summary(trials, info) -> {counts, best}               # a sweep in one line
    place(free, nodes, cards) -> hosts | None             # where the next trial's cards are
    waves(capacity, shapes, max_parallel)                 # the dry run's schedule
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import itertools
import json
import math
import operator
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from launcher.core import yamlio
from launcher.errors import InputError

TOP_KEYS = ("name", "description", "base", "step", "job", "set", "space", "objective", "budget", "prune", "seed")
SPACE_KEYS = ("grid", "list", "random", "derived")
RANDOM_KEYS = ("n", "seed", "params")
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int")
JOB_KEYS = ("seed", "nodes", "cards_per_node")  # a trial's job fields (not template keys)
GOALS = ("min", "max")
# Numbers a trial has without a pipeline: from its training job's logs.
JOB_METRICS = ("final_loss", "min_loss", "steps", "duration_s", "card_hours")
SCORE_FIELDS = ("accuracy", "math_accuracy", "em", "f1")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")
TRIAL_STATES = ("pending", "queued", "running", "succeeded", "failed", "pruned", "cancelled", "skipped")
DONE_STATES = ("succeeded", "pruned")  # a re-run does not run these again
MAX_TRIALS = 10_000


@dataclass(frozen=True)
class Objective:
    metric: str = "final_loss"
    goal: str = "min"

    @property
    def step(self) -> str | None:
        """The pipeline step a ``STEP.field`` metric reads (None: a job metric)."""
        return self.metric.split(".", 1)[0] if "." in self.metric else None


@dataclass(frozen=True)
class Budget:
    max_parallel: int = 1
    max_trials: int | None = None
    card_hours: float | None = None


@dataclass(frozen=True)
class PruneRules:
    nan: bool = False  # a loss that is NaN or inf
    median: bool = False  # the median-stopping rule
    k: float = 2.0  # prune above k x the median of the others at the same step
    min_steps: int = 1  # ... once the trial reached this step
    min_trials: int = 2  # ... and at least this many others did

    @property
    def any(self) -> bool:
        return self.nan or self.median


@dataclass(frozen=True)
class Sweep:
    name: str
    base: str  # absolute path of the job or pipeline file
    source: str = "<sweep>"
    text: str | None = None
    description: str = ""
    step: str | None = None
    job: dict[str, Any] = field(default_factory=dict)
    sets: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    listed: tuple[dict[str, Any], ...] = ()
    random_n: int = 0
    random_seed: int = 0
    params: dict[str, tuple[str, Any]] = field(default_factory=dict)  # name -> (distribution, args)
    derived: dict[str, str] = field(default_factory=dict)
    objective: Objective = Objective()
    budget: Budget = Budget()
    prune: PruneRules = PruneRules()
    seed: int | None = None

    def keys(self) -> list[str]:
        """Every swept or derived name, in file order (the leaderboard's columns)."""
        names = [*self.grid, *(k for s in self.listed for k in s), *self.params, *self.derived]
        return list(dict.fromkeys(names))

    def line(self, *path: str | int) -> int | None:
        return yamlio.line_of(self.text, tuple(path)) if self.text else None

    def error(self, message: str, *path: str | int) -> InputError:
        return InputError(message, source=self.source, line=self.line(*path),
                          key=".".join(str(p) for p in path) or None)


@dataclass(frozen=True)
class Trial:
    id: str  # the identity's first 12 hex digits
    identity: str
    position: int
    params: dict[str, Any]  # swept and derived names -> values
    overrides: dict[str, Any]  # dotted template key -> value
    job: dict[str, Any]  # job fields (nodes, cards_per_node) for this trial
    seed: int | None


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# ---------------------------------------------------------------- parse

def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def parse_sweep(data: Any, source: str = "<sweep>", base_dir: str | None = None, text: str | None = None) -> Sweep:
    """Validate a parsed sweep mapping; the first problem is an InputError (file:line: key: what)."""

    def fail(message: str, *path: str | int) -> NoReturn:
        line = yamlio.line_of(text, tuple(path)) if text else None
        raise InputError(message, source=source, line=line, key=".".join(str(p) for p in path) or None)

    def mapping(value: Any, *path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            fail("must be a mapping", *path)
        return value

    def known(value: Mapping[str, Any], valid: Sequence[str], *path: str) -> None:
        for key in value:
            if key not in valid:
                fail(f"unknown key{did_you_mean(str(key), valid)} (valid: {', '.join(valid)})", *path, str(key))

    if not isinstance(data, dict):
        raise InputError("a sweep file must be a mapping with 'name', 'base' and 'space'", source=source, line=1)
    known(data, TOP_KEYS)
    name = data.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        fail("is required: 1-48 letters, digits, '.', '_' or '-'", "name")
    base = data.get("base")
    if not isinstance(base, str) or not base:
        fail("is required: the job file or pipeline file every trial starts from", "base")
    base_path = str((Path(base_dir) / base).resolve()) if base_dir and not Path(base).is_absolute() else base
    step = data.get("step")
    if step is not None and not isinstance(step, str):
        fail("must be the name of the pipeline's job step the overrides go to", "step")
    job = mapping(data.get("job"), "job")
    for key, value in job.items():
        if key not in ("nodes", "cards_per_node"):
            fail(f"unknown job field{did_you_mean(str(key), ('nodes', 'cards_per_node'))} (valid: nodes, "
                 "cards_per_node; sweep seeds with 'seed')", "job", str(key))
        if not (_positive_int(value) or value == "all"):
            fail("must be a positive integer or 'all'", "job", str(key))
    sets = mapping(data.get("set"), "set")
    space = mapping(data.get("space"), "space")
    if not space:
        fail("is required: one of grid, list or random (and derived keys)", "space")
    known(space, SPACE_KEYS, "space")
    kinds = [k for k in ("grid", "list", "random") if k in space]
    if len(kinds) != 1:
        fail("give exactly one of grid, list or random" + (f" (found {', '.join(kinds)})" if kinds else ""), "space")
    grid: dict[str, list[Any]] = {}
    listed: list[dict[str, Any]] = []
    params: dict[str, tuple[str, Any]] = {}
    random_n, random_seed = 0, 0
    if "grid" in space:
        for key, values in mapping(space["grid"], "space", "grid").items():
            if not isinstance(values, list) or not values:
                fail("must be a non-empty list of values", "space", "grid", str(key))
            grid[str(key)] = values
        if not grid:
            fail("must name at least one key", "space", "grid")
    if "list" in space:
        if not isinstance(space["list"], list) or not space["list"]:
            fail("must be a non-empty list of settings ({key: value, ...})", "space", "list")
        for i, setting in enumerate(space["list"]):
            if not isinstance(setting, dict) or not setting:
                fail("must be a mapping {key: value, ...}", "space", "list", i)
            listed.append({str(k): v for k, v in setting.items()})
    if "random" in space:
        rnd = mapping(space["random"], "space", "random")
        known(rnd, RANDOM_KEYS, "space", "random")
        n = rnd.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_TRIALS:
            fail(f"must be an integer from 1 to {MAX_TRIALS}", "space", "random", "n")
        random_n = int(n)
        random_seed = rnd.get("seed", 0)
        if not isinstance(random_seed, int) or isinstance(random_seed, bool):
            fail("must be an integer", "space", "random", "seed")
        for key, dist in mapping(rnd.get("params"), "space", "random", "params").items():
            params[str(key)] = _distribution(dist, fail, "space", "random", "params", str(key))
        if not params:
            fail("must name at least one key with its distribution", "space", "random", "params")
    derived: dict[str, str] = {}
    for key, expr in mapping(space.get("derived"), "space", "derived").items():
        if not isinstance(expr, str):
            fail('must be an expression over the other keys, e.g. "{lora_rank} * 2"', "space", "derived", str(key))
        derived[str(key)] = expr
    objective = mapping(data.get("objective"), "objective")
    known(objective, ("metric", "goal"), "objective")
    metric = objective.get("metric", "final_loss")
    if not isinstance(metric, str) or not metric:
        fail("must be a metric name", "objective", "metric")
    if "." in metric:
        _, fld = metric.split(".", 1)
        if fld not in SCORE_FIELDS:
            fail(f"a step's metric is STEP.{'|'.join(SCORE_FIELDS)}{did_you_mean(fld, SCORE_FIELDS)}",
                 "objective", "metric")
    elif metric not in JOB_METRICS:
        fail(f"unknown metric{did_you_mean(metric, JOB_METRICS)} (valid: {', '.join(JOB_METRICS)}, or "
             f"STEP.{'|'.join(SCORE_FIELDS)} of a pipeline's score step)", "objective", "metric")
    goal = objective.get("goal", "min")
    if goal not in GOALS:
        fail(f"must be min or max, not {goal!r}", "objective", "goal")
    budget = mapping(data.get("budget"), "budget")
    known(budget, ("max_parallel", "max_trials", "card_hours"), "budget")
    for key in ("max_parallel", "max_trials"):
        if key in budget and not _positive_int(budget[key]):
            fail("must be a positive integer", "budget", key)
    if "card_hours" in budget and not (_number(budget["card_hours"]) and budget["card_hours"] > 0):
        fail("must be a positive number of card-hours", "budget", "card_hours")
    prune = mapping(data.get("prune"), "prune")
    known(prune, ("nan", "median"), "prune")
    if not isinstance(prune.get("nan", False), bool):
        fail("must be true or false", "prune", "nan")
    median = prune.get("median", False)
    rules = PruneRules(nan=bool(prune.get("nan", False)))
    if isinstance(median, dict):
        known(median, ("k", "min_steps", "min_trials"), "prune", "median")
        k = median.get("k", 2.0)
        if not _number(k) or k <= 1:
            fail("must be a number above 1 (prune above k x the median of the others)", "prune", "median", "k")
        for key in ("min_steps", "min_trials"):
            if key in median and not _positive_int(median[key]):
                fail("must be a positive integer", "prune", "median", key)
        rules = PruneRules(nan=rules.nan, median=True, k=float(k), min_steps=median.get("min_steps", 1),
                           min_trials=median.get("min_trials", 2))
    elif not isinstance(median, bool):
        fail("must be false, true, or {k, min_steps, min_trials}", "prune", "median")
    elif median:
        rules = PruneRules(nan=rules.nan, median=True)
    seed = data.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        fail("must be an integer (every trial's seed, recorded with it)", "seed")
    sweep = Sweep(name=name, base=base_path, source=source, text=text, description=str(data.get("description") or ""),
                  step=step, job=dict(job), sets=dict(sets), grid=grid, listed=tuple(listed), random_n=random_n,
                  random_seed=random_seed, params=params, derived=derived,
                  objective=Objective(metric, goal),
                  budget=Budget(budget.get("max_parallel", 1), budget.get("max_trials"), budget.get("card_hours")),
                  prune=rules, seed=seed)
    _check_derived(sweep)
    return sweep


def _distribution(dist: Any, fail: Callable[..., NoReturn], *path: str) -> tuple[str, Any]:
    if not isinstance(dist, dict) or len(dist) != 1:
        fail("must be one distribution: {choice: [..]}, {uniform: [lo, hi]}, {loguniform: [lo, hi]} "
             "or {int: [lo, hi]}", *path)
    kind, args = next(iter(dist.items()))
    if kind not in DISTRIBUTIONS:
        fail(f"unknown distribution{did_you_mean(str(kind), DISTRIBUTIONS)} (valid: {', '.join(DISTRIBUTIONS)})",
             *path, str(kind))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            fail("must be a non-empty list of values", *path, kind)
        return kind, list(args)
    if not (isinstance(args, list) and len(args) == 2 and all(_number(a) for a in args) and args[0] < args[1]):
        fail("must be [low, high] with low < high", *path, kind)
    if kind == "loguniform" and args[0] <= 0:
        fail("must be above 0 (a log scale)", *path, kind)
    if kind == "int" and not all(isinstance(a, int) for a in args):
        fail("must be two integers", *path, kind)
    return kind, (args[0], args[1])


def load_sweep(path: str | Path) -> Sweep:
    """Read and parse a sweep file (duplicate keys and anchors refused, as for job files)."""
    text = yamlio.read_text(path, "sweep file")
    return parse_sweep(yamlio.loads(text, str(path)), str(path), str(Path(path).resolve().parent), text)


# ---------------------------------------------------------------- derived keys

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_CALLS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "int": int, "round": round, "abs": abs}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def safe_eval(expr: str, names: Mapping[str, Any]) -> Any:
    """``"{lora_rank} * 2"`` with ``names`` -> a number. Only numbers, the names given, + - * /
    // % ** (exponent at most 64), unary +/- and min/max/int/round/abs: anything else (an
    attribute, a subscript, a string, another call) is a ValueError naming what it met. A
    placeholder that is not a given name is a KeyError."""
    for name in _PLACEHOLDER.findall(expr):
        if name not in names:
            raise KeyError(name)
    source = _PLACEHOLDER.sub(r"\1", expr)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError:
        raise ValueError("not an arithmetic expression") from None

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and _number(node.value):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise KeyError(node.id)
            value = names[node.id]
            if not _number(value):
                raise ValueError(f"{node.id} is {value!r}, not a number")
            return value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("an exponent above 64")
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](ev(node.operand))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS
                and not node.keywords):
            return _CALLS[node.func.id](*(ev(a) for a in node.args))
        raise ValueError(f"{type(node).__name__} is not allowed (numbers, names, + - * / // % **, "
                         f"{'/'.join(_CALLS)})")

    result = ev(tree)
    return int(result) if isinstance(result, float) and result.is_integer() and "/" not in source else result


def _check_derived(sweep: Sweep) -> None:
    """Every derived expression parses and names only swept keys (or derived ones before it)."""
    known: set[str] = set(sweep.keys()) - set(sweep.derived)
    for key, expr in sweep.derived.items():
        sample = {name: 1 for name in known}
        try:
            safe_eval(expr, sample)
        except KeyError as exc:
            name = str(exc.args[0])
            raise sweep.error(f"{name!r} is not a swept key{did_you_mean(name, sorted(known))} "
                              f"(swept: {', '.join(sorted(known)) or 'none'})", "space", "derived", key) from None
        except ValueError as exc:
            raise sweep.error(f"{expr!r}: {exc}", "space", "derived", key) from None
        except ArithmeticError:
            pass  # a division by a swept 1 - 1 is a matter of the values, checked per trial
        known.add(key)


# ---------------------------------------------------------------- the space

def _draw(rng: random.Random, kind: str, args: Any) -> Any:
    if kind == "choice":
        return args[rng.randrange(len(args))]
    lo, hi = args
    if kind == "uniform":
        return rng.uniform(lo, hi)
    if kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return rng.randint(lo, hi)


def settings(sweep: Sweep) -> list[dict[str, Any]]:
    """The space's points in order (grid: the last key varies fastest; random: seeded, the same
    file gives the same points), with the derived keys added, cut at ``max_trials``."""
    points: list[dict[str, Any]]
    if sweep.grid:
        keys = list(sweep.grid)
        points = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*sweep.grid.values())]
    elif sweep.listed:
        points = [dict(p) for p in sweep.listed]
    else:
        rng = random.Random(sweep.random_seed)
        points = [{k: _draw(rng, kind, args) for k, (kind, args) in sweep.params.items()}
                  for _ in range(sweep.random_n)]
    out = []
    for i, point in enumerate(points):
        for key, expr in sweep.derived.items():
            try:
                point[key] = safe_eval(expr, point)
            except (KeyError, ValueError, ArithmeticError) as exc:
                raise sweep.error(f"trial {i + 1} ({_brief(point)}): {expr!r}: {exc}",
                                  "space", "derived", key) from None
        out.append(point)
    if sweep.budget.max_trials is not None:
        out = out[:sweep.budget.max_trials]
    return out


def _brief(point: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def template_keys(config: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a template (mappings walked, lists are values)."""
    out: list[str] = []
    if isinstance(config, dict):
        for k, v in config.items():
            key = f"{prefix}{k}"
            out.append(key)
            out.extend(template_keys(v, key + "."))
    return out


def resolve_keys(sweep: Sweep, keys: Sequence[str], fixed: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Each swept / derived name -> the dotted template key it sets (or itself for a job field).

    ``keys``: the template's dotted keys (:func:`template_keys`). A name is a dotted key of the
    template, or the last part of exactly one; ``+key`` adds a key the template lacks (as in job
    overrides). Unknown or ambiguous: an InputError naming the sweep file's line and the close
    matches ("did you mean"). ``fixed``: the sweep's ``set:`` keys, checked the same way."""
    fixed = fixed or {}
    valid = set(keys)
    by_last: dict[str, list[str]] = {}
    for key in keys:
        by_last.setdefault(key.rsplit(".", 1)[-1], []).append(key)
    out: dict[str, str] = {}
    where = {name: _where(sweep, name) for name in sweep.keys()}
    for name in [*sweep.keys(), *fixed]:
        path = where.get(name) or ("set", name)
        if name in JOB_KEYS and name not in fixed:
            out[name] = name
        elif name.startswith("+") or name in valid:
            out[name] = name
        elif name in by_last and len(by_last[name]) == 1 and "." not in name:
            out[name] = by_last[name][0]
        elif name in by_last and "." not in name:
            raise sweep.error(f"{name!r} is the last part of {len(by_last[name])} template keys "
                              f"({', '.join(sorted(by_last[name]))}); write the one you mean", *path)
        else:
            close = difflib.get_close_matches(name, [*keys, *by_last], n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise sweep.error(f"the base's template has no key {name!r}{hint} (write +{name} to add it)", *path)
    return out


def _where(sweep: Sweep, name: str) -> tuple[str | int, ...]:
    if name in sweep.grid:
        return ("space", "grid", name)
    if name in sweep.params:
        return ("space", "random", "params", name)
    if name in sweep.derived:
        return ("space", "derived", name)
    for i, setting in enumerate(sweep.listed):
        if name in setting:
            return ("space", "list", i, name)
    return ("space",)


def identity(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(parts), sort_keys=True, default=str).encode()).hexdigest()


def trials(sweep: Sweep, keymap: Mapping[str, str], base_identity: str, base_seed: int | None = None) -> list[Trial]:
    """The sweep's trials in order. Identity = hash(base identity, resolved overrides, job
    fields, seed): the same setting of the same base is the same trial, whatever the file's
    name or order; a duplicate setting is one trial."""
    out: list[Trial] = []
    seen: set[str] = set()
    fixed = {keymap.get(k, k): v for k, v in sweep.sets.items()}
    for point in settings(sweep):
        overrides = dict(fixed)
        job = dict(sweep.job)
        seed = sweep.seed if sweep.seed is not None else base_seed
        for name, value in point.items():
            key = keymap.get(name, name)
            if key == "seed":
                seed = value
            elif key in JOB_KEYS:
                job[key] = value
            else:
                overrides[key] = value
        ident = identity({"base": base_identity, "overrides": overrides, "job": job, "seed": seed})
        if ident in seen:
            continue
        seen.add(ident)
        out.append(Trial(ident[:12], ident, len(out), point, overrides, job, seed))
    return out


# ---------------------------------------------------------------- pruning

Curve = Sequence[tuple[int, float]]  # (global step, loss), in step order


def _at(curve: Curve, step: int) -> float | None:
    """The loss at ``step``: the last point at or before it, if the curve reached ``step``."""
    if not curve or curve[-1][0] < step:
        return None
    value = None
    for s, loss in curve:
        if s > step:
            break
        value = loss
    return value


def prune_reason(curve: Curve, others: Sequence[Curve], rules: PruneRules) -> str | None:
    """Why a running trial should stop now, or None. ``nan``: its last loss is NaN or inf.
    ``median`` (Optuna's MedianPruner): at its latest step (>= ``min_steps``), its loss is
    above ``k`` x the median of the other trials' losses at that step, when at least
    ``min_trials`` of them reached it (their finite values only)."""
    if not curve:
        return None
    step, loss = curve[-1]
    if rules.nan and not math.isfinite(loss):
        return f"loss {loss} at step {step}"
    if not rules.median or step < rules.min_steps or not math.isfinite(loss):
        return None
    values = sorted(v for v in (_at(c, step) for c in others) if v is not None and math.isfinite(v))
    if len(values) < rules.min_trials:
        return None
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    if loss > rules.k * median:
        return f"loss {loss:.4g} at step {step} above {rules.k:g} x the median {median:.4g} of {len(values)} others"
    return None


# ---------------------------------------------------------------- packing and order

def place(free: Mapping[str, int], nodes: int, cards: int) -> tuple[str, ...] | None:
    """The hosts the next trial goes to: the ``nodes`` hosts with the most free cards that have
    ``cards`` free each (ties: hostfile order), so trials spread over the hosts instead of
    filling the first host while the others idle. None: no room now."""
    fits = [h for h, n in free.items() if n >= cards]
    if len(fits) < nodes:
        return None
    ranked = sorted(fits, key=lambda h: -free[h])[:nodes]
    return tuple(h for h in free if h in ranked)


def waves(capacity: Mapping[str, int], shapes: Sequence[tuple[int, int]], max_parallel: int
          ) -> list[tuple[int, tuple[str, ...]]]:
    """The dry run's schedule, as if every trial took as long: trial i's (wave, hosts) when
    the driver places ``shapes[i]`` = (nodes, cards per node) with :func:`place` on empty hosts
    of ``capacity``, at most ``max_parallel`` at once; a wave starts when the one before ends."""
    out: list[tuple[int, tuple[str, ...]]] = []
    wave, free, running = 1, dict(capacity), 0
    for nodes, cards in shapes:
        hosts = place(free, nodes, cards) if running < max_parallel else None
        if hosts is None:
            wave, free, running = wave + 1, dict(capacity), 0
            hosts = place(free, nodes, cards) or ()
        for h in hosts:
            free[h] -= cards
        running += 1
        out.append((wave, hosts))
    return out


def order(rows: Sequence[Mapping[str, Any]], goal: str, key: str = "objective") -> list[Mapping[str, Any]]:
    """The leaderboard's order: trials with an objective first, best first (``goal``), then the
    rest (pruned, failed, running) in trial order."""
    scored = [r for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    rest = [r for r in rows if r not in scored]
    return sorted(scored, key=lambda r: r[key], reverse=goal == "max") + rest


def config_diff(base: Mapping[str, Any], trial: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, base value, trial value) for every override the trial changes (the best trial's
    config against the base's)."""
    return [(k, base.get(k), v) for k, v in trial.items() if base.get(k) != v]


# ---------------------------------------------------------------- the leaderboard

def short(key: str) -> str:
    """A swept key as a column header: its last dotted part."""
    return key.rsplit(".", 1)[-1]


def leaderboard(trials: Sequence[Mapping[str, Any]], info: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The sweep's trials as rows, best first by the recorded objective (``info`` is what the
    driver recorded with the sweep: objective, keys, trainable counts). Plain values: the
    terminal, --csv, --json and the dashboard draw them."""
    goal = (info.get("objective") or {}).get("goal", "min")
    trainable = info.get("trainable") or {}
    rows = []
    for t in trials:
        result = t.get("result") or {}
        curve = t.get("curve") or []
        rows.append({
            "trial": t["trial"], "state": t["state"], "reason": t.get("reason"),
            "params": dict(t.get("params") or {}), "seed": t.get("seed"),
            "trainable": trainable.get(t["trial"]), "steps": result.get("steps") or (curve[-1][0] if curve else None),
            "duration_s": result.get("duration_s"), "card_hours": result.get("card_hours"),
            "final_loss": result.get("final_loss") if result else (curve[-1][1] if curve else None),
            "objective": result.get("objective") if t["state"] == "succeeded" else None,
            "scores": {k: v for k, v in result.items() if "." in k or k in SCORE_FIELDS},
            "job_id": t.get("run_id"), "position": t.get("position", 0)})
    return [dict(r) for r in order(rows, goal)]


def summary(trials: Sequence[Mapping[str, Any]], info: Mapping[str, Any]) -> dict[str, Any]:
    """A sweep in one line (``alaunch sweeps``, the dashboard's list): its trials' count by
    state, and its best trial as :func:`leaderboard` ranks them (None until one succeeded)."""
    rows = leaderboard(trials, info)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    best = rows[0] if rows and rows[0].get("objective") is not None else None
    return {"objective": dict(info.get("objective") or {}), "trials": len(trials), "counts": counts,
            "best": {k: best[k] for k in ("trial", "objective", "params", "job_id")} if best else None}


def best_diff(rows: Sequence[Mapping[str, Any]], trials: Sequence[Mapping[str, Any]],
              base_overrides: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """The best trial's overrides against the base job's (key, base, best); [] without a best."""
    if not rows or rows[0].get("objective") is None:
        return []
    best = next(t for t in trials if t["trial"] == rows[0]["trial"])
    return config_diff(dict(base_overrides), dict(best.get("overrides") or {}))
