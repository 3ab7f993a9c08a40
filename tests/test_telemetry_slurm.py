"""NPU telemetry of a Slurm job: each node's wrapper starts the follower script's SAMPLE
beside msrun (the node's own cards, never the login host's), its tables land in the shared job
dir (``state/telemetry/<node>.smi``), and the follower, reading that dir through the login
host, feeds them to the same ``smi`` events the SSH path has."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from launcher.core import slurm as core
from launcher.core.hostfile import Host
from launcher.metrics.logparse import JobLogs
from launcher.ops import registry as reg
from launcher.ops import slurm as ops
from launcher.ops.follow import Follower, NodeTelemetry
from launcher.ops.follow_transport import Event, follow_argv, parse_message
from launcher.ops.npusmi import make_910b_cards, render_npu_smi_table
from launcher.ops.telemetry import load_telemetry, node_sample
from launcher.remote import wire
from launcher.runners.local import LocalRunner

FIX = Path(__file__).parent / "fixtures" / "npu-smi"
WARNING = (FIX / "910A-4cards-23.0.rc1.b070-all-warning.txt").read_text()
TABLE = render_npu_smi_table(make_910b_cards(4))


def _fake_npu_smi(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "npu-smi"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)


def _line(node: str, table: str, t: float, node_rank: str = "1", devices: str = "2,3") -> str:
    return json.dumps({"node": node, "node_rank": node_rank, "devices": devices, "t": t, "table": table})


# ---------------------------------------------------------------- the batch script
def test_the_batch_script_starts_each_nodes_sampler_only_with_telemetry_on(tmp_path):
    sampler = ops.node_sampler("/w/alaunch/j1", 2.5)
    assert sampler is not None and sampler.program == "/w/alaunch/j1/config/alaunch-sample.py"
    assert wire.decode(sampler.request) == {"op": "sample", "dir": "/w/alaunch/j1/state/telemetry", "every": 2.5,
                                            "stop": "/w/alaunch/j1/state/exit_code"}
    assert ops.node_sampler("/w/alaunch/j1", 0) is None  # telemetry_every: 0 turns it off
    assert ops.check_programs()["config/alaunch-sample.py"] == wire.program("follow", "sample")
    from tests.test_slurm_core import _spec  # a job spec as the Slurm core tests build it
    target = core.SlurmTarget(login="login1", workdir="/w", nodes=2, cards_per_node=2)
    env = core.build_batch(_spec(tmp_path), target, "j1", root="/w/alaunch/j1", sampler=sampler,
                           environ={}).env_values()
    assert env["ALAUNCH_SAMPLER"] == sampler.program and env["ALAUNCH_SAMPLER_REQUEST"] == sampler.request
    assert "ALAUNCH_SAMPLER" not in core.build_batch(_spec(tmp_path), target, "j1", root="/w/alaunch/j1",
                                                     environ={}).env_values()


def _node_wrapper(tmp_path: Path, path_env: str, msrun_seconds: float, **env: str) -> subprocess.Popen:
    """The real per-node wrapper (core.NODE_SCRIPT) with a fake msrun that sleeps, as srun runs it."""
    root = tmp_path / "job"
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "state").mkdir(exist_ok=True)
    for rel, text in ops.check_programs().items():
        (root / rel).write_text(text)
    msrun = tmp_path / "msrun"
    msrun.write_text(f"#!/bin/sh\nsleep {msrun_seconds}\n")
    msrun.chmod(0o755)
    sampler = ops.node_sampler(str(root), 0.2)
    assert sampler is not None
    full = {"PATH": path_env, "ALAUNCH_SAMPLER": sampler.program, "ALAUNCH_SAMPLER_REQUEST": sampler.request,
            "ALAUNCH_DEVICES": "2,3", "ALAUNCH_USE_GRES": "", "ALAUNCH_BIN_DIR": "", "ALAUNCH_PYTHONPATH": "",
            "ALAUNCH_CANN_SET_ENV": "/nonexistent", "ALAUNCH_MASTER_PORT": "29999", "SLURM_NODEID": "1",
            "SLURMD_NODENAME": "n7", **env}
    return subprocess.Popen(["bash", "-c", core.NODE_SCRIPT, core.NODE_SCRIPT_NAME, str(msrun)], env=full,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _python_bin(tmp_path: Path) -> Path:
    """A PATH directory holding only python3 (the node's), so no npu-smi but the fake one is found."""
    d = tmp_path / "py"
    d.mkdir(exist_ok=True)
    if not (d / "python3").exists():
        (d / "python3").symlink_to(sys.executable)
    return d


def test_each_node_samples_its_cards_beside_msrun_and_stops_with_it(tmp_path):
    """The wrapper's sampler writes the node's tables (with its name, node id and the cards
    Slurm gave the job) while msrun runs, and ends within moments of msrun's end: its parent
    is gone (a sampler that outlived the step would hold the job's cgroup, and scancel's
    'nothing of the job is left' would not hold)."""
    bin_dir = tmp_path / "bin"
    _fake_npu_smi(bin_dir, f"cat <<'EOF'\n{TABLE}EOF")
    proc = _node_wrapper(tmp_path, f"{bin_dir}:{_python_bin(tmp_path)}:/usr/bin:/bin", 2.0)
    assert proc.wait(30) == 0
    path = tmp_path / "job" / "state" / "telemetry" / "n7.smi"
    mine = str(tmp_path / "job" / "config" / "alaunch-sample.py").encode()  # this test's sampler only
    deadline = time.monotonic() + 10
    left = [0]
    while left and time.monotonic() < deadline:  # the sampler sees its parent gone
        left = [int(p) for p in os.listdir("/proc") if p.isdigit() and mine in _cmdline(p)]
        time.sleep(0.1)
    for pid in left:  # a sampler that did not end is a failure; it must not outlive the test
        os.kill(pid, 9)
    assert not left
    lines = path.read_text().splitlines()
    assert len(lines) >= 3, lines
    got = [node_sample(ln, 2) for ln in lines]
    assert all(g is not None and g.node == "n7" and g.table == TABLE and g.ranks == {2: 2, 3: 3} for g in got)
    size = path.stat().st_size
    time.sleep(0.5)
    assert path.stat().st_size == size  # nothing written after the end


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_no_npu_smi_no_sampler_and_a_failing_one_is_said_once_then_left(tmp_path):
    proc = _node_wrapper(tmp_path, f"{_python_bin(tmp_path)}:/usr/bin:/bin", 1.0)
    assert proc.wait(30) == 0
    assert not (tmp_path / "job" / "state" / "telemetry").exists()  # absent: nothing at all

    bin_dir = tmp_path / "bin"
    _fake_npu_smi(bin_dir, "echo 'dcmi module initialize failed, ret is -8005'; exit 187")
    root = tmp_path / "job"
    req = wire.decode(ops.node_sampler(str(root), 0.1).request)  # type: ignore[union-attr]
    out = subprocess.run([sys.executable, "-S", str(root / "config" / "alaunch-sample.py"),
                          wire.request_arg({**req, "node": "n3"})], timeout=30,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert out.returncode == 0  # ended by itself after SMI_FAILURES failures, its parent still here
    lines = (root / "state" / "telemetry" / "n3.smi").read_text().splitlines()
    assert len(lines) == 1
    said = json.loads(lines[0])
    assert said["table"] == "!exit 187: dcmi module initialize failed, ret is -8005", said


# ---------------------------------------------------------------- the follower's side
def test_the_follow_script_sends_the_nodes_sample_lines_as_smi_events(tmp_path):
    root = tmp_path / "job"
    tele = root / "state" / "telemetry"
    tele.mkdir(parents=True)
    (tele / "n1.smi").write_text(_line("n1", TABLE, 10.0, "0", "0,1") + "\n")
    (tele / "n1.smi.1").write_text(_line("n1", TABLE, 5.0, "0", "0,1") + "\n")  # rotated away: not read
    argv = follow_argv(sys.executable, str(root), follow=False, smi_files=True)
    assert wire.decode(argv[3])["smi_files"] is True and "smi_every" not in wire.decode(argv[3])
    out = subprocess.run(argv, stdout=subprocess.PIPE, timeout=30).stdout.decode().splitlines()
    events = [e for e in (parse_message("login", ln, 1.0) for ln in out) if e is not None and e.kind == "smi"]
    assert len(events) == 1 and events[0].role == "smi" and events[0].host == "login" and events[0].fid
    assert node_sample(events[0].text, 2) == node_sample(_line("n1", TABLE, 10.0, "0", "0,1"), 2)
    plain = subprocess.run(follow_argv(sys.executable, str(root), follow=False), stdout=subprocess.PIPE,
                           timeout=30).stdout.decode()
    assert "\tsmi\t" not in plain  # only asked for: an SSH node's follower never reads them


def _slurm_record(root: Path) -> reg.JobRecord:
    return reg.JobRecord("j1", "j", "finetune", "running", "", "", "", "", "", None, None, None,
                         meta={"pythons": {"login": sys.executable}, "state_per_node": False,
                               "telemetry_every": 5.0, "target": {"cards_per_node": 2}},
                         nodes=(reg.NodeRecord(0, "login", str(root)),))


def test_a_slurm_nodes_sample_is_kept_under_its_node_with_its_ranks():
    tele = NodeTelemetry(_slurm_record(Path("/r")), {"login": Host("login", 1)}, None, None)
    said = tele.take(Event("login", "smi", role="smi", text=_line("n2", WARNING, 100.0)), JobLogs())
    assert said == ["n2 card 2 (rank 2): npu-smi health Warning", "n2 card 3 (rank 3): npu-smi health Warning"]
    assert list(tele.data.cards) == ["n2"] and sorted(tele.data.cards["n2"]) == [2, 3]
    assert tele.data.cards["n2"][2].last.t == 100.0  # the node's own time of the sample
    assert tele.take(Event("login", "smi", role="smi", text=_line("n2", WARNING, 100.0)[:80]), JobLogs()) == []
    failed = tele.take(Event("login", "smi", role="smi", text=_line("n2", "!exit 187: ret is -8005", 1.0)),
                       JobLogs())
    assert failed == ["n2: no NPU telemetry: npu-smi info failed (exit 187: ret is -8005)"]


def test_the_slurm_follower_keeps_the_nodes_samples_once_across_followers(tmp_path):
    """The seam here: the login view of a Slurm job (one local node, the shared job dir) with
    two nodes' sample files; the follower keeps both nodes' cards; a second follower (offsets
    kept) replays the old lines without counting them again."""
    from tests.conftest import write_exit_code

    root = tmp_path / "job"
    tele = root / "state" / "telemetry"
    tele.mkdir(parents=True)
    (root / "msrun_log").mkdir()
    (root / "msrun_log" / "worker_0.log").write_text("hello\n")
    (tele / "n1.smi").write_text(_line("n1", TABLE, 1.0, "0", "0,1") + "\n" + _line("n1", TABLE, 2.0, "0", "0,1") + "\n")
    (tele / "n2.smi").write_text(_line("n2", TABLE, 1.5, "1", "0,1") + "\n")
    write_exit_code(root / "state", 0)

    class Sink:
        def line(self, *a): pass
        def progress(self, view): pass
        def msrun(self, *a): pass
        def nodes(self, views): pass
        def note(self, text): pass

    path, offsets = tmp_path / "telemetry.json", tmp_path / "offsets.json"

    def follow() -> dict:
        Follower(_slurm_record(root), LocalRunner,
                 {"login": Host("login", 1)}, Sink(), telemetry_path=path, offsets_path=offsets).run()
        kept = load_telemetry(path)
        assert kept is not None
        return {(h, c): s.samples for h, cards in kept.cards.items() for c, s in cards.items()}

    assert follow() == {("n1", 0): 2, ("n1", 1): 2, ("n2", 0): 1, ("n2", 1): 1}
    with (tele / "n2.smi").open("a") as fh:
        fh.write(_line("n2", TABLE, 3.0, "1", "0,1") + "\n")
    assert follow() == {("n1", 0): 2, ("n1", 1): 2, ("n2", 0): 2, ("n2", 1): 2}  # only the new line counted


def test_the_sampler_ends_when_the_batch_script_wrote_its_exit_code(tmp_path):
    """Its parent may outlive msrun (started by a wrapper that did not exec): the batch
    script's ``state/exit_code`` ends it too, its running ``npu-smi`` child with it."""
    bin_dir = tmp_path / "bin"
    _fake_npu_smi(bin_dir, f"cat <<'EOF'\n{TABLE}EOF")
    root = tmp_path / "job"
    (root / "state").mkdir(parents=True)
    program = tmp_path / "sample.py"
    program.write_text(wire.program("follow", "sample"))
    req = {**wire.decode(ops.node_sampler(str(root), 0.1).request), "node": "n1"}  # type: ignore[union-attr]
    proc = subprocess.Popen([sys.executable, "-S", str(program), wire.request_arg(req)],
                            env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    path = root / "state" / "telemetry" / "n1.smi"
    try:
        deadline = time.monotonic() + 30
        while not (path.exists() and path.read_text().count("\n") >= 2):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        (root / "state" / "exit_code").write_text("0\n")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_slurm_card_idle_while_its_rank_is_mid_step_is_said():
    """The idle rule needs the rank's progress, whose lines come through the login host: the
    node's card 0 (node rank 1, one card a node) is rank 1 of the login host's lines."""
    busy = (FIX / "910B3-8cards-23.0.rc3.3-busy-python-procs.txt").read_text()  # card 0: AI Core 0 %
    record = _slurm_record(Path("/r"))
    record = replace(record, meta={**record.meta, "target": {"cards_per_node": 1}})
    tele = NodeTelemetry(record, {"login": Host("login", 1)}, None, None)
    job = JobLogs()
    job.feed("login", 1, "{ Epoch:[  1/  1], step:[    5/  200], loss: 2.0, per_step_time: 100ms }")
    said = []
    for t in range(100, 175, 5):
        said += tele.take(Event("login", "smi", role="smi", text=_line("n2", busy, float(t), "1", "0")), job)
    assert said == ["n2 card 0 (rank 1): AI Core at 0 % for 60 s while its rank is mid-step "
                    "(waiting on a collective, the host, or the data?)"]
