"""Pipelines and cards without msrun: which steps the dry run says run together (pure
levels + packing), and ``resume`` taking its cards again through the hosts' claims (the real
CLAIM op, run here on the local host)."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import yaml

from launcher.core import pipeline as pl
from launcher.core.cards import CardsBusy
from launcher.core.hostfile import Host
from launcher.ops import cards as card_ops
from launcher.ops.registry import Registry
from launcher.ops.resume import claim_again
from launcher.ops.service import JobService
from launcher.ops.stage import store_base
from launcher.runners import make_runner


def _pipeline(steps: dict) -> pl.Pipeline:
    text = yaml.safe_dump({"name": "p", "steps": steps}, sort_keys=False)
    return pl.parse_pipeline(yaml.safe_load(text), "p.yaml", None, text)


def test_levels_group_the_steps_that_are_ready_together():
    p = _pipeline({"train": {"job": "t.yaml"}, "merge": {"builtin": "merge", "with": {"checkpoint": {"from": "train"}}},
                   "eval": {"job": "e.yaml", "checkpoint": {"from": "merge"}},
                   "predict": {"job": "p.yaml", "checkpoint": {"from": "merge"}},
                   "score": {"builtin": "score", "with": {"predictions": {"from": "predict"}}}})
    assert pl.levels(p) == [["train"], ["merge"], ["eval", "predict"], ["score"]]
    assert pl.levels(p, ["eval", "predict", "score"]) == [["eval", "predict"], ["score"]]


def test_pack_fills_the_cards_in_order_and_a_step_that_does_not_fit_waits():
    one = {"h": 1}
    assert pl.pack(["eval", "predict"], {"eval": one, "predict": one}, {"h": 2}) == [["eval", "predict"]]
    assert pl.pack(["eval", "predict"], {"eval": one, "predict": one}, {"h": 1}) == [["eval"], ["predict"]]
    # first come, first served: b waits for a's cards, and c (which would fit beside a) waits behind b
    two = {"h": 2}
    assert pl.pack(["a", "b", "c"], {"a": two, "b": two, "c": one}, {"h": 3}) == [["a"], ["b", "c"]]
    assert pl.pack(["a", "s"], {"a": {"h": 2}, "s": {}}, {"h": 2}) == [["a", "s"]]  # a built-in takes no card
    assert pl.pack(["a", "b"], {"a": {"h1": 1}, "b": {"h2": 1}}, {"h1": 1, "h2": 1}) == [["a", "b"]]


def _service(tmp_path) -> JobService:
    return JobService(Registry(tmp_path / "state" / "jobs.db"), tmp_path / "state", exec_factory=make_runner)


def test_resume_claims_the_jobs_cards_again_or_names_who_holds_them(tmp_path):
    host = Host("localhost", 2, workdir=str(tmp_path / "work"), slot_ids=(1,))
    service = _service(tmp_path)
    job_id = service.registry.create_job("tiny", "finetune", spec_text="", hostfile_text="",
                                         nodes=[("localhost", str(tmp_path / "work" / "j"))]).id
    record = service.registry.get(job_id)
    plan = SimpleNamespace(nodes=[])
    with make_runner(host) as runner:  # another job took card 1 meanwhile (not started yet: held by TTL)
        assert card_ops.claim(runner, store_base(host), "other-job", [1], "").ok
    with pytest.raises(CardsBusy) as err:
        claim_again(service, record, [host], plan, {"localhost": sys.executable})
    assert "card 1 held by job other-job" in err.value.message and job_id in err.value.message
    with make_runner(host) as runner:  # and the refused resume left no claim of its own behind
        look = card_ops.claim(runner, store_base(host), "looker", [], "")
    assert set(look.held) == {1} and look.held[1].job_id == "other-job"
    # card 0 is free: the resume claims it, and the next job is refused it
    claim_again(service, record, [Host("localhost", 2, workdir=str(tmp_path / "work"), slot_ids=(0,))], plan,
                {"localhost": sys.executable})
    with make_runner(host) as runner:
        refused = card_ops.claim(runner, store_base(host), "third", [0], "")
    assert not refused.ok and refused.held[0].job_id == job_id
    assert "claimed again to resume" in " ".join(e.message for e in service.registry.events(job_id))
