"""The follower's parts without SSH: the wire protocol, the progress view and its rendering,
--since, status progress, and the real FOLLOW script run as a local process on a job dir
whose files appear, grow and rotate while it runs."""

from __future__ import annotations

import io
import json
import queue
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from rich.console import Console

from launcher.cli.live import parse_since, progress_renderable
from launcher.core.hostfile import Host
from launcher.errors import InputError
from launcher.metrics.logparse import JobLogs, tails_progress
from launcher.metrics.progress import StepClock, build_view, loss_trend, view_text
from launcher.ops.follow_transport import Event, NodeStream, follow_argv, parse_message, tail_argv
from launcher.remote import wire
from launcher.runners import LocalRunner
from tests.conftest import write_exit_code

FIX = Path(__file__).parent / "fixtures" / "real-ascend"
PY = __import__("sys").executable


def test_parse_message_lines_ends_and_noise():
    ev = parse_message("h1", "L\t3\tworker\t2:1234\tloss: 1.0\tstill text", 7.0)
    assert ev == Event("h1", "line", 3, "worker", "loss: 1.0\tstill text", 7.0, "2", 1234)
    assert parse_message("h1", "L\t\tscheduler\t0:3\tup").rank is None
    ev = parse_message("h1", "F\t2\t99\t/r/msrun_log/worker_3.log")
    assert (ev.kind, ev.fid, ev.end, ev.text) == ("file", "2", 99, "/r/msrun_log/worker_3.log")
    assert parse_message("h1", "X\t1").exit_code == 1
    assert parse_message("h1", "X\t?").exit_code is None
    assert parse_message("h1", "H").kind == "beat"
    assert parse_message("h1", "some login banner") is None


def test_argv_carries_the_request_as_one_element():
    argv = follow_argv("/opt/py 3/python3", "/root/a b/'; rm -rf ~'", follow=True)
    assert argv[0] == "/opt/py 3/python3" and argv[1] == "-c"
    assert wire.decode(argv[3]) == {"op": "follow", "root": "/root/a b/'; rm -rf ~'", "follow": True,
                                    "offsets": {}}
    assert wire.decode(tail_argv("python3", "/x")[3]) == {"op": "tail", "root": "/x"}


def test_loss_trend():
    assert loss_trend([2.0]) == ""
    assert loss_trend([2.0, 1.8, 1.5, 1.2, 1.0, 0.9]) == "↓"
    assert loss_trend([1.0, 1.1, 1.3, 1.6]) == "↑"
    assert loss_trend([1.0, 1.0, 1.001, 1.0]) == "→"


def _job_from(path: Path, host: str = "h0", rank: int = 0) -> JobLogs:
    job = JobLogs()
    for line in path.read_text(errors="replace").splitlines():
        job.feed(host, rank, line)
    return job


def test_view_of_the_real_4card_log():
    view = build_view(_job_from(FIX / "train-run-4card" / "worker_0.log"))
    assert (view.kind, view.done, view.total, view.epoch, view.epochs) == ("train", 1170, 1170, 5, 5)
    assert view.loss == pytest.approx(1.086)
    text = view_text(view)
    assert text.startswith("epoch 5/5 step 1170/1170 | loss 1.086")
    assert "ms/step" in text or "s/step" in text


def test_view_of_the_real_eval_log():
    view = build_view(_job_from(FIX / "train-run-1card" / "info.log"))
    assert (view.kind, view.done, view.total) == ("eval", 2067, 2067)
    assert view_text(view).startswith("example 2067/2067")


def test_step_time_and_eta_from_arrival_when_the_log_has_none():
    job, clock = JobLogs(), StepClock()
    for step, at in ((1, 0.0), (2, 2.0), (3, 4.0)):
        job.feed("h", 0, f"{{ Epoch:[  1/  1], step:[    {step}/   10], loss: {3 - step * 0.5:.3f}")
        clock.note(step, at)
    view = build_view(job, clock)
    assert view.step_s == pytest.approx(2.0) and view.eta_s == pytest.approx(14.0)
    assert view.trend == "↓"


def test_failure_shows_under_the_bar_and_fits_100_columns():
    job = JobLogs()
    job.feed("10.213.0.11", 1, "{ Epoch:[  1/  5], step:[   98/  234], loss: 1.292, per_step_time: 383209ms")
    job.feed("10.213.0.11", 1, "Traceback (most recent call last):")
    job.feed("10.213.0.11", 1, "ValueError: " + "x" * 200)
    job.note_worker("10.213.0.11", 77, 1)
    job.feed_msrun("10.213.0.11", "[ERROR] ME(1:2,MainProcess):2026-11-28-10:39:58.391.000 [mindspore/parallel/"
                                  "cluster/process_entity/_api.py:364] Worker process 77 exit with exception. "
                                  "Error code: 1.")
    out = io.StringIO()
    Console(file=out, width=100, force_terminal=True, color_system=None).print(
        progress_renderable(build_view(job)))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 100 for line in lines), lines
    assert "epoch 1/5 step 98/1170 | loss 1.292 | 383.2 s/step | ETA 114:06:40" in lines[0]  # global steps
    assert lines[1].startswith("FAILED 10.213.0.11/rank 1: Python exception on this rank: ValueError: xxx")


def test_parse_since():
    now = datetime(2025, 1, 2, 12, 0, 0)
    assert parse_since("10m", now) == datetime(2025, 1, 2, 11, 50, 0)
    assert parse_since("1d", now) == datetime(2025, 1, 1, 12, 0, 0)
    assert parse_since("09:30", now) == datetime(2025, 1, 2, 9, 30)
    assert parse_since("2025-01-01 10:00:00", now) == datetime(2025, 1, 1, 10, 0)
    with pytest.raises(InputError, match="--since: cannot read 'yesterday'"):
        parse_since("yesterday", now)


def test_node_progress_from_tails():
    tails = {"0": ["{ Epoch:[  1/  2], step:[    3/   10], loss: 1.5", "noise"],
             "1": ["{ Epoch:[  1/  2], step:[    4/   10], loss: 1.25"]}
    framed = "Welcome to node h\n" + wire.ANSWER_MARK + json.dumps(tails) + "\n"  # a chatty shell first
    assert tails_progress("h", wire.answer(framed)) == "rank 0: step 3/20, loss 1.5; rank 1: step 4/20, loss 1.25"
    with pytest.raises(wire.NoAnswer):  # unframed: not an answer
        wire.answer(json.dumps(tails))
    assert tails_progress("h", {}) == ""


# ---------------------------------------------------------------- the real remote script, locally
def _stream(root: Path, follow: bool = True):
    q: queue.Queue = queue.Queue()
    stop = threading.Event()
    t = NodeStream(LocalRunner(Host("localhost", 1)), follow_argv(PY, str(root), follow), q, stop)
    t.start()
    return q, stop, t


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


def test_follow_script_picks_up_late_files_rotation_and_the_end(tmp_path):
    root = tmp_path / "job"
    (root / "state").mkdir(parents=True)
    (root / "state" / "pid").write_text(f"1 {__import__('os').getpid()}\n")  # supervisor: this test
    q, stop, t = _stream(root)
    try:
        info1 = root / "output" / "log" / "rank_1" / "info.log"
        info1.parent.mkdir(parents=True)
        info1.write_text("from info.log of rank 1\n")
        _take(q, lambda e: e.text == "from info.log of rank 1")
        (root / "msrun_log").mkdir()
        worker = root / "msrun_log" / "worker_0.log"
        worker.write_text("first\npartial")
        got = _take(q, lambda e: e.text == "first")
        with worker.open("a") as fh:
            fh.write(" line\n")
        got = _take(q, lambda e: e.text == "partial line")
        assert all(e.rank == 0 and e.role == "worker" for e in got)
        worker.rename(worker.with_suffix(".log.1"))  # rotated: a new file under the same name
        worker.write_text("after rotation\n")
        _take(q, lambda e: e.text == "after rotation")
        (root / "msrun_log" / "worker_1.log").write_text("rank 1 worker\n")
        info1.write_text("from info.log of rank 1\nnot followed any more\n")
        write_exit_code(root / "state", 3)
        got = _take(q, lambda e: e.kind == "end")
        assert got[-1].exit_code == 3
        texts = [e.text for e in got if e.kind == "line"]
        assert "rank 1 worker" in texts and "not followed any more" not in texts
    finally:
        stop.set()
        t.join(5)


def test_snapshot_reads_everything_once_and_ends(tmp_path):
    root = tmp_path / "job"
    (root / "msrun_log").mkdir(parents=True)
    (root / "msrun_log" / "scheduler.log").write_text("sched\n")
    (root / "msrun_log" / "worker_2.log").write_text("a\nb\nno newline")
    q, stop, t = _stream(root, follow=False)
    got = _take(q, lambda e: e.kind == "end")
    t.join(5)
    lines = [(e.rank, e.text) for e in got if e.kind == "line"]
    assert sorted(lines, key=str) == sorted([(None, "sched"), (2, "a"), (2, "b"), (2, "no newline")], key=str)
    assert got[-1].text == "-"


def test_missing_job_dir_is_an_end_with_a_reason(tmp_path):
    q, stop, t = _stream(tmp_path / "nope")
    ev = _take(q, lambda e: e.kind == "end")[-1]
    t.join(5)
    assert ev.text.startswith("!no job directory") and ev.exit_code is None


def test_reconnects_resume_every_file_at_its_offset_nothing_lost_or_doubled(tmp_path):
    """The real FOLLOW script, cut twice mid-stream (what the follower does when a node's
    heartbeat stops): the numbered sequence arrives once each, in order."""
    root = tmp_path / "job"
    (root / "state").mkdir(parents=True)
    (root / "msrun_log").mkdir()
    (root / "state" / "pid").write_text(f"1 {__import__('os').getpid()}\n")
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
    stop = threading.Event()
    node = NodeStream(LocalRunner(Host("localhost", 1)), lambda offsets: follow_argv(PY, str(root), True, offsets=offsets),
                      q, stop, backoff=(0.05,))
    writer = threading.Thread(target=write)
    writer.start()
    node.start()
    try:
        got = _take(q, lambda e: e.kind == "line" and e.text == "line 01000", timeout=20)
        node.give_up()
        got += _take(q, lambda e: e.kind == "line" and e.text == "line 03000", timeout=20)
        node.give_up()
        got += _take(q, lambda e: e.kind == "end", timeout=30)
    finally:
        stop.set()
        writer.join()
        node.join(5)
    lines = [e.text for e in got if e.kind == "line"]
    assert lines == [f"line {i:05d}" for i in range(1, n + 1)]
    assert [e.kind for e in got].count("lost") == 2 and node.attempts == 3
    assert node.offsets_copy()[str(log)][1] == log.stat().st_size


def test_a_later_follower_reads_only_new_lines(tmp_path):
    """Offsets kept in the state dir: a reattach after 10,000 lines reads only what is new."""
    from launcher.ops.follow_offsets import load_offsets, save_offsets

    root = tmp_path / "job"
    (root / "state").mkdir(parents=True)
    (root / "msrun_log").mkdir()
    log = root / "msrun_log" / "worker_0.log"
    log.write_text("".join(f"old {i}\n" for i in range(10_000)))
    (root / "state" / "exit_code").write_text("0\n")

    def follow(offsets):
        q: queue.Queue = queue.Queue()
        node = NodeStream(LocalRunner(Host("localhost", 1)),
                          lambda o: follow_argv(PY, str(root), True, offsets=o), q, threading.Event(), offsets=offsets)
        node.start()
        got = _take(q, lambda e: e.kind == "end", timeout=30)
        node.join(5)
        return [e.text for e in got if e.kind == "line"], node.offsets_copy()

    first, offsets = follow(None)
    assert len(first) == 10_000
    saved = tmp_path / "state" / "follow" / "job.json"
    save_offsets(saved, {"localhost": offsets})
    with log.open("a") as fh:
        fh.write("new 1\nnew 2\n")
    again, _ = follow(load_offsets(saved)["localhost"])
    assert again == ["new 1", "new 2"]
    # a rotated file (another inode) is read from its start
    log.rename(log.with_suffix(".old"))
    log.write_text("fresh\n")
    fresh, _ = follow(load_offsets(saved)["localhost"])
    assert fresh == ["fresh"]


def test_story_of_the_real_4card_log_is_short_and_says_what_happened(monkeypatch):
    """The default view fed the real 2,106-line worker_0.log: milestones, each warning once, the
    progress, in a few dozen lines (the firehose is for --verbose)."""
    from launcher.cli import environment
    from launcher.cli.live import StorySink
    from launcher.cli.logview import LinePrinter
    from launcher.metrics.story import short_warning, story_kind

    assert story_kind("2024-07-06 22:13:01,972 - mindformers[mindformers/trainer/base_trainer.py:779] - INFO - "
                      ".........Training Over!.............") == ("milestone", "training over")
    assert story_kind("[WARNING] HCCL(9,python):2024-01-01-00:00:00.000.000 [x.cc:1] HcclInit failed, use "
                      "default")[0] == "warning"
    assert story_kind("EE9999: Inner Error!")[0] == "error"
    assert short_warning("2026-11-30 04:19:49,511 - mindformers[mindformers/tools/register/template.py:84] - "
                         "WARNING - The input config moe_config is empty.") == \
        "(template.py:84) The input config moe_config is empty."

    out = io.StringIO()
    console = Console(file=out, width=100, color_system=None, no_color=True)
    env = environment.current()
    monkeypatch.setattr(env, "stdout", console, raising=False)
    sink = StorySink(LinePrinter(tagged=True, raw=False), live=False, every=3600)
    job = JobLogs()
    lines = (FIX / "train-run-4card" / "worker_0.log").read_text(encoding="utf-8").splitlines()
    for line in lines:
        job.feed("h0", 0, line)
        sink.line("h0", 0, line)
        sink.progress(build_view(job))
    sink.finish()
    story = out.getvalue().splitlines()
    assert len(lines) > 2000 and len(story) < 80, "\n".join(story)
    text = "\n".join(story)
    for what in ("cluster formed after 2 retries", "compiling the graph", "first step done", "checkpoint saved at step 536/1170",
                 "training over", "warnings:"):
        assert what in text, text
    assert "epoch 5/5 step 1170/1170 | loss 1.086" in text
    assert sum("step:[" in ln for ln in story) == 0  # no raw loss lines


def test_a_killed_supervisor_does_not_end_the_follow_while_msrun_runs(tmp_path):
    """msrun is its own session leader and outlives a killed supervisor: the follow went on
    reading nothing from that node ("ended" without an exit code) while it trained on. The
    node has ended only when neither runs."""
    import subprocess
    import sys
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # the killed supervisor
    dead.wait()
    msrun = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    root = tmp_path / "job"
    (root / "state").mkdir(parents=True)
    (root / "state" / "pid").write_text(f"{msrun.pid} {dead.pid}\n")
    (root / "msrun_log").mkdir()
    q, stop, t = _stream(root)
    try:
        (root / "msrun_log" / "worker_0.log").write_text("step 1\n")
        got = _take(q, lambda e: e.text == "step 1")
        time.sleep(1.5)  # several of the script's looks at the pid file
        with (root / "msrun_log" / "worker_0.log").open("a") as fh:
            fh.write("step 2\n")
        got += _take(q, lambda e: e.text == "step 2")
        assert not [e for e in got if e.kind == "end"], got
        msrun.kill()
        msrun.wait()
        end = _take(q, lambda e: e.kind == "end")[-1]
        assert end.exit_code is None  # no exit code was written: said as unknown
    finally:
        stop.set()
        t.join(5)
        if msrun.poll() is None:
            msrun.kill()
