"""Card allocation (pure) and the host's claims (the real CLAIM/RELEASE/INVENTORY ops, run here)."""

from __future__ import annotations

import getpass
import os
import shutil
import stat
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
    with pytest.raises(CardsBusy, match=r"h0: .*0 held by job x\) \| h1: .*1 held by 30000 MiB HBM in use.*--wait"):
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
    assert {h.card: h.describe() for h in holders} == {1: "20000 MiB HBM in use (no process listed)",
                                                       2: "pid 4242 (python3.9)"}
    held = held_cards([{"job_id": "mine", "cards": [0]}, {"job_id": "other", "cards": [2]}],
                      {"code": 0, "out": text}, own_job="mine")
    assert sorted(held) == [1, 2] and held[2].job_id == "other"
    assert describe_held(held, [1, 2]).startswith("1 held by 20000 MiB")
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
    assert not refused["ok"] and [(c["job_id"], c["cards"], c["user"]) for c in refused["claims"]] == [
        ("job-a", [0, 1], getpass.getuser())]
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


# ----------------------------------------------------------------------------- host-wide claims

def _cards_dir():
    return os.environ["ALAUNCH_CARDS_DIR"]  # tests/conftest.py: one per test


def test_claims_are_host_wide_one_lock_per_card_and_the_old_per_workdir_ones_still_hold(tmp_path):
    # two users' workdirs, one host: before, each saw only its own <workdir>/alaunch/cards
    assert _claim(tmp_path / "alice" / "alaunch", "job-a", [0, 1])["ok"]
    refused = _claim(tmp_path / "bob" / "alaunch", "job-b", [1, 2])
    assert not refused["ok"] and refused["claims"][0]["job_id"] == "job-a"
    d = _cards_dir()
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o1777
    assert sorted(os.listdir(d)) == ["card-0.lock", "card-1.lock", "card-2.lock", "job-a.claim"]
    # a claim of the old release (per workdir, read for one release) still holds its cards
    old = tmp_path / "bob" / "alaunch" / "cards" / os.uname()[1]
    old.mkdir(parents=True)
    import marshal
    import time
    (old / "job-old").write_bytes(marshal.dumps({"job_id": "job-old", "cards": [3], "state_dir": "",
                                                 "time": time.time()}, 4))
    refused = _claim(tmp_path / "bob" / "alaunch", "job-b", [2, 3])
    assert not refused["ok"] and [c["job_id"] for c in refused["claims"]] == ["job-a", "job-old"]
    assert wire.answer(run_script("stage", {"op": "release", "base": str(tmp_path / "bob" / "alaunch"),
                                            "job_id": "job-old"}).stdout)["released"]
    assert _claim(tmp_path / "bob" / "alaunch", "job-b", [2, 3])["ok"]


def test_a_claim_is_judged_by_the_pid_detach_noted_so_a_killed_job_frees_its_cards(tmp_path):
    proc = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    try:
        assert _claim(tmp_path / "w", "job-k", [0, 1])["ok"]
        start = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()[19]
        with open(os.path.join(_cards_dir(), "job-k.claim"), "a") as f:  # what DETACH appends
            f.write(f"pid={proc.pid}\nstart={start}\n")
        refused = _claim(tmp_path / "w2", "job-l", [1])
        assert not refused["ok"] and refused["claims"][0]["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()
    # killed: reclaimed at once (before, it held for the 5-min pre-start grace or until a marker scan)
    assert _claim(tmp_path / "w2", "job-l", [1])["ok"]
    assert "job-k.claim" not in os.listdir(_cards_dir())  # our own dead claim is removed on the way


def test_a_reused_pid_does_not_keep_a_claim(tmp_path):
    assert _claim(tmp_path / "w", "job-r", [0])["ok"]
    with open(os.path.join(_cards_dir(), "job-r.claim"), "a") as f:
        f.write(f"pid={os.getpid()}\nstart=1\n")  # a live pid, but another process's start time
    assert _claim(tmp_path / "w", "job-s", [0])["ok"]


@pytest.mark.parametrize("make, phrase", [
    (lambda d: os.symlink("/etc", d), "not a symlink"),
    (lambda d: (os.mkdir(d), os.chmod(d, 0o777)), "world-writable without the sticky bit"),
    (lambda d: (os.mkdir(d), os.chown(d, 65534, 65534), os.chmod(d, 0o755)), "belongs to uid 65534"),
])
def test_an_unsafe_claims_dir_is_refused_in_one_line(tmp_path, make, phrase):
    d = tmp_path / "shared-cards"
    make(str(d))
    res = run_script("stage", {"op": "claim", "base": str(tmp_path / "w"), "job_id": "j", "cards": [0],
                               "state_dir": "", "smi": False, "claims_dir": str(d)}, check=False)
    err = res.stderr.decode().strip()
    assert res.returncode != 0 and phrase in err and str(d) in err and len(err.splitlines()) == 1, err
    assert not os.path.exists("/etc/j.claim") and not os.path.exists("/etc/card-0.lock")


def test_links_planted_in_the_shared_dir_are_not_followed(tmp_path):
    d = tmp_path / "cards"
    d.mkdir()
    d.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(victim, d / "card-0.lock")
    os.symlink(victim, d / "job-x.claim")
    res = run_script("stage", {"op": "claim", "base": str(tmp_path / "w"), "job_id": "job-x", "cards": [0],
                               "state_dir": "", "smi": False, "claims_dir": str(d)}, check=False)
    err = res.stderr.decode().strip()
    assert res.returncode != 0 and "card 0's lock card-0.lock is not a regular file" in err and len(err.splitlines()) == 1
    assert victim.read_text() == "keep" and os.path.islink(d / "card-0.lock")


NOBODY = 65534


def _as_nobody(base, job, cards, d, state_dir=""):
    """CLAIM run by another user (nobody) with the system python (the venv's lives under /root)."""
    res = subprocess.run(["/usr/bin/python3", "-S", str(wire_path("stage"))],
                         input=wire.request({"op": "claim", "base": str(base), "job_id": job, "cards": cards,
                                             "state_dir": str(state_dir), "smi": False, "claims_dir": str(d)}),
                         capture_output=True, timeout=60, preexec_fn=lambda: (os.setgid(NOBODY), os.setuid(NOBODY)))
    assert res.returncode == 0, res.stderr.decode()
    return wire.answer(res.stdout)


def wire_path(name):
    from pathlib import Path
    return Path(wire.__file__).parent / f"{name}.py"


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"), reason="needs root to be another user")
def test_two_users_share_the_dir_each_owns_its_claims(tmp_path):
    import tempfile
    from pathlib import Path
    top = Path(tempfile.mkdtemp(prefix="alaunch-cards-users-", dir="/tmp"))  # pytest's tmp is root-only
    try:
        top.chmod(0o755)
        d = top / "cards"
        assert _claim_in(d, tmp_path / "w", "job-root", [0, 1])["ok"]
        refused = _as_nobody("/nonexistent/alaunch", "job-nobody", [1, 2], d)
        assert not refused["ok"] and [(c["job_id"], c["user"]) for c in refused["claims"]] == [("job-root", "root")]
        trap = top / "trap"  # another user's claim naming a state dir whose pid file is a FIFO
        trap.mkdir()
        os.mkfifo(trap / "pid")
        assert _as_nobody("/nonexistent/alaunch", "job-nobody", [2, 3], d, trap)["ok"]
        assert os.stat(d / "job-nobody.claim").st_uid == NOBODY
        mine = _claim_in(d, tmp_path / "w", "job-look", [])
        # judged without opening the other user's paths (a read of that FIFO would hang here)
        assert {c["job_id"]: c["user"] for c in mine["claims"]} == {"job-root": "root", "job-nobody": "nobody"}
    finally:
        shutil.rmtree(top)


def _claim_in(d, base, job, cards):
    return wire.answer(run_script("stage", {"op": "claim", "base": str(base), "job_id": job, "cards": cards,
                                            "state_dir": "", "smi": False, "claims_dir": str(d)}).stdout)
