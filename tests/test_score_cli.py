"""`alaunch score` and `alaunch logs PATH` through the real CLI (in-process)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from launcher.errors import ExitCode

FIX = Path(__file__).parent / "fixtures" / "real-ascend"


def test_score_squad_prints_exact_values(run_cli):
    code, out, err = run_cli("score", "squad", str(FIX / "eval-base" / "test_eval_base.log"))
    assert code == 0, err
    assert out.strip() == "F1 59.87023775108988  EM 44.17029511369134  over 2067 examples"
    assert "jieba" not in out and "Building prefix dict" not in out


def test_score_squad_json_lines_and_save(run_cli, tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text('{"prediction": "郑州市。", "reference": "郑州市"}\n'
                   '{"prediction": "郑州", "reference": "郑州市"}\n', encoding="utf-8")
    run = tmp_path / "runs" / "j1"
    code, out, err = run_cli("score", "squad", str(src), "--json", "--save", str(run))
    assert code == 0, err
    got = json.loads(out)
    assert got["Em"] == 50.0 and got["count"] == 2
    assert got["F1"] == pytest.approx(100 * (1 + 0.8) / 2)  # 郑州 vs 郑州市: P=1, R=2/3 -> 0.8
    saved = json.loads((run / "scores.json").read_text())
    assert saved["squad"]["Em"] == 50.0


def test_score_math_table_json_and_count_mismatch(run_cli, tmp_path):
    preds, ref = FIX / "train-run-1card" / "text_generation_result.txt", FIX / "math_test_200.jsonl"
    code, out, _ = run_cli("score", "math", str(preds), "--reference", str(ref))
    assert code == 0
    assert "119 of 200 correct (59.5%)" in out and "arithmetic" in out and "square_root" in out
    code, out, _ = run_cli("score", "math", str(preds), "-r", str(ref), "--json")
    data = json.loads(out)
    assert (data["correct"], data["total"]) == (119, 200)
    assert data["families"]["arithmetic"] == {"correct": 96, "total": 137, "accuracy": 96 / 137}
    assert len(data["items"]) == 200
    short = tmp_path / "ref.jsonl"
    short.write_text("\n".join(ref.read_text(encoding="utf-8").splitlines()[:5]) + "\n", encoding="utf-8")
    code, _, err = run_cli("score", "math", str(preds), "-r", str(short))
    assert code == ExitCode.USAGE and "200 predictions but 5 reference items" in err


def test_score_math_help_states_the_rule(run_cli):
    code, out, _ = run_cli("score", "math", "--help")
    assert code == 0
    flat = " ".join(out.split())
    assert "last number" in flat and "0.01" in flat and "###" in flat and "a/b" in flat


def test_score_missing_file_names_it(run_cli, tmp_path):
    code, _, err = run_cli("score", "squad", str(tmp_path / "nope.log"))
    assert code == ExitCode.USAGE and "nope.log" in err


def test_logs_summary_json_on_worker_log(run_cli):
    code, out, err = run_cli("logs", str(FIX / "train-run-4card" / "worker_0.log"), "--summary", "--json")
    assert code == 0, err
    s = json.loads(out)["streams"][0]
    assert (s["loss_lines"], s["steps_done"], s["steps_total"], s["last_loss"]) == (585, 1170, 1170, 1.086)


def test_logs_run_dir_ranks_grep_and_raw(run_cli, tmp_path):
    run = tmp_path / "runs" / "job1"
    (run / "hostA" / "msrun_log").mkdir(parents=True)
    (run / "hostB" / "output" / "log" / "rank_1").mkdir(parents=True)
    shutil.copy(FIX / "train-run-4card" / "worker_0.log", run / "hostA" / "msrun_log" / "worker_0.log")
    shutil.copy(FIX / "train-run-1card" / "info.log", run / "hostB" / "output" / "log" / "rank_1" / "info.log")
    code, out, _ = run_cli("logs", str(run), "--raw", "--grep", r"step:\[  234/  234\]")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 5 and all(line.startswith("hostA/0 ") for line in lines)
    assert lines[-1].endswith("loss: 1.086, per_step_time: 3171ms, lr: 1.9371509e-10, overflow cond: False, loss_scale: 1.0")
    code, out, _ = run_cli("logs", str(run), "--rank", "1", "--raw", "--grep", r"Step\[2067/")
    assert code == 0 and len(out.splitlines()) == 1 and "Step[2067/2067]" in out
    code, out, _ = run_cli("logs", str(run), "--summary")
    assert "hostA/0" in out and "hostB/1" in out and "2067/2067 examples" in out and "4,718,592" in out
    code, _, err = run_cli("logs", str(run), "--grep", "(")
    assert code == ExitCode.USAGE and "--grep" in err


FAIL_SCRIPT = textwrap.dedent("""
    import os, time
    print("role", os.environ.get("MS_ROLE"), "rank", os.environ.get("RANK_ID"), flush=True)
    if os.environ.get("MS_ROLE") == "MS_WORKER" and os.environ.get("RANK_ID") == "1":
        def load_dataset(path):
            raise FileNotFoundError(f"dataset not found: {path}")
        load_dataset("/no/such/train.mindrecord")
    time.sleep(3)
""")


@pytest.mark.slow
@pytest.mark.ms
def test_logs_names_failing_rank_of_a_real_msrun_job(run_cli, tmp_path, monkeypatch):
    """A real msrun job whose rank 1 fails: the logs summary names rank 1 and its traceback."""
    monkeypatch.chdir(tmp_path)
    msrun = Path(sys.executable).parent / "msrun"
    if not msrun.exists():
        pytest.skip("msrun not installed")
    (tmp_path / "fail.py").write_text(FAIL_SCRIPT)
    logdir = tmp_path / "runs" / "j" / "node0" / "msrun_log"
    proc = subprocess.run([str(msrun), "--worker_num=2", "--local_worker_num=2", "--master_port=18232",
                           f"--log_dir={logdir}", "--join=True", "fail.py"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Worker process" in proc.stdout + proc.stderr
    code, out, err = run_cli("logs", str(tmp_path / "runs" / "j"), "--summary", "--json")
    assert code == ExitCode.JOB_FAILED, err
    first = json.loads(out)["first_failure"]
    assert (first["host"], first["rank"], first["kind"]) == ("node0", 1, "traceback")
    assert first["message"] == "FileNotFoundError: dataset not found: /no/such/train.mindrecord"
    assert any("load_dataset" in line for line in first["traceback"])
    # msrun's own console output, fed as a stream, is recognised too
    from launcher.metrics.logparse import LogState
    st = LogState(host="node0").feed_lines((proc.stdout + proc.stderr).splitlines())
    st.finish()
    assert st.failure is not None


def _cut_eval_log(tmp_path: Path, stop_before: str = "Step[1200/2067]") -> Path:
    """The real fine-tuned eval log as if the run had died before example 1200 of 2067."""
    text = (FIX / "train-run-1card" / "test_eval_finetune.log").read_text(encoding="utf-8")
    cut = tmp_path / "test_eval_cut.log"
    cut.write_text(text[:text.index(stop_before)].rsplit("\n", 1)[0] + "\n", encoding="utf-8")
    return cut


def test_score_squad_says_incomplete_with_the_numbers(run_cli, tmp_path):
    cut = _cut_eval_log(tmp_path)
    code, out, err = run_cli("score", "squad", str(cut))
    assert code == 0, err
    assert "over 1199 examples" in out and "incomplete: 1199 of 2067 examples" in out
    code, out, _ = run_cli("score", "squad", str(cut), "--json")
    data = json.loads(out)
    assert data["count"] == 1199 and data["complete"] is False and data["expected"] == 2067
    # the whole log is complete
    code, out, _ = run_cli("score", "squad", str(FIX / "train-run-1card" / "test_eval_finetune.log"), "--json")
    data = json.loads(out)
    assert data["complete"] is True and data["expected"] == 2067 and data["count"] == 2067


def test_logs_summary_marks_a_cut_eval_log_and_a_cut_train_log_incomplete(run_cli, tmp_path):
    cut = _cut_eval_log(tmp_path)
    code, out, err = run_cli("logs", str(cut), "--json")
    data = json.loads(out)
    assert data["status"] == "incomplete" and data["streams"][0]["complete"] is False
    assert data["streams"][0]["steps_done"] == 1199 and data["streams"][0]["steps_total"] == 2067
    train = (FIX / "train-run-4card" / "worker_0.log").read_text(encoding="utf-8").splitlines()[:1500]
    (tmp_path / "worker_0.log").write_text("\n".join(train) + "\n", encoding="utf-8")
    code, out, err = run_cli("logs", str(tmp_path / "worker_0.log"), "--summary")
    assert code == 0 and "incomplete: stopped at" in re.sub(r"\s*│\s*", " ", out), out
    # the real complete run reads ok
    code, out, _ = run_cli("logs", str(FIX / "train-run-4card" / "worker_0.log"), "--json")
    assert json.loads(out)["status"] == "ok"
