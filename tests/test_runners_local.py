"""LocalRunner against real processes on this machine (subprocess, setsid, /proc)."""

import signal
import threading
import time

import pytest

from launcher.core.hostfile import Host
from launcher.runners import CommandFailed, CommandTimeout, LocalRunner, make_runner


@pytest.fixture
def local():
    return LocalRunner(Host("localhost", 1))


def test_make_runner_picks_local_for_localhost_only():
    assert isinstance(make_runner(Host("localhost", 1)), LocalRunner)
    assert not isinstance(make_runner(Host("localhost", 1, port=2222)), LocalRunner)


def test_run_passes_values_literally(local, tmp_path):
    canary = tmp_path / "pwned"
    weird = f"a b;touch {canary};$(touch {canary})"
    res = local.run(["printf", "%s", weird], env={"V": weird}, cwd=str(tmp_path))
    assert res.stdout == weird and res.exit_code == 0 and not canary.exists()


def test_failures_and_timeouts_are_typed(local):
    with pytest.raises(CommandFailed, match="exited 3"):
        local.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert local.run(["sh", "-c", "exit 4"], check=False).exit_code == 4
    assert local.run(["no-such-program-xyz"], check=False).exit_code == 127
    with pytest.raises(CommandTimeout):
        local.run(["sleep", "5"], timeout=0.2)


def test_stream_delivers_lines_and_stops(local):
    seen = []
    res = local.stream(["sh", "-c", "for i in 1 2 3 4 5 6; do echo $i; sleep 0.1; done"],
                       lambda line: (seen.append(line), line != "2")[1])
    assert seen == ["1", "2"] and res.exit_code is None
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    res = local.stream(["sleep", "30"], lambda line: None, stop=stop)
    assert res.exit_code is None and time.monotonic() - t0 < 5


def test_detached_records_pid_and_exit_code_and_group_signal(local, tmp_path):
    d = tmp_path / "job dir"
    pid = local.start_detached(["sh", "-c", "echo hi; exit 7"], cwd=str(tmp_path),
                               log_path=str(d / "log"), pid_path=str(d / "pid"),
                               exit_code_path=str(d / "exit"))
    deadline = time.monotonic() + 10
    while not (d / "exit").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (d / "exit").read_text().strip() == "7"
    assert (d / "log").read_text() == "hi\n" and int((d / "pid").read_text()) == pid
    assert not local.process_state(pid).alive

    pid = local.start_detached(["sh", "-c", "sleep 60 & sleep 60; wait"], log_path=str(d / "l2"),
                               pid_path=str(d / "p2"), exit_code_path=str(d / "e2"))
    assert local.process_state(pid).alive
    assert local.signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while local.process_state(pid).alive and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not local.process_state(pid).alive
    assert (d / "e2").read_text().strip() == "143"  # the wrapper saw its child die of TERM
    assert _live_group_members(pid) == []  # the background `sleep 60` died too


def _live_group_members(pgid: int) -> list[int]:
    """Processes of a group that are not zombies (zombies still answer `kill`)."""
    import os
    live = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            live.append(int(entry))
    return live


def test_put_get_put_tar(local, tmp_path):
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f 1").write_text("one")
    (src / "g").write_text("two")
    n = local.put_tar(src, ["a/b/f 1", "g"], str(tmp_path / "dst"))
    assert n == 6 and (tmp_path / "dst/a/b/f 1").read_text() == "one"
    local.get(str(tmp_path / "dst/g"), tmp_path / "back")
    assert (tmp_path / "back").read_text() == "two"
