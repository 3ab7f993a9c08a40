"""The 11 problem families of the math set, recognised by their real phrasing.

Shared by the data recipe (which samples per family) and the math scorer (which
reports accuracy per family), so both agree on what "a division problem" is.
One compiled alternation does the work: every family starts with its own literal
Chinese prefix, so a non-matching alternative fails on its first character and a
row costs one ``fullmatch``. A problem wrapped in an Alpaca-style prompt is
unwrapped first, so the 200 real test items classify as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ARITHMETIC = "arithmetic"  # four operations: 计算 a + b 等于多少？
POWER = "power"  # 计算 3.5 的 2 次方？
SQUARE_ROOT = "square_root"  # 计算 49 的平方根？
FRACTION = "fraction"  # 将分数 5/6 进行简化。
AVERAGE = "average"  # 求以下数据的平均值：[70, 18, 94]
EQUATION = "equation"  # 解方程 -1x + -17 = 0
FUNCTION_VALUE = "function_value"  # 当 x = 2.5 时，求函数 y = 3x^2 的值
AREA = "area"  # 一个长方形的长为 12 厘米，宽为 5 厘米，请计算其面积。
MASS = "mass"  # 某物体的密度为 3 克/立方厘米，体积为 7 立方厘米，请计算该物体的质量。
DISCOUNT = "discount"  # 商品原价为 120 元，打折后的价格为 96 元，请计算打折的折扣比例。
SALES = "sales"  # 去年销售额为 32 万元，今年销售额增加了 28%，请计算今年的销售额。

FAMILIES: tuple[str, ...] = (
    ARITHMETIC, POWER, SQUARE_ROOT, FRACTION, AVERAGE, EQUATION, FUNCTION_VALUE,
    AREA, MASS, DISCOUNT, SALES,
)

# The recipe samples finer than the family for two of them (seed report: "addition
# 9,525 ... multiplication 0", "power-of-0/1/2: 10 each"): these are the buckets.
OPERATION_BUCKETS = {"+": "addition", "-": "subtraction", "*": "multiplication", "/": "division"}
ADDITION, SUBTRACTION, MULTIPLICATION, DIVISION = OPERATION_BUCKETS.values()

_NUM = r"-?\d+(?:\.\d+)?"
_Q = r"[？?]"
_C = r"[，,]"
_PATTERNS = {
    ARITHMETIC: rf"计算\s*(?P<ar_a>{_NUM})\s*(?P<ar_op>[-+*/])\s*(?P<ar_b>{_NUM})\s*等于多少{_Q}",
    POWER: rf"计算\s*(?P<pw_base>{_NUM})\s*的\s*(?P<pw_exp>\d+)\s*次方{_Q}",
    SQUARE_ROOT: rf"计算\s*(?P<sq_x>{_NUM})\s*的平方根{_Q}",
    FRACTION: r"将分数\s*(?P<fr_a>-?\d+)\s*/\s*(?P<fr_b>-?\d+)\s*进行简化[。.]?",
    AVERAGE: rf"求以下数据的平均值[：:]\s*\[(?P<av_list>\s*{_NUM}(?:\s*,\s*{_NUM})*\s*)\]",
    EQUATION: rf"解方程\s*(?P<eq_a>{_NUM})\s*x\s*\+\s*(?P<eq_b>{_NUM})\s*=\s*0",
    FUNCTION_VALUE: (rf"当\s*x\s*=\s*(?P<fn_x>{_NUM})\s*时{_C}\s*求函数\s*y\s*=\s*(?P<fn_c>{_NUM})\s*x"
                     rf"\s*\^\s*(?P<fn_n>{_NUM})\s*的值"),
    AREA: (rf"一个长方形的长为\s*(?P<ae_l>{_NUM})\s*厘米{_C}\s*宽为\s*(?P<ae_w>{_NUM})\s*厘米{_C}"
           r"\s*请计算其面积[。.]?"),
    MASS: (rf"某物体的密度为\s*(?P<ms_d>{_NUM})\s*克/立方厘米{_C}\s*体积为\s*(?P<ms_v>{_NUM})\s*立方厘米"
           rf"{_C}\s*请计算该物体的质量[。.]?"),
    DISCOUNT: (rf"商品原价为\s*(?P<dc_orig>{_NUM})\s*元{_C}\s*打折后的价格为\s*(?P<dc_new>{_NUM})\s*元"
               rf"{_C}\s*请计算打折的折扣比例[。.]?"),
    SALES: (rf"去年销售额为\s*(?P<sl_last>{_NUM})\s*万元{_C}\s*今年销售额增加了\s*(?P<sl_pct>{_NUM})\s*%"
            rf"{_C}\s*请计算今年的销售额[。.]?"),
}
# Group names carry the family's prefix, so a match's fields are found without a table.
_PREFIX = {ARITHMETIC: "ar_", POWER: "pw_", SQUARE_ROOT: "sq_", FRACTION: "fr_", AVERAGE: "av_",
           EQUATION: "eq_", FUNCTION_VALUE: "fn_", AREA: "ae_", MASS: "ms_", DISCOUNT: "dc_",
           SALES: "sl_"}

_FIELDS = {fam: [(name[len(_PREFIX[fam]):], name) for name in re.compile(pat).groupindex]
           for fam, pat in _PATTERNS.items()}
_ALTERNATION = re.compile("|".join(f"(?P<{fam}>{pat})" for fam, pat in _PATTERNS.items()))
# The same patterns keyed by their first character: the hot path tries only the one or
# three alternatives that can match, instead of failing through all eleven.
_BY_FIRST: dict[str, re.Pattern[str]] = {
    first: re.compile("|".join(f"(?P<{fam}>{pat})" for fam, pat in _PATTERNS.items() if pat[0] == first))
    for first in {pat[0] for pat in _PATTERNS.values()}
}
_INSTRUCTION = "### Instruction:"
_RESPONSE = "### Response:"


@dataclass(frozen=True)
class Parsed:
    """A classified problem: its family, recipe bucket and the numbers its phrasing holds."""

    family: str
    bucket: str
    fields: dict[str, str]


def instruction_of(text: str) -> str:
    """The bare question: the part between ``### Instruction:`` and ``### Response:`` if present."""
    start = text.find(_INSTRUCTION)
    if start < 0:
        return text.strip()
    start += len(_INSTRUCTION)
    end = text.find(_RESPONSE, start)
    return text[start:end if end >= 0 else len(text)].strip()


def _match(problem: str) -> re.Match[str] | None:
    text = problem.strip() if _INSTRUCTION not in problem else instruction_of(problem)
    return _ALTERNATION.fullmatch(text)


def classify(problem: str) -> str | None:
    """The family of ``problem`` (bare or Alpaca-wrapped), or None when no family matches."""
    m = _match(problem)
    return None if m is None else m.lastgroup


def bucket_of(family: str, m: re.Match[str]) -> str:
    """The recipe's sampling bucket: the operation for arithmetic, ``power_N`` for powers."""
    if family == ARITHMETIC:
        return OPERATION_BUCKETS[m.group("ar_op")]
    if family == POWER:
        return f"power_{int(m.group('pw_exp'))}"
    return family


def parse(problem: str) -> Parsed | None:
    """Family, bucket and named numbers of ``problem`` (None when unclassified)."""
    m = _match(problem)
    if m is None:
        return None
    family = m.lastgroup
    assert family is not None
    fields = {short: m.group(full) for short, full in _FIELDS[family]}
    return Parsed(family, bucket_of(family, m), fields)


def classify_bucket(problem: str) -> tuple[str, str] | None:
    """(family, bucket) of ``problem`` without building the field map: the hot path of prepare."""
    pattern = _BY_FIRST.get(problem[:1])
    m = pattern.fullmatch(problem) if pattern is not None else None
    if m is None:
        m = _match(problem)  # wrapped in a prompt, or surrounding whitespace
        if m is None:
            return None
    family = m.lastgroup
    assert family is not None
    return family, bucket_of(family, m)


def _tagging_pattern() -> re.Pattern[str]:
    """All families as one multi-line pattern whose non-empty group is the row's tag.

    Tag: the operator for arithmetic, the exponent for powers, the first character for
    every other family (计 for square roots: arithmetic and powers never tag with it).
    A last ``.*`` matches any other line with an empty tag, so ``findall`` yields exactly
    one tag per line, in order. Whitespace may not cross a line break.
    """
    alternatives = []
    keep = {"ar_op", "pw_exp"}
    for family, pattern in _PATTERNS.items():
        body = re.sub(r"\(\?P<(\w+)>", lambda m: "(" if m.group(1) in keep else "(?:", pattern)
        body = body.replace(r"\s", r"[^\S\n]")
        if family not in (ARITHMETIC, POWER):
            body = f"({body[0]}){body[1:]}"
        alternatives.append(body)
    return re.compile("^(?:" + "|".join(alternatives) + "|.*)$", re.M)


_TAGGER = _tagging_pattern()
_TAG_FAMILY = {pat[0]: fam for fam, pat in _PATTERNS.items() if pat[0] != "计"} | {"计": SQUARE_ROOT}


def _bucket_of_tag(tag: str) -> str:
    if tag in OPERATION_BUCKETS:
        return OPERATION_BUCKETS[tag]
    if tag.isdigit():
        return f"power_{int(tag)}"
    return _TAG_FAMILY[tag]


def group_buckets(problems: list[str]) -> tuple[dict[str, list[int]], list[int]]:
    """Indices of ``problems`` per bucket (in order) and the indices of no family.

    The same answer as :func:`classify_bucket` row by row, faster: all rows are joined
    and tagged by one C-level ``findall`` (see :func:`_tagging_pattern`), so the only
    Python work per row is a dict append. Rows with an empty tag (surrounding space, a
    wrapped prompt, no family) take the row-by-row path; so does everything when a
    problem holds a line break. (Measured alternatives, slower: a ``fullmatch`` per row,
    prefix/suffix dispatch + a block regex per family, ``sub`` with a group template.)
    """
    block = "\n".join(problems)
    tags: list[str] | None = None
    if block.count("\n") == len(problems) - 1:
        tags = list(map("".join, _TAGGER.findall(block)))
    del block
    if tags is None or len(tags) != len(problems):
        tags = [""] * len(problems)
    by_tag: dict[str, list[int]] = {}
    for i, tag in enumerate(tags):
        by_tag.setdefault(tag, []).append(i)
    other = by_tag.pop("", [])
    groups: dict[str, list[int]] = {}
    for tag, idx in by_tag.items():
        bucket = _bucket_of_tag(tag)
        if bucket in groups:  # power exponents written 2 and 02
            groups[bucket] = sorted(groups[bucket] + idx)
        else:
            groups[bucket] = idx
    unclassified: list[int] = []
    late = False
    for i in other:
        hit = classify_bucket(problems[i])
        if hit is None:
            unclassified.append(i)
        else:
            groups.setdefault(hit[1], []).append(i)
            late = True
    if late:
        for idx in groups.values():
            idx.sort()  # rows found late join their bucket in order
    return groups, unclassified


def is_bucket(name: str) -> bool:
    """Whether ``name`` is a bucket a recipe may set a quota for."""
    if name in OPERATION_BUCKETS.values():
        return True
    if name.startswith("power_") and name[6:].isdigit():
        return True
    return name in FAMILIES and name not in (ARITHMETIC, POWER)
