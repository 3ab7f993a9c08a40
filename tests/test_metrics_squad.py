"""EM/F1: the values MindFormers printed on Ascend, and equality with the real EmF1Metric."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from launcher.errors import InputError
from launcher.metrics import predictions, squad

FIX = Path(__file__).parent / "fixtures" / "real-ascend"
FINETUNE = FIX / "train-run-1card" / "test_eval_finetune.log"
BASE = FIX / "eval-base" / "test_eval_base.log"


def _score_log(path: Path) -> squad.SquadScore:
    pairs = predictions.parse_eval_log(path.read_text(encoding="utf-8"), str(path))
    return squad.score((p.prediction, p.reference) for p in pairs)


def test_finetune_log_scores_as_mindformers_printed():
    # next-line layout: "pred is:\n ['...']\n label is:\n ['...']"
    s = _score_log(FINETUNE)
    assert s.count == 2067
    assert s.f1 == pytest.approx(70.45845460279635, abs=1e-9)
    assert s.em == pytest.approx(54.66860183841316, abs=1e-9)


def test_base_log_scores_as_mindformers_printed():
    # same-line layout: "pred is: ['...']" / "label is: ['...']"
    s = _score_log(BASE)
    assert s.count == 2067
    assert s.f1 == pytest.approx(59.87023775108988, abs=1e-9)
    assert s.em == pytest.approx(44.17029511369134, abs=1e-9)


def test_both_layouts_read_the_same_pairs():
    same = "x\npred is: ['Cam Newton', '北京。']\nlabel is: ['cam newton', '北京']\nF1 score: 1\n"
    nxt = "pred is:\n ['Cam Newton', '北京。']\n label is:\n ['cam newton', '北京']\n"
    a = predictions.parse_eval_log(same)
    b = predictions.parse_eval_log(nxt)
    assert [(p.prediction, p.reference) for p in a] == [(p.prediction, p.reference) for p in b]
    assert [(p.prediction, p.reference) for p in a] == [("Cam Newton", "cam newton"), ("北京。", "北京")]
    assert squad.score((p.prediction, p.reference) for p in a).em == 100.0


def test_example_from_emf1metric_docstring():
    # EmF1Metric's own docstring: F1 75.0, Em 50.0 for these two pairs.
    s = squad.score([("I love Beijing, because it's beautiful", "I love Beijing."),
                     ("Hello world。", "Hello world")])
    assert (s.f1, s.em, s.count) == (75.0, 50.0, 2)


def test_segmentation_keeps_cjk_and_special_chars_alone():
    assert squad.segment("北京-abc") == ["北", "京", "-", "abc"]
    assert squad.segment("北京-abc", drop_special=True) == ["北", "京", "abc"]
    assert squad.longest_common_run(list("abcxde"), list("zbcxq")) == 3
    assert squad.normalise_prediction("  first\nsecond ") == "first"


def test_bad_list_names_file_and_line():
    with pytest.raises(InputError) as err:
        predictions.parse_eval_log("ok\npred is: ['a'\nlabel is: ['b']\n", "e.log")
    assert "e.log:2" in str(err.value)
    with pytest.raises(InputError, match="label is"):
        predictions.parse_eval_log("pred is: ['a']\nnothing else\n", "e.log")


_WORDS = ["the", "Super", "Bowl", "50", "Denver", "Broncos", "1990s", "3.14", "-7", "AFC",
          "北京", "上海市", "中国", "人民", "大学", "的", "是", "。", "，", "、", "：", "？", "！",
          "“", "”", "《", "》", "（", "）", "-", ":", "_", "*", "^", "/", "\\", "~", "`", "+",
          "=", "……", "·", "「", "」", "！", ".", ",", "'s", "  ", "\t", "Ⅻ", "é", "ß"]


def _sentence(rng: random.Random) -> str:
    n = rng.randint(0, 9)
    return "".join(rng.choice(_WORDS) + (" " if rng.random() < 0.5 else "") for _ in range(n))


def generated_pairs(seed: int = 20240725, count: int = 600) -> list[tuple[str, str]]:
    """Mixed Chinese/English/number/punctuation pairs; a third share words, some have newlines."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        ref = _sentence(rng)
        r = rng.random()
        if r < 0.3:
            pred = ref
        elif r < 0.6:
            pred = ref[: rng.randint(0, len(ref))] + _sentence(rng)
        else:
            pred = _sentence(rng)
        if rng.random() < 0.15:
            pred = " " + pred + "\n" + _sentence(rng)
        pairs.append((pred, ref))
    return pairs


@pytest.fixture
def emf1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # importing mindformers creates output/log in the cwd
    metric_mod = pytest.importorskip("mindformers.core.metric.metric")
    metric = metric_mod.EmF1Metric()
    metric.clear()
    return metric


@pytest.mark.ms
def test_equal_to_real_emf1metric_on_generated_pairs(emf1, capsys):
    pairs = generated_pairs()
    assert len(pairs) >= 500
    for pred, ref in pairs:
        emf1.update([pred], [ref])
    real = emf1.eval()
    capsys.readouterr()
    ours = squad.score(pairs)
    assert ours.count == len(pairs)
    assert ours.f1 == pytest.approx(real["F1"], abs=1e-9)
    assert ours.em == pytest.approx(real["Em"], abs=1e-9)
    # and per pair, so one compensating error cannot hide another
    for pred, ref in pairs[:200]:
        p = squad.normalise_prediction(pred)
        assert squad.f1(p, ref) == pytest.approx(emf1.calc_f1_score([ref], p), abs=1e-12)
        assert squad.exact_match(p, ref) == emf1.calc_em_score([ref], p)
    assert 0 < ours.em < 100 and 0 < ours.f1 < 100  # the generator covers hits and misses


@pytest.mark.ms
def test_equal_to_real_emf1metric_on_fixture(emf1, capsys):
    pairs = predictions.parse_eval_log(FINETUNE.read_text(encoding="utf-8"))
    real, _ = emf1.evaluate_pairs([p.prediction for p in pairs], [p.reference for p in pairs])
    capsys.readouterr()
    ours = squad.score((p.prediction, p.reference) for p in pairs)
    assert ours.f1 == pytest.approx(real["F1"], abs=1e-9)
    assert ours.em == pytest.approx(real["Em"], abs=1e-9)
