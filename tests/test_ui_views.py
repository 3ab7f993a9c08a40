"""What the dashboard's job and compare pages say (issue 33, item 7), without a browser: cards
the job was given (not the hostfile's slots), nodes of a job that ended before they started,
compare's config diff with each job's own dir and id normalised, and a predict or eval job's
predictions (searchable) and score."""

from __future__ import annotations

import shutil
from pathlib import Path

from launcher.metrics import predictions as pr
from launcher.metrics import squad
from launcher.ops import registry as reg
from launcher.ui import data
from launcher.ui.hub import Hub
from launcher.ui.server import Dashboard

FIX = Path(__file__).resolve().parent / "fixtures" / "real-ascend" / "train-run-1card"


def _record(state=reg.SUCCEEDED, meta=None, config="", job_id="job-a", node_state=reg.SUCCEEDED, job_dirs=("",)):
    nodes = tuple(reg.NodeRecord(i, f"n{i}", d, state=node_state) for i, d in enumerate(job_dirs))
    return reg.JobRecord(job_id, "j", "finetune", state, "", config, "", "n0 slots=8\nn1 slots=8\n", "2025-01-01T00:00:00.000000Z",
                         None, None, "refused: bad key" if state == reg.FAILED else None, meta or {}, nodes)


def test_cards_are_the_ranks_the_job_was_given_not_the_hostfiles_slots():
    two_by_one = _record(meta={"ranks": {"0": [0], "1": [1]}}, job_dirs=("/a", "/b"))
    assert data.cards(two_by_one) == 2  # the hostfile says 8 slots on each
    assert data.cards(_record(meta={"devices": {"n0": [3], "n1": [5]}}, job_dirs=("/a", "/b"))) == 2
    assert data.cards(_record(job_dirs=("/a", "/b"))) == 16  # an old record: the slots are all it has


def test_nodes_of_a_job_refused_before_launch_are_not_pending():
    refused = _record(reg.FAILED, node_state=reg.PENDING, job_dirs=("", ""))
    states = [data.node_state(n, refused)[0] for n in refused.nodes]
    assert states == ["not started", "not started"]
    running = _record(reg.RUNNING, node_state=reg.PENDING)
    assert data.node_state(running.nodes[0], running)[0] == reg.PENDING


def test_compare_normalises_each_jobs_own_dir_and_id_and_keeps_real_differences():
    cfg = "output_dir: {d}/output\nload_checkpoint: /ckpt/{id}/x.ckpt\nseed: {seed}\nname: {id}\n"
    a = _record(config=cfg.format(d="/w/job-a", id="job-a", seed=1), job_id="job-a", job_dirs=("/w/job-a",))
    b = _record(config=cfg.format(d="/w/job-b", id="job-b", seed=2), job_id="job-b", job_dirs=("/w/job-b",))
    out = data.compare([a, b], [{}, {}], [None, None])
    assert [c["key"] for c in out["diffs"][0]["changes"]] == ["seed"]
    assert "/w/job-a" not in out["diffs"][0]["diff"] and out["jobs"][0]["id"] == "job-a"


def _dashboard(tmp_path) -> tuple[Dashboard, str, str]:
    with reg.Registry.in_state_dir(tmp_path / "state") as r:
        ids = []
        for kind in ("predict", "eval"):
            rec = r.create_job(kind, kind, config_text="", hostfile_text="localhost slots=1\n", nodes=["localhost"],
                               state=reg.PENDING)
            r.set_state(rec.id, reg.FAILED, "stopped")
            ids.append(rec.id)
    return Dashboard(Hub(tmp_path / "state"), tmp_path / "runs", "t" * 32), ids[0], ids[1]


def test_a_predict_and_an_eval_jobs_page_show_their_predictions_searchable_and_score(tmp_path):
    d, predict, evaluate = _dashboard(tmp_path)
    assert d._predictions(predict, None, 50)["hint"].startswith("fetch the job")
    run = tmp_path / "runs" / predict / "localhost"
    run.mkdir(parents=True)
    shutil.copy(FIX / "text_generation_result.txt", run)
    texts = pr.parse_generation_result((FIX / "text_generation_result.txt").read_text())
    got = d._predictions(predict, None, 5)
    assert got["total"] == len(texts) and [x["prediction"] for x in got["items"]] == texts[:5]
    needle = texts[-1].rsplit("=", 1)[-1].strip()
    found = d._predictions(predict, needle, 50)
    assert 1 <= found["matches"] < len(texts) and all(needle in x["prediction"] for x in found["items"])
    run = tmp_path / "runs" / evaluate / "localhost"
    run.mkdir(parents=True)
    shutil.copy(FIX / "test_eval_finetune.log", run)
    pairs = pr.parse_eval_log((FIX / "test_eval_finetune.log").read_text(errors="replace"))
    got = d._predictions(evaluate, None, 50)
    expected = squad.score((p.prediction, p.reference) for p in pairs)
    assert got["total"] == len(pairs) and got["items"][0]["reference"] == pairs[0].reference
    assert got["score"] == {"em": expected.em, "f1": expected.f1, "count": expected.count}
