"""Answer rewriting of the recipe: reasoning templates, one-decimal rounding, the Alpaca prompt.

Pure functions of one row. The seed report wrote fixed step-by-step templates for
division, discount, square root, rectangle area and mass, and rounded equation,
division, discount and square-root results to one decimal. The final number of every
answer stays last, because that is the number the math scorer reads.
The templates take the intermediate steps from the problem's numbers and the final
value from the raw solution: the recipe explains answers, it does not change them.
"""

from __future__ import annotations

import math
import re

from launcher.data import families as F

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{question}\n\n### Response:"
)
TEMPLATED = (F.DIVISION, F.DISCOUNT, F.SQUARE_ROOT, F.AREA, F.MASS)
ROUNDABLE = (F.EQUATION, F.DIVISION, F.DISCOUNT, F.SQUARE_ROOT, F.ADDITION, F.SUBTRACTION,
             F.MULTIPLICATION, F.AVERAGE, F.SALES)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def wrap(question: str, prompt: str = ALPACA_PROMPT) -> str:
    """The training/inference prompt for ``question`` (str.replace: questions may hold braces)."""
    return prompt.replace("{question}", question)


def one_decimal(value: str) -> str:
    """``value`` rounded to one decimal place, always written with exactly one decimal."""
    text = f"{round(float(value), 1):.1f}"
    return "0.0" if text == "-0.0" else text


def last_number(text: str) -> re.Match[str] | None:
    last = None
    for last in NUMBER.finditer(text):
        pass
    return last


def _division(f: dict[str, str], value: str) -> str:
    a, b = f["a"], f["b"]
    x, y = float(a), float(b)
    same = (x < 0) == (y < 0)
    sign = "两数同号，商为正数" if same else "两数异号，商为负数"
    quotient = abs(x) / abs(y) if y else float("inf")
    return (f"第一步：确定符号，{sign}。\n"
            f"第二步：计算绝对值的商，{abs(x):.2f} / {abs(y):.2f} ≈ {quotient:.4f}。\n"
            f"第三步：保留一位小数。\n"
            f"{a} / {b} = {value}")


def _discount(f: dict[str, str], value: str) -> str:
    orig, new = f["orig"], f["new"]
    ratio = float(new) / float(orig) if float(orig) else float("inf")
    return (f"折扣比例 = 打折后的价格 / 原价\n"
            f"= {new} / {orig}\n"
            f"≈ {ratio:.4f}\n"
            f"折扣比例为：{value}")


def _square_root(f: dict[str, str], value: str) -> str:
    x = f["x"]
    root = math.sqrt(abs(float(x)))
    k = math.floor(root)
    return (f"因为 {k}^2 = {k * k}，{k + 1}^2 = {(k + 1) ** 2}，所以 √{x} 在 {k} 和 {k + 1} 之间。\n"
            f"√{x} ≈ {root:.4f}\n"
            f"√{x} = {value}")


def _area(f: dict[str, str], value: str) -> str:
    return (f"长方形的面积 = 长 × 宽\n"
            f"= {f['l']} × {f['w']}\n"
            f"面积为 {value} 平方厘米")


def _mass(f: dict[str, str], value: str) -> str:
    return (f"质量 = 密度 × 体积\n"
            f"= {f['d']} 克/立方厘米 × {f['v']} 立方厘米\n"
            f"该物体的质量为 {value} 克")


_RENDER = {F.DIVISION: _division, F.DISCOUNT: _discount, F.SQUARE_ROOT: _square_root,
           F.AREA: _area, F.MASS: _mass}


def answer(parsed: F.Parsed | None, solution: str, *, templates: frozenset[str],
           rounded: frozenset[str]) -> str:
    """The training answer for a row: templated and/or rounded per the recipe, else as is."""
    if parsed is None:
        return solution
    bucket = parsed.bucket
    if bucket not in templates and bucket not in rounded:
        return solution
    m = last_number(solution)
    if m is None:  # nothing to round or explain; the report counts these
        return solution
    value = one_decimal(m.group()) if bucket in rounded else m.group()
    if bucket in templates:
        return _RENDER[bucket](parsed.fields, value)
    return solution[:m.start()] + value + solution[m.end():]
