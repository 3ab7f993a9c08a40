"""Math accuracy: 119 of 200 on the real predictions, and a handful of items by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.errors import InputError
from launcher.metrics import mathacc, predictions

FIX = Path(__file__).parent / "fixtures" / "real-ascend"
PREDS = FIX / "train-run-1card" / "text_generation_result.txt"
REF = FIX / "math_test_200.jsonl"


@pytest.fixture(scope="module")
def report() -> mathacc.MathReport:
    preds = predictions.parse_generation_result(PREDS.read_text(encoding="utf-8"), str(PREDS))
    refs = predictions.parse_math_reference(REF.read_text(encoding="utf-8"), str(REF))
    return mathacc.score(preds, [r.problem for r in refs], [r.solution for r in refs])


def test_fixture_gives_119_of_200(report):
    assert (report.correct, report.total) == (119, 200)
    fams = report.per_family()
    assert sum(c.total for c in fams.values()) == 200
    assert sum(c.correct for c in fams.values()) == 119
    assert "unclassified" not in fams  # every real test item belongs to one of the 11 families
    assert fams["arithmetic"].total == 137 and fams["area"].total == 4


# Items read by hand in the fixture files; the verdict and why.
HAND = {
    # 计算 -7451.51 - -1709.92: "... = -7451.51 + 1709.92 = -5741.59", reference -5741.59: equal.
    0: ("arithmetic", "-5741.59", True),
    # 计算 -6211.70 * -6871.61: model says 4267342.51, reference 42684380.0: far off.
    2: ("arithmetic", "4267342.51", False),
    # discount 19 -> 71: the model echoes the question, then "= 71 / 19 = 3.73 ... 3.73";
    # the reference (oddly) ends in -273.68: wrong.
    9: ("discount", "3.73", False),
    # the model answered only "-11014.57", the reference's last number is -11014.57.
    14: ("arithmetic", "-11014.57", True),
    # √6974.95: "6974.95 的平方根为 83.6" vs 83.52: 0.08 off, more than 0.01.
    17: ("square_root", "83.6", False),
    # 解方程 53x + 27 = 0: "... 方程的解为 -0.51", reference "方程的解为：-0.51".
    20: ("equation", "-0.51", True),
    # √282.03: 16.77 vs 16.79, 0.02 off: wrong.
    92: ("square_root", "16.77", False),
    # -3124.14 / 1192.09: the model says -2.63, the reference -2.62: within 0.01, correct.
    93: ("arithmetic", "-2.63", True),
}


@pytest.mark.parametrize("index", sorted(HAND))
def test_items_checked_by_hand(report, index):
    family, answer, correct = HAND[index]
    v = report.verdicts[index]
    assert v.family == family
    assert float(v.answer) == float(answer)
    assert v.correct is correct


def test_response_is_cut_at_hash_or_blank_line():
    prompt = "### Instruction:\n计算 1 + 2 等于多少？\n\n### Response:"
    pred = prompt + " 1 + 2 = 3\n\n### Instruction:\n计算 5 + 5 等于多少？ 10"
    assert mathacc.response_of(pred, prompt) == "1 + 2 = 3"
    v = mathacc.judge(0, pred, prompt, "1 + 2 = 3")
    assert v.correct and v.answer == "3.0"
    # without the cut, the later 10 would have been scored
    assert not mathacc.judge(0, pred.replace("\n\n###", " ###x"), prompt, "1 + 2 = 10").correct


def test_echo_removed_even_if_prompt_differs():
    # a prediction whose prompt is not byte-identical: everything after the last ### Response:
    assert mathacc.response_of("foo\n### Response: 7 克", "bar") == "7 克"


def test_fraction_rule_compares_numerator_and_denominator():
    prob = "### Instruction:\n将分数 10/12 进行简化。\n\n### Response:"
    ok = mathacc.judge(0, prob + " 10/12 = 5/6", prob, "最简化的形式为：5/6")
    assert ok.family == "fraction" and ok.correct and ok.answer == "5/6"
    # 10/12 has the same value but is not the simplified fraction: wrong.
    assert not mathacc.judge(0, prob + " 5/6 = 10/12", prob, "最简化的形式为：5/6").correct


def test_no_number_is_wrong():
    assert not mathacc.judge(0, "p 不知道", "p", "= 3").correct


def test_bad_prediction_file_names_the_problem():
    with pytest.raises(InputError, match="literal"):
        predictions.parse_generation_result("[{'text_generation_text': ['a']", "r.txt")
    with pytest.raises(InputError, match="r.txt"):
        predictions.parse_generation_result("[__import__('os')]", "r.txt")
    with pytest.raises(InputError) as err:
        predictions.parse_math_reference('{"problem": "x", "solution": "1"}\n{"problem": 3}\n', "ref.jsonl")
    assert "ref.jsonl:2" in str(err.value)


def test_json_lines_predictions():
    text = '{"prediction": "a 1"}\n\n{"text_generation_text": ["b 2"]}\n'
    assert predictions.parse_generation_result(text, "p.jsonl") == ["a 1", "b 2"]
