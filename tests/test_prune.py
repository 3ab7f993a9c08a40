"""prune: the pure choice, and the real host script (SCAN/PRUNE) on a store built here."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from launcher.remote import wire
from launcher.core.prune import JobDir, dedupe_stores, parse_age, select
from launcher.errors import InputError
from tests.test_remote_scripts import run_script

DAY = 86400.0


def test_parse_age():
    assert parse_age("7d") == 7 * DAY and parse_age("12h") == 43200 and parse_age("90") == 90
    for bad in ("", "7 days", "-1d", "d"):
        with pytest.raises(InputError, match="--older-than"):
            parse_age(bad)


def test_select_keeps_running_queued_recent_and_the_last_n():
    now = 100 * DAY
    jobs = [JobDir("old-a", False, True, True, now - 30 * DAY, 0), JobDir("old-b", False, True, True, now - 20 * DAY, 0),
            JobDir("new", False, True, True, now - 1 * DAY, 0), JobDir("run", True, True, False, None, 0),
            JobDir("crashed", False, True, False, None, now - 40 * DAY),
            JobDir("queued", False, False, False, None, now - 40 * DAY)]
    assert select(jobs, now, 7 * DAY) == ["old-a", "old-b"]
    assert select(jobs, now, 7 * DAY, keep_last=2) == ["old-a"]
    assert select(jobs, now, 7 * DAY, protect={"old-b"}) == ["old-a"]
    assert select(jobs, now, 7 * DAY, terminal={"crashed", "run"}) == ["crashed", "old-a", "old-b"]
    assert dedupe_stores([("h0", {"fsid": "x", "base": "/s"}), ("h1", {"fsid": "x", "base": "/s"}),
                          ("h2", {"fsid": "y", "base": "/s"})]) == ["h0", "h2"]


def _obj(cas: Path, data: bytes, old: bool = True) -> Path:
    import hashlib
    sha = hashlib.sha256(data).hexdigest()
    p = cas / sha[:2] / sha
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    if old:
        os.utime(p, (time.time() - 2 * DAY,) * 2)
    return p


def _job(base: Path, jid: str, objs: list[Path], tree: Path | None, ended: float | None, ckpt: bool = False) -> Path:
    root = base / jid
    (root / "state").mkdir(parents=True)
    for i, o in enumerate(objs):
        os.link(o, root / f"f{i}")
    if tree is not None:
        os.symlink(tree, root / "code")
    (root / "output" / "log").mkdir(parents=True)
    (root / "output" / "log" / "info.log").write_bytes(b"x" * 1000)
    if ckpt:
        (root / "output" / "checkpoint" / "rank_0").mkdir(parents=True)
        (root / "output" / "checkpoint" / "rank_0" / "a.ckpt").write_bytes(b"c" * 500)
    if ended is not None:
        (root / "state" / "pid").write_text("1 1\n")
        (root / "state" / "exit_code").write_text("0\n")
        os.utime(root / "state" / "exit_code", (ended, ended))
    return root


def test_prune_removes_exactly_the_orphans_and_old_finished_jobs(tmp_path):
    base = tmp_path / "alaunch"
    cas = base / "cas"
    (cas / "tmp").mkdir(parents=True)
    shared, only_old, only_new, orphan = (_obj(cas, d) for d in (b"shared", b"old-only" * 10, b"new", b"orphan" * 7))
    fresh_orphan = _obj(cas, b"being staged", old=False)
    tree_old = cas / "trees" / "t-old"
    tree_new = cas / "trees" / "t-new"
    for t, o in ((tree_old, only_old), (tree_new, only_new)):
        t.mkdir(parents=True)
        os.link(o, t / "m.py")
        os.utime(t, (time.time() - 2 * DAY,) * 2)
    part = cas / "tmp" / ("ab" * 32 + ".77.part")
    part.write_bytes(b"p" * 300)
    os.utime(part, (time.time() - 2 * DAY,) * 2)
    now = time.time()
    old = _job(base, "a-20250101-000000-aaaa", [shared, only_old], tree_old, now - 10 * DAY)
    ckpt = _job(base, "c-20250101-000000-cccc", [shared], None, now - 10 * DAY, ckpt=True)
    new = _job(base, "b-20250102-000000-bbbb", [shared, only_new], tree_new, now - 1 * DAY)
    unstarted = _job(base, "q-20250103-000000-dddd", [shared], None, None)
    for host, job in (("h0", old.name), ("h1", old.name), ("h0", new.name)):  # card claims per host
        (base / "cards" / host).mkdir(parents=True, exist_ok=True)
        (base / "cards" / host / job).write_bytes(b"claim")
    scan = wire.answer(run_script("prune", {"op": "scan", "base": str(base)}).stdout)
    by_id = {j["id"]: j for j in scan["jobs"]}
    assert by_id[old.name]["finished"] and not by_id[unstarted.name]["started"]
    remove = select([JobDir.from_scan(j) for j in scan["jobs"]], scan["now"], 7 * DAY)
    assert remove == [old.name, ckpt.name]
    req = {"op": "prune", "base": str(base), "remove": remove, "checkpoints": False, "grace": 3600}
    dry = wire.answer(run_script("prune", {**req, "dry_run": True}).stdout)
    assert [t["id"] for t in dry["trees"]] == ["t-old"]
    assert dry["objects"] == {"count": 2, "bytes": len(b"old-only" * 10) + len(b"orphan" * 7)}
    assert dry["parts"] == {"count": 1, "bytes": 300}
    assert {j["id"]: j["checkpoints_kept"] for j in dry["jobs"]} == {old.name: False, ckpt.name: True}
    assert old.exists() and orphan.exists()  # a dry run changes nothing
    done = wire.answer(run_script("prune", {**req, "dry_run": False}).stdout)
    assert done["objects"] == dry["objects"] and done["bytes"] == dry["bytes"]
    assert not old.exists() and not tree_old.exists() and not only_old.exists() and not orphan.exists()
    # the removed job's claims go with it (left, they held its cards 5 min: a new job was refused)
    assert sorted(str(p.relative_to(base)) for p in (base / "cards").glob("*/*")) == [f"cards/h0/{new.name}"]
    assert not part.exists()
    assert (ckpt / "output" / "checkpoint" / "rank_0" / "a.ckpt").read_bytes() == b"c" * 500
    assert not (ckpt / "output" / "log").exists() and not (ckpt / "f0").exists()
    for kept in (new, unstarted, tree_new, shared, only_new, fresh_orphan, new / "code" / "m.py"):
        assert kept.exists(), kept


def test_prune_keeps_the_model_merged_weights_and_strategy_unless_asked(tmp_path):
    """Without --checkpoints a pruned job keeps its model: the per-rank shards, the merged file
    and the strategy files the shards cannot be merged without (only output/checkpoint was
    kept: prune deleted output/merged/*.ckpt and output/strategy/*.ckpt)."""
    base = tmp_path / "alaunch"
    (base / "cas").mkdir(parents=True)
    now = time.time()
    root = _job(base, "m-20250101-000000-eeee", [], None, now - 10 * DAY, ckpt=True)
    for sub, name in (("merged", "tiny.ckpt"), ("strategy", "ckpt_strategy_rank_0.ckpt")):
        (root / "output" / sub).mkdir(parents=True)
        (root / "output" / sub / name).write_bytes(b"m" * 100)
    req = {"op": "prune", "base": str(base), "remove": [root.name], "checkpoints": False, "grace": 3600,
           "dry_run": False}
    done = wire.answer(run_script("prune", req).stdout)
    assert done["jobs"][0]["checkpoints_kept"] and done["jobs"][0]["bytes"] == 1000  # the log went
    kept = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert kept == ["output/checkpoint/rank_0/a.ckpt", "output/merged/tiny.ckpt",
                    "output/strategy/ckpt_strategy_rank_0.ckpt", "state/exit_code", "state/pid"]
    done = wire.answer(run_script("prune", {**req, "checkpoints": True}).stdout)
    assert not root.exists()


def test_a_running_pipelines_steps_and_their_inputs_are_never_pruned(tmp_path):
    """A running pipeline's finished step (and the job its recorded outputs point into: a
    reused merge of another run) is the input of its later steps: protected while it runs."""
    from launcher.ops import proc
    from launcher.ops.registry import Registry
    with Registry(tmp_path / "r.sqlite3") as r:
        train = r.create_job("train", "finetune", nodes=[("h0", "/w/train")])
        older = r.create_job("merge", "finetune", nodes=[("h0", "/w/merge")])
        done = r.create_job("other", "finetune", nodes=[("h0", "/w/other")])
        run = r.create_pipeline("p", "p.yaml", [("train", "job"), ("merge", "merge"), ("eval", "job")],
                                runner=proc.me())
        r.set_step(run.id, "train", state="succeeded", job_id=train.id,
                   outputs={"checkpoints": [f"/root/alaunch/{train.id}/output/checkpoint/rank_0/a.ckpt"]})
        r.set_step(run.id, "merge", state="skipped", outputs={"merged": f"/root/alaunch/{older.id}/output/m.ckpt"})
        assert r.jobs_in_use_by_pipelines() == {train.id, older.id}
        ended = r.create_pipeline("q", "q.yaml", [("t", "job")], runner=proc.me())
        r.set_step(ended.id, "t", state="succeeded", job_id=done.id)
        r.end_pipeline(ended.id, "succeeded")
        r.end_pipeline(run.id, "succeeded")
        assert r.jobs_in_use_by_pipelines() == set()  # ended runs protect nothing
