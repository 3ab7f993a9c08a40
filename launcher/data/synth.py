"""A synthetic raw math set of the real one's shape (the real 809,993 rows cannot be fetched here).

Shape, from shared/fixtures/real-ascend/README.md: 11 Chinese families with their real
phrasing and answer format, distinct-pair counts in the real proportions, about a third
of all rows exact duplicates (fractions repeated hundreds of times: "将分数 5/6 进行简化。"
480 times at full size), then a tail of unique non-Chinese rows (the real set's last
9,993). Answers are computed, so they are correct.

Why it is fast: every distinct pair is formatted once into its JSON line; duplicates are
references to that string; one seeded ``random.Random`` drives every choice; the lines
are shuffled and streamed out in chunks. No per-row regex, no per-row ``json.dumps``
(the generated text never holds a character JSON would escape; checked once per line
set in :func:`_check_plain`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from launcher.data import families as F
from launcher.data.bulk import gc_paused

REAL_ROWS = 809_993
REAL_CHINESE_ROWS = 800_000
# Distinct Chinese pairs per family in the real set (README "The math data set's shape").
REAL_DISTINCT = {
    F.ARITHMETIC: 359_347, F.POWER: 39_207, F.SQUARE_ROOT: 39_227, F.FRACTION: 45,
    F.AVERAGE: 19_709, F.EQUATION: 40_080, F.FUNCTION_VALUE: 20_028, F.AREA: 8_665,
    F.MASS: 100, F.DISCOUNT: 6_275, F.SALES: 6_266,
}
HEAVY_FRACTION = ("5/6", 480)  # the README's most repeated prompt and its count at full size
FRACTION_ROWS_PER_ITEM = 300  # the other fractions repeat about as often
MASS_ROWS_PER_ITEM = 40

Pair = tuple[str, str]


def _line(problem: str, solution: str) -> str:
    # Same bytes as json.dumps({...}, ensure_ascii=False) for text without quotes,
    # backslashes or control characters (the generators make none).
    return f'{{"problem": "{problem}", "solution": "{solution}"}}\n'


def _check_plain(pairs: list[Pair]) -> None:
    bad = set('"\\\n\r\t')
    for p, s in pairs[:50]:
        if bad & set(p + s):  # pragma: no cover - a generator bug, not user input
            raise ValueError(f"generator produced a character JSON must escape: {p!r} {s!r}")


def _cents(r: Callable[[], float], limit: int) -> float:
    """A number with two decimals in [-limit, limit]."""
    return (int(r() * (2 * limit * 100 + 1)) - limit * 100) / 100


def _arithmetic(rng: random.Random, n: int) -> list[Pair]:
    # The hottest loop of synth (about 45% of all distinct pairs): kept flat on purpose.
    r = rng.random
    out: list[Pair] = []
    app = out.append
    for _ in range(n):
        a = (int(r() * 2000001) - 1000000) / 100
        b = (int(r() * 2000001) - 1000000) / 100
        op = int(r() * 4)
        if op == 0:
            e = f"{a:.2f} + {b:.2f}"
            v = round(a + b, 2)
        elif op == 1:
            e = f"{a:.2f} - {b:.2f}"
            v = round(a - b, 2)
        elif op == 2:
            e = f"{a:.2f} * {b:.2f}"
            v = float(round(a * b))
        else:
            b = b or 1.0
            e = f"{a:.2f} / {b:.2f}"
            v = round(a / b, 2)
        app((f"计算 {e} 等于多少？", f"{e} = {v!r}"))
    return out


def _power(rng: random.Random, n: int) -> list[Pair]:
    r = rng.random
    out = []
    for _ in range(n):
        base = _cents(r, 1000)
        exp = int(r() * 6)
        out.append((f"计算 {base:.2f} 的 {exp} 次方？", f"{base:.2f}^{exp} = {round(base ** exp, 2)!r}"))
    return out


def _square_root(rng: random.Random, n: int) -> list[Pair]:
    r = rng.random
    out = []
    for _ in range(n):
        if r() < 0.1:
            x: float = int(r() * 10000) + 1
            text = str(x)
        else:
            x = (int(r() * 1_000_000) + 1) / 100
            text = f"{x:.2f}"
        out.append((f"计算 {text} 的平方根？", f"√{text} = {round(math.sqrt(x), 2)!r}"))
    return out


def _fractions(rng: random.Random, n: int) -> list[Pair]:
    space = [(a, b) for b in range(2, 13) for a in range(1, b) if (a, b) != (5, 6)]
    chosen = [(5, 6)] + rng.sample(space, min(n, len(space) + 1) - 1)
    out = []
    for a, b in chosen:
        g = math.gcd(a, b)
        out.append((f"将分数 {a}/{b} 进行简化。", f"最简化的形式为：{a // g}/{b // g}"))
    return out


def _average(rng: random.Random, n: int) -> list[Pair]:
    r = rng.random
    out = []
    for _ in range(n):
        values = [int(r() * 100) + 1 for _ in range(3 + int(r() * 6))]
        out.append((f"求以下数据的平均值：{values}", f"平均值为 {sum(values) / len(values)!r}"))
    return out


def _equation(rng: random.Random, n: int) -> list[Pair]:
    space = [(a, b) for a in range(-100, 101) if a for b in range(-100, 101)]
    return [(f"解方程 {a}x + {b} = 0", f"方程的解为：{round(-b / a, 2) + 0.0!r}")
            for a, b in rng.sample(space, min(n, len(space)))]


def _function_value(rng: random.Random, n: int) -> list[Pair]:
    r = rng.random
    out = []
    for _ in range(n):
        x = int(r() * 500) / 100
        c = int(r() * 100) + 1
        k = int(r() * 100) + 1
        out.append((f"当 x = {x!r} 时，求函数 y = {c}x^{k} 的值", f"函数的值为：{round(c * x ** k, 2)!r}"))
    return out


def _area(rng: random.Random, n: int) -> list[Pair]:
    space = [(a, b) for a in range(1, 101) for b in range(1, 101)]
    return [(f"一个长方形的长为 {a} 厘米，宽为 {b} 厘米，请计算其面积。", f"面积为 {a * b} 平方厘米")
            for a, b in rng.sample(space, min(n, len(space)))]


def _mass(rng: random.Random, n: int) -> list[Pair]:
    space = [(d, v) for d in range(1, 11) for v in range(1, 11)]
    return [(f"某物体的密度为 {d} 克/立方厘米，体积为 {v} 立方厘米，请计算该物体的质量。", f"{d * v} 克")
            for d, v in rng.sample(space, min(n, len(space)))]


def _discount(rng: random.Random, n: int) -> list[Pair]:
    space = [(o, p) for o in range(20, 201) for p in range(1, o)]
    return [(f"商品原价为 {o} 元，打折后的价格为 {p} 元，请计算打折的折扣比例。", repr(round(p / o, 2)))
            for o, p in rng.sample(space, min(n, len(space)))]


def _sales(rng: random.Random, n: int) -> list[Pair]:
    space = [(s, p) for s in range(1, 101) for p in range(1, 101)]
    return [(f"去年销售额为 {s} 万元，今年销售额增加了 {p}%，请计算今年的销售额。",
             repr(round(s * (100 + p) / 100, 2)))
            for s, p in rng.sample(space, min(n, len(space)))]


def _english_tail(rng: random.Random, n: int) -> list[Pair]:
    """Non-Chinese rows: no family's phrasing, so the recipe must report them."""
    r = rng.random
    out = []
    for i in range(n):
        a = _cents(r, 1000)
        b = _cents(r, 1000)
        kind = i % 3
        if kind == 0:
            out.append((f"What is {a:.2f} plus {b:.2f}? (item {i})", f"{a:.2f} + {b:.2f} = {round(a + b, 2)!r}"))
        elif kind == 1:
            out.append((f"Calculate {a:.2f} minus {b:.2f}. (item {i})", f"{a:.2f} - {b:.2f} = {round(a - b, 2)!r}"))
        else:
            x = abs(a) + 1
            out.append((f"Find the square root of {x:.2f}. (item {i})", f"sqrt({x:.2f}) = {round(math.sqrt(x), 2)!r}"))
    return out


GENERATORS: dict[str, Callable[[random.Random, int], list[Pair]]] = {
    F.ARITHMETIC: _arithmetic, F.POWER: _power, F.SQUARE_ROOT: _square_root, F.FRACTION: _fractions,
    F.AVERAGE: _average, F.EQUATION: _equation, F.FUNCTION_VALUE: _function_value, F.AREA: _area,
    F.MASS: _mass, F.DISCOUNT: _discount, F.SALES: _sales,
}


def plan(rows: int) -> tuple[dict[str, int], int]:
    """Distinct Chinese pairs per family and the size of the non-Chinese tail for ``rows``.

    Pure, so the proportions are testable without generating anything.
    """
    tail = round(rows * (REAL_ROWS - REAL_CHINESE_ROWS) / REAL_ROWS)
    chinese = rows - tail
    scale = chinese / REAL_CHINESE_ROWS
    distinct = {f: max(1, round(n * scale)) for f, n in REAL_DISTINCT.items()}
    distinct[F.FRACTION] = min(REAL_DISTINCT[F.FRACTION], max(1, round(REAL_DISTINCT[F.FRACTION] * scale * 50)))
    distinct[F.MASS] = min(REAL_DISTINCT[F.MASS], max(1, round(REAL_DISTINCT[F.MASS] * scale * 20)))
    while sum(distinct.values()) > chinese:  # tiny sets: shrink the biggest family
        biggest = max(distinct, key=lambda f: distinct[f])
        distinct[biggest] -= 1
    return distinct, tail


def generate_lines(rows: int, seed: int = 0) -> list[str]:
    """All ``rows`` JSON lines, in their final (shuffled) order; deterministic for ``seed``."""
    if rows < 0:
        raise ValueError("rows must be >= 0")
    with gc_paused():
        return _generate_lines(rows, seed)


def _generate_lines(rows: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    distinct, tail = plan(rows)
    chinese = rows - tail
    scale = chinese / REAL_CHINESE_ROWS
    lines: list[str] = []
    per_family: dict[str, list[str]] = {}
    for family, gen in GENERATORS.items():
        pairs = gen(rng, distinct[family])
        _check_plain(pairs)
        per_family[family] = [_line(p, s) for p, s in pairs]
        lines.extend(per_family[family])
    budget = max(0, chinese - len(lines))
    r = rng.random

    # Heavy repeats: the fractions (5/6 first, 480 rows at full size), then the masses.
    fractions = per_family[F.FRACTION]
    heavy = [min(budget, round(HEAVY_FRACTION[1] * scale) - 1)]
    heavy += [round(FRACTION_ROWS_PER_ITEM * scale * (0.6 + 0.8 * r())) - 1 for _ in fractions[1:]]
    for line, extra in zip(fractions, heavy, strict=False):
        extra = max(0, min(extra, budget))
        lines.extend([line] * extra)
        budget -= extra
    for line in per_family[F.MASS]:
        extra = max(0, min(round(MASS_ROWS_PER_ITEM * scale * (0.5 + r())) - 1, budget))
        lines.extend([line] * extra)
        budget -= extra

    # The rest: uniform repeats within each family, in proportion to its distinct count.
    light = [f for f in GENERATORS if f not in (F.FRACTION, F.MASS)]
    weight = sum(len(per_family[f]) for f in light)
    for i, family in enumerate(light):
        pool = per_family[family]
        k = budget if i == len(light) - 1 else min(budget, round(budget * len(pool) / weight))
        weight -= len(pool)
        n = len(pool)
        lines.extend([pool[int(r() * n)] for _ in range(k)])
        budget -= k

    lines = _permute(lines, rng)
    tail_pairs = _english_tail(rng, tail)
    _check_plain(tail_pairs)
    lines.extend(_line(p, s) for p, s in tail_pairs)
    return lines


def _permute(lines: list[str], rng: random.Random) -> list[str]:
    """``lines`` in a seeded random order: numpy's C permutation (rng.shuffle is 20x slower),
    applied by ``itemgetter`` (no object array round trip)."""
    import operator

    import numpy as np

    if len(lines) < 2:
        return list(lines)
    order = np.random.Generator(np.random.PCG64(rng.getrandbits(64))).permutation(len(lines))
    return list(operator.itemgetter(*order.tolist())(lines))


def write_lines(lines: list[str], out: TextIO, chunk: int = 262144) -> None:
    for i in range(0, len(lines), chunk):
        out.write("".join(lines[i:i + chunk]))


def synthesise(rows: int, path: Path, seed: int = 0) -> int:
    """Write ``rows`` synthetic raw rows to ``path`` (JSON lines); returns the byte count."""
    lines = generate_lines(rows, seed)
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        write_lines(lines, out)
    return path.stat().st_size


def iter_pairs(lines: list[str]) -> Iterator[Pair]:  # convenience for tests and benchmarks
    import json
    for line in lines:
        d = json.loads(line)
        yield d["problem"], d["solution"]
