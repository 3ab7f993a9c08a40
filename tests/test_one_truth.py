"""One truth for render, plan and submit (issue #33): `--set` takes job-file keys as well as
template keys, and `render` takes submit's host filters, so its world size is what submit runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.core.render import apply_job_sets, template_sets
from launcher.core.spec import load_job
from launcher.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "jobs" / "tiny_lora_cpu.yaml"


def test_job_file_keys_from_the_command_line():
    spec = load_job(JOB)
    got = apply_job_sets(spec, ["nodes=all", "cards_per_node=1", "name=other", "env.HCCL_BUFFSIZE=120", "seed=7",
                                "runner_config.epochs=2"])
    assert (got.nodes, got.cards_per_node, got.name, got.env["HCCL_BUFFSIZE"], got.seed) == ("all", 1, "other", 120, 7)
    assert got.source == spec.source and got.inputs == spec.inputs  # local paths stay absolute
    assert template_sets(["nodes=all", "runner_config.epochs=2", "+env_x=1"]) == ["runner_config.epochs=2", "+env_x=1"]
    with pytest.raises(InputError) as caught:
        apply_job_sets(spec, ["cards_per_node=0"])
    assert str(caught.value) == "--set: cards_per_node: must be a positive integer or 'all', got 0"


def test_render_counts_the_hosts_submit_would_use(run_cli, tmp_path, tiny_job):
    """render had no --include: its world size (16) differed from what `submit --include` ran (2);
    and `--set nodes=all` was refused as "no such key in the template"."""
    hf = tmp_path / "hosts"
    hf.write_text("h1 slots=8\nh2 slots=8\n")
    base = ("render", str(tiny_job), "-H", str(hf), "--no-mindformers", "--summary", "--set", "nodes=all")
    code, out, err = run_cli(*base)
    assert code == 0 and "16 (2 node(s) x 8 card(s))" in out, (out, err)
    code, out, err = run_cli(*base, "--include", "h1:0,1@h2:0,1")
    assert code == 0 and "4 (2 node(s) x 2 card(s))" in out, (out, err)
    code, out, err = run_cli(*base, "--exclude", "h2", "--set", "cards_per_node=1")
    assert code == 0 and "1 (1 node(s) x 1 card(s))" in out, (out, err)
    code, out, err = run_cli(*base, "--devices", "0,1,2")
    assert code == 0 and "6 (2 node(s) x 3 card(s))" in out, (out, err)
    code, _, err = run_cli("render", str(tiny_job), "-H", str(hf), "--no-mindformers", "--set", "node=all")
    assert code == 2 and "did you mean 'nodes' (a job-file key)?" in err, err


def test_plan_takes_job_file_sets(run_cli, tmp_path):
    hf = tmp_path / "hosts"
    hf.write_text("10.1.0.1 slots=2\n10.1.0.2 slots=2\n")
    code, out, err = run_cli("plan", str(JOB), "-H", str(hf), "--offline", "--set", "nodes=all",
                             "--set", "cards_per_node=1", "--set", "name=renamed")
    assert code == 0, err
    assert "# node 1: 10.1.0.2" in out and "--worker_num=2" in out and "(renamed): 2 node(s), 2 worker(s)" in out, out
