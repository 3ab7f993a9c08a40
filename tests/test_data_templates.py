"""Prepared answers have the shapes of the 200 real test items, and correct final numbers.

The per-family regexes below are written from the test set's solutions (the first test
checks each one against every real solution of its family), then applied to answers
that `data prepare` writes from a synthesised raw set.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path

import pytest

from launcher.data import families as F
from launcher.data import synth
from launcher.data import templates as T
from launcher.data.prepare import PrepareOptions, prepare
from launcher.data.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "math_test_200.jsonl"
RECIPE = ROOT / "jobs" / "data" / "math_recipe.yaml"
N = r"-?\d+(?:\.\d+)?"

# bucket -> the answer's shape; the group named v is the final number.
SHAPES = {
    F.ADDITION: rf"{N} \+ {N} = (?P<v>{N})",
    F.SUBTRACTION: rf"(?:{N} - {N} = {N} \+ \d+(?:\.\d+)?|{N} - \d+(?:\.\d+)?) = (?P<v>{N})",
    F.MULTIPLICATION: rf"(?:-(?P<a>\d\S*) \* -(?P<b>\d\S*) = (?P=a) \* (?P=b)|{N} \* {N}) = (?P<v>{N})",
    F.DIVISION: rf"(?:-(?P<a>\d\S*) / -(?P<b>\d\S*) = (?P=a) / (?P=b)|{N} / {N}) = (?P<v>{N})",
    F.EQUATION: rf"(?P<a>{N})x = (?P<r>{N})\nx = (?P=r) / (?P=a)\nx = (?P<v>{N})\n方程的解为：(?P=v)",
    F.DISCOUNT: rf"= \((?P<o>{N}) - {N}\) / (?P=o) \* 100\n= {N} / (?P=o) \* 100\n= {N} \* 100\n= (?P<v>{N})",
    F.SQUARE_ROOT: rf"√{N} = (?P<v>{N})",
    F.AREA: rf"{N} \* {N} = (?P<v>{N})\n面积为 (?P=v) 平方厘米",
    F.MASS: rf"{N} \* {N} = (?P<v>{N})\n(?P=v) 克",
    F.AVERAGE: rf"{N}(?: \+ {N})* = (?P<s>{N})\n(?P=s) / \d+ = (?P<v>{N})\n平均值为: (?P=v)",
    F.SALES: rf"= {N} \* {N} = (?P<v>{N})",
}
ONE_DECIMAL = {F.EQUATION, F.DIVISION, F.DISCOUNT, F.SQUARE_ROOT}


def truth(bucket: str, f: dict[str, str]) -> float:
    """The right answer, computed here independently of launcher.data.templates."""
    x = {k: v for k, v in f.items() if k not in ("op", "list")}
    n = {k: float(v) for k, v in x.items()}
    if bucket == F.ADDITION:
        return n["a"] + n["b"]
    if bucket == F.SUBTRACTION:
        return n["a"] - n["b"]
    if bucket == F.MULTIPLICATION:
        return round(n["a"] * n["b"])
    if bucket == F.DIVISION:
        return n["a"] / n["b"]
    if bucket == F.EQUATION:  # a x + b = 0
        return -n["b"] / n["a"]
    if bucket == F.DISCOUNT:  # percent off
        return (n["orig"] - n["new"]) / n["orig"] * 100
    if bucket == F.SQUARE_ROOT:
        return math.sqrt(n["x"])
    if bucket == F.AREA:
        return n["l"] * n["w"]
    if bucket == F.MASS:
        return n["d"] * n["v"]
    if bucket == F.AVERAGE:
        values = [float(v) for v in f["list"].split(",")]
        return sum(values) / len(values)
    if bucket == F.SALES:
        return n["last"] * (1 + n["pct"] / 100)
    raise AssertionError(bucket)


def _test_set() -> dict[str, list[tuple[F.Parsed, str]]]:
    items: dict[str, list[tuple[F.Parsed, str]]] = defaultdict(list)
    for line in FIXTURE.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        parsed = F.parse(row["problem"])
        assert parsed is not None
        items[parsed.bucket].append((parsed, row["solution"]))
    return items


TEST_SET = _test_set()


@pytest.mark.parametrize("bucket", sorted(SHAPES))
def test_shapes_are_those_of_the_real_test_set(bucket):
    items = TEST_SET[bucket]
    assert items, bucket
    for parsed, solution in items:
        m = re.fullmatch(SHAPES[bucket], solution)
        assert m, (bucket, solution)
        assert float(m["v"]) == pytest.approx(truth(bucket, parsed.fields), abs=0.006)


@pytest.mark.parametrize("bucket", sorted(SHAPES))
def test_templates_reproduce_every_real_solution_at_two_decimals(bucket):
    """With the test set's own rounding the template writes the real solution byte for byte."""
    for parsed, solution in TEST_SET[bucket]:
        assert T.render(bucket, parsed.fields, one_decimal_result=False) == solution


def test_recipe_rounding_changes_only_the_result():
    parsed = F.parse("商品原价为 56 元，打折后的价格为 20 元，请计算打折的折扣比例。")
    assert T.render(parsed.bucket, parsed.fields, one_decimal_result=True) == (
        "= (56 - 20) / 56 * 100\n= 36 / 56 * 100\n= 0.6429 * 100\n= 64.3")
    parsed = F.parse("解方程 -13x + 10 = 0")
    assert T.render(parsed.bucket, parsed.fields, one_decimal_result=True) == (
        "-13x = -10.0\nx = -10.0 / -13\nx = 0.8\n方程的解为：0.8")
    parsed = F.parse("计算 1.00 / 0.00 等于多少？")
    assert T.render(parsed.bucket, parsed.fields, one_decimal_result=True) is None
    # no template possible: the raw solution, rounded per the recipe
    assert T.answer(parsed, "1.00 / 0.00 = 0.123", templates=frozenset(T.TEMPLATED),
                    rounded=frozenset(ONE_DECIMAL)) == "1.00 / 0.00 = 0.1"


def test_prepared_answers_have_the_test_set_shape_and_a_correct_final_number(tmp_path):
    raw = tmp_path / "raw.jsonl"
    synth.synthesise(40000, raw, seed=11)
    recipe = load_recipe(RECIPE)
    quotas = {b: min(q, 200) for b, q in recipe.quotas.items()}
    quotas[F.MULTIPLICATION] = 50  # the reference recipe samples none; check its shape anyway
    recipe = recipe.model_copy(update={"quotas": quotas})
    prepare(PrepareOptions(raw=raw, recipe=recipe, out_dir=tmp_path / "o"))
    train = json.loads((tmp_path / "o" / "train.json").read_text(encoding="utf-8"))
    checked: dict[str, int] = defaultdict(int)
    for item in train:
        question = F.instruction_of(item["conversations"][0]["value"])
        answer = item["conversations"][1]["value"]
        parsed = F.parse(question)
        if parsed.bucket not in SHAPES:
            continue
        m = re.fullmatch(SHAPES[parsed.bucket], answer)
        assert m, (parsed.bucket, question, answer)
        if parsed.bucket in ONE_DECIMAL:
            assert re.fullmatch(r"-?\d+\.\d", m["v"]), answer
            tol = 0.05 + 1e-9
        else:
            tol = 0.005 + 1e-9
        assert float(m["v"]) == pytest.approx(truth(parsed.bucket, parsed.fields), abs=tol), answer
        checked[parsed.bucket] += 1
    assert set(checked) == set(SHAPES), checked
    assert min(checked.values()) >= 20, checked
