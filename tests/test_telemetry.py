"""NPU telemetry per job: the compact series, the story rules on real npu-smi tables, the
follower's ``T`` message and what the follower does with it (launcher/metrics/telemetry.py,
launcher/ops/telemetry.py, launcher/remote/follow.py)."""

from __future__ import annotations

import json
import marshal
import os
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from launcher.core.hostfile import Host
from launcher.metrics.logparse import JobLogs
from launcher.metrics.telemetry import (
    IDLE_AFTER_S,
    MAX_POINTS,
    CardSample,
    CardSeries,
    JobTelemetry,
    TelemetryWatch,
    chart_json,
    summary_rows,
)
from launcher.ops import registry as reg
from launcher.ops.follow import NodeTelemetry
from launcher.ops.follow_transport import Event, follow_argv, parse_message
from launcher.ops.npusmi import make_910b_cards, parse_npu_smi, render_npu_smi_table
from launcher.ops.telemetry import card_ranks, load_telemetry, samples, save_telemetry, telemetry_path
from launcher.remote import wire

FIX = Path(__file__).parent / "fixtures" / "npu-smi"
BUSY = (FIX / "910B3-8cards-23.0.rc3.3-busy-python-procs.txt").read_text()
WARNING = (FIX / "910A-4cards-23.0.rc1.b070-all-warning.txt").read_text()


def test_samples_are_the_jobs_cards_of_a_real_table():
    got = samples(BUSY, [1, 2], 100.0)
    assert sorted(got) == [1, 2]
    assert got[1] == CardSample(100.0, 93, 60060, 65536, got[1].power_w, 41, "OK")
    assert got[1].power_w is not None and got[1].power_w > 0
    assert len(samples(BUSY, None, 0.0)) == 8
    assert samples("not a table", None, 0.0) == {}


def test_a_card_hour_is_a_few_kb_and_min_max_are_exact():
    series = CardSeries()
    for i in range(720):  # an hour at 5 s
        series.add(CardSample(1_765_000_000 + 5 * i, i % 101, 30000 + i, 65536, 100.0 + i % 50, 40 + i % 30, "OK"))
    data = series.to_json()
    assert len(data["points"]) <= MAX_POINTS + 1
    assert series.span == 8  # 720 samples: merged three times
    assert len(json.dumps(data, separators=(",", ":"))) < 5000
    assert (series.lo["aicore_pct"], series.hi["aicore_pct"]) == (0.0, 100.0)
    assert (series.lo["hbm_used_mb"], series.hi["hbm_used_mb"]) == (30000.0, 30719.0)
    assert data["points"][0][0] == 1_765_000_000 and data["points"][-1][0] >= 1_765_000_000 + 5 * 700
    again = CardSeries.from_json(json.loads(json.dumps(data)))
    assert again.to_json() == data


def test_the_file_round_trips_and_summary_rows_carry_last_min_max(tmp_path):
    tele = JobTelemetry(5.0)
    for t, text in ((10.0, BUSY), (15.0, BUSY.replace("| 0       910B3               | OK", "| 0       910B3               | OK"))):
        for card, s in samples(text, [0, 1], t).items():
            tele.add("n1", card, s)
    path = telemetry_path(tmp_path, "job-1")
    save_telemetry(path, tele)
    back = load_telemetry(path)
    assert back is not None and back.to_json() == tele.to_json()
    rows = summary_rows(back)
    assert [(r["host"], r["card"], r["health"]) for r in rows] == [("n1", 0, "OK"), ("n1", 1, "OK")]
    assert rows[1]["aicore_pct"] == {"last": 93.0, "min": 93.0, "max": 93.0}
    assert rows[0]["hbm_total_mb"] == 65536 and rows[0]["samples"] == 2
    chart = chart_json(back)
    assert chart["fields"] == ["t", "aicore_pct", "hbm_used_mb", "power_w", "temp_c"]
    assert chart["cards"][1]["points"][0][:3] == [10.0, 93.0, 60060.0]
    assert load_telemetry(tmp_path / "none.json") is None


def test_health_not_ok_is_said_once_per_change_on_a_real_warning_table():
    watch = TelemetryWatch()
    warn = samples(WARNING, None, 0.0)
    said = [t for card, s in warn.items() for t in watch.update("n1", card, s)]
    assert len(said) == len(warn) and all("npu-smi health Warning" in t for t in said)
    assert [t for card, s in warn.items() for t in watch.update("n1", card, s)] == []  # not repeated
    # 30750 of 32768 MB is 94 %: below the 95 % rule, not said
    assert not any("HBM" in t for t in said)
    ok = replace(warn[0], health="OK")
    assert watch.update("n1", 0, ok) == ["n1 card 0: npu-smi health OK (was Warning)"]


def _derived(**changes) -> CardSample:
    """A real 910B3 card (card 1 of the busy table) with some values changed, through the
    renderer and parser, as the follower would see it."""
    card = replace(parse_npu_smi(BUSY)[1], **changes)
    return samples(render_npu_smi_table([card]), None, changes.pop("t", 0.0))[1]


def test_hbm_above_95_percent_and_temperature_alarms_with_hysteresis():
    watch = TelemetryWatch()
    assert watch.update("n1", 1, samples(BUSY, None, 0.0)[1], rank=1) == []  # 92 %, 41 C: quiet
    full = _derived(hbm_used_mb=63000)
    said = watch.update("n1", 1, full, rank=1)
    assert said == ["n1 card 1 (rank 1): HBM 96% in use (63000/65536 MB): an out-of-memory is near"]
    assert watch.update("n1", 1, _derived(hbm_used_mb=60000), rank=1) == []  # 91.6 %: not yet cleared
    assert watch.update("n1", 1, full, rank=1) == []
    watch.update("n1", 1, _derived(hbm_used_mb=50000), rank=1)  # cleared
    assert len(watch.update("n1", 1, full, rank=1)) == 1
    hot = watch.update("n2", 1, _derived(temp_c=92))
    assert hot == ["n2 card 1: temperature 92 C (alarm at 90 C)"]
    assert watch.update("n2", 1, _derived(temp_c=88)) == []
    watch.update("n2", 1, _derived(temp_c=80))
    assert watch.update("n2", 1, _derived(temp_c=91)) != []


def test_a_card_idle_for_a_minute_is_said_only_while_its_rank_is_mid_step():
    # card 0 of the real busy table: 60 GiB HBM held, AI Core 0 %, while its neighbours run at 93 %
    idle = samples(BUSY, [0], 0.0)[0]
    watch = TelemetryWatch()
    for t in range(0, int(IDLE_AFTER_S) + 10, 5):
        assert watch.update("n1", 0, replace(idle, t=float(t)), rank=0, mid_step=False) == []  # compiling
    said = []
    for t in range(100, 100 + int(IDLE_AFTER_S) + 10, 5):
        said += watch.update("n1", 0, replace(idle, t=float(t)), rank=0, mid_step=True)
    assert said == ["n1 card 0 (rank 0): AI Core at 0 % for 60 s while its rank is mid-step "
                    "(waiting on a collective, the host, or the data?)"]
    busy = samples(BUSY, [1], 0.0)[1]
    assert watch.update("n1", 0, replace(busy, t=200.0), rank=0, mid_step=True) == []  # busy again: reset
    assert watch.update("n1", 0, replace(idle, t=205.0), rank=0, mid_step=True) == []


def test_the_t_message_is_a_smi_event_and_a_cut_one_is_dropped():
    table = render_npu_smi_table(make_910b_cards(2))
    event = parse_message("n1", "T\t" + json.dumps(table), 3.0)
    assert event == Event("n1", "smi", text=table, at=3.0)
    assert parse_message("n1", "T\t" + json.dumps(table)[:100], 3.0) is None
    def request(argv):
        return marshal.loads(bytes.fromhex(argv[3])[8:])
    assert request(follow_argv("python3", "/r", smi_every=2.5))["smi_every"] == 2.5
    assert "smi_every" not in request(follow_argv("python3", "/r"))


def _record(meta=None) -> reg.JobRecord:
    return reg.JobRecord(id="j1", name="t", kind="finetune", state="running", created_at="", started_at=None,
                         ended_at=None, reason=None, spec_text="", config_text="", config_sha256="", hostfile_text="",
                         nodes=(reg.NodeRecord(0, "n1"), reg.NodeRecord(1, "n2")),
                         meta={"ranks": {"0": [0, 1], "1": [2, 3]}, **(meta or {})})


def test_the_follower_keeps_the_jobs_cards_with_their_ranks(tmp_path):
    hosts = {"n1": Host("n1", slots=8, slot_ids=(4, 5)), "n2": Host("n2", slots=8, slot_ids=(0, 1))}
    assert card_ranks(hosts, {"n1": 0, "n2": 1}, {"0": [0, 1], "1": [2, 3]}) == {
        ("n1", 4): 0, ("n1", 5): 1, ("n2", 0): 2, ("n2", 1): 3}
    path = tmp_path / "t.json"
    tele = NodeTelemetry(_record({"telemetry_every": 2}), hosts, None, path)
    assert tele.every == 2.0
    said = tele.take(Event("n1", "smi", text=WARNING.replace("| 0     910", "| 4     910"), at=time.monotonic()),
                     JobLogs())
    tele.save()
    kept = load_telemetry(path)
    assert kept is not None and list(kept.cards) == ["n1"] and list(kept.cards["n1"]) == [4]
    assert said == ["n1 card 4 (rank 0): npu-smi health Warning"]
    assert NodeTelemetry(_record(), hosts, None, None).every == 5.0
    assert NodeTelemetry(_record({"telemetry_every": 2}), hosts, 0.0, None).every == 0.0
    slurm = NodeTelemetry(_record({"state_per_node": False}), hosts, None, None)  # Slurm's login view:
    assert (slurm.sample_every, slurm.read_files) == (0.0, True)  # the nodes' files, never the login host's cards
    assert NodeTelemetry(_record({"state_per_node": False}), hosts, 0.0, None).read_files is False


def _fake_npu_smi(bin_dir: Path, table: str) -> None:
    exe = bin_dir / "npu-smi"
    exe.write_text(f"#!/bin/sh\ncat <<'EOF'\n{table}EOF\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


def _follow_script(root: Path, path_env: str, every: float, until, settle: float = 0.0, limit: float = 90.0,
                   **req) -> list[str]:
    """Run the host script locally until ``until(lines)`` holds (polled; at most ``limit`` s,
    for a loaded machine, where its start alone took over a second), then ``settle`` s more,
    and return its messages. No fixed sleep: a fixed 1.5 s saw one table at load 17."""
    import threading
    argv = follow_argv(sys.executable, str(root), smi_every=every)
    if req:  # a request key follow_argv does not set (the hang's timeout)
        argv[3] = wire.request_arg({**marshal.loads(bytes.fromhex(argv[3])[8:]), **req})
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env={**os.environ, "PATH": path_env})
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(raw.decode().rstrip("\n") for raw in proc.stdout),
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and not until(lines):
            time.sleep(0.05)
        time.sleep(settle)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(10)
    return list(lines)


def test_the_host_script_sends_npu_smi_tables_and_nothing_without_npu_smi(tmp_path):
    root = tmp_path / "job"
    (root / "state").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    table = render_npu_smi_table(make_910b_cards(2))
    _fake_npu_smi(bin_dir, table)
    lines = _follow_script(root, f"{bin_dir}:/usr/bin:/bin", 0.3,
                           lambda ls: sum(ln.startswith("T\t") for ln in ls) >= 2)
    tables = [json.loads(ln[2:]) for ln in lines if ln.startswith("T\t")]
    assert len(tables) >= 2 and all(t == table for t in tables)
    # no npu-smi: the logs go on, no samples (two heartbeats: a second of sampling every 0.3 s)
    lines = _follow_script(root, "/nonexistent", 0.3, lambda ls: ls.count("H") >= 2)
    assert lines and not any(ln.startswith("T\t") for ln in lines) and "H" in lines


def test_a_follower_keeps_the_npu_smi_tables_its_node_sends(tmp_path, monkeypatch):
    """The seam on this machine: the host script (a local node) runs a fake npu-smi, the
    follower keeps the job's cards (meta ``devices``) in the telemetry file, says a card's
    health, and the node's end still ends the follow."""
    from launcher.ops.follow import Follower
    from launcher.runners.local import LocalRunner
    from tests.conftest import write_exit_code

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_npu_smi(bin_dir, WARNING)  # 4 cards, every one in Warning
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    root = tmp_path / "job0"
    state = root / "state" / "node-0"
    state.mkdir(parents=True)
    (root / "msrun_log").mkdir()
    (state / "pid").write_text(f"1 {os.getpid()}\n")
    (root / "msrun_log" / "worker_0.log").write_text("hello\n")
    record = reg.JobRecord("j1", "j", "finetune", "running", "", "", "", "", "", None, None, None,
                           meta={"pythons": {"n0": sys.executable}, "ranks": {"0": [0, 1]},
                                 "devices": {"n0": [2, 3]}, "telemetry_every": 0.2},
                           nodes=(reg.NodeRecord(0, "n0", str(root)),))

    class Sink:
        notes: list[str] = []

        def line(self, *a): pass
        def progress(self, view): pass
        def msrun(self, *a): pass
        def nodes(self, views): pass

        def note(self, text):
            self.notes.append(text)
            if len(self.notes) == 2:
                write_exit_code(state, 0)  # both cards said: the node ends

    path = tmp_path / "telemetry.json"
    sink = Sink()
    Follower(record, lambda h: LocalRunner(h), {"n0": Host("n0", 4)}, sink, telemetry_path=path).run()
    assert sorted(sink.notes) == ["n0 card 2 (rank 0): npu-smi health Warning",
                                  "n0 card 3 (rank 1): npu-smi health Warning"]
    kept = load_telemetry(path)
    assert kept is not None and kept.every == 0.2 and sorted(kept.cards["n0"]) == [2, 3]


def test_an_npu_smi_that_hangs_is_killed_and_the_logs_go_on(tmp_path):
    """A wedged driver: npu-smi never answers. The host script kills it after its timeout (30 s;
    0.5 s here), sends no table, keeps beating, and starts the next sample."""
    root = tmp_path / "job"
    (root / "state").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    pids = tmp_path / "pids"
    exe = bin_dir / "npu-smi"
    exe.write_text(f"#!/bin/sh\necho $$ >> {pids}\nexec sleep 100\n")
    exe.chmod(0o755)
    lines = _follow_script(root, f"{bin_dir}:/usr/bin:/bin", 0.2,
                           lambda ls: "H" in ls and pids.exists() and len(pids.read_text().split()) >= 2,
                           settle=0.3, smi_timeout=0.5)
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) >= 2, started  # the first was killed, another started
    assert not os.path.exists(f"/proc/{started[0]}") or open(f"/proc/{started[0]}/stat").read().split()[2] == "Z"
    assert "H" in lines and not any(ln.startswith("T\t") for ln in lines)


def test_a_telemetry_file_that_cannot_be_written_is_said_once(tmp_path):
    from launcher.ops.follow import Follower

    (tmp_path / "afile").write_text("")
    notes: list[str] = []

    class Sink:
        def note(self, text):
            notes.append(text)

    follower = Follower(_record(), lambda h: None, {"n1": Host("n1", 2), "n2": Host("n2", 2)}, Sink(),
                        telemetry_path=tmp_path / "afile" / "t.json")  # its parent is a file
    follower.telemetry.take(Event("n1", "smi", text=BUSY, at=time.monotonic()), JobLogs())
    follower._save_telemetry()
    follower._save_telemetry()
    assert len(notes) == 1 and notes[0].startswith(f"cannot keep the job's telemetry in {tmp_path}"), notes
    assert follower.telemetry.data.cards["n1"]  # the samples stay in memory


def test_status_shows_the_cards_kept_and_status_json_carries_them(run_cli, monkeypatch, tmp_path):
    """`status` (a job followed with telemetry, its file in the state dir): a table of the cards
    under the nodes' and ``--json`` with one object per card; a job without one shows neither."""
    import contextlib

    from launcher.cli import connect
    from launcher.ops.launch import NodeStatus

    record = _record()
    statuses = [NodeStatus(0, "n1", "running", None, 3, ""), NodeStatus(1, "n2", "running", None, 3, "")]
    service = type("S", (), {"refresh": lambda self, ref: (record, statuses)})()
    monkeypatch.setattr(connect, "job_service", lambda *a, **k: (contextlib.nullcontext(), service))
    code, out, _ = run_cli("status", "j1")
    assert code == 101 and "cards" not in out
    tele = JobTelemetry(5.0)
    for t in (10.0, 15.0):
        for card, s in samples(BUSY, [0, 1], t).items():
            tele.add("n1", card, s)
    save_telemetry(telemetry_path(tmp_path / "state", "j1"), tele)  # conftest's ALAUNCH_STATE_DIR
    code, out, _ = run_cli("status", "j1")
    assert "cards on n1: last (min-max) while followed; HBM of 64 GiB" in out, out
    assert "93 (93-93)" in out and "58.7 (58.7-58.7)" in out, out
    code, out, _ = run_cli("status", "j1", "--json")
    got = json.loads(out)
    assert code == 101 and got["id"] == "j1" and [n["host"] for n in got["node_status"]] == ["n1", "n2"]
    assert [(c["host"], c["card"], c["aicore_pct"]["last"]) for c in got["telemetry"]] == [("n1", 0, 0.0),
                                                                                           ("n1", 1, 93.0)]


def test_the_dashboards_field_is_the_kept_cards_with_their_points(tmp_path):
    from launcher.ui.data import telemetry_field

    assert telemetry_field(tmp_path, "j1") is None
    tele = JobTelemetry(5.0)
    for card, s in samples(BUSY, [1], 10.0).items():
        tele.add("n1", card, s)
    save_telemetry(telemetry_path(tmp_path, "j1"), tele)
    field = telemetry_field(tmp_path, "j1")
    assert field is not None and field["every"] == 5.0
    assert [(c["host"], c["card"], c["points"]) for c in field["cards"]] == [
        ("n1", 1, [[10.0, 93.0, 60060.0, field["cards"][0]["power_w"]["last"], 41.0]])]


def test_an_npu_smi_that_fails_is_said_once_and_given_up(tmp_path):
    """A non-root user's npu-smi (the real error of shared/design/facts.md, exit 187): the host
    says it once and stops after three failures; the follower turns it into one note."""
    root = tmp_path / "job"
    (root / "state").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    runs = tmp_path / "runs"
    exe = bin_dir / "npu-smi"
    exe.write_text(f"#!/bin/sh\necho x >> {runs}\necho 'dcmi module initialize failed, ret is -8005'\nexit 187\n")
    exe.chmod(0o755)
    lines = _follow_script(root, f"{bin_dir}:/usr/bin:/bin", 0.1,
                           lambda ls: "H" in ls and runs.exists() and len(runs.read_text().split()) >= 3,
                           settle=0.6)  # six more sampling periods: no fourth run
    said = [json.loads(ln[2:]) for ln in lines if ln.startswith("T\t")]
    assert said == ["!exit 187: dcmi module initialize failed, ret is -8005"]
    assert len(runs.read_text().split()) == 3 and "H" in lines
    tele = NodeTelemetry(_record(), {"n1": Host("n1", 2)}, None, None)
    assert tele.take(Event("n1", "smi", text=said[0], at=time.monotonic()), JobLogs()) == [
        "n1: no NPU telemetry: npu-smi info failed (exit 187: dcmi module initialize failed, ret is -8005)"]
