"""The dashboard at scale, without a browser: the jobs list paged, searched and counted in SQL
(every job findable among thousands), pushed without ages (the browser counts them) and
without following finished jobs; a job's stream encoded once for every viewer and its
progress pushed in it; curves downsampled on the server, full resolution in a zoomed range."""

from __future__ import annotations

import asyncio
import json
import time

from launcher.ops import registry as reg
from launcher.ui import data
from launcher.ui.hub import JobWatch
from tests.test_ui import CONFIG_A, Served, served  # noqa: F401 - the fixture server

N_JOBS = 260  # more than the 200 the list used to read


def _many(state_dir, n: int = N_JOBS) -> list[str]:
    ids = []
    with reg.Registry.in_state_dir(state_dir) as r:
        for i in range(n):
            rec = r.create_job(f"job{i:04d}", "finetune", config_text=CONFIG_A, hostfile_text="localhost slots=1\n",
                               nodes=["localhost"], state=reg.PENDING)
            r.set_state(rec.id, reg.CANCELLED if i % 2 else reg.FAILED, None)
            ids.append(rec.id)
    return ids


def test_registry_pages_searches_and_counts_in_sql(tmp_path):
    ids = _many(tmp_path, 30)
    with reg.Registry.in_state_dir(tmp_path) as r:
        page, total = r.page(10, 0)
        assert total == 30 and [x.id for x in page] == ids[::-1][:10]
        page, total = r.page(10, 25)
        assert [x.id for x in page] == ids[::-1][25:]
        page, total = r.page(10, 0, [reg.FAILED], "JOB001")  # case-insensitive, name or id
        assert total == 5 and {x.name for x in page} == {f"job00{i}" for i in (10, 12, 14, 16, 18)}
        assert r.page(5, 0, None, ids[3])[0][0].id == ids[3]


def test_the_oldest_of_many_jobs_is_found_and_the_list_is_paged(served, tmp_path):  # noqa: F811
    ids = _many(tmp_path / "state")
    code, headers, body = served.request("/api/jobs?q=job0000")
    assert code == 200 and [r["id"] for r in json.loads(body)] == [ids[0]] and {k.lower(): v for k, v in headers.items()}["x-total-count"] == "1"
    code, headers, body = served.request("/api/jobs?state=failed&offset=100&limit=50")
    rows = json.loads(body)
    assert {k.lower(): v for k, v in headers.items()}["x-total-count"] == str(N_JOBS // 2) and len(rows) == 30
    assert all(r["state"] == "failed" for r in rows) and rows[-1]["id"] == ids[0]
    assert "age_s" not in rows[0] and rows[0]["created_at"]  # the browser counts ages
    assert served.request("/api/jobs?state=nope")[0] == 400
    assert served.hub._watches == {}  # finished jobs are not followed to be listed


def test_a_pushed_page_says_the_total_and_the_servers_clock(served, tmp_path):  # noqa: F811
    import urllib.request
    _many(tmp_path / "state", 5)
    req = urllib.request.Request(f"{served.base}/api/jobs/stream?q=job000&limit=2&token={served.token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        for raw in r:
            if raw.startswith(b"data: "):
                m = json.loads(raw[6:])
                break
    assert m["type"] == "jobs" and m["total"] == 5 and len(m["jobs"]) == 2 and m["now"] > 0


def test_list_query_refuses_bad_input_in_one_line():
    assert data.list_query({"state": "active"}, 100)[0] == [s for s in reg.JOB_STATES if s not in reg.TERMINAL]
    assert data.list_query({"limit": "100000"}, 100)[3] == 200
    for bad in ({"state": "bogus"}, {"offset": "x"}):
        try:
            data.list_query(bad, 100)
        except Exception as exc:  # noqa: BLE001 - the one error the page shows
            assert "\n" not in str(exc)
        else:
            raise AssertionError(bad)


def test_curves_are_downsampled_keeping_spikes_dips_and_nans_and_a_range_is_full_resolution():
    pts = [(i, 2.0 - i / 100_000) for i in range(100_000)]
    pts[31_337] = (31_337, 9.5)   # a spike
    pts[77_000] = (77_000, -1.0)  # a dip
    pts[50_001] = (50_001, float("nan"))
    out = data.downsample(pts, 500)
    assert len(out) <= 2 * 500 + 3 and out == sorted(out)
    assert {(31_337, 9.5), (77_000, -1.0), pts[0], pts[-1]} <= set(out)
    assert any(s == 50_001 for s, _ in out)
    assert data.downsample(pts, 500, 1000, 1500) == pts[1000:1501]  # zoomed in: every point
    curves = data.curves_dict({"h/0": pts}, buckets=500)["h/0"]
    assert len(curves["steps"]) == len(out) and None in curves["loss"]


def test_the_job_page_gets_its_curves_downsampled_and_a_zoomed_range(served, tmp_path):  # noqa: F811
    with reg.Registry.in_state_dir(tmp_path / "state") as r:
        rec = r.create_job("big", "finetune", config_text=CONFIG_A, hostfile_text="localhost slots=1\n",
                           nodes=["localhost"], state=reg.PENDING)
        r.set_state(rec.id, reg.FAILED, "stage failed")
    w = served.hub.watch(rec.id)
    w.done.wait(10)
    with w.lock:
        w.curves["localhost/0"] = [(i, 1.0 + (i % 7) / 10) for i in range(1, 50_001)]
    code, _, body = served.request(f"/api/jobs/{rec.id}?points=300")
    c = json.loads(body)["curves"]["localhost/0"]
    assert code == 200 and len(c["steps"]) <= 602 and c["steps"][0] == 1 and c["steps"][-1] == 50_000
    code, _, body = served.request(f"/api/jobs/{rec.id}/curves?from=100&to=399&points=300")
    assert json.loads(body)["curves"]["localhost/0"]["steps"] == list(range(100, 400))
    assert served.request(f"/api/jobs/{rec.id}/curves?from=x")[0] == 400


def test_a_message_is_encoded_once_for_every_viewer_and_progress_carries_the_view():
    from launcher.metrics.progress import ProgressView
    w = JobWatch("j")
    loop = asyncio.new_event_loop()
    a, b = w.subscribe(loop), w.subscribe(loop)
    w.line("h", 0, "plain line")
    w.progress(ProgressView("train", 3, 10, loss=2.5))
    loop.run_until_complete(asyncio.sleep(0))
    got_a = [a.queue.get_nowait() for _ in range(a.queue.qsize())]
    got_b = [b.queue.get_nowait() for _ in range(b.queue.qsize())]
    assert [m["type"] for m in got_a] == ["line", "progress"] and all(x is y for x, y in zip(got_a, got_b, strict=True))
    assert got_a[0].sse.startswith(b"data: {") and json.loads(got_a[0].sse[6:])["text"] == "plain line"
    assert got_a[1]["progress"]["done"] == 3 and got_a[1]["last_loss"] == 2.5
    loop.close()


def test_a_finished_watch_nobody_needs_is_let_go_without_another_page_asking(tmp_path, monkeypatch):
    import launcher.ui.hub as hub_mod
    from launcher.ui.hub import Hub
    monkeypatch.setattr(hub_mod, "IDLE_S", 0.2)
    with reg.Registry.in_state_dir(tmp_path) as r:
        rec = r.create_job("gone", "finetune", config_text=CONFIG_A, hostfile_text="localhost slots=1\n",
                           nodes=["localhost"], state=reg.PENDING)
        r.set_state(rec.id, reg.FAILED, "stage failed")
    hub = Hub(tmp_path)
    w = hub.watch(rec.id)
    assert w.done.wait(10)
    deadline = time.monotonic() + 10  # a bound for a hang: the reaper looks every IDLE_S / 4
    while hub.get(rec.id) is not None and time.monotonic() < deadline:
        with hub._lock:
            w.touched = 0.0
        time.sleep(0.05)
    assert hub.get(rec.id) is None


def test_log_grep_searches_the_whole_log_on_the_host_not_the_lines_held_here(served, tmp_path):  # noqa: F811
    """30,000 lines, more than the 20,000 the watch holds: the first line is still found."""
    root = tmp_path / "wd" / "job"
    (root / "msrun_log").mkdir(parents=True)
    (root / "state").mkdir()
    (root / "state" / "exit_code").write_text("0\n")
    lines = ["needle-at-the-start"] + [f"filler {i}" for i in range(30_000)] + ["needle-at-the-end"]
    (root / "msrun_log" / "worker_0.log").write_text("\n".join(lines) + "\n")
    with reg.Registry.in_state_dir(tmp_path / "state") as r:
        rec = r.create_job("big", "finetune", config_text=CONFIG_A, hostfile_text="localhost slots=1\n",
                           nodes=[("localhost", str(root))], state=reg.PENDING)
        r.set_state(rec.id, reg.FAILED, "stopped")
    w = served.hub.watch(rec.id)
    assert w.done.wait(60)
    assert not any("needle-at-the-start" in ln["text"] for ln in w.lines_since(-1))  # gone from the buffer
    code, _, body = served.request(f"/api/jobs/{rec.id}/logs?grep=needle")
    got = json.loads(body)
    assert code == 200 and got["whole_log"] is True
    assert [(ln["text"], ln["line"], ln["rank"]) for ln in got["lines"]] == [
        ("needle-at-the-start", 1, 0), ("needle-at-the-end", 30_002, 0)]
    assert served.request(f"/api/jobs/{rec.id}/logs?grep=(")[0] == 400


def test_open_lists_with_the_same_query_share_one_read_of_the_registry(tmp_path):
    from launcher.ui.hub import Hub
    from launcher.ui.server import Dashboard
    _many(tmp_path, 3)
    d = Dashboard(Hub(tmp_path), tmp_path / "runs", "t" * 32)
    reads = []
    real = d._page
    d._page = lambda params: reads.append(dict(params)) or real(params)  # type: ignore[method-assign]
    first = d._shared_page({"q": "job"})
    assert [d._shared_page({"q": "job"}) for _ in range(19)] == [first] * 19
    d._shared_page({"q": "job0001"})
    assert reads == [{"q": "job"}, {"q": "job0001"}]


def test_a_grep_the_hosts_cannot_answer_falls_back_to_the_lines_held_here_and_says_so(served, tmp_path):  # noqa: F811
    with reg.Registry.in_state_dir(tmp_path / "state") as r:
        rec = r.create_job("far", "finetune", config_text=CONFIG_A, hostfile_text="nohost.invalid slots=1\n",
                           nodes=[("nohost.invalid", "/w/job")], state=reg.PENDING)
        r.set_state(rec.id, reg.FAILED, "stopped")
    w = served.hub.watch(rec.id)
    w.done.wait(30)
    w.line("nohost.invalid", 0, "held here: loss 1.0")
    code, _, body = served.request(f"/api/jobs/{rec.id}/logs?grep=held", timeout=60)
    got = json.loads(body)
    assert code == 200 and got["whole_log"] is False and "grep on the hosts failed" in got["note"]
    assert [ln["text"] for ln in got["lines"]] == ["held here: loss 1.0"]
