"""The follower at scale, pure and without SSH: constant cost per log line (the bar's trend and
the straggler check read their windows, not the whole run) and a bounded read-ahead (a reader
waits on a full queue, and stops while it waits).

Why: ``logs -f --from-start`` of a finished 100k-line log cost 140 CPU-s (the trend was rebuilt
over every loss for each line), and the reader queued the whole file (605 MB after 30 s of a
1M-line log). benchmarks/bench_follow_big.py measures both."""

from __future__ import annotations

import queue
import sys
import threading
import time

from launcher.core.hostfile import Host
from launcher.metrics.logparse import JobLogs
from launcher.metrics.progress import build_view
from launcher.metrics.stragglers import find_stragglers, step_times
from launcher.ops import registry as reg
from launcher.ops.follow import Follower
from launcher.ops.follow_transport import READ_AHEAD, PipeHub, follow_argv
from launcher.runners import LocalRunner

PY = sys.executable


class _NoWalk(list):
    """A list that refuses to be walked whole: reading a window (a slice) is fine."""

    def __iter__(self):
        raise AssertionError("walked every item")


def _loss_line(step: int, total: int, loss: float) -> str:
    return (f"2025-01-01 10:00:{step % 60:02d},000 - mindformers - INFO - {{ Epoch:[  1/  1], "
            f"step:[{step:5d}/{total:5d}], loss: {loss:.6f}, per_step_time: 100ms, lr: 1e-05, "
            "overflow cond: False, loss_scale: 1.0, global_norm: [1.0], train_throughput_per_npu: 10T")


def _job(n: int, ranks: int = 1) -> JobLogs:
    job = JobLogs()
    for r in range(ranks):
        for i in range(1, n + 1):
            job.feed("h", r, _loss_line(i, n, 5.0 - i * 0.001 * (1 + r)))
    return job


def test_the_bar_reads_only_the_trend_window_of_the_losses():
    job = _job(300)
    state = job.state("h", 0)
    before = build_view(job)
    state.losses = _NoWalk(state.losses)
    after = build_view(job)  # the old trend walked all 300 losses for every line
    assert after == before and after.trend == "↓" and after.done == 300


def test_the_straggler_check_reads_only_its_window_of_step_marks():
    job = _job(200, ranks=2)
    expected = find_stragglers(job)
    for st in job.states.values():
        st.step_marks = _NoWalk(st.step_marks)
    assert find_stragglers(job) == expected
    assert len(step_times(job.state("h", 0), 40)) == 40


def _record(root) -> reg.JobRecord:
    return reg.JobRecord("j1", "j", "train", reg.SUCCEEDED, "", "", "", "", "", None, None, None,
                         nodes=(reg.NodeRecord(0, "localhost", str(root)),))


def test_the_follower_reads_ahead_a_bounded_queue_and_a_waiting_reader_stops(tmp_path):
    """A 30,000-line log and nobody reading the queue: the hub fills it to its bound and waits
    (the old queue took the whole file); closing it while it waits ends its thread."""
    root = tmp_path / "job"
    (root / "state").mkdir(parents=True)
    (root / "msrun_log").mkdir()
    (root / "state" / "exit_code").write_text("0\n")
    (root / "msrun_log" / "worker_0.log").write_text("".join(f"line {i}\n" for i in range(30_000)))
    follower = Follower(_record(root), LocalRunner, {"localhost": Host("localhost", 1)}, sink=None)  # type: ignore[arg-type]
    assert follower.queue.maxsize == READ_AHEAD
    q: queue.Queue = queue.Queue(100)
    hub = PipeHub(q, threading.Event())
    hub.add(LocalRunner(Host("localhost", 1)), lambda offsets: follow_argv(PY, str(root), False, offsets=offsets),
            reconnect=False)
    hub.start()
    deadline = time.monotonic() + 20
    while not q.full() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert q.qsize() == 100
    hub.close(timeout=5)
    assert not hub.is_alive()
