"""The dashboard at scale, with synthetic registries and logs (run on demand; 2 cores shared).

    .venv/bin/python benchmarks/bench_ui.py [--jobs 10000] [--points 1000000] [--tabs 20]
                                            [--rate 100] [--seconds 30] [--browser]

* ``list``: a 10,000-job registry; the jobs list's answer for a search of the OLDEST job: the
  page now (``Registry.page``: filtered, counted and paged in SQL) against the old path in the
  same run (the newest 200 read, then filtered: the oldest is not found);
* ``detail``: a job whose watch holds a 1M-point loss curve; ``/api/jobs/ID``'s JSON (build and
  encode) with the curve downsampled to 1000 buckets against every point (the old answer);
* ``draw`` (``--browser``, Debian's chromium): that job's page, from navigation to its chart
  drawn (``performance.now()`` when the page has built its uPlot chart, polled every 20 ms);
* ``tabs``: a real followed job (the follower's host script on a local job directory, a writer
  process appending ``--rate`` lines/s, one in 4 a loss line) served by uvicorn to ``--tabs``
  event streams read by a separate process; each line carries its write time, so line-to-page
  latency is write -> the event parsed by a client. CPU-s per minute: this process (follower,
  watch, server) plus its children (the host script), from ``resource``.

Goals (issue 33): a 1M-line log read in < 30 s of CPU (benchmarks/bench_follow_big.py), its job
page drawn < 0.5 s, 20 tabs on a job at 100 lines/s with line-to-page p99 < 1 s, < 10 CPU-s
per minute per followed job.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher.core.layout import JobLayout  # noqa: E402
from launcher.ops import registry as reg  # noqa: E402
from launcher.ui import data  # noqa: E402
from launcher.ui.hub import Hub  # noqa: E402
from launcher.ui.server import LIST_LIMIT, Dashboard, _encode, allowed_hosts, create_app  # noqa: E402

TOKEN = "b" * 32


def cpu(children: bool = True) -> float:
    a = resource.getrusage(resource.RUSAGE_SELF)
    total = a.ru_utime + a.ru_stime
    if children:
        b = resource.getrusage(resource.RUSAGE_CHILDREN)
        total += b.ru_utime + b.ru_stime
    return total


def proc_cpu(pid: int) -> float:
    """user+sys seconds of a live process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(fn, rounds: int = 5) -> tuple[float, object]:
    times, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def fill(state: Path, n: int) -> list[str]:
    ids = []
    with reg.Registry.in_state_dir(state) as r:
        for i in range(n):
            rec = r.create_job(f"run{i:05d}", "finetune", config_text="seed: 1\n", hostfile_text="h0 slots=8\n",
                               nodes=[("h0", f"/w/j{i}")], state=reg.PENDING)
            r.set_state(rec.id, reg.CANCELLED, None)
            ids.append(rec.id)
    return ids


def bench_list(tmp: Path, n: int) -> None:
    state = tmp / "list"
    t = time.perf_counter()
    ids = fill(state, n)
    print(f"list: {n:,} jobs made in {time.perf_counter() - t:.0f} s")
    d = Dashboard(Hub(state), tmp / "runs", TOKEN)
    oldest = f"run{0:05d}"

    def new():
        return d._page({"q": oldest})

    def old():  # as it was: the newest LIST_LIMIT read, then filtered by the page
        with d.hub.registry() as registry:
            records = registry.list(limit=LIST_LIMIT)
        return data.filter_rows([data.job_row(r) for r in records], None, oldest)
    t_new, page = timed(new)
    t_old, rows = timed(old)
    print(f"  search for the oldest: now {1000 * t_new:.1f} ms, found {[r['id'] for r in page['jobs']] == [ids[0]]}"
          f" (total {page['total']}); old path {1000 * t_old:.1f} ms, found {bool(rows)}")
    t_first, first = timed(lambda: d._page({}))
    print(f"  first page ({len(first['jobs'])} rows of {first['total']:,}): {1000 * t_first:.1f} ms; "
          f"{len(_encode(first)):,} bytes")


def big_watch(hub: Hub, state: Path, points: int) -> str:
    with reg.Registry.in_state_dir(state) as r:
        rec = r.create_job("big", "finetune", config_text="seed: 1\n", hostfile_text="localhost slots=1\n",
                           nodes=["localhost"], state=reg.PENDING)
        r.set_state(rec.id, reg.FAILED, "synthetic")
    w = hub.watch(rec.id)
    w.done.wait(30)
    with w.lock:
        w.curves["localhost/0"] = [(i, 2.0 + (i % 13) / 20 - i / (4 * points)) for i in range(1, points + 1)]
    return rec.id


def bench_detail(tmp: Path, points: int) -> None:
    state = tmp / "detail"
    hub = Hub(state)
    job = big_watch(hub, state, points)
    d = Dashboard(hub, tmp / "runs", TOKEN)
    rec = d._record(job)
    w = hub.get(job)
    assert w is not None
    t_first, _ = timed(lambda: _encode(d._detail(job)), 1)  # downsampled once, then kept
    t_new, body = timed(lambda: _encode(d._detail(job)), 3)
    t_old, old = timed(lambda: _encode(data.job_detail(rec, w.snapshot()) | {
        "curves": data.curves_dict(w.snapshot()["curves"], buckets=None)}), 1)
    print(f"detail of a {points:,}-point job: now {1000 * t_first:.0f} ms the first time, {1000 * t_new:.0f} ms "
          f"after, {len(body):,} bytes; "
          f"every point (old) {1000 * t_old:.0f} ms, {len(old):,} bytes")


class Server:
    def __init__(self, state: Path, hub: Hub):
        import uvicorn
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        app = create_app(state, TOKEN, allowed_hosts("127.0.0.1", self.port), hub=hub)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def bench_draw(tmp: Path, points: int) -> None:
    from tests.test_ui_browser import browser
    state = tmp / "draw"
    hub = Hub(state)
    job = big_watch(hub, state, points)
    server = Server(state, hub)
    driver = browser(Path(tempfile.mkdtemp(dir=tmp)))
    try:
        driver.get(f"{server.base}/?token={TOKEN}")  # the cookie
        times = []
        for _ in range(3):
            driver.get(f"{server.base}/jobs/{job}")
            end = time.time() + 60
            drawn = None
            while time.time() < end and drawn is None:
                drawn = driver.execute_script("return window.__alaunch.chart ? performance.now() : null")
                time.sleep(0.02)
            times.append(drawn / 1000 if drawn is not None else float("nan"))
            n = driver.execute_script("return window.__alaunch.chart ? window.__alaunch.chart.data[0].length : 0")
        print(f"draw: the {points:,}-point job's page, navigation -> chart drawn: "
              f"{', '.join(f'{t:.2f}' for t in times)} s ({n:,} points drawn)")
    finally:
        driver.quit()
        server.stop()


WRITER = r"""
import sys, time
path, rate, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
gap, n, start = 1.0 / rate, 0, time.time()
end = start + seconds
with open(path, "a", buffering=1) as f:
    while time.time() < end:
        n += 1
        if n % 4:
            f.write("%.6f line %d of the run\n" % (time.time(), n))
        else:
            s = n // 4
            f.write("%.6f { Epoch:[  1/  1], step:[%d/100000], loss: %.4f, per_step_time: 100ms }\n"
                    % (time.time(), s, 2.0 / (1 + s / 100)))
        time.sleep(max(0.0, start + n * gap - time.time()))
open(sys.argv[4], "w").write("0\n")
"""

CLIENTS = r"""
import http.client, json, sys, threading, time
port, token, job, tabs, seconds = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
lat, lock = [], threading.Lock()
def tab():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=seconds + 30)
    c.request("GET", "/api/jobs/%s/events?token=%s" % (job, token))
    r = c.getresponse()
    end = time.time() + seconds
    while time.time() < end:
        raw = r.fp.readline()
        if not raw:
            break
        if raw.startswith(b"data: "):
            m = json.loads(raw[6:])
            if m.get("type") == "line":
                try:
                    t = float(m["text"].split()[0])
                except ValueError:
                    continue
                with lock:
                    lat.append(time.time() - t)
threads = [threading.Thread(target=tab, daemon=True) for _ in range(tabs)]
[t.start() for t in threads]
[t.join(seconds + 40) for t in threads]
print(json.dumps(lat))
"""


def bench_tabs(tmp: Path, tabs: int, rate: float, seconds: float) -> None:
    state = tmp / "tabs"
    root = tmp / "tabs-job"
    (root / "msrun_log").mkdir(parents=True)
    (root / "state").mkdir()
    log = root / "msrun_log" / "worker_0.log"
    log.write_text("")
    with reg.Registry.in_state_dir(state) as r:
        rec = r.create_job("live", "finetune", config_text="seed: 1\n", hostfile_text="localhost slots=1\n",
                           nodes=[("localhost", str(root))], state=reg.PENDING)
        r.set_state(rec.id, reg.STAGING, None)
        r.set_state(rec.id, reg.RUNNING, None)
    hub = Hub(state)

    class NoService:  # the follower settles nothing here
        def refresh(self, ref):
            raise RuntimeError("not settled in the benchmark")

    from launcher.runners import LocalRunner
    from launcher.ui.hub import Connection
    hub.connect = lambda registry, state_dir, record: Connection(LocalRunner, NoService())  # type: ignore[method-assign]
    server = Server(state, hub)
    clients = subprocess.Popen([sys.executable, "-c", CLIENTS, str(server.port), TOKEN, rec.id, str(tabs),
                                str(seconds + 3)], stdout=subprocess.PIPE, text=True)
    time.sleep(2)  # every tab subscribed (the first starts the follower)
    w = hub.get(rec.id)
    assert w is not None and w.follower is not None and w.follower.hub is not None
    scripts = [n.proc.pid for n in w.follower.hub.nodes if n.proc is not None]  # the host script
    c0, t0 = cpu(False) + sum(proc_cpu(p) for p in scripts), time.monotonic()
    exit_file = Path(JobLayout(str(root)).node_state(0)) / "exit_code"
    exit_file.parent.mkdir(parents=True, exist_ok=True)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(rate), str(seconds), str(exit_file)])
    writer.wait()
    c1, t1 = cpu(False) + sum(proc_cpu(p) for p in scripts), time.monotonic()
    out, _ = clients.communicate(timeout=seconds + 60)
    w.done.wait(30)
    server.stop()
    lat = sorted(json.loads(out))
    if not lat:
        print("tabs: no lines reached the clients")
        return
    q = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))]  # noqa: E731
    print(f"tabs: {tabs} event streams on a followed job at {rate:g} lines/s for {seconds:g} s: "
          f"{len(lat):,} line deliveries, line-to-client p50 {1000 * q(50):.0f} ms, p99 {1000 * q(99):.0f} ms, "
          f"max {1000 * lat[-1]:.0f} ms")
    print(f"  CPU (follower + host script + watch + server): {c1 - c0:.1f} s over {t1 - t0:.0f} s = "
          f"{60 * (c1 - c0) / (t1 - t0):.1f} CPU-s per minute (the clients' process not counted)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--tabs", type=int, default=20)
    ap.add_argument("--rate", type=float, default=100)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--browser", action="store_true")
    ap.add_argument("--only", choices=("list", "detail", "draw", "tabs"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        if args.only in (None, "list"):
            bench_list(tmp, args.jobs)
        if args.only in (None, "detail"):
            bench_detail(tmp, args.points)
        if args.browser or args.only == "draw":
            bench_draw(tmp, args.points)
        if args.only in (None, "tabs"):
            bench_tabs(tmp, args.tabs, args.rate, args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
