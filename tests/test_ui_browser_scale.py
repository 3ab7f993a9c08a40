"""The dashboard at scale in a real browser (Debian's chromium), on the fixture server with a
synthetic registry (no jobs run): the jobs list pages and finds the oldest of 230 jobs by the
server's search and counts ages itself; a finished job with 50,000 loss points draws a
downsampled curve and a zoomed range at full resolution; a predict job's page shows its
predictions, searchable, instead of an empty loss chart; compare shows ids as they are."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from launcher.metrics.progress import ProgressView
from launcher.ops import registry as reg
from tests.test_ui import CONFIG_A, Served
from tests.test_ui_browser import browser, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.browser]

FIX = Path(__file__).resolve().parent / "fixtures" / "real-ascend" / "train-run-1card"


def test_list_paging_search_ages_big_curve_zoom_predictions_and_compare_ids(tmp_path):
    state, runs = tmp_path / "state", tmp_path / "runs"
    with reg.Registry.in_state_dir(state) as r:
        ids = []
        for i in range(230):
            rec = r.create_job(f"Job{i:04d}", "finetune", config_text=CONFIG_A, hostfile_text="localhost slots=1\n",
                               nodes=["localhost"], state=reg.PENDING)
            r.set_state(rec.id, reg.FAILED, "stage failed")
            ids.append(rec.id)
        rec = r.create_job("Predict", "predict", config_text=CONFIG_A, hostfile_text="localhost slots=1\n",
                           nodes=["localhost"], state=reg.PENDING)
        r.set_state(rec.id, reg.FAILED, "stage failed")
        predict = rec.id
    (runs / predict / "localhost").mkdir(parents=True)
    shutil.copy(FIX / "text_generation_result.txt", runs / predict / "localhost")
    served = Served(state, runs_dir=runs)
    big = ids[-1]
    w = served.hub.watch(big)
    w.done.wait(10)
    with w.lock:
        w.curves["localhost/0"] = [(i, 2.0 + (i % 11) / 10 - i / 50_000) for i in range(1, 50_001)]
    driver = browser(Path(tempfile.mkdtemp(dir=tmp_path)))
    js = driver.execute_script
    try:
        driver.get(f"{served.base}/?token={served.token}")
        wait_for(lambda: js("return document.getElementById('count').textContent") == "1–100 of 231", 30,
                 what="the first page of 231 jobs")
        assert js("return document.querySelector('#jobs td.age').textContent").endswith("s")  # counted here
        driver.find_element("id", "page-next").click()
        wait_for(lambda: js("return document.getElementById('count').textContent") == "101–200 of 231", 30,
                 what="the second page")
        name = driver.find_element("id", "f-name")
        name.send_keys("job0000")  # the oldest job, far past the 200 newest
        wait_for(lambda: js("return [...document.querySelectorAll('#jobs tr[data-id]')].map(r => r.dataset.id)")
                 == [ids[0]], 30, what="the oldest job found by the server")
        assert "q=job0000" in driver.current_url

        driver.get(f"{served.base}/jobs/{big}")
        wait_for(lambda: js("return window.__alaunch.chart !== undefined"), 30, what="the chart")
        drawn = js("return window.__alaunch.chart.data[0].length")
        width = js("return document.getElementById('chart').clientWidth")
        assert 100 < drawn <= 2 * max(200, width) + 2, (drawn, width)  # not 50,000
        js("window.__alaunch.chart.setScale('x', {min: 1000, max: 1100})")  # as a drag does
        wait_for(lambda: js("return window.__alaunch.zoom && window.__alaunch.zoom.curves['localhost/0'].steps.length")
                 == 101, 30, what="the zoomed range at full resolution")
        # progress arrives in the stream and is drawn without fetching the job again
        wait_for(lambda: js("return window.__alaunch.events") >= 1, 30, what="the event stream")
        w.progress(ProgressView("train", 12_345, 50_000, loss=1.25))
        wait_for(lambda: "12345/50000" in js("return document.getElementById('head').textContent"), 30,
                 what="the pushed progress")
        age = js("return document.getElementById('h-age').textContent")
        wait_for(lambda: js("return document.getElementById('h-age').textContent") != age, 10,
                 what="the age counted by the page")
        fetched = js(f"return performance.getEntriesByType('resource').filter(e => e.name.includes('/api/jobs/{big}?'))"
                     ".length")
        assert fetched == 1, fetched

        driver.get(f"{served.base}/jobs/{predict}")
        wait_for(lambda: js("return window.__alaunch.predictions !== undefined"), 30, what="the predictions")
        assert js("return document.getElementById('loss-card').hidden") is True
        shown = js("return document.querySelectorAll('#p-table tbody tr').length")
        assert shown == 50 and js("return window.__alaunch.predictions.total") == 200
        driver.find_element("id", "p-q").send_keys("5741.59")
        wait_for(lambda: js("return document.querySelectorAll('#p-table tbody tr').length") == 1, 30,
                 what="the search")

        driver.get(f"{served.base}/compare?ids={ids[0]},{ids[1]}")
        wait_for(lambda: js("return window.__alaunch.compare !== undefined"), 30, what="compare")
        th = f"[...document.querySelectorAll('#c-runs th')].find(t => t.textContent.includes('{ids[0]}'))"
        assert js(f"return getComputedStyle({th}).textTransform") == "none"
        assert ids[0] in js(f"return {th}.innerText")  # as it is, not upper-cased
    finally:
        driver.quit()
        served.stop()
