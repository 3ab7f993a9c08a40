"""The dashboard without a browser: its data adapter (pure), the shared watch (the follower's
sink), and the real server (uvicorn on loopback) — token, Host and cross-site rules, the JSON
API, and a line pushed over server-sent events."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import uvicorn

from launcher.metrics import signatures
from launcher.metrics.logparse import JobLogs
from launcher.ops import registry as reg
from launcher.ops.follow import NodeView
from launcher.ui import data
from launcher.ui.hub import Hub, JobWatch
from launcher.ui.server import COOKIE, allowed_hosts, create_app

ROOT = Path(__file__).resolve().parent.parent
REAL_LOG = ROOT / "tests" / "fixtures" / "real-ascend" / "train-run-4card" / "worker_0.log"
CONFIG_A = "model:\n  model_config:\n    seq_length: 64\nrunner_config:\n  epochs: 1\n  batch_size: 4\n"
CONFIG_B = "model:\n  model_config:\n    seq_length: 64\nrunner_config:\n  epochs: 3\n  batch_size: 4\nseed: 7\n"


# ---------------------------------------------------------------- data (pure)
def test_ema_is_debiased_and_passes_non_finite_points():
    assert data.ema([5.0, 5.0, 5.0]) == pytest.approx([5.0, 5.0, 5.0])  # no pull towards 0
    assert data.ema([1.0, 3.0], 0.0) == [1.0, 3.0]
    s = data.ema([4.0, 2.0], 0.5)
    assert s[0] == 4.0 and s[1] == pytest.approx((0.5 * 4 * 0.5 + 0.5 * 2) / (1 - 0.25))
    out = data.ema([1.0, float("nan"), 1.0], 0.6)
    assert math.isnan(out[1]) and out[2] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        data.ema([1.0], 1.0)


def test_config_changes_name_the_keys_that_differ():
    changes = {c["key"]: (c["a"], c["b"]) for c in data.config_changes(CONFIG_A, CONFIG_B)}
    assert changes == {"runner_config.epochs": ("1", "3"), "seed": ("(absent)", "7")}
    diff = data.config_diff(CONFIG_A, CONFIG_B, "a", "b")
    assert "-  epochs: 1" in diff and "+  epochs: 3" in diff and "+seed: 7" in diff


def _record(state: str = reg.RUNNING, created: str = "2026-01-01T00:00:00.000000Z", name: str = "job",
            nodes=(), config: str = CONFIG_A, reason: str | None = None) -> reg.JobRecord:
    return reg.JobRecord(id=f"{name}-{created[:4]}", name=name, kind="finetune", state=state, spec_text="",
                         config_text=config, config_sha256="", hostfile_text="a slots=2\nb slots=2\n",
                         created_at=created, started_at=None, ended_at=None, reason=reason, nodes=tuple(nodes))


def test_rows_filter_by_state_and_text_newest_first():
    rows = [data.job_row(_record(s, c, n)) for s, c, n in [
        (reg.RUNNING, "2026-01-01T00:00:00.000000Z", "alpha"), (reg.SUCCEEDED, "2026-01-03T00:00:00.000000Z", "beta"),
        (reg.FAILED, "2026-01-02T00:00:00.000000Z", "alphabet")]]
    assert [r["name"] for r in data.filter_rows(rows)] == ["beta", "alphabet", "alpha"]
    assert [r["name"] for r in data.filter_rows(rows, "active")] == ["alpha"]
    assert [r["name"] for r in data.filter_rows(rows, "failed")] == ["alphabet"]
    assert [r["name"] for r in data.filter_rows(rows, None, "ALPHA")] == ["alphabet", "alpha"]


def test_node_state_shows_queued_unreachable_and_what_the_follower_saw():
    running = reg.NodeRecord(0, "a", "/j", 10, 10, reg.RUNNING)
    job = _record(nodes=[running, reg.NodeRecord(1, "b", "/j", 11, 11, reg.RUNNING)])
    assert data.cards(job) == 4
    # the follower's NodeView (plain data): its heartbeat stopped -> unreachable since HH:MM:SS
    silent = NodeView("a", 0, state="unreachable", unreachable_since=time.mktime((2026, 1, 1, 12, 34, 56, 0, 0, -1)))
    view = {**dataclasses.asdict(silent), "label": silent.label}
    assert data.node_state(running, job, view) == ("unreachable", "unreachable since 12:34:56")
    ended = NodeView("a", 0, state="ended", exit_code=0, reconnects=2)
    assert data.node_state(running, job, {**dataclasses.asdict(ended), "label": ended.label}) == \
        (reg.RUNNING, "ended (exit 0) (reconnected 2x)")
    # a finished job's node is what the registry says, whatever the follower last saw
    assert data.node_state(running, _record(reg.CANCELLED, nodes=[running]), view) == (reg.RUNNING, "")
    # what a status refresh noted in the job's meta, with no follower view
    noted = dataclasses.replace(job, meta={"unreachable_since": {"b": "01:02:03"}})
    assert data.node_state(noted.nodes[1], noted, None) == ("unreachable", "unreachable since 01:02:03")
    # queued for cards (#14): nothing runs yet, the queue's reason
    queued = _record(reg.QUEUED, nodes=[reg.NodeRecord(0, "a")], reason="cards busy on a: 0 (pid 7)")
    assert data.node_state(queued.nodes[0], queued) == ("queued", "cards busy on a: 0 (pid 7)")
    row = data.job_detail(queued)
    assert row["state"] == "queued" and row["nodes"][0]["state"] == "queued" and "cards busy" in row["reason"]


def test_detail_carries_the_signature_tables_cause_and_hint_and_curves():
    """The failure box shows the follower's process fact explained by launcher/metrics/signatures.py
    (no table of the dashboard's own): a worker killed after a real CANN device-memory line."""
    logs = JobLogs()
    logs.feed("b", 1, "2026-01-01 10:00:00,000 - mindformers - INFO - step:[    3/   16], loss: 2.5")
    logs.feed("b", 1, "[ERROR] DEVICE(1234,ffff,python):2026-01-01-10:00:01 Malloc device memory failed, EL0004")
    fact = logs.note_exit("b", 1, 137) or logs.feed_msrun("b", "Worker process 12 exit with exception. Error code: -9")
    f = logs.explain(fact)
    live = {"curves": {"a/1": [(1, 2.0), (2, 1.0)], "a/0": [(1, 3.0)]}, "failure": f, "notes": ["x"]}
    d = data.job_detail(_record(nodes=[reg.NodeRecord(0, "a", "/j", 1, 1, reg.RUNNING)]), live)
    assert list(d["curves"]) == ["a/0", "a/1"]  # by rank
    assert d["curves"]["a/1"]["loss"] == [2.0, 1.0] and len(d["curves"]["a/1"]["smooth"]) == 2
    assert "the NPU ran out of device memory" in d["failure"]["cause"]  # EL0004 names it too
    assert d["failure"]["hint"] == signatures.match("Malloc device memory failed").hint
    assert d["failure"]["where"].startswith("b")
    failed = data.job_detail(_record(reg.FAILED, reason="node 0 exited with code 1"), {})
    assert failed["failure"]["cause"] == "node 0 exited with code 1"


def test_log_status_says_incomplete_when_a_rank_stopped_short():
    assert data.log_status([]) is None
    assert data.log_status([{"status": "ok"}, {"status": "incomplete"}]) == "incomplete"
    assert data.log_status([{"status": "failed"}, {"status": "incomplete"}]) == "failed"
    row = data.job_row(_record(reg.CANCELLED), {"stream_status": [{"stream": "a/0", "status": "incomplete",
                                                                  "done": 5, "total": 16}]})
    assert row["log_status"] == "incomplete"


def test_compare_uses_lowest_rank_curve_and_diffs_against_first():
    a, b = _record(name="a"), _record(name="b", config=CONFIG_B)
    out = data.compare([a, b], [{"curves": {"h/1": [(1, 9.0)], "h/0": [(1, 2.0), (2, 1.5)]}}, {}], [None, None])
    assert out["jobs"][0]["curve"]["stream"] == "h/0" and out["jobs"][0]["curve"]["loss"] == [2.0, 1.5]
    assert out["jobs"][1]["curve"] is None and out["jobs"][1]["scores"] is None
    assert [c["key"] for c in out["diffs"][0]["changes"]] == ["runner_config.epochs", "seed"]


# ---------------------------------------------------------------- the watch (the follower's sink)
def test_watch_keeps_curves_per_rank_from_real_lines_and_pushes_them():
    w = JobWatch("j")
    loop = asyncio.new_event_loop()
    sub = w.subscribe(loop)
    lines = REAL_LOG.read_text(errors="replace").splitlines()[900:1300]  # training lines, within one viewer's queue
    for line in lines:
        w.line("node0", 0, line)
        w.line("node0", None, line)  # msrun's scheduler log repeats rank 0: not a curve of its own
    loop.run_until_complete(asyncio.sleep(0))
    snap = w.snapshot()
    assert list(snap["curves"]) == ["node0/0"]
    steps = [p[0] for p in snap["curves"]["node0/0"]]
    assert len(steps) > 10 and steps == sorted(steps)
    assert snap["line_count"] == 2 * len(lines) and snap["last_loss"] == snap["curves"]["node0/0"][-1][1]
    kinds = []
    while not sub.queue.empty():
        kinds.append(sub.queue.get_nowait()["type"])
    assert kinds.count("loss") == len(steps) and kinds.count("line") == 2 * len(lines)
    w.nodes([NodeView("node1", 1, state="unreachable", unreachable_since=time.time() - 12)])
    node = w.snapshot()["nodes"]["node1"]
    assert node["state"] == "unreachable" and node["label"].startswith("unreachable since ")
    streams = w.snapshot()["streams"]
    w.msrun("node0", "Worker process 12 exit with exception. Error code: -9")
    assert w.lines_since(-1)[-1]["role"] == "msrun" and w.snapshot()["streams"] == streams
    loop.close()


def test_a_slow_viewer_is_told_to_resync_instead_of_growing_without_bound(monkeypatch):
    import launcher.ui.hub as hub_mod
    monkeypatch.setattr(hub_mod, "QUEUE_SIZE", 5)
    w = JobWatch("j")
    loop = asyncio.new_event_loop()
    sub = w.subscribe(loop)
    for i in range(50):
        w.line("h", 0, f"line {i}")
    loop.run_until_complete(asyncio.sleep(0))
    assert sub.dropped and sub.queue.get_nowait() == {"type": "resync"} and sub.queue.empty()
    loop.close()


# ---------------------------------------------------------------- the real server
class Served:
    def __init__(self, state_dir: Path, token: str = "t" * 32, runs_dir: Path = Path("runs")):
        self.token = token
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self.port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.hub = Hub(state_dir)
        app = create_app(state_dir, token, allowed_hosts("127.0.0.1", self.port), runs_dir=runs_dir, hub=self.hub)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        end = time.time() + 10
        while not self.server.started and time.time() < end:
            time.sleep(0.02)

    def request(self, path: str, *, method: str = "GET", headers: dict | None = None, token: bool = True,
                timeout: float = 10):
        url = self.base + path
        if token:
            url += ("&" if "?" in path else "?") + f"token={self.token}"
        req = urllib.request.Request(url, method=method, headers=headers or {})
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


@pytest.fixture
def served(tmp_path):
    state = tmp_path / "state"
    s = Served(state)
    yield s
    s.stop()


def _job(state_dir: Path, name: str, config: str, state=reg.FAILED) -> str:
    with reg.Registry.in_state_dir(state_dir) as r:
        rec = r.create_job(name, "finetune", config_text=config, hostfile_text="localhost slots=1\n",
                           nodes=["localhost"], state=reg.PENDING)
        r.set_state(rec.id, state, "stage failed: no space left on device")
        return rec.id


def test_every_request_needs_the_token(served):
    assert served.request("/api/jobs", token=False)[0] == 401
    assert served.request("/", token=False)[0] == 401
    assert served.request("/static/app.js", token=False)[0] == 401
    assert served.request("/api/jobs?token=wrong", token=False)[0] == 401
    assert served.request("/api/jobs", token=False, headers={"X-Alaunch-Token": served.token})[0] == 200


def test_first_visit_trades_the_token_for_a_strict_cookie(served):
    code, headers, _ = served.request("/jobs/x")
    assert code == 303 and headers["location"] == "/jobs/x"
    cookie = headers["set-cookie"]
    name = f"{COOKIE}_{served.port}"  # per port: two dashboards on one machine keep their own
    assert f"{name}={served.token}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    code, _, body = served.request("/", token=False, headers={"Cookie": f"{name}={served.token}"})
    assert code == 200 and f'content="{served.token}"' in body
    # another dashboard's cookie (same browser, another port) is not this one's
    other = f"{COOKIE}_{served.port + 1}={served.token}; {COOKIE}={served.token}"
    assert served.request("/", token=False, headers={"Cookie": other})[0] == 401


def test_the_browser_is_given_a_private_file_not_the_token_on_a_command_line(tmp_path, monkeypatch, run_cli):
    """webbrowser.open(URL) puts the URL on a command line (xdg-open, the browser's argv) that
    other local users read in /proc: the browser gets a 0600 file that redirects, as Jupyter's."""
    import webbrowser

    import uvicorn
    opened = []

    def fake_open(target):
        path = Path(target.removeprefix("file://"))
        opened.append((target, path.read_text(), oct(path.stat().st_mode & 0o777)))
        return True

    monkeypatch.setattr(webbrowser, "open", fake_open)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: None)
    code, out, err = run_cli("ui", "--port", "0", "--token", "k" * 20)
    assert code == 0, err
    url = out.splitlines()[0]
    (target, text, mode) = opened[0]
    assert "k" * 20 not in target and target.startswith("file://") and mode == "0o600"
    assert url in text  # the file sends the browser to the URL with its token
    assert not Path(target.removeprefix("file://")).exists()  # removed when the server stops


def test_foreign_host_and_cross_site_posts_are_refused(served, tmp_path):
    job = _job(tmp_path / "state", "a", CONFIG_A, state=reg.RUNNING)
    assert served.request("/api/jobs", headers={"Host": "evil.example:80"})[0] == 403  # DNS rebinding
    cookie = {"Cookie": f"{COOKIE}_{served.port}={served.token}"}
    # the cookie alone (what a cross-site form would carry) does not cancel
    assert served.request(f"/api/jobs/{job}/cancel", method="POST", token=False, headers=cookie)[0] == 403
    assert served.request(f"/api/jobs/{job}/cancel", method="POST", token=False)[0] == 401
    evil = {"X-Alaunch-Token": served.token, "Origin": "http://evil.example"}
    assert served.request(f"/api/jobs/{job}/cancel", method="POST", token=False, headers=evil)[0] == 403
    assert served.request(f"/api/jobs/{job}/cancel", method="GET")[0] == 405
    with reg.Registry.in_state_dir(tmp_path / "state") as r:
        assert r.get(job).state == reg.RUNNING  # none of those touched it


def test_api_lists_jobs_shows_one_and_compares_two(served, tmp_path):
    a = _job(tmp_path / "state", "first", CONFIG_A)
    b = _job(tmp_path / "state", "second", CONFIG_B)
    code, _, body = served.request("/api/jobs")
    assert code == 200 and [r["id"] for r in json.loads(body)] == [b, a]
    code, _, body = served.request("/api/jobs?state=running")
    assert json.loads(body) == []
    code, _, body = served.request(f"/api/jobs/{a}")
    d = json.loads(body)
    assert code == 200 and d["state"] == "failed" and d["failure"]["cause"].startswith("stage failed")
    code, _, body = served.request("/api/jobs/nope")
    assert code == 404 and "no job 'nope'" in json.loads(body)["error"]
    code, _, body = served.request(f"/api/compare?ids={a},{b}")
    assert code == 200
    assert [c["key"] for c in json.loads(body)["diffs"][0]["changes"]] == ["runner_config.epochs", "seed"]
    assert served.request(f"/api/compare?ids={a}")[0] == 400
    assert served.request(f"/api/jobs/{a}/logs?grep=(")[0] == 400
    code, _, body = served.request(f"/api/jobs/{a}/cancel", method="POST", token=False,
                                   headers={"X-Alaunch-Token": served.token})
    # cancel in any state (#19): a failed job keeps its state; nothing ran on a host, nothing to stop
    assert code == 200 and json.loads(body)["state"] == "failed"


def test_a_queued_job_shows_queued_with_its_reason_in_the_list_and_its_page(served, tmp_path):
    with reg.Registry.in_state_dir(tmp_path / "state") as r:
        rec = r.create_job("waits", "finetune", config_text=CONFIG_A, hostfile_text="localhost slots=1\n",
                           nodes=["localhost"], state=reg.PENDING)
        r.set_state(rec.id, reg.QUEUED, "cards busy on localhost: 0 (pid 4242 python)")
    code, _, body = served.request("/api/jobs?state=queued")
    assert code == 200 and [(x["id"], x["state"]) for x in json.loads(body)] == [(rec.id, "queued")]
    assert "cards busy" in json.loads(body)[0]["reason"]
    d = json.loads(served.request(f"/api/jobs/{rec.id}")[2])
    assert [(n["state"], n["detail"]) for n in d["nodes"]] == [("queued", "cards busy on localhost: 0 (pid 4242 python)")]
    code, _, body = served.request(f"/api/jobs/{rec.id}/cancel", method="POST", token=False,
                                   headers={"X-Alaunch-Token": served.token})
    assert code == 200 and json.loads(body)["state"] == "cancelled"
    assert json.loads(body)["outcome"] == {"localhost": "queued: nothing was running"}


def test_a_line_the_follower_gives_reaches_the_event_stream(served, tmp_path):
    job = _job(tmp_path / "state", "live", CONFIG_A)
    watch = served.hub.watch(job)
    watch.done.wait(5)
    req = urllib.request.Request(f"{served.base}/api/jobs/{job}/events?token={served.token}")
    got: list[dict] = []

    def read():
        with urllib.request.urlopen(req, timeout=10) as r:
            for raw in r:
                if raw.startswith(b"data: "):
                    got.append(json.loads(raw[6:]))
                    if got[-1]["type"] == "loss":
                        return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    end = time.time() + 5
    while not got and time.time() < end:  # the hello: subscribed
        time.sleep(0.02)
    watch.line("localhost", 0, "{ Epoch:[  1/  1], step:[    3/   16], loss: 2.5, per_step_time: 60ms }")
    reader.join(5)  # a bound for a hang, not a latency figure (that is the browser test's)
    assert not reader.is_alive(), got
    assert [m["type"] for m in got] == ["hello", "line", "loss"], got
    assert got[2]["stream"] == "localhost/0" and got[2]["step"] == 3 and got[2]["loss"] == 2.5


def test_cli_prints_the_url_with_the_token_first_and_refuses_bad_options(tmp_path):
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "ui", "--no-browser", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline().strip()
        assert first.startswith("http://127.0.0.1:") and "/?token=" in first, first
        token = first.split("token=")[1]
        assert len(token) >= 32
        base = first.split("/?")[0]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/api/jobs", timeout=10)
        assert refused.value.code == 401
        with urllib.request.urlopen(f"{base}/api/jobs?token={token}", timeout=10) as r:
            assert json.loads(r.read()) == []
    finally:
        proc.terminate()
        proc.wait(10)
    bad = subprocess.run([sys.executable, "-m", "launcher", "ui", "--no-browser", "--port", "70000"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "--port" in bad.stderr and "0..65535" in bad.stderr


def test_a_follower_seeing_workers_die_under_a_cancel_does_not_fail_the_job(tmp_path):
    """The race the dashboard's cancel met: its own follower saw the killed workers' exit and
    would record the job FAILED (gang stop). Cancel records CANCELLED before the first signal
    (#19), so the follower's fail() finds an end already recorded and leaves it."""
    from launcher.ops.service import JobService
    with reg.Registry.in_state_dir(tmp_path / "state") as r:
        rec = r.create_job("j", "finetune", hostfile_text="localhost slots=1\n", nodes=["localhost"],
                           state=reg.RUNNING)
        r.set_state(rec.id, reg.CANCELLED, "cancelled by the user")
        after = JobService(r, tmp_path / "state").fail(rec.id, "rank 0 on localhost failed (worker_exit)")
        assert after.state == reg.CANCELLED and r.get(rec.id).state == reg.CANCELLED
        assert r.get(rec.id).reason == "cancelled by the user"


# ---------------------------------------------------------------- pipelines (#17 on #15)
PIPELINE = """\
name: tiny
steps:
  prep: {builtin: data}
  fetch: {builtin: fetch, needs: [prep]}
  score: {builtin: score, with: {predictions: {from: fetch}}}
  results: {builtin: results, needs: [score, prep]}
"""


def _run_pipeline(state_dir: Path, path: Path, fail_score: bool) -> reg.PipelineRecord:
    """A real run through ops/pipeline.py's PipelineRunner (its scheduling, identities, skip of
    unchanged steps, blocking), the built-ins' actions replaced by small local ones."""
    from launcher.core.pipeline import load_pipeline
    from launcher.errors import AlaunchError
    from launcher.ops.pipeline import PipelineRunner
    from launcher.ops.service import JobService
    out = path.parent / "out"
    out.mkdir(exist_ok=True)

    def make(name):
        def builtin(runner, step):
            if name == "score" and fail_score:
                raise AlaunchError("score: predictions.jsonl has no 'answer' field")
            (out / name).write_text(name)
            return {"local": {name: str(out / name)}, **({"accuracy": 0.5} if name == "score" else {})}
        return builtin

    with reg.Registry.in_state_dir(state_dir) as r:
        runner = PipelineRunner(r, JobService(r, state_dir), [], builtins={n: make(n) for n in
                                                                            ("data", "fetch", "score", "results")})
        return runner.run(load_pipeline(path))


def test_pipeline_data_maps_needs_levels_and_skipped_steps(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(PIPELINE)
    needs = data.pipeline_needs(PIPELINE, str(path), ["prep", "fetch", "score", "results"])
    assert needs == {"prep": [], "fetch": ["prep"], "score": ["fetch"], "results": ["score", "prep"]}
    assert data.step_levels(["prep", "fetch", "score", "results"], needs) == {"prep": 0, "fetch": 1, "score": 2, "results": 3}
    # the file was edited since the run (other steps) or is broken: needs unknown, not guessed
    assert data.pipeline_needs(PIPELINE, str(path), ["prep", "train"]) is None
    assert data.pipeline_needs("name: [", str(path), ["prep"]) is None
    assert data.step_levels(["b", "a"], None) == {"b": 0, "a": 1}
    first = _run_pipeline(tmp_path / "state", path, fail_score=True)
    d = data.pipeline_detail(first, needs, {})
    assert d["state"] == "failed" and d["needs_known"]
    assert [(s["step"], s["state"], s["level"]) for s in d["steps"]] == [
        ("prep", "succeeded", 0), ("fetch", "succeeded", 1), ("score", "failed", 2), ("results", "blocked", 3)]
    assert "no 'answer' field" in d["steps"][2]["reason"] and d["steps"][3]["reason"] == "needs score"
    second = _run_pipeline(tmp_path / "state", path, fail_score=False)
    d2 = data.pipeline_detail(second, needs, {})
    prep = d2["steps"][0]
    assert prep["state"] == "skipped" and prep["skipped_unchanged"] and not prep["reused"]
    assert prep["reused_from"] == first.id and prep["identity"] == d["steps"][0]["identity"]
    assert prep["outputs"] == {"local": {"data": str(tmp_path / "out" / "data")}}
    assert [s["state"] for s in d2["steps"]] == ["skipped", "skipped", "succeeded", "succeeded"]
    assert d2["steps"][2]["outputs"]["accuracy"] == 0.5 and d2["steps"][2]["duration_s"] is not None
    rows = [data.pipeline_row(x) for x in (second, first)]
    assert rows[0]["counts"] == {"skipped": 2, "succeeded": 2}
    assert rows[1]["counts"] == {"succeeded": 2, "failed": 1, "blocked": 1}


def _sse_messages(served, path: str, until, got: list | None = None, timeout: float = 10) -> list[dict]:
    """Messages of an event stream until ``until(message)`` (the ages in them change each second,
    so a message a second is normal while a run is young)."""
    req = urllib.request.Request(f"{served.base}{path}?token={served.token}")
    got = [] if got is None else got
    with urllib.request.urlopen(req, timeout=timeout) as r:
        for raw in r:
            if raw.startswith(b"data: "):
                got.append(json.loads(raw[6:]))
                if until(got[-1]):
                    break
    return got


def test_api_lists_pipeline_runs_and_shows_steps_with_their_jobs_live(served, tmp_path):
    state = tmp_path / "state"
    path = tmp_path / "tiny.yaml"
    path.write_text(PIPELINE)
    first = _run_pipeline(state, path, fail_score=True)
    second = _run_pipeline(state, path, fail_score=False)
    # a job step as ops/pipeline.py's run_job records it: the step running, its job queued for cards
    with reg.Registry.in_state_dir(state) as r:
        run = r.create_pipeline("train-eval", str(tmp_path / "gone.yaml"), [("train", "job"), ("eval", "job")])
        r.set_step(run.id, "train", state="running", identity="f" * 64, started_at=reg.now_iso())
        job = r.create_job("lora", "finetune", config_text=CONFIG_A, hostfile_text="localhost slots=1\n",
                           nodes=["localhost"], meta={"pipeline": run.id, "pipeline_step": "train"})
        r.set_step(run.id, "train", job_id=job.id, attempts=1)
        r.set_state(job.id, reg.QUEUED, "cards busy on localhost: 0 (pid 4242 python)")
    code, _, body = served.request("/api/pipelines")
    assert code == 200 and [p["id"] for p in json.loads(body)] == [run.id, second.id, first.id]
    code, _, body = served.request(f"/api/pipelines/{first.id}")
    d = json.loads(body)
    assert code == 200 and d["needs_known"] and d["steps"][3]["needs"] == ["score", "prep"]
    assert [s["state"] for s in d["steps"]] == ["succeeded", "succeeded", "failed", "blocked"]
    # a pipeline name is its newest run, as `alaunch status PIPELINE` takes it
    d = json.loads(served.request("/api/pipelines/tiny")[2])
    assert d["id"] == second.id and d["steps"][0]["skipped_unchanged"] and d["steps"][0]["reused_from"] == first.id
    code, _, body = served.request("/api/pipelines/nope")
    assert code == 404 and "no pipeline run 'nope'" in json.loads(body)["error"]
    d = json.loads(served.request(f"/api/pipelines/{run.id}")[2])
    assert not d["needs_known"] and d["steps"][0]["needs"] is None  # its file is gone: not guessed
    train = d["steps"][0]
    assert train["job_id"] == job.id and train["job"]["state"] == "queued" and "cards busy" in train["job"]["reason"]
    assert [a["id"] for a in train["attempt_jobs"]] == [job.id]
    j = json.loads(served.request(f"/api/jobs/{job.id}")[2])
    assert (j["pipeline"], j["pipeline_step"]) == (run.id, "train")  # the job page links back
    code, _, body = served.request(f"/pipelines/{run.id}")
    assert code == 303  # the page (after the token trade)
    # live: the stream sends the run now and again when a step changes in the registry
    got: list[dict] = []
    states = lambda m: [s["state"] for s in m["pipeline"]["steps"]]  # noqa: E731
    reader = threading.Thread(target=_sse_messages, args=(served, f"/api/pipelines/{run.id}/stream",
                                                          lambda m: states(m) == ["failed", "blocked"], got),
                              daemon=True)
    reader.start()
    end = time.time() + 5
    while not got and time.time() < end:
        time.sleep(0.02)
    assert got and states(got[0]) == ["running", "pending"]
    with reg.Registry.in_state_dir(state) as r:
        r.set_step(run.id, "train", state="failed", reason="node 0 exited with code 1", ended_at=reg.now_iso())
        r.set_step(run.id, "eval", state="blocked", reason="needs train")
    reader.join(5)  # a bound for a hang: the change is pushed, the page never reloads
    assert states(got[-1]) == ["failed", "blocked"]
    assert got[-1]["pipeline"]["steps"][0]["reason"] == "node 0 exited with code 1"
    listed = _sse_messages(served, "/api/pipelines/stream", lambda m: True)[0]
    assert listed["type"] == "pipelines" and listed["pipelines"][0]["steps"][0]["state"] == "failed"


def test_the_line_buffer_is_bounded_in_bytes_and_a_huge_line_is_cut(monkeypatch):
    """20,000 lines of a 1 MiB dump were 20 GB: the buffer is capped in bytes too, and one
    line keeps MAX_LINE characters, the rest counted."""
    import launcher.ui.hub as hub_mod
    monkeypatch.setattr(hub_mod, "MAX_BYTES", 64 * 1024)
    w = JobWatch("j")
    w.line("h", 0, "x" * (5 * 2**20))
    (first,) = w.lines_since(-1)
    assert first["text"].startswith("x" * hub_mod.MAX_LINE)
    assert first["text"].endswith(f"({5 * 2**20 - hub_mod.MAX_LINE:,} more characters)")
    for i in range(200):
        w.line("h", 0, f"{i:04d} " + "y" * 1000)
    kept = w.lines_since(-1)
    assert sum(len(x["text"]) for x in kept) <= 64 * 1024 == hub_mod.MAX_BYTES
    assert w.bytes == sum(len(x["text"]) for x in kept) and kept[-1]["text"].startswith("0199 ")
    assert w.seq == 201  # every line counted, the oldest let go


def test_the_hub_lets_go_of_idle_finished_watches_only(tmp_path):
    hub = Hub(tmp_path / "state")
    done, watched, running = JobWatch("done"), JobWatch("watched"), JobWatch("running")
    for w in (done, watched):
        w.done.set()
        w.touched -= 10_000
    running.touched -= 10_000
    loop = asyncio.new_event_loop()
    watched.subscribe(loop)  # a page still subscribes to it
    hub._watches.update({w.job_id: w for w in (done, watched, running)})
    assert hub.release_idle() == ["done"]
    assert sorted(hub._watches) == ["running", "watched"]
    loop.close()


def test_a_slow_log_grep_does_not_block_other_requests_and_is_cut_off(served, tmp_path, monkeypatch):
    """/logs ran sqlite and the user's regex on the event loop; in a worker thread a
    backtracking pattern still holds the GIL (re does not release it) and froze every page:
    the grep runs in a child process, killed past its time limit with a one-line answer."""
    job = _job(tmp_path / "state", "a", CONFIG_A)
    w = served.hub.watch(job)
    w.done.wait(10)
    w.line("h", 0, "a" * 27 + "b")
    w.line("h", 0, "step 3 loss 1.25")
    result = {}
    slow_pattern = "/logs?grep=%28a%2B%29%2B%24"  # (a+)+$ : ~6 s of backtracking on that line (idle machine)
    monkeypatch.setattr(served_dashboard_grep(served), "timeout", 600.0)

    def slow():
        result["logs"] = served.request(f"/api/jobs/{job}{slow_pattern}", timeout=300)[0]

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)  # the grep is under way
    assert served.request("/api/jobs")[0] == 200
    assert t.is_alive(), ("the list answered only after the grep ended: the server was blocked", result)
    t.join(300)
    assert result.get("logs") == 200, result
    code, _, body = served.request(f"/api/jobs/{job}/logs?grep=loss%20%5Cd")
    assert code == 200 and [ln["text"] for ln in json.loads(body)["lines"]] == ["step 3 loss 1.25"]
    monkeypatch.setattr(served_dashboard_grep(served), "timeout", 0.5)
    code, _, body = served.request(f"/api/jobs/{job}{slow_pattern}")
    assert code == 400 and "backtracks" in json.loads(body)["error"], body
    code, _, body = served.request(f"/api/jobs/{job}/logs?grep=%28")
    assert code == 400 and "not a valid regular expression" in json.loads(body)["error"]


def served_dashboard_grep(served):
    """The Grep of the Dashboard behind the served app (its routes' bound methods know it)."""
    app = served.server.config.app
    while not hasattr(app, "routes"):
        app = app.app
    route = next(r for r in app.routes if getattr(r, "path", "") == "/api/jobs/{job}/logs")
    return route.endpoint.__self__.grep
