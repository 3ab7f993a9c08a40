"""The dashboard's sweep page data: `/api/sweeps/ID` is `alaunch results SWEEP`'s leaderboard
with each trial's curve (NaN and inf as null: JSON has neither), live over SSE as the driver
writes the registry; an unknown sweep is 404."""

from __future__ import annotations

import json
import math
import threading
import time

from launcher.ops import registry as reg
from tests.test_sweep_cli import _recorded_sweep
from tests.test_ui import _sse_messages, served  # noqa: F401 - the fixture


def test_the_sweep_api_ranks_the_trials_with_curves_and_streams_changes(served):  # noqa: F811
    sid = _recorded_sweep()
    with reg.Registry.in_state_dir() as r:
        pruned = next(t for t in r.sweep(sid).trials if t["state"] == "pruned")
        r.set_trial(sid, pruned["trial"], curve=[[1, 7.0], [3, math.nan], [4, math.inf]])
    code, _, body = served.request(f"/api/sweeps/{sid}")
    d = json.loads(body)
    assert code == 200 and d["name"] == "tiny-lr" and d["keys"] == ["learning_rate"]
    assert [t["objective"] for t in d["trials"]] == [2.7, 5.4, 6.5, None]
    assert d["trials"][0]["job_id"] == "job-2.7" and d["trials"][0]["curve"] == [[1, 7.0], [16, 2.7]]
    assert d["trials"][-1]["curve"] == [[1, 7.0], [3, None], [4, None]]
    assert served.request("/api/sweeps/nope")[0] == 404
    assert served.request(f"/sweeps/{sid}")[0] == 303  # the page (after the token trade)
    got: list[dict] = []
    reader = threading.Thread(target=_sse_messages, args=(served, "/api/sweeps/tiny-lr/stream",
                                                          lambda m: m["sweep"]["state"] == "failed", got), daemon=True)
    reader.start()
    end = time.time() + 5
    while not got and time.time() < end:
        time.sleep(0.02)
    assert got and got[0]["sweep"]["state"] == "succeeded"
    with reg.Registry.in_state_dir() as r:
        r.end_sweep(sid, "failed", "interrupted")
    reader.join(5)
    assert got[-1]["sweep"]["state"] == "failed"


def test_the_sweeps_list_shows_each_sweep_with_its_best_trial_newest_first(served):  # noqa: F811
    sid = _recorded_sweep()
    with reg.Registry.in_state_dir() as r:
        r.open_sweep("later", "s.yaml", {"objective": {"metric": "score.math_accuracy", "goal": "max"}})
    code, _, body = served.request("/api/sweeps")
    rows = json.loads(body)
    assert code == 200 and [s["name"] for s in rows] == ["later", "tiny-lr"]
    assert rows[0]["best"] is None and rows[0]["trials"] == 0 and rows[0]["objective"]["goal"] == "max"
    tiny = rows[1]
    assert tiny["id"] == sid and tiny["counts"] == {"succeeded": 3, "pruned": 1} and tiny["trials"] == 4
    assert tiny["best"] == {"trial": tiny["best"]["trial"], "objective": 2.7, "params": {"learning_rate": 0.01},
                            "job_id": "job-2.7"}
    assert served.request("/sweeps")[0] == 303  # the page (after the token trade)
    got: list[dict] = []
    reader = threading.Thread(target=_sse_messages, args=(served, "/api/sweeps/stream", lambda m: True, got),
                              daemon=True)
    reader.start()
    reader.join(5)
    assert got and got[0]["type"] == "sweeps" and [s["name"] for s in got[0]["sweeps"]] == ["later", "tiny-lr"]
