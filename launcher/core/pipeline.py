"""Pipeline files: named steps (job files or built-ins) with ``needs:``, in one pure module.

A pipeline (``jobs/pipelines/*.yaml``) is the recipe as one command::

    name: demo
    steps:
      data:   {builtin: data, with: {rows: 1000, out: ../../build/demo}}
      train:  {job: ../tiny_lora_cpu.yaml, needs: [data], retries: 1}
      merge:  {builtin: merge, with: {checkpoint: {from: train}}}
      after:  {job: ../tiny_predict_cpu.yaml, checkpoint: {from: merge, select: last}}
      score:  {builtin: score, with: {predictions: {from: after}, reference: ../../build/demo/test.jsonl}}

Any mapping ``{from: STEP[, select: last|all][, output: GROUP]}`` anywhere in a step is a
reference to another step's outputs; it adds ``STEP`` to the step's needs. A job step's
``checkpoint`` or input may take a training's LoRA delta instead of its whole model:
``{from: train, output: lora, base: PATH}`` (PATH: the base checkpoint on the consuming
step's hosts; the delta is cut on the training's node, only it travels, and base + delta
become one checkpoint beside it, see docs/pipelines.md). What it resolves
to (a path on the host the producer ran on, or a local path) is decided by ``ops.pipeline``
once the producer has run; this module only models, orders, selects and hashes.

Public interface::

    load_pipeline(path) -> Pipeline            # InputError naming file:line: steps.X.key
    parse_pipeline(data, source, base_dir, text) -> Pipeline
    Pipeline.order() -> list[Step]              # topological, file order among equals
    select(pipeline, from_step=None, only=None) -> list[str]    # steps to run
    identity(parts) -> str                      # a step's identity (sha256 of its named parts)
    changed(old_parts, new_parts) -> list[str]  # what differs, for the dry run's "run (...)"
    last_checkpoint / common_last_step          # by global step from the files' metadata
    substitute(value, resolve) -> value          # refs replaced by what ``resolve(ref)`` gives
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from launcher.core import yamlio
from launcher.errors import InputError

BUILTINS = ("data", "merge", "fetch", "score", "results")
SELECTS = ("last", "all")
LORA = "lora"  # ``output: lora``: a training's LoRA delta, applied to the ref's ``base``
REF_KEYS = ("from", "select", "output", "base")
STEP_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
STEP_KEYS = ("job", "builtin", "needs", "checkpoint", "inputs", "set", "with", "retries", "description")
TOP_KEYS = ("name", "description", "steps")
MAX_RETRIES = 10
# Each built-in's ``with:`` keys: kind ("int", "str", "path" (relative to the pipeline file),
# "ref" (one {from: STEP}), "refs" (a list of them)) and whether it is required. An unknown
# key is refused with a did-you-mean (``metrc: squad`` was ignored and scored as math).
BUILTIN_OPTIONS: dict[str, dict[str, tuple[str, bool]]] = {
    "data": {"recipe": ("path", True), "out": ("path", False), "rows": ("int", False), "seed": ("int", False),
             "test_rows": ("int", False), "seq_length": ("int", False), "vocab_size": ("int", False)},
    "merge": {"checkpoint": ("ref", True)},
    "fetch": {"steps": ("refs", True), "what": ("str", False)},
    "score": {"predictions": ("ref", True), "reference": ("path", False), "metric": ("str", False)},
    "results": {"runs": ("refs", True), "plot": ("path", False)},
}
SCORE_METRICS = ("math", "squad")  # math: predictions against ``reference``; squad: an eval log's pairs


@dataclass(frozen=True)
class Ref:
    """``{from: STEP, select: last|all, output: GROUP}``: another step's outputs; with
    ``output: lora``, ``base`` is the checkpoint (a path on the consumer's hosts) that the
    producer's LoRA delta is applied to."""

    step: str
    select: str = "last"
    output: str | None = None
    base: str | None = None

    def describe(self) -> str:
        if self.output == LORA:
            return f"{self.step}'s LoRA delta on base {self.base}"
        what = self.output or "outputs"
        if self.select == "last":
            return f"{self.step}'s last {what.rstrip('s')}"
        return f"{self.step}'s every {what}"

    def canonical(self) -> dict[str, Any]:
        plain = {"from": self.step, "select": self.select, "output": self.output}
        return {**plain, "base": self.base} if self.base is not None else plain  # older refs hash as before


@dataclass(frozen=True)
class Step:
    """One step: a job (``job`` path or inline mapping) or a built-in, and what it needs."""

    name: str
    position: int
    job: str | None = None  # absolute path of the job file
    inline: dict[str, Any] | None = None  # an inline job mapping
    builtin: str | None = None
    needs: tuple[str, ...] = ()  # explicit and from references, in order, no duplicates
    checkpoint: Any = None  # a Ref (or a plain PathRef mapping)
    inputs: dict[str, Any] = field(default_factory=dict)  # name -> Ref or PathRef mapping
    sets: dict[str, Any] = field(default_factory=dict)  # dotted override -> value
    options: dict[str, Any] = field(default_factory=dict)  # a built-in's ``with:``
    retries: int = 0
    line: int | None = None

    @property
    def kind(self) -> str:
        return self.builtin or "job"

    def refs(self) -> list[Ref]:
        return list(iter_refs([self.checkpoint, self.inputs, self.options]))

    def canonical(self) -> dict[str, Any]:
        """The step's definition as plain data (refs as mappings) for hashing and display."""
        def plain(value: Any) -> Any:
            if isinstance(value, Ref):
                return value.canonical()
            if isinstance(value, dict):
                return {k: plain(v) for k, v in sorted(value.items())}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        return {"kind": self.kind, "job": Path(self.job).name if self.job else None, "inline": plain(self.inline),
                "checkpoint": plain(self.checkpoint), "inputs": plain(self.inputs), "set": plain(self.sets),
                "with": plain(self.options)}


@dataclass(frozen=True)
class Pipeline:
    name: str
    steps: tuple[Step, ...]
    source: str = "<pipeline>"
    base_dir: str | None = None
    description: str = ""

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise InputError(f"no step {name!r}{_did_you_mean(name, self.names())} (steps: {', '.join(self.names())})",
                         source=self.source)

    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    def order(self) -> list[Step]:
        """Topological order; among steps ready at the same time, file order (Kahn)."""
        done: list[str] = []
        left = list(self.steps)
        while left:
            ready = [s for s in left if all(n in done for n in s.needs)]
            if not ready:
                cycle = " -> ".join(s.name for s in left)
                raise InputError(f"steps {cycle} need each other (a cycle); one of them must not need the others",
                                 source=self.source)
            done.append(ready[0].name)
            left.remove(ready[0])
        return [self.step(n) for n in done]

    def downstream(self, name: str) -> set[str]:
        """``name`` and every step that needs it, directly or not."""
        out = {name}
        for s in self.order():
            if any(n in out for n in s.needs):
                out.add(s.name)
        return out

    def upstream(self, name: str) -> set[str]:
        """Every step ``name`` needs, directly or not (not ``name`` itself)."""
        out: set[str] = set()
        todo = list(self.step(name).needs)
        while todo:
            n = todo.pop()
            if n not in out:
                out.add(n)
                todo.extend(self.step(n).needs)
        return out


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def iter_refs(value: Any) -> Iterator[Ref]:
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from iter_refs(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from iter_refs(v)


def substitute(value: Any, resolve: Callable[[Ref], Any]) -> Any:
    """``value`` with every Ref replaced by ``resolve(ref)`` (pure if ``resolve`` is)."""
    if isinstance(value, Ref):
        return resolve(value)
    if isinstance(value, dict):
        return {k: substitute(v, resolve) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [substitute(v, resolve) for v in value]
    return value


def _refs_in(value: Any, where: str, fail: Callable[[str, str], None]) -> Any:
    """Parse ``{from: ...}`` mappings into Refs, recursively."""
    if isinstance(value, dict):
        if "from" in value:
            extra = set(value) - set(REF_KEYS)
            if extra:
                fail(where, f"unknown key {sorted(extra)[0]!r} in a reference (valid: {', '.join(REF_KEYS)})")
            if not isinstance(value["from"], str):
                fail(where + ".from", "must be a step name")
            select = value.get("select", "last")
            if select not in SELECTS:
                fail(where + ".select", f"must be one of {', '.join(SELECTS)}, not {select!r}")
            output = value.get("output")
            if output is not None and not isinstance(output, str):
                fail(where + ".output", "must be an output group name like checkpoints or predictions")
            base = value.get("base")
            if output == LORA:
                if not isinstance(base, str) or not base.strip():
                    fail(where, "output: lora needs base: the path of the base checkpoint on the consuming "
                                "step's hosts (the training's LoRA delta is applied to it)")
                if select != "last":
                    fail(where + ".select", "output: lora takes the training's last checkpoint's delta "
                                            "(select: last)")
            elif "base" in value:
                fail(where + ".base", "goes with output: lora (a training's LoRA delta applied to this base); "
                                      "without it the reference is the whole checkpoint")
            return Ref(value["from"], select, output, base)
        return {k: _refs_in(v, f"{where}.{k}", fail) for k, v in value.items()}
    if isinstance(value, list):
        return [_refs_in(v, f"{where}.{i}", fail) for i, v in enumerate(value)]
    return value


def _check_options(builtin: str, options: dict[str, Any], where: str, fail: Callable[[str, str], None]) -> None:
    """A built-in's ``with:`` against :data:`BUILTIN_OPTIONS` (one line: key, what is valid)."""
    table = BUILTIN_OPTIONS[builtin]
    valid = ", ".join(table)
    for key, value in options.items():
        if key not in table:
            fail(f"{where}.{key}", f"unknown {builtin} option{_did_you_mean(str(key), list(table))} (valid: {valid})")
        kind, _ = table[key]
        ok = {"int": isinstance(value, int) and not isinstance(value, bool), "str": isinstance(value, str),
              "path": isinstance(value, (str, Ref)), "ref": isinstance(value, Ref),
              "refs": isinstance(value, list) and bool(value) and all(isinstance(v, Ref) for v in value)}[kind]
        if not ok:
            what = {"int": "an integer", "str": "a string", "path": "a path (relative to the pipeline file)",
                    "ref": "a reference {from: STEP}", "refs": "a list of references [{from: STEP}, ...]"}[kind]
            fail(f"{where}.{key}", f"must be {what}")
    metric = options.get("metric", "math") if builtin == "score" else "math"
    if metric not in SCORE_METRICS:
        fail(f"{where}.metric", f"score metric {metric!r}{_did_you_mean(str(metric), SCORE_METRICS)}: a pipeline "
                                f"scores {', '.join(SCORE_METRICS)}")


def missing_options(pipeline: Pipeline, names: Sequence[str] | None = None) -> None:
    """Refuse (one InputError naming the file, line and key) a built-in step without an option it
    needs (a data step without ``recipe`` raised a bare KeyError mid-run). Checked when the
    pipeline is run (and dry-run), not when parsed: a test's stand-in built-in needs none."""
    for step in pipeline.steps:
        if step.builtin is None or (names is not None and step.name not in names):
            continue
        table = BUILTIN_OPTIONS[step.builtin]
        for key, (_, required) in table.items():
            if required and key not in step.options:
                raise InputError(f"{step.builtin} needs {key!r} (options: {', '.join(table)})",
                                 source=pipeline.source, line=step.line, key=f"steps.{step.name}.with")
        if step.builtin == "score" and step.options.get("metric", "math") == "math" and "reference" not in step.options:
            raise InputError("a math score needs 'reference' (the JSON lines of problems and solutions); "
                             "metric: squad reads the eval log's own labels",
                             source=pipeline.source, line=step.line, key=f"steps.{step.name}.with")


def parse_pipeline(data: Any, source: str = "<pipeline>", base_dir: str | None = None,
                   text: str | None = None) -> Pipeline:
    """Validate a parsed pipeline mapping; the first problem is an InputError (file:line: key: what)."""

    def fail(key: str, message: str) -> NoReturn:
        path = tuple(int(p) if p.isdigit() else p for p in key.split("."))
        line = yamlio.line_of(text, path) if text else None
        raise InputError(message, source=source, line=line, key=key)

    if not isinstance(data, dict):
        raise InputError("a pipeline file must be a mapping with 'name' and 'steps'", source=source, line=1)
    for key in data:
        if key not in TOP_KEYS:
            fail(str(key), f"unknown key{_did_you_mean(str(key), TOP_KEYS)} (valid: {', '.join(TOP_KEYS)})")
    name = data.get("name")
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", name):
        fail("name", "is required: 1-64 letters, digits, '.', '_' or '-'")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, dict) or not raw_steps:
        fail("steps", "is required: a mapping of step name -> {job: FILE} or {builtin: "
                      + "|".join(BUILTINS) + "}")
    base = Path(base_dir) if base_dir else None
    steps: list[Step] = []
    for position, (step_name, raw) in enumerate(raw_steps.items()):
        where = f"steps.{step_name}"
        if not isinstance(step_name, str) or not STEP_NAME.match(step_name):
            fail(where, "a step name is 1-32 letters, digits, '_' or '-', starting with a letter")
        if not isinstance(raw, dict):
            fail(where, "must be a mapping: {job: FILE} or {builtin: NAME}")
        for key in raw:
            if key not in STEP_KEYS:
                fail(f"{where}.{key}",
                     f"unknown key{_did_you_mean(str(key), STEP_KEYS)} (valid: {', '.join(STEP_KEYS)})")
        job, builtin = raw.get("job"), raw.get("builtin")
        if (job is None) == (builtin is None):
            fail(where, "give exactly one of 'job' (a job file, or an inline job) or 'builtin' ("
                 + ", ".join(BUILTINS) + ")")
        job_path, inline = None, None
        if job is not None:
            if isinstance(job, str):
                job_path = str((base / job).resolve()) if base and not Path(job).is_absolute() else job
            elif isinstance(job, dict):
                inline = job
            else:
                fail(f"{where}.job", "must be a job file path or an inline job mapping")
        if builtin is not None and builtin not in BUILTINS:
            fail(f"{where}.builtin", f"unknown built-in {builtin!r}{_did_you_mean(str(builtin), BUILTINS)} "
                                     f"(valid: {', '.join(BUILTINS)})")
        for key in ("checkpoint", "inputs", "set", "retries"):
            if builtin is not None and key in raw:
                fail(f"{where}.{key}", f"only job steps take {key!r}; a built-in takes its options under 'with'")
        needs = raw.get("needs") or []
        if isinstance(needs, str):
            needs = [needs]
        if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
            fail(f"{where}.needs", "must be a list of step names")
        retries = raw.get("retries", 0)
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= MAX_RETRIES:
            fail(f"{where}.retries", f"must be an integer from 0 to {MAX_RETRIES}")
        inputs = raw.get("inputs") or {}
        sets = raw.get("set") or {}
        options = raw.get("with") or {}
        for key, value in (("inputs", inputs), ("set", sets), ("with", options)):
            if not isinstance(value, dict):
                fail(f"{where}.{key}", "must be a mapping")
        options = _refs_in(options, f"{where}.with", fail)
        if any(r.output == LORA for r in iter_refs(options)):
            fail(f"{where}.with", "a LoRA delta (output: lora) is taken by a job step's checkpoint or inputs, "
                                  "not by a built-in (fetch takes what: lora)")
        if builtin is not None:
            _check_options(builtin, options, f"{where}.with", fail)
        step = Step(step_name, position, job=job_path, inline=inline, builtin=builtin,
                    checkpoint=_refs_in(raw.get("checkpoint"), f"{where}.checkpoint", fail),
                    inputs=_refs_in(inputs, f"{where}.inputs", fail), sets=dict(sets),
                    options=options, retries=retries,
                    line=yamlio.line_of(text, ("steps", step_name)) if text else None)
        all_needs = list(dict.fromkeys([*needs, *(r.step for r in step.refs())]))
        steps.append(Step(**{**step.__dict__, "needs": tuple(all_needs)}))
    names = [s.name for s in steps]
    for s in steps:
        for n in s.needs:
            if n not in names:
                fail(f"steps.{s.name}",
                     f"needs unknown step {n!r}{_did_you_mean(n, names)} (steps: {', '.join(names)})")
            if n == s.name:
                fail(f"steps.{s.name}", "a step cannot need itself")
        for ref in s.refs():
            producer = steps[names.index(ref.step)]
            if ref.output == LORA and producer.builtin is not None:
                fail(f"steps.{s.name}", f"output: lora takes a training job step's LoRA delta; {ref.step!r} is "
                                        f"the built-in {producer.builtin}")
    pipeline = Pipeline(name, tuple(steps), source, base_dir, str(data.get("description") or ""))
    pipeline.order()  # refuse cycles now
    return pipeline


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and parse a pipeline file (duplicate keys and anchors refused, as for job files)."""
    text = yamlio.read_text(path, "pipeline file")
    data = yamlio.loads(text, str(path))
    return parse_pipeline(data, str(path), str(Path(path).resolve().parent), text)


def select(pipeline: Pipeline, from_step: str | None = None, only: Sequence[str] = ()) -> list[str]:
    """The steps to (re)consider, in order: all; ``--from STEP`` (it and everything downstream);
    ``--only STEP`` (just those). The others are taken from earlier runs."""
    if from_step and only:
        raise InputError("give --from or --only, not both", key="--from")
    names = [s.name for s in pipeline.order()]
    if from_step:
        keep = pipeline.downstream(pipeline.step(from_step).name)
        return [n for n in names if n in keep]
    if only:
        wanted = {pipeline.step(n).name for n in only}
        return [n for n in names if n in wanted]
    return names


def identity(parts: Mapping[str, Any]) -> str:
    """A step's identity: sha256 of its parts (:func:`identity_parts`' names -> content hashes
    or plain values). Equal identity + outputs present = the step need not run again."""
    blob = json.dumps(dict(sorted(parts.items())), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """What differs between a step's recorded identity parts and today's, by part name
    (``job file``, ``input train_data``, ``train's outputs``...), for "run (what changed)"."""
    if not old:
        return ["not run before with these parts recorded"]
    names = sorted(set(old) | set(new))
    return [n if n in old and n in new else (f"{n} (new)" if n in new else f"{n} (gone)")
            for n in names if old.get(n) != new.get(n)]


def text_sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint file as its host described it (``entry/merge_ckpt.py``'s ``inspect``):
    ``step`` is the *global* step from the file's own metadata (MindFormers' ``step_num``;
    None when it has none), ``attempt`` the attempt that wrote it (from when the job's
    resumes began, on its host), ``mtime_ns`` when it was written."""

    path: str
    rank: int | None
    step: int | None
    mtime_ns: int = 0
    size: int = 0
    sha256: str | None = None
    attempt: int = 1

    @classmethod
    def of(cls, path: str, info: Mapping[str, Any]) -> Checkpoint:
        return cls(path, rank_of(path), info.get("step"), int(info.get("mtime_ns") or 0),
                   int(info.get("size") or 0), info.get("sha256"), int(info.get("attempt") or 1))

    def order(self) -> tuple[int, int, int]:
        """Newest first by global step, then attempt, then write time; names never decide (a
        resumed MindSpore run names step 400 ``_1-4_50`` after step 350's ``_1-4_100``)."""
        return (-1 if self.step is None else self.step, self.attempt, self.mtime_ns)


def rank_of(path: str) -> int | None:
    """The rank of ``.../rank_N/...`` in a checkpoint path (None if the path has none)."""
    m = re.search(r"(?:^|/)rank_(\d+)/", path)
    return int(m.group(1)) if m else None


def _ckpts(items: Sequence[Checkpoint]) -> list[Checkpoint]:
    return [c for c in items if c.path.endswith((".ckpt", ".safetensors"))]


def last_checkpoint(items: Sequence[Checkpoint]) -> Checkpoint | None:
    """Rank 0's checkpoint of the highest global step, across attempts (any rank's when none
    says rank_0); a step saved by two attempts: the later write."""
    ckpts = _ckpts(items)
    rank0 = [c for c in ckpts if c.rank in (0, None)] or ckpts
    return max(rank0, key=Checkpoint.order) if rank0 else None


def common_last_step(items: Sequence[Checkpoint]) -> tuple[int, dict[int, Checkpoint]] | None:
    """The newest global step every rank has a checkpoint of (MindFormers' resume_ckpt rule:
    a rank killed mid-save must not make the others use a step it lacks), with every rank's
    file of it from one attempt, the latest that has them all (never rank 0's from attempt 2
    and rank 1's from attempt 1: "the ranks' checkpoints differ"). None: no such step."""
    ckpts = [c for c in _ckpts(items) if c.rank is not None and c.step is not None]
    ranks = {c.rank for c in ckpts}
    by_key: dict[tuple[int, int], dict[int, Checkpoint]] = {}
    for c in ckpts:
        if c.step is None or c.rank is None:  # none left by the filter above; said for the checker
            continue
        have = by_key.setdefault((c.step, c.attempt), {})
        if c.rank not in have or c.mtime_ns > have[c.rank].mtime_ns:
            have[c.rank] = c
    complete = [key for key, files in by_key.items() if set(files) == ranks]
    if not complete:
        return None
    step, attempt = max(complete)
    return step, dict(sorted(by_key[(step, attempt)].items()))


def ranks_of(paths: Sequence[str]) -> list[int]:
    return sorted({r for r in (rank_of(p) for p in paths) if r is not None})


def levels(pipeline: Pipeline, names: Sequence[str] | None = None) -> list[list[str]]:
    """The steps by level, in file order within a level: a step's level is one more than its
    highest need's (0 with none). The steps of a level are ready at the same time; whether
    they also *run* at the same time is a matter of cards (:func:`pack`)."""
    level: dict[str, int] = {}
    for s in pipeline.order():
        level[s.name] = 1 + max((level[n] for n in s.needs), default=-1)
    keep = set(level if names is None else names)
    out: list[list[str]] = [[] for _ in range(1 + max(level.values(), default=-1))]
    for s in pipeline.steps:
        if s.name in keep:
            out[level[s.name]].append(s.name)
    return [group for group in out if group]


def pack(names: Sequence[str], demand: Mapping[str, Mapping[str, int]],
         capacity: Mapping[str, int]) -> list[list[str]]:
    """Split steps that are ready together into groups that fit the hosts' cards at once, in
    order (what the allocation does when they are submitted together: a step that does not
    fit is queued, and the queue is first come, first served, so the steps after it wait
    too until cards free up). ``demand``: step -> host -> cards (a built-in: empty);
    ``capacity``: host -> candidate cards."""
    groups: list[list[str]] = []
    used: dict[str, int] = {}
    for name in names:
        want = demand.get(name) or {}
        if not groups or not all(used.get(h, 0) + n <= capacity.get(h, 0) for h, n in want.items()):
            groups.append([])
            used = {}
        groups[-1].append(name)
        for h, n in want.items():
            used[h] = used.get(h, 0) + n
    return groups
