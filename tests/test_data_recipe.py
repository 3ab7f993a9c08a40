"""The math data recipe: synth, classification, dedup, quotas, templates, rounding, errors."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from launcher.data import families as F
from launcher.data import synth
from launcher.data.prepare import PrepareOptions, prepare
from launcher.data.rawio import read_raw
from launcher.data.recipe import Recipe, load_recipe
from launcher.data.templates import ALPACA_PROMPT, NUMBER
from launcher.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "math_test_200.jsonl"
RECIPE = ROOT / "jobs" / "data" / "math_recipe.yaml"
ROUNDED = {F.EQUATION, F.DIVISION, F.DISCOUNT, F.SQUARE_ROOT}


def _small_recipe(**quotas: int) -> Recipe:
    base = load_recipe(RECIPE)
    return base.model_copy(update={"quotas": quotas or {k: min(v, 40) for k, v in base.quotas.items()}})


def test_classifies_all_200_real_items_into_the_families_counted_in_the_file():
    # Counts verified by reading the file: grep -c for each family's phrase
    # (次方 17, 平方根 12, 解方程 13, 平均值 7, 折扣 5, 长方形 4, 求函数 3, 销售额 1, 密度 1,
    # 等于多少 137 of which / 27, * 32, - 38, + 40).
    families, buckets = Counter(), Counter()
    for line in FIXTURE.read_text(encoding="utf-8").splitlines():
        parsed = F.parse(json.loads(line)["problem"])
        assert parsed is not None, line
        families[parsed.family] += 1
        buckets[parsed.bucket] += 1
    assert families == {F.ARITHMETIC: 137, F.POWER: 17, F.EQUATION: 13, F.SQUARE_ROOT: 12,
                        F.AVERAGE: 7, F.DISCOUNT: 5, F.AREA: 4, F.FUNCTION_VALUE: 3, F.SALES: 1,
                        F.MASS: 1}
    assert (buckets[F.ADDITION], buckets[F.SUBTRACTION], buckets[F.MULTIPLICATION],
            buckets[F.DIVISION]) == (40, 38, 32, 27)
    assert sum(buckets[f"power_{n}"] for n in range(6)) == 17


def test_classify_is_a_clean_public_function():
    assert F.classify("将分数 5/6 进行简化。") == F.FRACTION
    assert F.classify("  解方程 -1x + -17 = 0 ") == F.EQUATION
    assert F.classify("What is 1 + 1?") is None
    assert F.classify("计算 1 + 1 等于多少？然后呢") is None  # fullmatch, not a prefix test
    assert len(F.FAMILIES) == 11


def test_synth_is_byte_identical_per_seed_and_differs_across_seeds(tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    synth.synthesise(5000, a, seed=7)
    synth.synthesise(5000, b, seed=7)
    synth.synthesise(5000, c, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    lines = a.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5000
    for line in lines[:200]:  # the hand-built lines are exactly what json.dumps writes
        assert json.dumps(json.loads(line), ensure_ascii=False) == line


def test_synth_answers_are_correct(tmp_path):
    lines = synth.generate_lines(30000, seed=1)
    checked = Counter()
    for problem, solution in synth.iter_pairs(lines):
        parsed = F.parse(problem)
        if parsed is None:
            continue
        f, value = parsed.fields, float(NUMBER.findall(solution)[-1])
        if parsed.bucket == F.ADDITION:
            assert value == pytest.approx(float(f["a"]) + float(f["b"]), abs=0.006)
        elif parsed.bucket == F.DIVISION:
            assert value == pytest.approx(float(f["a"]) / float(f["b"]), abs=0.006)
        elif parsed.family == F.EQUATION:
            assert value == pytest.approx(-float(f["b"]) / float(f["a"]), abs=0.006)
        elif parsed.family == F.SQUARE_ROOT:
            assert value == pytest.approx(float(f["x"]) ** 0.5, abs=0.006)
        elif parsed.family == F.MASS:
            assert value == float(f["d"]) * float(f["v"])
        elif parsed.family == F.FRACTION:
            a, b = map(int, re.findall(r"\d+", problem))
            x, y = map(int, solution.split("：")[1].split("/"))
            assert x * b == y * a and __import__("math").gcd(x, y) == 1
        else:
            continue
        checked[parsed.family] += 1
    assert len(checked) == 5 and min(checked.values()) > 5


def test_synth_shape_duplicates_and_the_non_chinese_tail():
    distinct, tail = synth.plan(synth.REAL_ROWS)
    assert tail == 9993 and distinct[F.FRACTION] == 45 and distinct[F.MASS] == 100
    lines = synth.generate_lines(80000, seed=2)
    counts = Counter(lines)
    dup_share = 1 - len(counts) / len(lines)
    assert 0.25 < dup_share < 0.40
    top_line, top = counts.most_common(1)[0]
    assert "将分数 5/6 进行简化。" in top_line and top == round(480 * (80000 - 987) / 800000)
    assert all(not re.search(r"[\u4e00-\u9fff]", line) for line in lines[-tail * 80000 // 809993 + 5:])


def test_dedup_keeps_first_occurrence_order_and_counts(tmp_path):
    raw = tmp_path / "raw.jsonl"
    rows = [("将分数 5/6 进行简化。", "最简化的形式为：5/6"), ("解方程 2x + 4 = 0", "方程的解为：-2.0"),
            ("将分数 5/6 进行简化。", "最简化的形式为：5/6"), ("hello", "world")]
    text = "".join(json.dumps({"problem": p, "solution": s}, ensure_ascii=False) + "\n" for p, s in rows)
    # the same pair with other key order / spacing is still a duplicate
    text += '{"solution":"方程的解为：-2.0","problem":"解方程 2x + 4 = 0"}\n\n'
    raw.write_text(text, encoding="utf-8")
    data = read_raw(raw)
    assert data.rows == [rows[0], rows[1], rows[3]]
    assert data.counts == [2, 2, 1] and data.raw_rows == 5 and data.duplicates == 2
    assert data.blank_lines == 1


@pytest.mark.parametrize("line, expected", [
    (b'{"problem": "a", "solution": ', r"raw\.jsonl:2: not valid JSON \(Expecting value at column 30\)"),
    (b'{"problem": "a"}', r"raw\.jsonl:2: solution: missing"),
    (b'{"problem": 3, "solution": "x"}', r"raw\.jsonl:2: problem: must be a string, got int"),
    (b'["a", "b"]', r"raw\.jsonl:2: expected a JSON object, got a JSON list"),
    (b'{"problem": "\xe8\xae", "solution": "x"}', r"raw\.jsonl:2: not UTF-8 \(byte 0xe8"),
])
def test_malformed_line_names_file_and_line_or_is_skipped_and_counted(tmp_path, line, expected):
    raw = tmp_path / "raw.jsonl"
    good = json.dumps({"problem": "解方程 2x + 4 = 0", "solution": "方程的解为：-2.0"}, ensure_ascii=False)
    raw.write_bytes(good.encode() + b"\n" + line + b"\n" + good.encode() + b"\n")
    with pytest.raises(InputError, match=expected):
        read_raw(raw)
    data = read_raw(raw, skip_bad=True)
    assert data.bad_rows == 1 and data.raw_rows == 2 and len(data.rows) == 1
    assert re.search(expected, data.bad_examples[0])


def test_bad_recipe_names_file_line_and_key(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("unclassified: drop\nquotas:\n  addition: 5\n  multiplicaton: 3\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"r\.yaml:2: quotas: unknown bucket 'multiplicaton'; valid: addition"):
        load_recipe(bad)
    bad.write_text("quotas: {}\nunclassified: maybe\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"r\.yaml:2: unclassified: must be `drop` or `keep`"):
        load_recipe(bad)
    bad.write_text("unclassified: keep\nquotas: {}\nprompt: 'no slot'\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"r\.yaml:3: prompt: must contain \{question\}"):
        load_recipe(bad)


def test_reference_recipe_totals_40028():
    recipe = load_recipe(RECIPE)
    assert sum(recipe.quotas.values()) == 40028
    assert recipe.prompt == ALPACA_PROMPT and recipe.unclassified == "drop"


def _prepare(tmp_path: Path, raw: Path, name: str, recipe: Recipe, **kw) -> dict:
    out = tmp_path / name
    report = prepare(PrepareOptions(raw=raw, recipe=recipe, out_dir=out, **kw))
    return {"report": report, "train": json.loads((out / "train.json").read_text(encoding="utf-8")),
            "dir": out}


def test_prepare_same_seed_identical_other_seed_other_sample_same_quotas(tmp_path):
    raw = tmp_path / "raw.jsonl"
    synth.synthesise(30000, raw, seed=5)
    recipe = _small_recipe()
    a = _prepare(tmp_path, raw, "a", recipe, seed=1, test_rows=20)
    b = _prepare(tmp_path, raw, "b", recipe, seed=1, test_rows=20)
    c = _prepare(tmp_path, raw, "c", recipe, seed=2, test_rows=20)
    for name in ("train.json", "test.jsonl", "report.json"):
        assert (a["dir"] / name).read_bytes() == (b["dir"] / name).read_bytes()
    assert (a["dir"] / "train.json").read_bytes() != (c["dir"] / "train.json").read_bytes()
    per_bucket = lambda r: {x["bucket"]: x["sampled"] for x in r["report"]["buckets"]}  # noqa: E731
    assert per_bucket(a) == per_bucket(c)
    assert sum(per_bucket(a).values()) == len(a["train"]) == a["report"]["rows"]["written"]


def test_prepare_templates_rounding_prompt_and_unclassified(tmp_path):
    raw = tmp_path / "raw.jsonl"
    synth.synthesise(30000, raw, seed=6)
    recipe = _small_recipe()
    result = _prepare(tmp_path, raw, "o", recipe, test_rows=30)
    report, train = result["report"], result["train"]
    seen = Counter()
    for item in train:
        human, gpt = item["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        question = F.instruction_of(human["value"])
        assert human["value"] == ALPACA_PROMPT.replace("{question}", question)
        parsed = F.parse(question)
        assert parsed is not None  # unclassified: drop
        seen[parsed.bucket] += 1
        last = NUMBER.findall(gpt["value"])[-1]
        if parsed.bucket in ROUNDED:
            assert re.fullmatch(r"-?\d+\.\d", last), gpt["value"]
        if parsed.bucket in (F.DISCOUNT, F.AREA, F.MASS, F.EQUATION, F.AVERAGE):
            assert "\n" in gpt["value"]  # a step-by-step template (shapes: test_data_templates.py)
    assert seen[F.MULTIPLICATION] == 0 and seen[F.FUNCTION_VALUE] == 0
    assert report["unclassified"]["count"] > 0 and report["unclassified"]["sample"]
    assert report["rows"]["classified"] + report["rows"]["unclassified"] == report["rows"]["unique"]
    assert sum(report["families"].values()) == report["rows"]["classified"]
    test = [json.loads(line) for line in (result["dir"] / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    train_q = {F.instruction_of(i["conversations"][0]["value"]) for i in train}
    assert len(test) == 30 and not train_q & {F.instruction_of(t["problem"]) for t in test}


def test_quota_larger_than_available_takes_all_and_says_so(tmp_path):
    raw = tmp_path / "raw.jsonl"
    synth.synthesise(3000, raw, seed=1)
    recipe = _small_recipe(mass=10_000, fraction=3)
    report = _prepare(tmp_path, raw, "o", recipe)["report"]
    mass = next(b for b in report["buckets"] if b["bucket"] == "mass")
    assert mass["sampled"] == mass["available"] and mass["shortfall"] == 10_000 - mass["available"]
    assert any(n.startswith("mass: quota 10000 but only") for n in report["notes"])


def test_unclassified_keep_puts_them_in_the_output(tmp_path):
    raw = tmp_path / "raw.jsonl"
    synth.synthesise(3000, raw, seed=1)
    recipe = _small_recipe(fraction=2).model_copy(update={"unclassified": "keep"})
    r = _prepare(tmp_path, raw, "o", recipe)
    kept = [i for i in r["train"] if F.classify(i["conversations"][0]["value"]) is None]
    assert len(kept) == r["report"]["unclassified"]["count"] > 0


def test_cli_synth_and_prepare(tmp_path, run_cli):
    raw = tmp_path / "raw.jsonl"
    code, out, err = run_cli("data", "synth", "--rows", "4000", "--seed", "3", "-o", str(raw))
    assert code == 0, err
    assert "wrote 4,000 rows" in out
    code, out, err = run_cli("data", "prepare", str(raw), "--recipe", str(RECIPE), "-o", str(tmp_path / "o"))
    assert code == 0, err
    assert "duplicates removed" in out and "short by" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "x", "solution": "y"}\n{oops}\n', encoding="utf-8")
    code, out, err = run_cli("data", "prepare", str(bad), "--recipe", str(RECIPE), "-o", str(tmp_path / "b"))
    assert code == 2 and f"{bad}:2: not valid JSON" in err
    code, out, err = run_cli("data", "prepare", str(bad), "--recipe", str(RECIPE), "-o", str(tmp_path / "b"),
                             "--skip-bad", "--json")
    assert code == 0 and json.loads(out)["rows"]["bad_skipped"] == 1


@pytest.mark.slow
def test_full_size_set_meets_every_quota_without_duplicates(tmp_path):
    raw = tmp_path / "raw.jsonl"
    synth.synthesise(synth.REAL_ROWS, raw, seed=0)
    recipe = load_recipe(RECIPE)
    result = _prepare(tmp_path, raw, "o", recipe)
    report, train = result["report"], result["train"]
    rows = report["rows"]
    assert rows["raw"] == synth.REAL_ROWS
    assert rows["unique"] + rows["duplicates_removed"] == rows["raw"]
    assert 0.28 < rows["duplicates_removed"] / rows["raw"] < 0.38
    assert sum(report["families"].values()) + rows["unclassified"] == rows["unique"]
    for b in report["buckets"]:
        quota = recipe.quota(b["bucket"])
        assert b["sampled"] == min(quota, b["available"])
        assert b["shortfall"] == max(0, quota - b["available"])
    assert rows["written"] == len(train) == 40028  # every reference quota is available in full
    pairs = [(i["conversations"][0]["value"], i["conversations"][1]["value"]) for i in train]
    assert len(set(pairs)) == len(pairs)
    assert report["top_repeated_prompts"][0] == {"problem": "将分数 5/6 进行简化。", "count": 480}


def test_bulk_grouping_equals_row_by_row_classification():
    lines = synth.generate_lines(20000, seed=3)
    problems = [p for p, _ in synth.iter_pairs(lines)]
    problems += [json.loads(line)["problem"] for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    problems += [" 解方程 1x + 2 = 0", "解方程 1x + 2 = 0 ", "计算 1 + 2 等于多少?", "计算 a + 2 等于多少？",
                 "计算 2 的 02 次方？", "计算 2 的 2 次方？", "", "商品", "计算1+2等于多少？"]
    groups, unclassified = F.group_buckets(problems)
    expected: dict[str, list[int]] = {}
    for i, p in enumerate(problems):
        hit = F.classify_bucket(p)
        if hit is not None:
            expected.setdefault(hit[1], []).append(i)
    assert groups == expected
    assert unclassified == [i for i, p in enumerate(problems) if F.classify_bucket(p) is None]
    # a problem holding a line break must not shift the tags of the rows after it
    odd = ["解方程 1x + 2 = 0\n解方程 1x + 3 = 0", "将分数 5/6 进行简化。"]
    assert F.group_buckets(odd) == ({F.FRACTION: [1]}, [0])


@pytest.mark.parametrize("line", [
    '{"problem": "a \\"q\\" b", "solution": "x"}',  # escaped quotes
    '{"problem": "tab\\there", "solution": "x"}',  # an escape
    '{"problem":"a","solution":"x"}',  # other spacing
    '{"problem": "a", "solution": "x", "extra": "y"}',  # more keys
    '{"problem": "a", "solution": "x"}\r',  # CRLF
])
def test_reader_fast_path_agrees_with_json_on_every_line_shape(tmp_path, line):
    raw = tmp_path / "raw.jsonl"
    plain = '{"problem": "解方程 2x + 4 = 0", "solution": "方程的解为：-2.0"}'
    raw.write_text("\n".join([plain, line, plain, line]) + "\n", encoding="utf-8", newline="")
    data = read_raw(raw)
    expected = [(json.loads(plain)["problem"], json.loads(plain)["solution"]),
                (json.loads(line)["problem"], json.loads(line)["solution"])]
    assert data.rows == expected and data.counts == [2, 2] and data.raw_rows == 4


def test_synth_creates_missing_output_directory(run_cli, tmp_path):
    out = tmp_path / "new" / "dir" / "raw.jsonl"
    code, _, err = run_cli("data", "synth", "--rows", "50", "--seed", "3", "-o", str(out))
    assert code == 0, err
    assert len(out.read_text(encoding="utf-8").splitlines()) == 50
