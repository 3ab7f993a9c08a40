"""LocalRunner against real processes on this machine (subprocess, setsid, /proc)."""

import threading
import time

import pytest

from launcher.core.hostfile import Host
from launcher.errors import RemoteError
from launcher.runners import CommandFailed, CommandTimeout, LocalRunner, make_runner

HOSTILE = "a b'c\"d $(x) `y` ; z"


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


def test_exec_streams_stdin_and_stdout_and_times_out(local, tmp_path):
    """The one primitive every runner has: chunks in, bytes out (or into a file), code as data."""
    res = local.exec(["sh", "-c", "cat; echo err >&2; exit 3"], [b"a" * 70000, b"b\n"])
    assert res.exit_code == 3 and res.stdout == b"a" * 70000 + b"b\n" and res.stderr == b"err\n"
    with open(tmp_path / "out", "wb") as f:
        res = local.exec(["printf", "%s", HOSTILE], stdout=f)
    assert res.ok and res.stdout == b"" and (tmp_path / "out").read_text() == HOSTILE
    with pytest.raises(CommandTimeout):
        local.exec(["sleep", "5"], timeout=0.2)
    with pytest.raises(CommandTimeout):  # its stdout closed early, the process still running
        local.exec(["sh", "-c", "exec >&-; exec sleep 5"], [b"x" * 70000], timeout=0.3)
    with pytest.raises(CommandTimeout):  # stdout open, nothing written, the stream's path
        local.exec(["sleep", "5"], [b"x" * 70000], stdout=open(tmp_path / "never", "wb"), timeout=0.3)
    with pytest.raises(RemoteError, match="sh failed: boom"):
        local.check(["sh", "-c", "echo boom >&2; exit 1"], what="sh")
    dest = tmp_path / "up" / "file"
    assert local.upload_stream([b"x" * 10, b"y"], str(dest), 0o600) == 11
    with open(tmp_path / "down", "wb") as f:
        assert local.download(str(dest), f, offset=4) == 7
    assert (tmp_path / "down").read_bytes() == b"x" * 6 + b"y" and (dest.stat().st_mode & 0o777) == 0o600


def test_call_runs_a_host_program_and_maps_every_failure_one_way(local, tmp_path):
    """``call``: the op's program with the runner's interpreter, the answer decoded by
    wire.answer; a failing program, a missing interpreter and a program that answers nothing
    are each one RemoteError naming the host and what was asked."""
    import sys
    assert local.python == sys.executable  # this machine: this interpreter, set in one place
    (tmp_path / "f").write_bytes(b"abc")
    assert local.call("files", {"op": "facts", "path": str(tmp_path / "f")})["size"] == 3
    with pytest.raises(RemoteError, match=r"^localhost: listing /x failed: .*KeyError: 'root'"):
        local.call("collect", {"op": "list"}, what="listing /x")
    with pytest.raises(RemoteError, match=r"^localhost: files exist failed: .*No such file"):
        LocalRunner(Host("localhost", 1), python=str(tmp_path / "no-python")).call("files", {"op": "exist", "paths": []})
    with pytest.raises(RemoteError, match=r"^localhost: files exist gave no answer"):
        LocalRunner(Host("localhost", 1), python="true").call("files", {"op": "exist", "paths": []})
    assert make_runner(Host("h1", 1)).python == "python3"  # a remote host, unless the job says
    assert make_runner(Host("h1", 1)).using("/opt/py/bin/python3").python == "/opt/py/bin/python3"
