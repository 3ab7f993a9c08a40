"""The dashboard in a real browser (Debian's chromium through its chromedriver), watching real
tiny jobs under real msrun on this machine (local mode):

the running job appears in the list without a reload; its loss curve gains points between two
looks, each within 1 s of the line being written to the worker's log on the host (measured
against a poller of that file); the log viewer gains lines and greps; cancel from the page stops
every process of the job on the host; a request without the token is refused; fetch from the
page brings the logs home; compare of two finished runs shows both curves, the config diff and,
for the fetched run scored with the real scorers (``alaunch score squad|math --save``), its
EM/F1 and math accuracy as ``alaunch results`` prints them; a pipeline run recorded over two of
those jobs is listed, drawn by its needs and leads from a job step to its job's page.

Screenshots go to the test's tmp dir, and to docs/ when ALAUNCH_SCREENSHOTS=docs is set.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from launcher.metrics.logparse import parse_loss
from launcher.ops.registry import Registry
from tests.test_e2e_local import job_procs, write_job, write_toy_data

pytestmark = [pytest.mark.slow, pytest.mark.ms, pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures" / "real-ascend"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("chromium/chromedriver missing: run scripts/install-test-deps (make test does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def wait_for(fn, timeout: float = 60, every: float = 0.1, what: str = "condition"):
    end = time.time() + timeout
    while time.time() < end:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def click(driver, css: str, tries: int = 20) -> None:
    """Click what ``css`` finds, again if the page re-rendered it in between (the lists redraw
    when the registry changes: a found row can be replaced before the click lands)."""
    from selenium.common.exceptions import StaleElementReferenceException
    for _ in range(tries - 1):
        try:
            driver.find_element("css selector", css).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.1)
    driver.find_element("css selector", css).click()


class LogPoller(threading.Thread):
    """When each loss step first appears in a worker log on the host (polled every 10 ms)."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.seen, self.stop = path, {}, threading.Event()

    def run(self):
        pos, rest = 0, b""
        while not self.stop.is_set():
            try:
                with self.path.open("rb") as fh:
                    fh.seek(pos)
                    chunk = fh.read()
            except OSError:
                chunk = b""
            now = time.time()
            if chunk:
                pos += len(chunk)
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    p = parse_loss(line.decode("utf-8", "replace"))
                    if p is not None:
                        self.seen.setdefault(p.global_step, now)
            time.sleep(0.01)


def alaunch(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "launcher", *args], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def submit(*args: str) -> str:
    return alaunch("submit", *args).strip().splitlines()[-1]


def fake_npu_smi(bin_dir: Path) -> str:
    """A PATH with the test cluster's npu-smi emulator (one 910B2 card whose values follow an
    msrun worker on it) for the dashboard, whose follower of a local job samples it; not for
    ``submit``, whose card check would see other suites' workers on this machine as holders."""
    bin_dir.mkdir()
    (bin_dir / "npu.json").write_text('{"cards": 1}')
    exe = bin_dir / "npu-smi"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m tests.cluster.npu_smi --config {bin_dir / 'npu.json'} \"$@\"\n")
    exe.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def shot(driver, tmp: Path, name: str) -> None:
    driver.save_screenshot(str(tmp / name))
    if os.environ.get("ALAUNCH_SCREENSHOTS") == "docs":
        shutil.copy(tmp / name, ROOT / "docs" / name)


def test_dashboard_in_chromium_follows_cancels_and_compares_real_jobs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    toy = write_toy_data(tmp_path / "toy")
    hosts = tmp_path / "hosts"
    hosts.write_text(f"localhost slots=1 workdir={tmp_path / 'wd'}\n")
    short_a = write_job(tmp_path, toy, epochs=1, name="lora-a")
    short_b = write_job(tmp_path, toy, epochs=2, name="lora-b")
    long_job = write_job(tmp_path, toy, epochs=200, name="long")
    a = submit(str(short_a), "-H", str(hosts), "--follow")
    b = submit(str(short_b), "-H", str(hosts), "--follow")
    smi_path = fake_npu_smi(tmp_path / "bin")  # the dashboard's follower samples the long job's card

    ui = subprocess.Popen([sys.executable, "-m", "launcher", "ui", "--no-browser", "--port", "0",
                           "--runs", str(tmp_path / "runs")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "PATH": smi_path})
    driver = None
    try:
        url = ui.stdout.readline().strip()
        base, token = url.split("/?token=")
        # a request without the token is refused (and one with a wrong token)
        for bad in ("/api/jobs", "/", f"/api/jobs/{a}/logs", "/api/jobs?token=" + "x" * len(token)):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(base + bad, timeout=10)
            assert refused.value.code == 401, bad

        driver = browser(Path(tempfile.mkdtemp(dir=tmp_path)))
        js = driver.execute_script
        driver.get(url)  # the token becomes a cookie; the page reloads without it
        assert "token=" not in driver.current_url
        wait_for(lambda: js("return document.querySelectorAll('#jobs tr[data-id]').length") == 2, 30,
                 what="the two finished jobs in the list")

        # the long job appears in the open list, pushed, without a reload
        c = submit(str(long_job), "-H", str(hosts))
        log = Path(Registry.in_state_dir().get(c).nodes[0].job_dir) / "msrun_log" / "worker_0.log"
        poller = LogPoller(log)
        poller.start()
        row = wait_for(lambda: js(f"return document.querySelector('#jobs tr[data-id=\"{c}\"]')?.dataset.state"),
                       30, what="the new job's row")
        assert row in ("staging", "running")
        assert js("return performance.getEntriesByType('navigation').length") == 1  # no reload happened
        wait_for(lambda: js(f"return document.querySelector('#jobs tr[data-id=\"{c}\"] .last-loss')"
                            "?.textContent.match(/\\d/)"), 120, what="the long job's last loss in the list")
        shot(driver, tmp_path, "ui-jobs.png")

        # the job page: the curve gains points between two looks, each within 1 s of its line
        driver.get(f"{base}/jobs/{c}")
        points = "return (window.__alaunch.lossArrivals || []).length"
        wait_for(lambda: js(points) >= 3, 60, what="live loss points")
        first_look = js(points)
        time.sleep(2)
        second_look = js(points)
        assert second_look > first_look, (first_look, second_look)
        arrivals = js("return window.__alaunch.lossArrivals")
        latencies = [p["t"] / 1000 - poller.seen[p["step"]] for p in arrivals if p["step"] in poller.seen]
        assert len(latencies) >= 5, (len(latencies), len(arrivals))
        print(f"loss line written -> in the browser: n={len(latencies)} median={statistics.median(latencies):.3f} s "
              f"max={max(latencies):.3f} s")
        assert max(latencies) < 1.0, sorted(latencies)[-5:]
        assert js("return document.querySelectorAll('#chart canvas').length") >= 1
        # its card's telemetry (the npu-smi emulator follows its worker): a row and three charts
        wait_for(lambda: js("return document.querySelector('#telemetry tr[data-card=\"localhost/0\"]') !== null"
                            " && document.querySelectorAll('#telemetry canvas').length === 3"), 30,
                 what="the card's telemetry on the job page")
        assert js("return document.querySelector('#telemetry').hidden") is False

        # the log viewer follows and filters
        count = "return document.querySelectorAll('#log .tag').length"
        n1 = wait_for(lambda: js(count), 30, what="log lines")
        time.sleep(1.5)
        assert js(count) > n1
        grep = driver.find_element("id", "l-grep")
        grep.send_keys("loss:")
        wait_for(lambda: js("const t=[...document.querySelectorAll('#log .tag')].map(e=>e.nextSibling.textContent);"
                            "return t.length > 0 && t.every(x => x.includes('loss:'))"), 15, what="grep")
        shot(driver, tmp_path, "ui-job.png")

        # cancel from the page stops the job on the host
        assert job_procs(c)
        click(driver, "#cancel")  # the head (button included) is redrawn on every progress push
        driver.switch_to.alert.accept()
        outcome = wait_for(lambda: js("return document.getElementById('action-text')?.textContent")
                           if "cancelling" not in (js("return document.getElementById('action-text')?.textContent") or "cancelling")
                           else None, 60, what="the cancel outcome")
        assert f"{c}: cancelled" in outcome, outcome
        assert job_procs(c) == []
        assert Registry.in_state_dir().get(c).state == "cancelled"
        poller.stop.set()
        # its follower ends and the page says what the log shows: stopped short, no end marker
        try:
            wait_for(lambda: js("return document.querySelector('#head .state.incomplete') !== null"
                                " && document.querySelector('#ranks tbody')?.textContent.includes('incomplete')"),
                     60, what="the cancelled job's incomplete log status")
        except AssertionError as exc:  # say what the page and the server showed instead
            page = js("return [document.querySelector('#head')?.textContent,"
                      " document.querySelector('#ranks')?.textContent]")
            try:
                served = urllib.request.urlopen(f"{base}/api/jobs/{c}?token={token}", timeout=10).read()[:3000]
            except OSError as why:
                served = repr(why)
            raise AssertionError(f"{exc}; page: {page}; server: {served!r}") from None

        # fetch from the page brings the logs home
        driver.get(f"{base}/jobs/{a}")
        wait_for(lambda: js("return document.getElementById('fetch') !== null"), 30, what="job page")
        driver.find_element("id", "fetch").click()
        wait_for(lambda: "fetched into" in (js("return document.getElementById('action-text')?.textContent") or ""),
                 60, what="the fetch outcome")
        assert (tmp_path / "runs" / a / "localhost" / "msrun_log" / "worker_0.log").is_file()
        # score the fetched run with the real scorers: two SQuAD pairs (EM 50, F1 90) and the
        # real 1-card run's 200 math generations (119 correct)
        preds = tmp_path / "pairs.jsonl"
        preds.write_text('{"prediction": "郑州市。", "reference": "郑州市"}\n'
                         '{"prediction": "郑州", "reference": "郑州市"}\n', encoding="utf-8")
        alaunch("score", "squad", str(preds), "--save", str(tmp_path / "runs" / a))
        alaunch("score", "math", str(FIX / "train-run-1card" / "text_generation_result.txt"),
                "-r", str(ROOT / "tests" / "fixtures" / "math_test_200.jsonl"), "--save", str(tmp_path / "runs" / a))

        # compare two finished runs: both curves, the config diff
        driver.get(base + "/")
        wait_for(lambda: js("return document.querySelectorAll('#jobs tr[data-id]').length") == 3, 30, what="list")
        assert js(f"return document.querySelector('#jobs tr[data-id=\"{c}\"] .state.incomplete') !== null")
        driver.set_window_size(1400, 1500)  # compare's screenshot shows the scores under the chart
        for job in (a, b):
            click(driver, f'#jobs tr[data-id="{job}"] input.pick')
        driver.find_element("id", "compare-btn").click()
        wait_for(lambda: js("return window.__alaunch.compare !== undefined"), 60, what="compare")
        compared = js("return window.__alaunch.compare")
        curves = {j["id"]: j["curve"] for j in compared["jobs"]}
        assert len(curves[a]["loss"]) == 16 and len(curves[b]["loss"]) == 32  # 1 and 2 epochs of 16 steps
        changes = {ch["key"]: (ch["a"], ch["b"]) for ch in compared["diffs"][0]["changes"]}
        assert changes["runner_config.epochs"] == ("1", "2")
        assert js("return document.querySelectorAll('#c-chart canvas').length") >= 1
        assert "runner_config.epochs" in js("return document.querySelector('.config-diff table').textContent")
        assert js("return document.querySelector('#c-chart .u-legend').textContent").count("lora-") >= 2
        # scores side by side, as `alaunch results` prints them: run a scored, run b not fetched
        cells = js("const o={}; document.querySelectorAll('#c-runs tr[data-key]').forEach(tr => "
                   "o[tr.dataset.key]=[...tr.cells].slice(1).map(c => c.textContent)); return o")
        assert cells["EM"] == ["50.00", "-"] and cells["F1"] == ["90.00", "-"], cells
        assert cells["math accuracy"] == ["59.5% (119/200)", "-"], cells
        assert cells["steps"] == ["16", "32"], cells
        shot(driver, tmp_path, "ui-compare.png")

        # a pipeline run over these real jobs, recorded as ops/pipeline.py records one: the list
        # shows it, its page draws the steps by their needs and a job step leads to its job
        pfile = tmp_path / "ab.yaml"
        pfile.write_text(f"name: lora-ab\nsteps:\n  train: {{job: {short_a}}}\n"
                         f"  longer: {{job: {short_b}, needs: [train]}}\n"
                         "  score: {builtin: score, with: {predictions: {from: train}}}\n"
                         "  results: {builtin: results, needs: [score, longer]}\n")
        with Registry.in_state_dir() as r:
            run = r.create_pipeline("lora-ab", str(pfile), [("train", "job"), ("longer", "job"),
                                                           ("score", "score"), ("results", "results")])
            r.set_step(run.id, "train", state="succeeded", identity="1" * 64, job_id=a, attempts=1,
                       outputs={"host": "localhost", "paths": {"checkpoint": []}})
            r.set_step(run.id, "longer", state="succeeded", identity="2" * 64, job_id=b, attempts=1)
            r.set_step(run.id, "score", state="failed", identity="3" * 64, reason="score: no predictions file")
            r.set_step(run.id, "results", state="blocked", reason="needs score")
            r.end_pipeline(run.id, "failed", "failed: results, score")
        driver.set_window_size(1400, 1000)
        driver.get(base + "/pipelines")
        wait_for(lambda: js(f"return document.querySelector('#pipelines tr[data-id=\"{run.id}\"]')?.dataset.state")
                 == "failed", 30, what="the pipeline run in the list")
        click(driver, f'#pipelines tr[data-id="{run.id}"] a')
        wait_for(lambda: js("return document.querySelectorAll('#p-graph .node').length") == 4, 30, what="the steps")
        states = js("const o={}; document.querySelectorAll('#steps tr[data-step]').forEach(tr => "
                    "o[tr.dataset.step]=tr.dataset.state); return o")
        assert states == {"train": "succeeded", "longer": "succeeded", "score": "failed", "results": "blocked"}
        assert js("return document.querySelectorAll('#p-graph path.edge').length") == 4  # the needs
        shot(driver, tmp_path, "ui-pipeline.png")
        click(driver, '#p-graph a.node[data-step="train"]')
        wait_for(lambda: driver.current_url.endswith(f"/jobs/{a}"), 30, what="the train step's job page")
    finally:
        if driver is not None:
            driver.quit()
        ui.terminate()
        ui.wait(10)
        for job in Registry.in_state_dir().list(limit=None):
            for pid in job_procs(job.id):
                os.kill(pid, 9)
