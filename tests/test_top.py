"""`alaunch top`: the pure view of a host's answer, and the verb on this machine (a fake npu-smi on
PATH: the test cluster's emulator) and against a host that does not answer."""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path

import pytest

from launcher.core.cards import HostView, holder_text, host_view
from launcher.core.hostfile import Host
from launcher.ops.npusmi import make_910b_cards
from launcher.remote import wire
from tests.test_remote_scripts import run_script

FIX = Path(__file__).parent / "fixtures" / "npu-smi"

ROOT = Path(__file__).resolve().parent.parent


def test_holders_are_named_by_claim_marker_or_as_not_alaunch():
    cards = make_910b_cards(4, health=["OK", "OK", "OK", "Alarm"],
                            processes={1: [(812, "python3.11", 20000)], 2: [(77, "python", 30000)]})
    claims = [{"job_id": "job-a", "cards": [0], "user": "alice", "pid": 600}]
    procs = {"812": {"user": "bob", "name": "python3.11", "job": "job-b"}, "77": {"user": "carol", "name": "vllm"}}
    view = host_view(Host("h0", 4), claims, cards, procs, {"job-a": "step 12/234, loss 1.29"})
    rows = {c.card: c.to_json() for c in view.cards}
    assert rows[0]["holder"]["text"] == "alice job-a pid 600" and rows[0]["progress"] == "step 12/234, loss 1.29"
    assert rows[1]["holder"]["text"] == "bob job-b pid 812"  # no claim seen, but its marker names the job
    assert rows[2]["holder"]["text"] == "not alaunch: pid 77 vllm (carol)" and rows[2]["holder"]["kind"] == "other"
    assert rows[3]["holder"] is None and view.free == ()  # an Alarm card is not free
    assert view.summary() == "h0: 0/4 free"
    assert HostView("h9", error="connection refused").summary() == "h9: unreachable (connection refused)"


def test_a_host_without_npu_smi_shows_its_slots_and_claims():
    view = host_view(Host("cpu", 4), [{"job_id": "j", "cards": [1, 2], "user": "u", "pid": None}], None, {}, {})
    assert [(c.card, c.holder and c.holder.job_id) for c in view.cards] == [(0, None), (1, "j"), (2, "j"), (3, None)]
    assert view.free == (0, 3)
    unread = host_view(Host("cpu", 2), [], None, {}, {}, "card claims dir /x: Not a directory", claims_read=False)
    assert unread.free == () and unread.summary() == "cpu: 0/2 free; card claims dir /x: Not a directory"


def _fake_npu_smi(tmp_path: Path, cfg: dict) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # not live: other suites' msrun workers on this machine are visible to root and would show up
    (tmp_path / "npu.json").write_text(json.dumps({"live": False, **cfg}))
    script = bin_dir / "npu-smi"
    script.write_text(f"#!/bin/sh\ncd {ROOT} && exec {sys.executable} -m tests.cluster.npu_smi "
                      f"--config {tmp_path / 'npu.json'} \"$@\"\n")
    script.chmod(0o755)
    return bin_dir


def test_top_json_lists_every_cards_holder(run_cli, tmp_path, monkeypatch):
    # a pid above any pid_max: no process here has it (a real one would be named by its /proc entry)
    # npu-smi lists a pid above any pid_max: no process here has it (a live one is named by its /proc entry)
    monkeypatch.setenv("PATH", f"{_fake_npu_smi(tmp_path, {'cards': 4, 'processes': {'3': [[4194999, 'python3.9', 12000]]}})}"
                               f":{os.environ['PATH']}")
    base = tmp_path / "work" / "alaunch"
    assert wire.answer(run_script("stage", {"op": "claim", "base": str(base), "job_id": "job-x", "cards": [0, 1],
                                            "state_dir": "", "smi": False}).stdout)["ok"]
    hf = tmp_path / "hosts"
    hf.write_text(f"localhost slots=4 workdir={tmp_path / 'work'}\n")
    code, out, err = run_cli("top", "-H", str(hf), "--json")
    assert code == 0, err
    [host] = json.loads(out)["hosts"]
    holders = {c["card"]: (c["holder"] or {}).get("text") for c in host["cards"]}
    assert holders == {0: f"{getpass.getuser()} job-x", 1: f"{getpass.getuser()} job-x", 2: None,
                       3: "not alaunch: pid 4194999 python3.9"}
    assert host["free"] == [2] and host["cards"][3]["hbm_total_mb"] == 65536 and host["cards"][3]["health"] == "OK"
    code, out, err = run_cli("top", "-H", str(hf), "--once")
    assert code == 0 and "localhost: 1/4 free (2)" in out and "not alaunch: pid 4194999 python3.9" in out, out


def test_a_host_that_does_not_answer_reads_unreachable(run_cli, tmp_path):
    hf = tmp_path / "hosts"
    hf.write_text(f"localhost slots=2 workdir={tmp_path / 'w'}\n127.0.0.1 port=1 slots=2\n")
    code, out, err = run_cli("top", "-H", str(hf), "--json", "--timeout", "5")
    assert code == 0, err
    by_host = {h["host"]: h for h in json.loads(out)["hosts"]}
    assert by_host["localhost"]["reachable"] and by_host["localhost"]["free"] == [0, 1]
    assert not by_host["127.0.0.1"]["reachable"] and by_host["127.0.0.1"]["error"], by_host
    code, out, err = run_cli("top", "-H", str(hf), "--once")
    assert "127.0.0.1: unreachable (" in out and "localhost: 2/2 free (0,1)" in out, out


def test_our_running_jobs_progress_comes_in_the_same_round_trip(run_cli, tmp_path):
    root = tmp_path / "work" / "alaunch" / "job-p"
    state = root / "state" / "node-0"
    state.mkdir(parents=True)
    (root / "msrun_log").mkdir()
    (root / "msrun_log" / "worker_0.log").write_text(
        "{ Epoch:[  1/  5], step:[   12/  234], loss: 1.292, per_step_time: 383ms, lr: 2.8e-06\n")
    assert wire.answer(run_script("stage", {"op": "claim", "base": str(tmp_path / "work" / "alaunch"),
                                            "job_id": "job-p", "cards": [1], "state_dir": str(state),
                                            "smi": False}).stdout)["ok"]
    hf = tmp_path / "hosts"
    hf.write_text(f"localhost slots=2 workdir={tmp_path / 'work'}\n")
    code, out, err = run_cli("top", "-H", str(hf), "--json")
    assert code == 0, err
    [host] = json.loads(out)["hosts"]
    assert host["cards"][1]["progress"] == "step 12/1170, loss 1.292" and host["cards"][0]["progress"] is None


# ----------------------------------------------------------------------------- the surveyor, the dashboard

def _local_surveyor(tmp_path, interval=60.0):
    from launcher.ops.cards import Surveyor
    from launcher.runners import make_runner
    calls = []

    def factory(host):
        runner = make_runner(host)
        exec_ = runner.exec  # every host call is one exec (runner.call)
        runner.exec = lambda *a, **k: (calls.append(host.name), exec_(*a, **k))[1]
        return runner
    hosts = [Host("localhost", 2, workdir=str(tmp_path / "work"))]
    return Surveyor(hosts, factory, {"localhost": sys.executable}, interval=interval), calls


def test_the_surveyor_asks_each_host_once_per_interval_whoever_looks(tmp_path):
    source, calls = _local_surveyor(tmp_path)
    try:
        first = source.snapshot()
        assert source.snapshot() == first and calls == ["localhost"]  # within the interval: no new round trip
        source.survey()
        assert calls == ["localhost", "localhost"]
    finally:
        source.close()


def _serve(tmp_path, top, token):
    """The dashboard on a free loopback port -> (uvicorn server, port)."""
    import socket
    import threading
    import time

    import uvicorn

    from launcher.ui.server import allowed_hosts, create_app
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    app = create_app(tmp_path / "state", token, allowed_hosts("127.0.0.1", port), top=top)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    end = time.time() + 10
    while not server.started and time.time() < end:
        time.sleep(0.02)
    return server, port


def test_the_dashboard_cards_page_shows_what_top_shows(tmp_path):
    import urllib.request
    assert wire.answer(run_script("stage", {"op": "claim", "base": str(tmp_path / "work" / "alaunch"), "job_id": "job-d",
                                            "cards": [1], "state_dir": "", "smi": False}).stdout)["ok"]
    source, _ = _local_surveyor(tmp_path)
    token = "t" * 32
    servers = []
    try:
        for top in (source.snapshot, None):
            server, port = _serve(tmp_path, top, token)
            servers.append(server)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/top?token={token}", timeout=30) as r:
                got = json.loads(r.read())
            if top is not None:
                [host] = got["hosts"]
                assert host["free"] == [0] and host["cards"][1]["holder"]["job_id"] == "job-d", host
                page = urllib.request.Request(f"http://127.0.0.1:{port}/top", headers={"X-Alaunch-Token": token})
                with urllib.request.urlopen(page, timeout=30) as r:
                    assert r.status == 200  # the page (app.js draws /top from /api/top/stream)
            else:
                assert got["hosts"] is None and "-H HOSTFILE" in got["error"]
    finally:
        for server in servers:
            server.should_exit = True
        source.close()


@pytest.mark.slow
@pytest.mark.browser
def test_the_cards_page_in_chromium_draws_every_card_and_its_holder(tmp_path, monkeypatch):
    from tests.test_ui_browser import browser, wait_for
    monkeypatch.setenv("PATH", f"{_fake_npu_smi(tmp_path, {'cards': 2})}:{os.environ['PATH']}")
    assert wire.answer(run_script("stage", {"op": "claim", "base": str(tmp_path / "work" / "alaunch"), "job_id": "job-b",
                                            "cards": [1], "state_dir": "", "smi": False}).stdout)["ok"]
    source, _ = _local_surveyor(tmp_path, interval=1.0)
    token = "t" * 32
    server, port = _serve(tmp_path, source.snapshot, token)
    driver = browser(tmp_path / "profile")
    try:
        driver.get(f"http://127.0.0.1:{port}/top?token={token}")
        rows = wait_for(lambda: [r.text for r in driver.find_elements("css selector", "#top tbody tr")]
                        if len(driver.find_elements("css selector", "#top tbody tr[data-card]")) == 2 else None,
                        30, what="the cards table")
        assert "free" in rows[0] and "910B2" not in rows[0] and "OK" in rows[0], rows
        assert f"{getpass.getuser()} job-b" in rows[1], rows
        assert "localhost: 1/2 free (0)" in driver.find_element("css selector", "#top-hosts").text
    finally:
        driver.quit()
        server.should_exit = True
        source.close()


def test_a_slurm_target_whose_login_node_does_not_answer_is_one_unreachable_row(run_cli, tmp_path):
    """top on a Slurm target asks the login node (sinfo, squeue); one that does not answer
    is one row that says so, not a traceback (before: such a target was refused)."""
    t = tmp_path / "slurm.yaml"
    t.write_text("slurm:\n  login: login01.invalid\n  nodes: 2\n  cards_per_node: 4\n  workdir: /shared/w\n")
    code, out, err = run_cli("top", "-H", str(t), "--json", "--timeout", "5")
    hosts = json.loads(out)["hosts"]
    assert code == 0 and [(h["host"], h["reachable"]) for h in hosts] == [("login01.invalid", False)], out + err
    assert hosts[0]["error"], hosts


def test_slurm_top_views_say_the_schedulers_word_and_the_cards_of_alaunch_samples():
    """One refresh on Slurm: an idle node's gres cards are free; a node running an alaunch job
    shows the cards of its newest NPU sample (the job's cards held by it, a busy card with no
    process as HBM in use, the rest free), and who runs there; a down node its reason; a node
    running another user's job says so and shows no cards (no sample: not ours to guess); the
    job's cards show its progress (from its logs' tails)."""
    from launcher.core import slurm as core
    from launcher.ops.slurm import top_views
    table = (FIX / "910B2-8cards-busy4.txt").read_text()
    nodes = core.parse_top_sinfo("n1|idle|npu:4|48|none\nn2|mix|npu:8|48|none\nn3|down*|npu:8|48|Not responding\n"
                                 "n4|alloc|npu:8|48|none\nn1|idle|npu:4|48|none\n")  # n1 in two partitions
    jobs = core.parse_top_squeue("41|tiny-lora-20261206-1|alice|n2|/shared/w/alaunch/tiny-lora-20261206-1\n"
                                 "42|bench|bob|n4|/home/bob\n")
    old = json.dumps({"node": "n2", "table": "cut", "t": 1.0, "devices": "0"})
    new = json.dumps({"node": "n2", "node_rank": "0", "table": table, "t": 990.0, "devices": "0,1"})
    views = {v.host: v for v in top_views(nodes, jobs, {("41", "n2"): old[5:] + "\n" + old + "\n" + new + "\n"},
                                          now=1000.0, progress={"tiny-lora-20261206-1": "step 3/16, loss 1.2"})}
    assert list(views) == ["n1", "n2", "n3", "n4"]
    assert views["n1"].free == (0, 1, 2, 3) and views["n1"].summary() == "n1: 4/4 free (0,1,2,3); idle"
    n2 = views["n2"]
    assert [holder_text(c.holder) for c in n2.cards[:4]] == [
        "alice tiny-lora-20261206-1", "alice tiny-lora-20261206-1", *["not alaunch: " + str(c.hbm_used_mb)
                                                                      + " MiB HBM in use" for c in n2.cards[2:4]]]
    assert n2.free == (4, 5, 6, 7) and n2.note is None
    assert [c.progress for c in n2.cards[:3]] == ["step 3/16, loss 1.2", "step 3/16, loss 1.2", None]
    assert n2.summary().endswith("; mix: alice tiny-lora-20261206-1 (Slurm 41)"), n2.summary()
    assert views["n3"].cards == () and views["n3"].summary() == "n3: down* (Not responding)"
    assert views["n4"].cards == () and views["n4"].summary() == "n4: alloc: bob bench (Slurm 42)"
    stale = top_views(nodes[1:2], jobs[:1], {("41", "n2"): new}, now=1100.0)[0]
    assert stale.note == "NPU sample 110 s old" and stale.cards


def test_slurm_node_lists_and_gres_as_squeue_and_sinfo_print_them():
    from launcher.core.slurm import expand_hostlist, gres_cards
    assert expand_hostlist("n[1-3,7],login01,a[08-10]-ib") == ["n1", "n2", "n3", "n7", "login01", "a08-ib", "a09-ib",
                                                             "a10-ib"]
    assert expand_hostlist("(null)") == [] and expand_hostlist("x[a-b]") == ["x[a-b]"]
    assert [gres_cards(g) for g in ("npu:8", "npu:910b:8(S:0-1)", "gpu:2,npu:4", "", "npu")] == [8, 8, 4, 0, 0]


def test_the_login_nodes_top_op_reads_the_samples_and_the_jobs_progress(tmp_path):
    """remote/slurm.py TOP (what SlurmTop asks the login node, one round trip): the tail of each
    sample file (a missing one: None) and each job root's log tails, which give its progress."""
    from launcher.metrics.logparse import tails_progress
    root = tmp_path / "alaunch" / "j1"
    (root / "state" / "telemetry").mkdir(parents=True)
    (root / "state" / "telemetry" / "n1.smi").write_text("x" * 50_000 + "\n{\"last\": 1}\n")
    (root / "msrun_log").mkdir()
    (root / "msrun_log" / "worker_0.log").write_text(
        "{ step:[ 3/16], loss: 1.25, per_step_time: 10ms, lr: 1e-3, overflow cond: False }\n")
    paths = [str(root / "state" / "telemetry" / "n1.smi"), str(root / "state" / "telemetry" / "n2.smi")]
    got = wire.answer(run_script("slurm", {"op": "top", "paths": paths, "roots": [str(root)], "bytes": 1000}).stdout)
    assert got["samples"][paths[1]] is None and got["samples"][paths[0]].endswith('\n{"last": 1}\n')
    assert len(got["samples"][paths[0]]) == 1000
    assert tails_progress("", got["tails"][str(root)]) == "step 3/16, loss 1.25"
