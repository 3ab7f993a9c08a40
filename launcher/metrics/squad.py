"""SQuAD-style EM and F1, computed exactly as MindFormers' ``EmF1Metric`` does.

Why a copy and not an import: scoring happens on the laptop, where mindformers
(and mindspore) are an optional extra; and the numbers must be the ones the Ascend
machine printed, so every quirk of the original is kept on purpose:

* predictions are stripped and cut at their first newline (``EmF1Metric.update``);
  references are not cut (only lower-cased and stripped, like everything);
* segmentation: each CJK character (U+4E00..U+9FA5) and each character of its
  special-character list stands alone, other runs go through ``jieba.cut`` (which
  keeps spaces as tokens); for F1 the special characters are dropped first;
* "LCS" is the longest common *contiguous* run of segments; F1 = 2PR/(P+R) with
  P = lcs/len(pred), R = lcs/len(ref), 0 when nothing matches;
* EM compares lower-cased, stripped strings with the special characters removed;
* the multi-character entry ``'……'`` of its list can never match one character; kept.
* totals are ``100 * sum / count``, summed in input order (float addition order matters
  at 1e-12, so do not reorder).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SPECIAL_CHARS: tuple[str, ...] = (
    '-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=',
    '，', '。', '：', '？', '！', '“', '”', '；', '’', '《', '》', '……', '·', '、',
    '「', '」', '（', '）', '－', '～', '『', '』',
)
_SPECIAL = frozenset(SPECIAL_CHARS)
_CJK = re.compile(r'[\u4e00-\u9fa5]')

_jieba = None


def _cut(text: str) -> list[str]:
    """jieba.cut, initialised quietly: jieba prints its cache messages through logging."""
    global _jieba
    if _jieba is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        jieba.default_logger.propagate = False
        _jieba = jieba
    return list(_jieba.cut(text))


def normalise_prediction(text: str) -> str:
    """What ``EmF1Metric.update`` keeps of a generated answer: stripped, first line only."""
    return text.strip().split("\n")[0]


def segment(text: str, *, drop_special: bool = False) -> list[str]:
    """``EmF1Metric.mixed_segmentation``: CJK and special characters alone, the rest via jieba."""
    text = str(text).lower().strip()
    out: list[str] = []
    run = ""
    for char in text:
        if drop_special and char in _SPECIAL:
            continue
        if char in _SPECIAL or _CJK.match(char):
            if run:
                out.extend(_cut(run))
                run = ""
            out.append(char)
        else:
            run += char
    if run:
        out.extend(_cut(run))
    return out


def strip_special(text: str) -> str:
    """``EmF1Metric.remove_punctuation``: lower-case, strip, drop the special characters."""
    return "".join(c for c in str(text).lower().strip() if c not in _SPECIAL)


def longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest contiguous run of equal segments (what EmF1Metric calls LCS)."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                v = prev[j] + 1
                cur[j + 1] = v
                if v > best:
                    best = v
        prev = cur
    return best


def f1(prediction: str, reference: str) -> float:
    """F1 of one (already normalised) prediction against one reference, in [0, 1]."""
    ref = segment(reference, drop_special=True)
    pred = segment(prediction, drop_special=True)
    lcs = longest_common_run(ref, pred)
    if lcs == 0:
        return 0
    precision = 1.0 * lcs / len(pred)
    recall = 1.0 * lcs / len(ref)
    return (2 * precision * recall) / (precision + recall)


def exact_match(prediction: str, reference: str) -> int:
    """1 when the two agree after lower-casing, stripping and dropping special characters."""
    return 1 if strip_special(reference) == strip_special(prediction) else 0


@dataclass(frozen=True)
class SquadScore:
    """EM and F1 in percent over ``count`` pairs, as EmF1Metric prints them."""

    f1: float
    em: float
    count: int

    def as_dict(self) -> dict[str, float | int]:
        return {"F1": self.f1, "Em": self.em, "count": self.count}


def score(pairs: Iterable[tuple[str, str]], *, normalise: bool = True) -> SquadScore:
    """Score (prediction, reference) pairs. ``normalise`` applies the update() cut; pairs
    read back from an eval log were printed after that cut, and cutting twice is harmless."""
    total_f1 = 0.0
    total_em = 0.0
    count = 0
    for prediction, reference in pairs:
        if normalise:
            prediction = normalise_prediction(prediction)
        count += 1
        total_f1 += f1(prediction, reference)
        total_em += exact_match(prediction, reference)
    if count == 0:
        return SquadScore(0.0, 0.0, 0)
    return SquadScore(100.0 * total_f1 / count, 100.0 * total_em / count, count)
