"""npu-smi parsing on the real table (and two documented variants), summary, and rendering."""

from __future__ import annotations

import dataclasses

import pytest

from launcher.ops.npusmi import (
    NpuCard,
    NpuProcess,
    NpuSmiParseError,
    make_910b_cards,
    parse_npu_smi,
    parse_npu_smi_version,
    render_npu_smi_table,
    summarize,
)
from tests.conftest import FIXTURES

NPU_SMI = FIXTURES / "npu-smi"
REAL = (NPU_SMI / "910B2-8cards-busy4.txt").read_text()
PROC = (NPU_SMI / "derived-910B2C-process-row.txt").read_text()
B310 = (NPU_SMI / "derived-310B4-1card-no-hbm.txt").read_text()


def test_real_table_cards():
    cards = parse_npu_smi(REAL)
    assert [c.npu_id for c in cards] == list(range(8))
    assert {c.name for c in cards} == {"910B2"} and all(c.healthy for c in cards)
    first = cards[0]
    assert (first.power_w, first.temp_c, first.bus_id, first.aicore_pct) == (96.5, 36, "0000:C1:00.0", 0)
    assert (first.hbm_used_mb, first.hbm_total_mb) == (29954, 65536)
    assert (first.hugepages_used, first.hugepages_total, first.memory_used_mb) == (0, 0, 0)
    assert [c.hbm_used_mb for c in cards] == [29954, 29951, 29950, 29951, 3347, 3350, 3347, 3347]
    assert cards[7].bus_id == "0000:42:00.0" and cards[5].temp_c == 39
    assert all(c.processes == () for c in cards)
    assert parse_npu_smi_version(REAL) == "23.0.7"


def test_real_table_summary():
    s = summarize(parse_npu_smi(REAL))
    assert (s.count, s.all_healthy, s.busy, s.unhealthy) == (8, True, (0, 1, 2, 3), ())
    assert s.description == "8x 910B2, all OK, 4 busy (HBM 29.3/64 GiB)"
    # A higher threshold makes the same cards idle.
    assert summarize(parse_npu_smi(REAL), busy_hbm_mb=40000).description == "8x 910B2, all OK, idle"


def test_process_row_variant():
    cards = parse_npu_smi(PROC)
    assert parse_npu_smi_version(PROC) == "23.0.2.1"
    assert cards[0].processes == (NpuProcess(0, 0, 124528, "python3.8", 17400),)
    assert all(c.processes == () for c in cards[1:])
    assert cards[5].health == "Warning" and {c.name for c in cards} == {"910B2C"}
    s = summarize(cards)
    assert not s.all_healthy and s.unhealthy == ((5, "Warning"),)
    assert s.description == "8x 910B2C, Warning on NPU 5, 4 busy (HBM 29.3/64 GiB, 1 process)"


def test_310b_variant_without_hbm():
    (card,) = parse_npu_smi(B310)
    assert (card.name, card.health, card.bus_id) == ("310B4", "Alarm", "NA")
    assert (card.hbm_used_mb, card.hbm_total_mb) == (None, None)
    assert (card.memory_used_mb, card.memory_total_mb, card.power_w) == (1941, 15609, 8.5)
    assert not card.busy()
    assert summarize([card]).description == "1x 310B4, Alarm on NPU 0, idle"


def test_render_reproduces_real_fixture_byte_for_byte():
    assert render_npu_smi_table(parse_npu_smi(REAL)) == REAL


@pytest.mark.parametrize("text", [PROC, B310], ids=["process-row", "310b"])
def test_render_reproduces_derived_fixtures(text):
    cards = parse_npu_smi(text)
    version = parse_npu_smi_version(text)
    rendered = render_npu_smi_table(cards, version=version)
    assert parse_npu_smi(rendered) == cards
    if text is PROC:
        assert rendered == text
    else:  # the 310B header has no HBM-Usage word; the rows are identical
        assert rendered.splitlines()[5:] == text.splitlines()[5:]


def test_render_parse_round_trip_synthetic():
    cards = make_910b_cards(
        12, health=["OK"] * 10 + ["Alarm", "Critical"], hbm_used_mb=[3347 + 1000 * i for i in range(12)],
        processes={2: [(4242, "python3.9", 30000), (4243, "msrun", 12)], 11: [(7, "p", 1)]})
    text = render_npu_smi_table(cards)
    assert all(len(line) == 98 for line in text.splitlines())
    again = parse_npu_smi(text)
    assert again == cards
    assert again[2].processes[1] == NpuProcess(2, 0, 4243, "msrun", 12)
    s = summarize(again)
    assert s.unhealthy == ((10, "Alarm"), (11, "Critical"))
    assert s.busy == (2, 5, 6, 7, 8, 9, 10, 11)


def test_emulator_cards_match_real_layout():
    # What the test cluster prints for "8 cards, 4 busy" parses to what a real host shows.
    cards = make_910b_cards(8, hbm_used_mb=[29954] * 4 + [3347] * 4)
    assert summarize(parse_npu_smi(render_npu_smi_table(cards))).description == \
        "8x 910B2, all OK, 4 busy (HBM 29.3/64 GiB)"


def test_unknown_rows_are_tolerated():
    lines = REAL.splitlines()
    lines.insert(6, "| some future row          | ??            | unknown                                            |")
    lines.insert(2, "| a banner line npu-smi may print one day                                                        |")
    lines.append("| trailing unknown                                                                               |")
    assert parse_npu_smi("\n".join(lines)) == parse_npu_smi(REAL)


def test_na_values_become_none():
    text = REAL.replace("| 96.5        36  ", "| NA          NA  ")
    card = parse_npu_smi(text)[0]
    assert (card.power_w, card.temp_c) == (None, None)


@pytest.mark.parametrize("text,phrase", [
    ("", "not an npu-smi table"),
    ("bash: npu-smi: command not found\n", "got 'bash: npu-smi: command not found'"),
    ("dcmi module initialize failed. ret is -8005\n", "not an npu-smi table"),
    ("| NPU   Name | Health | Power(W) |\n", "not an npu-smi table"),
    ("\n".join(REAL.splitlines()[:2]), "not an npu-smi table"),
])
def test_not_a_table(text, phrase):
    with pytest.raises(NpuSmiParseError, match="not an npu-smi table"):
        parse_npu_smi(text)
    with pytest.raises(NpuSmiParseError) as info:
        parse_npu_smi(text)
    assert phrase in str(info.value)


def test_card_row_without_chip_row_is_an_error():
    lines = REAL.splitlines()
    del lines[7]  # chip row of NPU 0
    with pytest.raises(NpuSmiParseError, match=r"line 7: card row without its chip/bus-id row"):
        parse_npu_smi("\n".join(lines))


def test_garbled_metrics_name_the_line():
    text = REAL.replace("0           0    / 0          29954/ 65536", "0           garbage here     29954/ 65536")
    with pytest.raises(NpuSmiParseError, match=r"line 8: cannot read AICore / memory / HBM usage"):
        parse_npu_smi(text)


def test_cards_are_frozen():
    card = parse_npu_smi(REAL)[0]
    assert isinstance(card, NpuCard)
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.health = "Alarm"  # type: ignore[misc]


def test_no_cards():
    empty = render_npu_smi_table([])
    assert parse_npu_smi(empty) == []
    assert summarize([]).description == "no NPUs"
