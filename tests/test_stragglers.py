"""Stragglers live: the follower's story names a slow rank once (and its recovery), the
dashboard's job page carries it (metrics/stragglers.py; the pure detection is in test_logparse)."""

from __future__ import annotations

from launcher.metrics.logparse import JobLogs
from launcher.metrics.stragglers import StragglerWatch
from launcher.ops import registry as reg
from launcher.ops.follow import Follower
from launcher.ops.follow_transport import Event
from launcher.runners.base import Host
from launcher.ui import data
from launcher.ui.hub import JobWatch


def _loss(step: int, ms: int) -> str:
    return (f"2025-03-02 10:00:00,000 - mindformers[callback.py:1] - INFO - {{ Epoch:[  1/  1], "
            f"step:[{step:5d}/  400], loss: 2.0, per_step_time: {ms}ms, lr: 1e-05")


def test_the_watch_says_a_new_straggler_once_and_its_recovery():
    job, watch, said = JobLogs(), StragglerWatch(every=5.0), []
    t = 0.0
    for step in range(1, 31):
        job.feed("n0", 0, _loss(step, 1000))
        job.feed("n1", 1, _loss(step, 1400))
        t += 1.0
        said += watch.update(job, t)
    # named once, at the first look with 5 samples in a row above the line
    assert said == ["straggler: rank 1 on n1 is 40 % slower than the median for 5 steps (1.4 s/step vs 1)"]
    assert watch.current[0].steps == 25  # the answer of the last look (t=26: steps 2..26)
    for step in range(31, 80):
        job.feed("n0", 0, _loss(step, 1000))
        job.feed("n1", 1, _loss(step, 1000))
        t += 1.0
        said += watch.update(job, t)
    assert said[1:] == ["rank 1 on n1 keeps pace again"] and watch.current == []


class _Notes:
    def __init__(self):
        self.notes: list[str] = []

    def line(self, host, rank, text):
        pass

    def progress(self, view):
        pass

    def note(self, text):
        self.notes.append(text)

    def msrun(self, host, text):
        pass

    def nodes(self, views):
        pass


def test_the_follower_story_names_the_straggler_and_the_dashboard_shows_it():
    record = reg.JobRecord("j1", "j", "train", "running", "", "", "", "", "", None, None, None,
                           nodes=(reg.NodeRecord(0, "n0", "/j"), reg.NodeRecord(1, "n1", "/j")))
    sink = _Notes()
    follower = Follower(record, lambda h: None, {"n0": Host("n0", 1), "n1": Host("n1", 1)}, sink)
    for step in range(1, 40):
        for host, rank, ms in (("n0", 0, 1000), ("n1", 1, 1310)):
            follower._handle(Event(host, "line", rank, "worker", _loss(step, ms), at=float(step)), set(), {})
    assert [n for n in sink.notes if n.startswith("straggler")] == [
        "straggler: rank 1 on n1 is 31 % slower than the median for 9 steps (1.31 s/step vs 1)"]
    watch = JobWatch("j1")
    watch.follower = follower
    d = data.job_detail(record, watch.snapshot())
    assert [(s["host"], s["rank"], round(s["slower_pct"])) for s in d["stragglers"]] == [("n1", 1, 31)]
    assert d["stragglers"][0]["text"].startswith("rank 1 on n1 is 31 % slower")


def test_the_job_page_failure_carries_its_family_and_code():
    logs = JobLogs()
    logs.feed("b", 1, "[ERROR] HCCL(1,python):2025-03-02-10:00:01.000.000 [x.cc:1] init hccp failed")
    logs.feed("b", 1, "EJ0001: 2025-03-02-10:00:01.167.645 Failed to initialize the HCCP process. Reason: Maybe the "
                      "last training process is running.")
    fact = logs.feed_msrun("b", "Worker process 12 exit with exception. Error code: 1")
    record = reg.JobRecord("j1", "j", "train", "failed", "", "", "", "", "", None, None, None,
                           nodes=(reg.NodeRecord(0, "b", "/j"),))
    f = data.job_detail(record, {"failure": logs.explain(fact)})["failure"]
    assert (f["family"], f["code"]) == ("HCCP", "EJ0001") and "last training process" in f["cause"], f
