"""Card allocation (pure) and the host's claims (the real CLAIM/RELEASE/INVENTORY ops, run here)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from launcher.core.cards import (
    CardsBusy,
    Holder,
    allocate,
    choose,
    describe_held,
    holders_from_npu_smi,
    merge_holders,
    parse_devices,
    pin_devices,
)
from launcher.core.hostfile import Host, apply_filters
from launcher.errors import ExitCode, InputError
from launcher.ops.cards import held_cards
from launcher.ops.npusmi import make_910b_cards, parse_npu_smi, render_npu_smi_table
from launcher.remote import wire
from tests.test_remote_scripts import run_script

PY = sys.executable


def test_two_jobs_get_disjoint_cards_lowest_first():
    host = Host("h", 4)
    first = choose(host, 2, {})
    held = {c: Holder(c, job_id="job-a") for c in first}
    assert first == (0, 1) and choose(host, 2, held) == (2, 3)


def test_too_few_free_cards_names_every_holder_in_one_line():
    host = Host("h", 4)
    held = merge_holders([Holder(0, job_id="a-1"), Holder(1, job_id="a-1")], [Holder(2, pid=77, process="python")])
    with pytest.raises(CardsBusy) as err:
        choose(host, 2, held)
    msg = err.value.message
    assert "\n" not in msg and "0,1 held by job a-1" in msg and "2 held by pid 77 (python)" in msg
    assert err.value.exit_code == ExitCode.CARDS_BUSY
    assert [h.card for h in err.value.holders["h"]] == [0, 1, 2]


def test_allocate_reports_every_short_node():
    hosts = [Host("h0", 2), Host("h1", 2)]
    held = {"h0": {0: Holder(0, job_id="x")}, "h1": {1: Holder(1, hbm_mb=30000)}}
    assert [h.slot_ids for h in allocate(hosts, 1, held)] == [(1,), (0,)]
    with pytest.raises(CardsBusy, match=r"h0: .*0 held by job x\) \| h1: .*1 held by 30000 MB HBM in use.*--wait"):
        allocate(hosts, 2, held)


def test_pinning_by_devices_or_include_refuses_rather_than_moving():
    hosts = pin_devices([Host("h", 8)], parse_devices("4,5"))
    assert hosts[0].slot_ids == (4, 5)
    with pytest.raises(CardsBusy, match="4 held by job j"):
        allocate(hosts, 2, {"h": {4: Holder(4, job_id="j")}})
    included = apply_filters([Host("h", 8), Host("g", 8)], include="h:4,5@g:0,1")
    assert [h.slot_ids for h in allocate(included, 2, {})] == [(4, 5), (0, 1)]
    with pytest.raises(InputError, match="--devices: card 9 is not among h's slots"):
        pin_devices([Host("h", 8)], (9,))
    for bad in ("", "a,b", "1,,2", "1,1"):
        with pytest.raises(InputError, match="--devices"):
            parse_devices(bad)


def test_npu_smi_busy_cards_name_the_process_and_a_job_claim_wins():
    procs = {2: [(4242, "python3.9", 12000)]}
    text = render_npu_smi_table(make_910b_cards(4, hbm_used_mb=[3347, 20000, 3347, 3347], processes=procs))
    holders = holders_from_npu_smi(parse_npu_smi(text))
    assert {h.card: h.describe() for h in holders} == {1: "20000 MB HBM in use (no process listed)",
                                                       2: "pid 4242 (python3.9)"}
    held = held_cards([{"job_id": "mine", "cards": [0]}, {"job_id": "other", "cards": [2]}],
                      {"code": 0, "out": text}, own_job="mine")
    assert sorted(held) == [1, 2] and held[2].job_id == "other"
    assert describe_held(held, [1, 2]).startswith("1 held by 20000 MB")
    assert held_cards([], {"code": 1, "out": "", "err": "dcmi error"}) == {}  # hosts check reports that


# ----------------------------------------------------------------------------- the host side

def _claim(base, job, cards, state_dir="", smi=False):
    res = run_script("stage", {"op": "claim", "base": str(base), "job_id": job, "cards": cards,
                               "state_dir": str(state_dir), "smi": smi})
    return wire.answer(res.stdout)


def test_claims_serialise_and_free_when_the_job_ends(tmp_path):
    base = tmp_path / "alaunch"
    a_state = tmp_path / "a" / "state"
    a_state.mkdir(parents=True)
    assert _claim(base, "job-a", [0, 1], a_state)["ok"]
    refused = _claim(base, "job-b", [1, 2])
    assert not refused["ok"] and refused["claims"] == [{"job_id": "job-a", "cards": [0, 1]}]
    assert _claim(base, "job-b", [2, 3])["ok"]
    look = _claim(base, "job-c", [])
    assert not look["ok"] and sorted(c["job_id"] for c in look["claims"]) == ["job-a", "job-b"]
    # the inventory of a submit's preflight sees the same claims
    inv = wire.answer(run_script("stage", {"op": "inventory", "base": str(base), "objects": [], "cards": True}).stdout)
    assert sorted(c["job_id"] for c in inv["claims"]) == ["job-a", "job-b"] and "npu_smi" in inv
    # job-a started and ended (no process with its marker, an exit code): its cards are free
    (a_state / "pid").write_text("1 1\n")
    (a_state / "exit_code").write_text("0\n")
    assert _claim(base, "job-d", [0, 1])["ok"]
    assert wire.answer(run_script("stage", {"op": "release", "base": str(base), "job_id": "job-d"}).stdout)["released"]
    assert _claim(base, "job-e", [0])["ok"]


def test_a_claim_holds_while_a_process_of_its_job_lives(tmp_path):
    base = tmp_path / "alaunch"
    state = tmp_path / "s"
    state.mkdir()
    (state / "pid").write_text("1 1\n")  # started, no exit code yet
    marker = "live-job-" + os.urandom(4).hex()
    proc = subprocess.Popen([PY, "-c", "import sys, time; sys.stdout.write('up\\n'); sys.stdout.flush(); time.sleep(30)"],
                            env={**os.environ, wire.JOB_MARKER: marker}, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"up\n"
        assert _claim(base, marker, [0], state)["ok"]
        assert not _claim(base, "other", [0])["ok"]
    finally:
        proc.kill()
        proc.wait()
    assert _claim(base, "other", [0])["ok"]  # its process is gone and it has a pid file: dead claim


def test_racing_claims_for_the_same_cards_one_wins(tmp_path):
    base = tmp_path / "alaunch"
    results = {}

    def go(job):
        results[job] = _claim(base, job, [0, 1])["ok"]
    threads = [threading.Thread(target=go, args=(f"job-{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == [False] * 5 + [True]
