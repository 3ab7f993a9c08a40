"""`alaunch results`: fetched run directories side by side, and the loss plot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from launcher.errors import ExitCode

FIX = Path(__file__).parent / "fixtures" / "real-ascend"


def _make_runs(root: Path) -> tuple[Path, Path]:
    train = root / "runs" / "job-train"
    (train / "h1" / "msrun_log").mkdir(parents=True)
    (train / "h1" / "config").mkdir()
    shutil.copy(FIX / "train-run-4card" / "worker_0.log", train / "h1" / "msrun_log" / "worker_0.log")
    shutil.copy(FIX / "train-run-4card" / "run_llama3_8b_8k_800T_A2_64G_lora_dis_256.yaml",
                train / "h1" / "config" / "job.yaml")
    (train / "job.json").write_text(json.dumps({"id": "job-train", "template": "llama3_8b_lora"}))
    ev = root / "runs" / "job-eval"
    (ev / "h2" / "output" / "log" / "rank_0").mkdir(parents=True)
    shutil.copy(FIX / "train-run-1card" / "info.log", ev / "h2" / "output" / "log" / "rank_0" / "info.log")
    return train, ev


def test_results_table_json_and_plot(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, ev = _make_runs(tmp_path)
    code, _, err = run_cli("score", "squad", str(FIX / "train-run-1card" / "test_eval_finetune.log"),
                           "--save", str(train))
    assert code == 0, err
    code, _, err = run_cli("score", "math", str(FIX / "train-run-1card" / "text_generation_result.txt"),
                           "-r", str(FIX / "math_test_200.jsonl"), "--save", str(train))
    assert code == 0, err

    code, out, err = run_cli("results", "job-tr", str(ev), "--json")  # a job id (prefix) under ./runs, and a path
    assert code == 0, err
    a, b = json.loads(out)
    assert a["job"] == "job-train" and a["template"] == "llama3_8b_lora"
    assert (a["lora_rank"], a["lora_alpha"], a["lora_targets"]) == (8, 16, ".*wq|.*wv|.*wk")
    assert a["trainable_params"] == 4718592  # "Network Parameters: 4718592." in worker_0.log
    assert (a["steps"], a["final_loss"]) == (1170, 1.086)
    assert a["duration_s"] == 5049.301
    assert (a["em"], a["f1"]) == (54.66860183841316, 70.45845460279635)
    assert (a["math_correct"], a["math_total"], a["math_accuracy"]) == (119, 200, 0.595)
    assert len(a["loss_curve"]) == 585 and a["loss_curve"][-1] == [1170, 1.086]
    assert b["job"] == "job-eval" and b["trainable_params"] == 3407872 and b["steps"] is None

    plot = tmp_path / "loss.png"
    code, out, err = run_cli("results", str(train), str(ev), "--plot", str(plot))
    assert code == 0, err
    assert "4,718,592" in out and "54.67" in out and "59.5% (119/200)" in out and "r=8 α=16" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert "plotted 1 loss curve" in err


def test_results_unknown_run_is_a_usage_error(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("results", "no-such-job")
    assert code == ExitCode.USAGE and "no-such-job" in err
    _make_runs(tmp_path)
    code, _, err = run_cli("results", "job-")
    assert code == ExitCode.USAGE and "'job-' matches 2 runs in runs: job-eval, job-train" in err, err
    from launcher.ops.registry import Registry
    with Registry.in_state_dir() as registry:
        registry.create_job("trainer", "finetune", nodes=["h1"], job_id="job-train")
    code, out, err = run_cli("results", "trainer", "--json")  # a job name, as `status` takes it
    assert code == 0 and json.loads(out)[0]["job"] == "job-train", err


def test_plot_without_losses_says_so(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, ev = _make_runs(tmp_path)
    code, _, err = run_cli("results", str(ev), "--plot", str(tmp_path / "x.png"))
    assert code == ExitCode.ERROR and "no loss lines" in err
