"""Detached start, status, cancel by job marker, all-or-nothing — real processes on this machine."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from launcher.core.hostfile import Host
from launcher.core.layout import JobLayout
from launcher.core.plan import NodePlan, Plan
from launcher.ops.launch import Launcher, LaunchFailed, launch_all, master_port
from launcher.ops.stage import inventory
from launcher.remote import wire
from launcher.runners import LocalRunner as LocalExec

PY = sys.executable


def _node(tmp_path: Path, rank: int, argv: list[str], job: str = "j") -> NodePlan:
    root = tmp_path / job / f"n{rank}"
    root.mkdir(parents=True, exist_ok=True)
    return NodePlan(Host("localhost", 1), rank, JobLayout(str(root)), (), tuple(argv))


def _plan(nodes) -> Plan:
    return Plan("j", "j", "127.0.0.1", 1, len(nodes), tuple(nodes))


def _wait(pred, timeout=15.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_start_request_is_pure_and_marks_the_job(tmp_path):
    node = _node(tmp_path, 0, ["msrun", "--x"])
    runner = LocalExec(node.host).using("/opt/py/python3")
    req = Launcher(runner, "job-1").start_request(node)
    assert runner.program_argv("launch", req["op"])[:3] == ["/opt/py/python3", "-S", "-c"]
    assert req["argv"][-2:] == ["msrun", "--x"]
    assert req["env"]["ALAUNCH_JOB_ID"] == "job-1" and req["state_dir"].endswith("/n0/state/node-0")
    assert not Path(req["state_dir"]).exists()  # building touched nothing


def test_detached_run_status_and_exit_code(tmp_path):
    ok = _node(tmp_path, 0, [PY, "-c", "import time; time.sleep(1.5)"])
    bad = _node(tmp_path, 1, [PY, "-c", "import sys; sys.exit(3)"])
    launchers = {r: Launcher(LocalExec(n.host).using(PY), "j1") for r, n in ((0, ok), (1, bad))}
    started = launch_all(_plan([ok, bad]), launchers)
    assert set(started) == {0, 1} and started[0].pid != started[0].supervisor
    assert launchers[0].status(ok.state_dir, 0).state == "running"
    assert _wait(lambda: launchers[1].status(bad.state_dir, 1).state == "failed")
    assert launchers[1].status(bad.state_dir, 1).exit_code == 3
    assert _wait(lambda: launchers[0].status(ok.state_dir, 0).state == "succeeded")
    assert (Path(ok.state_dir) / "exit_code").read_text().strip() == "0"


def test_two_nodes_in_one_shared_job_dir_each_keep_their_own_state(tmp_path):
    """An NFS workdir: both nodes' job dir is the same path. Each node's pid, exit code and
    msrun output live in its own state/node-<rank>; a second start of a node is refused."""
    root = tmp_path / "shared" / "job"
    root.mkdir(parents=True)
    nodes = [NodePlan(Host("localhost", 1), r, JobLayout(str(root)), (),
                      (PY, "-c", f"import sys; print('node {r} here'); sys.exit({r + 4})")) for r in (0, 1)]
    launchers = {r: Launcher(LocalExec(n.host).using(PY), "jshared") for r, n in enumerate(nodes)}
    started = launch_all(_plan(nodes), launchers)
    assert set(started) == {0, 1} and started[0].pid != started[1].pid
    for r, n in enumerate(nodes):
        assert _wait(lambda r=r, n=n: launchers[r].status(n.state_dir, r).exit_code == r + 4)
        assert Path(n.state_dir) == root / "state" / f"node-{r}"
        assert Path(n.log_path).read_text().strip() == f"node {r} here"
        assert int(Path(n.pid_path).read_text().split()[0]) == started[r].pid
    with pytest.raises(LaunchFailed, match="job already started here: .*node-1 exists"):
        launch_all(_plan(nodes[1:]), {1: launchers[1]})
    assert Path(nodes[1].exit_code_path).read_text().strip() == "5"  # untouched


def test_cancel_stops_only_this_job_even_setsid_children(tmp_path):
    # the child starts a grandchild in its own session, as msrun does with its workers
    script = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
              " start_new_session=True); time.sleep(60)")
    a = _node(tmp_path, 0, [PY, "-c", script], job="a")
    b = _node(tmp_path, 0, [PY, "-c", script], job="b")
    la, lb = Launcher(LocalExec(a.host).using(PY), "job-a"), Launcher(LocalExec(b.host).using(PY), "job-b")
    sa = launch_all(_plan([a]), {0: la})[0]
    launch_all(_plan([b]), {0: lb})
    assert _wait(lambda: la.status(a.state_dir, 0).processes == 2)
    result = la.cancel(sa.pid, grace=3)
    assert result["found"] == 2 and result["left"] == []
    assert la.status(a.state_dir, 0).processes == 0
    assert lb.status(b.state_dir, 0).state == "running" and lb.status(b.state_dir, 0).processes == 2
    lb.cancel(None, grace=3)
    assert lb.status(b.state_dir, 0).processes == 0


def test_all_or_nothing(tmp_path):
    good = _node(tmp_path, 0, [PY, "-c", "import time; time.sleep(60)"])
    broken = _node(tmp_path, 1, [PY, "-c", "pass"])
    launchers = {0: Launcher(LocalExec(good.host).using(PY), "j2"),
                 1: Launcher(LocalExec(broken.host).using("/nonexistent/python3"), "j2")}
    with pytest.raises(LaunchFailed, match=r"node 1: .*stopped the started node\(s\): localhost \(node 0\)"):
        launch_all(_plan([good, broken]), launchers)
    assert launchers[0].status(good.state_dir, 0).processes == 0


def test_port_pick(tmp_path):
    import socket
    node = LocalExec(Host("localhost", 1, workdir=str(tmp_path)))
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert master_port("localhost", inventory(node, [], port=None).port, None) != busy
        assert master_port("localhost", inventory(node, [], port=busy).port, busy) != busy
        with pytest.raises(Exception, match=f"master port {busy} is in use"):
            master_port("localhost", inventory(node, [], port=busy, pinned=True).port, busy)


def test_reach_check_passes_when_node0_is_reachable_and_names_the_node_that_is_not(tmp_path):
    from launcher.ops.launch import Unreachable, reach_check
    from launcher.ops.stage import inventory
    node0, node1 = _node(tmp_path, 0, ["x"]), _node(tmp_path, 1, ["x"])
    launchers = {r: Launcher(LocalExec(n.host).using(PY), "jreach") for r, n in ((0, node0), (1, node1))}
    port = inventory(LocalExec(Host("localhost", 1, workdir=str(tmp_path))), [], port=None,
                     port_range=(29500, 29899)).port
    assert 29500 <= port <= 29899
    good = Plan("j", "j", "127.0.0.1", port, 2, (node0, node1))
    took = reach_check(good, launchers, timeout=5)
    assert set(took) == {1} and took[1] < 5
    import socket
    with socket.socket() as s:  # the listener left nothing bound: msrun can take the port now
        s.bind(("0.0.0.0", port))
    bad = Plan("j", "j", "192.0.2.1", port, 2, (node0, node1))  # TEST-NET-1: reaches nobody
    start = time.time()
    with pytest.raises(Unreachable, match=rf"node 1 \(localhost\) cannot reach node 0 at 192.0.2.1:{port}"):
        reach_check(bad, launchers, timeout=1.5)
    assert time.time() - start < 15
def test_status_tells_a_reused_pid_from_the_supervisor(tmp_path):
    """After a reboot the recorded supervisor pid may belong to another process: the start time
    (/proc/PID/stat field 22) recorded next to it tells them apart."""
    import os as _os

    from tests.test_remote_scripts import run_script

    with open(f"/proc/{_os.getpid()}/stat") as f:
        start = f.read().rsplit(")", 1)[1].split()[19]

    def status(pid_text: str) -> dict:
        (tmp_path / "pid").write_text(pid_text)
        res = run_script("launch", {"op": "status", "state_dir": str(tmp_path), "job_id": "no-such-job"})
        return wire.answer(res.stdout)

    me = _os.getpid()
    assert status(f"1 {me} 1 {start}\n")["supervisor_alive"] is True
    assert status(f"1 {me} 1 {int(start) + 12345}\n")["supervisor_alive"] is False  # same pid, not ours
    assert status(f"1 {me}\n")["supervisor_alive"] is True  # a pid file from before this change


def test_status_of_a_running_node_reads_its_progress_in_the_same_round_trip(tmp_path):
    """One STATUS answers the state and, while running, the step and loss from the worker log."""
    node = _node(tmp_path, 0, [PY, "-c", "import time; time.sleep(30)"], job="prog")
    log = Path(node.layout.root) / "msrun_log" / "worker_0.log"
    log.parent.mkdir(parents=True)
    log.write_text("2025-01-01 10:00:00,000 - mindformers[mindformers/core/callback/callback.py:1]"
                   " - INFO - { Epoch:[  1/  1], step:[    3/   20], loss: 1.500000, per_step_time: 100ms,"
                   " lr: 1e-05, overflow cond: False, loss_scale: 1.0, global_norm: [1.0], train_throughput_per_npu: 1T\n")
    (log.parent / "worker_x.log").write_text("not a rank\n")  # only worker_<digits>.log counts
    calls = []

    class Counting(LocalExec):
        def exec(self, argv, *a, **k):
            calls.append(argv)
            return super().exec(argv, *a, **k)

    la = Launcher(Counting(node.host).using(PY), "prog1")
    launch_all(_plan([node]), {0: la})
    try:
        calls.clear()
        st = la.status(node.state_dir, 0, job_root=node.layout.root)
        assert st.state == "running" and st.detail == "step 3/20, loss 1.5" and len(calls) == 1
        assert la.status(node.state_dir, 0).detail == ""  # not asked: no log read
    finally:
        la.cancel(None, grace=1.0)
    assert _wait(lambda: la.status(node.state_dir, 0, job_root=node.layout.root).state != "running")
    assert la.status(node.state_dir, 0, job_root=node.layout.root).detail == ""  # ended: no progress


def test_cancel_answers_the_exit_code_the_supervisor_recorded(tmp_path):
    """`status` showed a blank exit for the nodes a failure or a cancel stopped: the cancel now
    brings back msrun's exit code as the node's supervisor wrote it (the registry records it)."""
    up = tmp_path / "up"  # written once the child runs its code: its SIGINT handler is in place
    node = _node(tmp_path, 0, [PY, "-c", f"import pathlib, time; pathlib.Path({str(up)!r}).touch(); time.sleep(60)"],
                 job="x")
    launcher = Launcher(LocalExec(node.host).using(PY), "job-x")
    started = launch_all(_plan([node]), {0: launcher})[0]
    # A SIGINT while the interpreter still starts ends it with exit 1, not 130 (seen once in a
    # full run): wait for the child to be in its sleep, not only for its process to exist.
    assert _wait(lambda: launcher.status(node.state_dir, 0).processes == 1 and up.exists())
    result = launcher.cancel(started.pid, grace=3, state_dir=node.state_dir)
    assert result["left"] == [] and result["exit_code"] == 130, result  # SIGINT: 128 + 2
    assert (Path(node.state_dir) / "exit_code").read_text().strip() == "130"
