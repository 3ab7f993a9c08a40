"""Math accuracy: one rule, applied the same way to every run.

The rule (also printed by ``alaunch score math --help``):

1. **Response**: the prediction with the echoed prompt removed (the reference problem
   when the prediction starts with it, else everything after the last
   ``### Response:``), then cut at the first ``###`` or blank line, and stripped.
2. **Final answer**: the response's last number (``-?digits[.digits]``, thousands
   separators not allowed); for "simplify the fraction" problems its last ``a/b``.
3. **Reference**: the same extraction from the reference solution.
4. **Correct** when ``|answer - reference| <= 0.01`` (inclusive, with 1e-9 slack for
   binary floating point); for fractions when both the
   numerator and the denominator are equal integers. No number: wrong.

Why this rule: the model's answer format is the training answer format, whose last
number is the result (``a - b = a + -b = c``, ``方程的解为：x``, ``面积为 60 平方厘米``);
reasoning steps come before it. Cutting at ``###``/blank line stops a model that keeps
generating a new ``### Instruction`` from being scored on a later, unrelated number.
Pure logic: the CLI reads files and hands over strings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from launcher.metrics.mathrule import RULE  # noqa: F401  (its own module: `alaunch --help` shows it)

try:  # the family patterns are shared with the data recipe (launcher/data/families.py)
    from launcher.data.families import FAMILIES, FRACTION, classify
except ImportError:  # pragma: no cover - only while that module is absent
    FAMILIES, FRACTION = (), "fraction"

    def classify(problem: str) -> str | None:
        return None

TOLERANCE = 0.01
_FLOAT_SLACK = 1e-9  # 5741.60 - 5741.59 is 0.0100000000002 in binary floating point
UNCLASSIFIED = "unclassified"
RESPONSE_MARK = "### Response:"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_FRACTION = re.compile(r"(-?\d+)\s*/\s*(-?\d+)")
_CUT = re.compile(r"###|\n[ \t]*\n")


def response_of(prediction: str, problem: str) -> str:
    """The model's own words: echoed prompt removed, cut at the first ``###`` or blank line."""
    if prediction.startswith(problem):
        text = prediction[len(problem):]
    elif RESPONSE_MARK in prediction:
        text = prediction.rsplit(RESPONSE_MARK, 1)[1]
    else:
        text = prediction
    text = text.lstrip()  # leading newlines are not the blank line that ends a response
    m = _CUT.search(text)
    return (text[:m.start()] if m else text).strip()


def last_number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    return float(found[-1]) if found else None


def last_fraction(text: str) -> tuple[int, int] | None:
    found = _FRACTION.findall(text)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


@dataclass(frozen=True)
class Verdict:
    """The scoring of one item, with what was extracted so a reader can check it."""

    index: int
    family: str
    response: str
    answer: str | None
    reference: str | None
    correct: bool


def judge(index: int, prediction: str, problem: str, solution: str) -> Verdict:
    """Apply the rule to one item."""
    family = classify(problem) or UNCLASSIFIED
    response = response_of(prediction, problem)
    if family == FRACTION:
        got, want = last_fraction(response), last_fraction(solution)
        correct = got is not None and want is not None and got == want
        return Verdict(index, family, response, _fraction_text(got), _fraction_text(want), correct)
    got_n, want_n = last_number(response), last_number(solution)
    correct = got_n is not None and want_n is not None and abs(got_n - want_n) <= TOLERANCE + _FLOAT_SLACK
    return Verdict(index, family, response, None if got_n is None else repr(got_n),
                   None if want_n is None else repr(want_n), correct)


def _fraction_text(f: tuple[int, int] | None) -> str | None:
    return None if f is None else f"{f[0]}/{f[1]}"


@dataclass
class FamilyCount:
    correct: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


@dataclass
class MathReport:
    """Overall and per-family counts, plus every verdict (for --json and for debugging)."""

    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def correct(self) -> int:
        return sum(v.correct for v in self.verdicts)

    @property
    def total(self) -> int:
        return len(self.verdicts)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def per_family(self) -> dict[str, FamilyCount]:
        """Families in their canonical order (those present), then unclassified."""
        counts: dict[str, FamilyCount] = {}
        for v in self.verdicts:
            counts.setdefault(v.family, FamilyCount())
            counts[v.family].total += 1
            counts[v.family].correct += int(v.correct)
        order = [f for f in FAMILIES if f in counts] + sorted(k for k in counts if k not in FAMILIES)
        return {k: counts[k] for k in order}

    def as_dict(self) -> dict[str, Any]:
        return {
            "correct": self.correct, "total": self.total, "accuracy": self.accuracy,
            "rule": RULE,
            "families": {k: {"correct": c.correct, "total": c.total, "accuracy": c.accuracy}
                         for k, c in self.per_family().items()},
            "items": [v.__dict__ for v in self.verdicts],
        }


def score(predictions: Sequence[str], problems: Sequence[str], solutions: Sequence[str]) -> MathReport:
    """Score predictions against references, paired by position (MindFormers keeps order)."""
    report = MathReport()
    for i, (pred, prob, sol) in enumerate(zip(predictions, problems, solutions, strict=False)):
        report.verdicts.append(judge(i, pred, prob, sol))
    return report
