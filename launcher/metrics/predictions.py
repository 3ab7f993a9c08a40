"""Read what a run produced into plain Python values, safely and with line numbers.

Three inputs reach the scorers:

* MindFormers' ``text_generation_result.txt``: ``str(list_of_dicts)``, i.e. a Python
  literal such as ``[{'text_generation_text': ['prompt + answer']}, ...]``. It is read
  with :func:`ast.literal_eval`, which only builds literals: no code ever runs.
* JSON lines, one object per line (predictions, references, math problems).
* MindFormers eval logs, whose ``EmF1Metric.update`` printed each batch as
  ``pred is:`` / ``label is:`` followed by the Python repr of a list, either on the same
  line (MindFormers 1.1 on Ascend) or on the next one (newer versions).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.errors import InputError

PRED_MARK = "pred is:"
LABEL_MARK = "label is:"
_PRED_KEYS = ("prediction", "pred", "output", "text_generation_text", "response")
_REF_KEYS = ("reference", "label", "answer", "answers", "solution")


@dataclass(frozen=True)
class EvalPair:
    """One (prediction, reference) pair of an eval log, with the line it was printed on."""

    prediction: str
    reference: str
    line: int


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", source=str(path)) from exc


def _literal_list(text: str, source: str, line: int, what: str) -> list[str]:
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise InputError(f"`{what}` is not followed by a Python list of strings "
                         f"({type(exc).__name__}): {text.strip()[:80]!r}",
                         source=source, line=line) from exc
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"`{what}` should be followed by a list of strings, got "
                         f"{type(value).__name__}", source=source, line=line)
    return value


def _block_value(lines: list[str], i: int, mark: str, source: str) -> tuple[list[str], int]:
    """The list printed after ``mark`` on line ``i`` (same line or the next non-empty one)."""
    rest = lines[i].split(mark, 1)[1]
    if rest.strip():
        return _literal_list(rest, source, i + 1, mark), i + 1
    j = i + 1
    while j < len(lines) and not lines[j].strip():
        j += 1
    if j >= len(lines):
        raise InputError(f"`{mark}` at the end of the file has no list after it",
                         source=source, line=i + 1)
    return _literal_list(lines[j], source, j + 1, mark), j + 1


def parse_eval_log(text: str, source: str = "<log>") -> list[EvalPair]:
    """All (prediction, reference) pairs EmF1Metric printed, in order. Other lines of the
    log (progress, warnings, jieba's messages) are skipped."""
    lines = text.splitlines()
    pairs: list[EvalPair] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].lstrip()
        if not stripped.startswith(PRED_MARK):
            i += 1
            continue
        start = i + 1
        preds, i = _block_value(lines, i, PRED_MARK, source)
        while i < len(lines) and not lines[i].lstrip().startswith(LABEL_MARK):
            if lines[i].lstrip().startswith(PRED_MARK):
                raise InputError(f"`{PRED_MARK}` without a `{LABEL_MARK}` after it",
                                 source=source, line=start)
            i += 1
        if i >= len(lines):
            raise InputError(f"`{PRED_MARK}` without a `{LABEL_MARK}` after it",
                             source=source, line=start)
        labels, i = _block_value(lines, i, LABEL_MARK, source)
        if len(preds) != len(labels):
            raise InputError(f"{len(preds)} predictions but {len(labels)} labels in this batch",
                             source=source, line=start)
        pairs.extend(EvalPair(p, r, start) for p, r in zip(preds, labels, strict=True))
    return pairs


def looks_like_eval_log(text: str) -> bool:
    return any(line.lstrip().startswith(PRED_MARK) for line in text.splitlines())


def eval_log_pairs(text: str, source: str = "<log>") -> tuple[list[EvalPair], int | None]:
    """An eval log's pairs and how many examples its last ``Step[i/N]`` promises (None: it says
    not): ``alaunch score squad`` and a pipeline's ``score`` step with ``metric: squad``."""
    from launcher.metrics.logparse import LogState
    state = LogState().feed_lines(text.splitlines())
    return parse_eval_log(text, source), state.eval_step.total if state.eval_step is not None else None


def iter_json_lines(text: str, source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-empty line; a bad line names itself."""
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg} at column {exc.colno}); each line "
                             "should be one JSON object", source=source, line=n) from exc
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object, got {type(obj).__name__}",
                             source=source, line=n)
        yield n, obj


def _first_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return str(value[0])
    return None


def _pick(obj: dict[str, Any], keys: tuple[str, ...], source: str, line: int, what: str) -> Any:
    for key in keys:
        if key in obj:
            return obj[key]
    raise InputError(f"no {what} field; expected one of {', '.join(keys)}",
                     source=source, line=line)


def parse_generation_result(text: str, source: str = "<predictions>") -> list[str]:
    """The generated texts of a ``text_generation_result.txt`` (Python literal) or of JSON
    lines (``{"prediction": ...}`` or ``{"text_generation_text": [...]}``)."""
    head = text.lstrip()[:1]
    if head == "[":
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            line = getattr(exc, "lineno", None)
            raise InputError("not a Python literal list as MindFormers writes "
                             f"text_generation_result.txt ({type(exc).__name__})",
                             source=source, line=line) from exc
        if not isinstance(value, list):
            raise InputError("expected a list of {'text_generation_text': [...]}", source=source)
        out: list[str] = []
        for k, item in enumerate(value):
            raw = item.get("text_generation_text") if isinstance(item, dict) else item
            got = _first_text(raw)
            if got is None:
                raise InputError(f"item {k} has no text_generation_text string",
                                 source=source, key=f"[{k}]")
            out.append(got)
        return out
    out = []
    for n, obj in iter_json_lines(text, source):
        got = _first_text(_pick(obj, _PRED_KEYS, source, n, "prediction"))
        if got is None:
            raise InputError("the prediction should be a string", source=source, line=n)
        out.append(got)
    return out


def parse_prediction_pairs(text: str, source: str) -> list[EvalPair]:
    """JSON lines ``{"prediction": ..., "reference": ...}`` (a list of references allowed:
    the first is used, as EmF1Metric takes one label per example)."""
    pairs = []
    for n, obj in iter_json_lines(text, source):
        pred = _first_text(_pick(obj, _PRED_KEYS, source, n, "prediction"))
        ref = _first_text(_pick(obj, _REF_KEYS, source, n, "reference"))
        if pred is None or ref is None:
            raise InputError("prediction and reference should be strings", source=source, line=n)
        pairs.append(EvalPair(pred, ref, n))
    return pairs


@dataclass(frozen=True)
class MathItem:
    """One reference problem: the (prompt-wrapped) problem and its reference solution."""

    problem: str
    solution: str
    line: int


def parse_math_reference(text: str, source: str) -> list[MathItem]:
    items = []
    for n, obj in iter_json_lines(text, source):
        for key in ("problem", "solution"):
            if not isinstance(obj.get(key), str):
                raise InputError(f"needs a string `{key}` (lines look like "
                                 '{"problem": "...", "solution": "..."})',
                                 source=source, line=n, key=key)
        items.append(MathItem(obj["problem"], obj["solution"], n))
    return items
