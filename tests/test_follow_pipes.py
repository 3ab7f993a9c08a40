"""The follower's one-thread transport (``ops.follow_transport.PipeHub``) without SSH: real processes (the
real FOLLOW script run locally, and small scripts that end or fail), read by one thread.

What is pinned: lines split across reads and several per read, a process that ends is a
``lost`` event and a new attempt after the backoff (which grows while attempts bring nothing),
a given-up attempt resumes every file at its byte offset (nothing lost or doubled), and
stopping — also by Ctrl-C in the follower — kills and reaps every process."""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from pathlib import Path

import pytest

from launcher.core.hostfile import Host
from launcher.ops import registry as reg
from launcher.ops.follow import Follower
from launcher.ops.follow_transport import MESSAGE_CAP, Event, NodeLog, PipeHub, PipeNode, follow_argv, process_argv
from launcher.remote._prelude import LINE_CAP, Lines
from launcher.runners import LocalRunner
from tests.conftest import write_exit_code

PY = sys.executable


def test_lines_across_reads_and_several_per_read():
    lines = Lines()
    assert lines.feed(b"H\nL\t0\tworker\t1:5\tfir") == [(b"H", 1)]
    assert lines.feed(b"st\nX\t0\n") == [(b"L\t0\tworker\t1:5\tfirst", 20), (b"X\t0", 3)]
    assert lines.feed("é".encode()[:1]) == [] and len(lines) == 1  # a character cut between two reads
    assert lines.feed("é".encode()[1:] + b"\n") == [("é".encode(), 2)]
    assert lines.rest() == (b"", 0)


def test_a_long_line_is_kept_up_to_the_cap_the_rest_counted_and_said_once():
    """Fed in pieces, a line past the cap keeps its first ``cap`` bytes; the rest is counted in
    its size and said once at its end; the next line is whole again."""
    lines = Lines(cap=8)
    assert lines.feed(b"abcde") == [] and lines.feed(b"fghij") == [] and lines.feed(b"klm") == []
    assert len(lines) == 13
    assert lines.feed(b"n\nok\n") == [(b"abcdefgh [line cut: 6 more bytes]", 14), (b"ok", 2)]
    assert lines.feed(b"0123456789\n") == [(b"01234567 [line cut: 2 more bytes]", 10)]
    assert lines.feed(b"tail") == [] and lines.rest() == (b"tail", 4) and lines.rest() == (b"", 0)


def test_the_host_script_caps_a_long_line_and_its_offset_counts_every_byte(tmp_path):
    """A worker line of 3 MiB without a newline until its end (a \\r progress bar): the FOLLOW
    script sends its first 64 KiB and the count of the rest, the lines around it whole, and
    the offset after it counts every byte (a reconnect resumes after the whole line)."""
    root = tmp_path / "job"
    (root / "state").mkdir(parents=True)
    (root / "msrun_log").mkdir()
    (root / "state" / "exit_code").write_text("0\n")
    log = root / "msrun_log" / "worker_0.log"
    big = 3 << 20
    log.write_bytes(b"before\n" + b"\rx" * (big // 2) + b"\nafter\n")
    q: queue.Queue = queue.Queue()
    hub = PipeHub(q, threading.Event())
    node = hub.add(LocalRunner(Host("localhost", 1)), lambda offsets: follow_argv(PY, str(root), True, offsets=offsets),
                   reconnect=False)
    hub.start()
    try:
        got = _take(q, lambda e: e.kind == "end", timeout=30)
    finally:
        hub.close()
    lines = [e for e in got if e.kind == "line"]
    assert [e.text[:8] for e in lines] == ["before", "\rx\rx\rx\rx", "after"]
    cut = lines[1].text
    assert cut == "\rx" * (LINE_CAP // 2) + f" [line cut: {big - LINE_CAP} more bytes]"
    assert [e.end for e in lines] == [7, 7 + big + 1, 7 + big + 1 + 6]
    assert node.offsets_copy()[str(log)][1] == log.stat().st_size


class _FakeFollow(LocalRunner):
    """A local node whose follow process is ``script`` (whatever the follower asked for)."""

    def __init__(self, host, script):
        super().__init__(host)
        self.script = script

    def process_argv(self, argv, fresh=False):
        return [PY, "-c", self.script]


def test_the_pieces_of_a_long_message_are_life_and_it_is_capped_on_this_side_too(tmp_path):
    """A node sends one message without a newline for 1.5 s, no heartbeat meanwhile (what a host
    script does while it sends a huge line): its bytes are life, so with ``unreachable_after``
    0.5 s the node is never called unreachable; the message is cut at MESSAGE_CAP, the rest
    counted, and the node's end after it arrives."""
    script = ("import sys, time\n"
              "out = sys.stdout.buffer\n"
              "out.write(b'H\\nL\\t0\\tworker\\t1:5\\t'); out.flush()\n"
              "for _ in range(15):\n"
              "    out.write(b'x' * 16384); out.flush(); time.sleep(0.1)\n"
              "out.write(b'\\nX\\t0\\n'); out.flush()\n")
    record = reg.JobRecord("j1", "j", "train", "running", "", "", "", "", "", None, None, None,
                           meta={"pythons": {"n0": PY}}, nodes=(reg.NodeRecord(0, "n0", str(tmp_path)),))
    sink = _Notes()
    follower = Follower(record, lambda h: _FakeFollow(h, script), {"n0": Host("n0", 1)}, sink,
                        unreachable_after=0.5, offsets_path=tmp_path / "offsets.json")
    result = follower.run()
    assert not [n for n in sink.notes if "unreachable" in n], sink.notes
    assert result.node_codes == {"n0": 0}
    (text,) = sink.lines
    sent = len("L\t0\tworker\t1:5\t") + 15 * 16384
    assert text == "x" * (MESSAGE_CAP - len("L\t0\tworker\t1:5\t")) + f" [line cut: {sent - MESSAGE_CAP} more bytes]"


def test_node_log_keeps_offsets_per_file_and_backs_off_only_without_news():
    node = NodeLog("h", {"/old.log": [1, 10]}, backoff=(1.0, 2.0, 4.0))
    node.begin()
    assert node.take("F\t1\t77\t/r/worker_0.log", 5.0) is None  # a file declared: nothing to publish
    ev = node.take("L\t0\tworker\t1:42\tloss 1.0", 6.0)
    assert (ev.kind, ev.text, node.last_seen) == ("line", "loss 1.0", 6.0)
    assert node.take("H", 7.0) is None and node.last_seen == 7.0
    assert node.offsets_copy() == {"/old.log": [1, 10], "/r/worker_0.log": [77, 42]}
    assert node.take("L\t0\tworker\t9:50\tunknown fid", 7.5).end == 50  # published, no offset kept
    assert "/r/worker_0.log" in node.offsets_copy() and len(node.offsets_copy()) == 2
    # backoff: attempts that brought nothing grow it, news starts it over
    assert [node.retry_delay(100.0) for _ in range(5)] == [1.0, 2.0, 4.0, 4.0, 4.0]
    node.take("H", 200.0)
    assert node.retry_delay(200.5) == 4.0 and node.retry_delay(201.0) == 1.0
    assert node.take("X\t3", 8.0).exit_code == 3 and node.ended


def test_process_argv_local_is_the_command_itself():
    runner = LocalRunner(Host("localhost", 1))
    assert process_argv(runner, ["python3", "-c", "print(1)"]) == ["python3", "-c", "print(1)"]


def _take(q: queue.Queue, until, timeout: float = 10.0) -> list[Event]:
    got, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            ev = q.get(timeout=0.1)
        except queue.Empty:
            continue
        got.append(ev)
        if until(ev):
            return got
    raise AssertionError(f"timed out; got {got}")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_process_that_ends_is_lost_and_restarted_after_the_backoff(tmp_path):
    """Each attempt prints a line in two writes, then fails with a reason on stderr (as ssh does):
    every attempt's line arrives whole, each end is a 'lost' naming that reason, and attempts
    are spaced by the backoff (its first step each time: a line is news, the backoff starts over)."""
    script = ("import sys, time; sys.stdout.write('L\\t0\\tworker\\t1:3\\tpart'); sys.stdout.flush(); "
              "time.sleep(0.05); print('ial'); sys.stdout.flush(); "
              "print('ssh: connect to host h port 22: Connection refused', file=sys.stderr); sys.exit(255)")
    q: queue.Queue = queue.Queue()
    hub = PipeHub(q, threading.Event())
    node = hub.add(LocalRunner(Host("localhost", 1)), lambda offsets: [PY, "-c", script], backoff=(0.2, 5.0))
    hub.start()
    got: list[Event] = []
    try:
        _take(q, lambda e: got.append(e) or [x.kind for x in got].count("lost") >= 3, timeout=20)
    finally:
        hub.close()
    lines = [e for e in got if e.kind == "line"]
    lost = [e for e in got if e.kind == "lost"]
    assert [e.text for e in lines] == ["partial"] * 3
    assert [e.text for e in lost] == ["ssh: connect to host h port 22: Connection refused"] * 3
    gaps = [b.at - a.at for a, b in zip(lost, lost[1:], strict=False)]
    assert all(0.2 <= g < 4.5 for g in gaps), gaps  # each from the first step again (5.0 were it not reset)
    assert node.attempts == 3 and node.proc is None


def test_silent_attempts_back_off_longer_and_longer():
    """Attempts that end without a word, long after the node's last message, do not reset the
    backoff (each step is taken in turn, the last repeats)."""
    q: queue.Queue = queue.Queue()
    hub = PipeHub(q, threading.Event())
    node = hub.add(LocalRunner(Host("localhost", 1)), lambda offsets: [PY, "-c", "pass"], backoff=(0.1, 0.5, 1.5))
    node.node.last_seen = time.monotonic() - 100  # silent for long
    hub.start()
    try:
        seen: list[Event] = []
        _take(q, lambda e: seen.append(e) or len(seen) >= 4, timeout=20)
    finally:
        hub.close()
    assert [e.kind for e in seen] == ["lost"] * 4 and seen[0].text == "channel closed"
    gaps = [b.at - a.at for a, b in zip(seen, seen[1:], strict=False)]
    assert gaps[0] < gaps[1] < gaps[2], gaps
    assert 0.5 <= gaps[1] and 1.5 <= gaps[2], gaps  # each step in turn (no upper bound: a loaded machine adds to each)


def test_given_up_attempts_resume_every_file_at_its_offset_nothing_lost_or_doubled(tmp_path):
    """The real FOLLOW script through the hub, cut twice mid-stream (what the follower does when
    a node's heartbeat stops): the numbered sequence arrives once each, in order, and the
    killed attempts' processes are gone."""
    root = tmp_path / "job"
    (root / "state").mkdir(parents=True)
    (root / "msrun_log").mkdir()
    (root / "state" / "pid").write_text(f"1 {os.getpid()}\n")
    log = root / "msrun_log" / "worker_0.log"
    n = 6000

    def write():
        with log.open("a") as fh:
            for i in range(1, n + 1):
                fh.write(f"line {i:05d}\n")
                if i % 200 == 0:
                    fh.flush()
                    time.sleep(0.05)
        write_exit_code(root / "state", 0)

    q: queue.Queue = queue.Queue()
    hub = PipeHub(q, threading.Event())
    node = hub.add(LocalRunner(Host("localhost", 1)), lambda offsets: follow_argv(PY, str(root), True, offsets=offsets),
                   backoff=(0.05,))
    writer = threading.Thread(target=write)
    writer.start()
    hub.start()
    pids = []
    try:
        got = _take(q, lambda e: e.kind == "line" and e.text == "line 01000", timeout=20)
        pids.append(node.proc.pid)
        node.give_up()
        got += _take(q, lambda e: e.kind == "line" and e.text == "line 03000", timeout=20)
        pids.append(node.proc.pid)
        node.give_up()
        got += _take(q, lambda e: e.kind == "end", timeout=30)
    finally:
        writer.join()
        hub.join(5)
        hub.close()
    lines = [e.text for e in got if e.kind == "line"]
    assert lines == [f"line {i:05d}" for i in range(1, n + 1)]
    assert [e.kind for e in got].count("lost") == 2 and node.attempts == 3
    assert node.offsets_copy()[str(log)][1] == log.stat().st_size
    assert pids[0] != pids[1] and not any(_alive(p) for p in pids)
    assert not hub.is_alive()  # every node ended: the thread returned by itself


class _Interrupting:
    """A sink whose first log line is a Ctrl-C (KeyboardInterrupt raised in the follower's loop)."""

    def __init__(self, follower_box):
        self.box = follower_box
        self.pids: list[int] = []

    def line(self, host, rank, text):
        self.pids = [n.proc.pid for n in self.box[0].streams.values() if isinstance(n, PipeNode) and n.proc]
        raise KeyboardInterrupt

    def progress(self, view):
        pass

    def note(self, text):
        pass

    def msrun(self, host, text):
        pass

    def nodes(self, views):
        pass


def test_ctrl_c_in_the_follower_kills_and_reaps_every_process(tmp_path):
    """Three local nodes following live jobs; a Ctrl-C in the loop: when ``run`` has raised, no
    follow process is left (the job is only read: its files are untouched)."""
    nodes, hosts = [], {}
    for i in range(3):
        root = tmp_path / f"job{i}"
        (root / "state").mkdir(parents=True)
        (root / "msrun_log").mkdir()
        (root / "state" / "pid").write_text(f"1 {os.getpid()}\n")
        (root / "msrun_log" / "worker_0.log").write_text("hello\n")
        name = f"n{i}"
        hosts[name] = Host(name, 1)
        nodes.append(reg.NodeRecord(i, name, str(root)))
    record = reg.JobRecord("j1", "j", "train", "running", "", "", "", "", "", None, None, None,
                           meta={"pythons": {h: PY for h in hosts}}, nodes=tuple(nodes))
    box: list = []
    sink = _Interrupting(box)
    follower = Follower(record, lambda h: LocalRunner(h), hosts, sink, offsets_path=tmp_path / "offsets.json")
    box.append(follower)
    with pytest.raises(KeyboardInterrupt):
        follower.run()
    assert len(sink.pids) >= 1 and follower.hub is not None and not follower.hub.is_alive()
    assert not any(_alive(p) for p in sink.pids), sink.pids
    assert all(n.proc is None for n in follower.streams.values())
    assert (tmp_path / "job0" / "msrun_log" / "worker_0.log").read_text() == "hello\n"


def test_an_unfinished_message_at_a_process_end_is_dropped_not_half_read():
    """A process killed mid-write leaves half a message: it is not published, and the offset
    stays at the last whole line (the next attempt resends that line whole)."""
    script = ("import sys; sys.stdout.write('F\\t1\\t7\\t/r/w.log\\nL\\t0\\tworker\\t1:6\\twhole\\n'"
              "'L\\t0\\tworker\\t1:99\\thalf of a lo'); sys.stdout.flush()")
    q: queue.Queue = queue.Queue()
    hub = PipeHub(q, threading.Event())
    node = hub.add(LocalRunner(Host("localhost", 1)), lambda offsets: [PY, "-c", script], reconnect=False)
    hub.start()
    try:
        got = _take(q, lambda e: e.kind == "lost")
    finally:
        hub.close()
    assert [(e.kind, e.text) for e in got] == [("line", "whole"), ("lost", "channel closed")]
    assert node.offsets_copy() == {"/r/w.log": [7, 6]}



def test_a_bug_in_the_hub_thread_reaches_the_follower_not_silence(tmp_path, monkeypatch):
    """An unexpected error on the hub's thread would stop every node's stream, and the nodes
    would only read 'unreachable' later: the follower raises it on its own thread."""
    root = tmp_path / "job0"
    (root / "state").mkdir(parents=True)
    (root / "msrun_log").mkdir()
    (root / "state" / "pid").write_text(f"1 {os.getpid()}\n")
    (root / "msrun_log" / "worker_0.log").write_text("hello\n")
    hosts = {"n0": Host("n0", 1)}
    record = reg.JobRecord("j1", "j", "train", "running", "", "", "", "", "", None, None, None,
                           meta={"pythons": {"n0": PY}}, nodes=(reg.NodeRecord(0, "n0", str(root)),))

    def broken(self, n, kind, f):
        raise RuntimeError("hub bug")
    monkeypatch.setattr(PipeHub, "_read", broken)
    follower = Follower(record, lambda h: LocalRunner(h), hosts, _Interrupting([]),
                        offsets_path=tmp_path / "offsets.json")
    with pytest.raises(RuntimeError, match="hub bug"):
        follower.run()
    assert not any(n.proc is not None and n.proc.poll() is None for n in follower.streams.values())


class _Notes:
    def __init__(self):
        self.notes: list[str] = []
        self.lines: list[str] = []

    def line(self, host, rank, text):
        self.lines.append(text)

    def progress(self, view):
        pass

    def note(self, text):
        self.notes.append(text)

    def msrun(self, host, text):
        pass

    def nodes(self, views):
        pass


def test_offsets_that_cannot_be_kept_are_said_once_and_the_follow_goes_on(tmp_path):
    from launcher.core.layout import JobLayout
    root = tmp_path / "job0"
    state = Path(JobLayout(str(root)).node_state(0))
    state.mkdir(parents=True)
    (root / "msrun_log").mkdir()
    (root / "msrun_log" / "worker_0.log").write_text("hello\n")
    (state / "pid").write_text(f"1 {os.getpid()}\n")
    (tmp_path / "blocker").write_text("a file where the offsets' directory should be\n")
    record = reg.JobRecord("j1", "j", "train", "running", "", "", "", "", "", None, None, None,
                           meta={"pythons": {"n0": PY}}, nodes=(reg.NodeRecord(0, "n0", str(root)),))
    sink = _Notes()
    follower = Follower(record, lambda h: LocalRunner(h), {"n0": Host("n0", 1)}, sink,
                        offsets_path=tmp_path / "blocker" / "offsets.json")
    done = threading.Timer(3.5, lambda: write_exit_code(state, 0))
    done.start()
    result = follower.run()
    done.join()
    said = [n for n in sink.notes if "read offsets" in n]
    assert len(said) == 1 and "reads every file from the start" in said[0], sink.notes
    assert result.node_codes == {"n0": 0}  # followed to the end all the same


class _SlowThenStopped(_Notes):
    """A slow view: it takes ``keep`` lines, then a Ctrl-C arrives while the readers have
    queued lines it never took (the follower's queue not empty)."""

    def __init__(self, follower_box, keep: int):
        super().__init__()
        self.box, self.keep = follower_box, keep

    def line(self, host, rank, text):
        if len(self.lines) == self.keep:
            queued = self.box[0].queue
            end = time.monotonic() + 20
            while queued.qsize() < 100 and time.monotonic() < end:
                time.sleep(0.01)
            assert queued.qsize() >= 100  # the condition under test: lines read, not yet handled
            raise KeyboardInterrupt
        super().line(host, rank, text)


def test_a_follower_stopped_with_lines_queued_hands_none_of_them_on_as_shown(tmp_path):
    """The saved offsets were those READ from the host, up to READ_AHEAD lines ahead of what the
    view had shown: a follower stopped (Ctrl-C, kill) with lines queued made the next ``logs -f``
    skip them. Stopped after 50 of 3000 lines, the reattach shows the other 2950: none lost
    or doubled."""
    from launcher.core.layout import JobLayout
    root = tmp_path / "job0"
    state = Path(JobLayout(str(root)).node_state(0))
    state.mkdir(parents=True)
    (root / "msrun_log").mkdir()
    every = [f"line {i:05d}" for i in range(3000)]
    (root / "msrun_log" / "worker_0.log").write_text("".join(f"{t}\n" for t in every))
    (state / "pid").write_text(f"1 {os.getpid()}\n")
    record = reg.JobRecord("j1", "j", "train", "running", "", "", "", "", "", None, None, None,
                           meta={"pythons": {"n0": PY}}, nodes=(reg.NodeRecord(0, "n0", str(root)),))
    hosts, offsets = {"n0": Host("n0", 1)}, tmp_path / "offsets.json"
    box: list = []
    first = _SlowThenStopped(box, keep=50)
    box.append(Follower(record, lambda h: LocalRunner(h), hosts, first, offsets_path=offsets))
    with pytest.raises(KeyboardInterrupt):
        box[0].run()
    assert first.lines == every[:50]
    write_exit_code(state, 0)  # the job ends; the reattach reads what is left and stops
    again = _Notes()
    Follower(record, lambda h: LocalRunner(h), hosts, again, offsets_path=offsets).run()
    assert first.lines + again.lines == every
