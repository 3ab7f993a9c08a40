"""The log parser on real Ascend logs, MFLossMonitor's 1.9 format and real failure text."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.metrics import logparse
from launcher.metrics.logparse import JobLogs, LogState

FIX = Path(__file__).parent / "fixtures" / "real-ascend"
WORKER0 = FIX / "train-run-4card" / "worker_0.log"
INFO = FIX / "train-run-1card" / "info.log"


def _state(path: Path) -> LogState:
    with path.open(encoding="utf-8") as fh:
        st = LogState().feed_lines(fh)
    st.finish()
    return st


@pytest.fixture(scope="module")
def worker0() -> LogState:
    return _state(WORKER0)


def test_4card_loss_series(worker0):
    assert len(worker0.losses) == 585
    first, last = worker0.losses[0], worker0.losses[-1]
    # line 933 (behind a "-\|/-\|" spinner): { Epoch:[  1/  5], step:[    2/  234], loss: 1.292,
    # per_step_time: 383209ms, lr: 2.8571428e-06
    assert (first.epoch, first.epochs, first.step, first.steps) == (1, 5, 2, 234)
    assert first.loss == 1.292 and first.per_step_ms == 383209 and first.lr == 2.8571428e-06
    # line 1512: { Epoch:[  3/  5], step:[  112/  234], loss: 0.866, per_step_time: 3175ms
    mid = next(p for p in worker0.losses if (p.epoch, p.step) == (3, 112))
    assert (mid.loss, mid.per_step_ms, mid.global_step) == (0.866, 3175, 2 * 234 + 112)
    assert (last.epoch, last.epochs, last.step, last.steps, last.loss) == (5, 5, 234, 234, 1.086)
    assert last.per_step_ms == 3171 and last.lr == 1.9371509e-10


def test_4card_summary(worker0):
    s = worker0.summary()
    assert (s.kind, s.steps_done, s.steps_total, s.epoch, s.epochs) == ("train", 1170, 1170, 5, 5)
    assert (s.first_loss, s.last_loss, s.min_loss) == (1.292, 1.086, 0.515)
    assert s.network_params == 4718592 and not s.network_params_millions
    assert s.samples_per_s == 5.04426 and s.eta_s == 0  # last bar: "5.04426 samples/s/p  0:00:00 }"
    # 20:48:52.671 (first DISTRIBUTED warning) to 22:13:01,972 (Training Over)
    assert s.duration_s == pytest.approx(5049.301)
    # "......Saving ckpt......" after global steps 536, 1072 (epoch 5 step 136) and 1170
    assert [c["step"] for c in s.checkpoints] == [536, 1072, 1170]
    assert s.failure is None and s.errors == 0
    assert s.cluster_retries == 2  # "Topology build timed out., retry(1/200)." is not a failure


def test_info_log_eval_progress():
    st = _state(INFO)
    assert st.kind == "eval"
    assert st.progress() == (2067, 2067)
    assert st.eval_step is not None and st.eval_step.cost_s == 1.1225 and st.eval_step.remaining_s == 0
    assert st.network_params == 3407872
    assert st.failure is None


def test_eval_step_remaining_time_mid_run():
    line = ("[INFO] 2024-07-25 22:51:00,839 [mindformers/trainer/causal_language_modeling/"
            "causal_language_modeling.py:283] generate_evaluate: Step[2/2067], cost time 1.1210s, "
            "every example cost time is 1.1210, generate speed: 3.5684 tokens/s, avg speed: "
            "3.5681 tokens/s, remaining time: 0:19:17")
    st = LogState()
    st.feed(line)
    assert st.progress() == (2, 2067) and st.eta_s == 19 * 60 + 17
    # 1.9 prints "Step[2 / 2067]" and timedelta can carry days
    st.feed("Step[3 / 2067], cost time 0.5000s, x, remaining time: 1 day, 2:00:01")
    assert st.progress() == (3, 2067) and st.eta_s == 86400 + 7201


def _mf19_line(loss: str, *, lr: str | None, gnorm: str, tput: str) -> str:
    """Built from MFLossMonitor.print_output_info's format strings in mindformers 1.9."""
    prefix = "2025-11-28 10:00:00,000 - mindformers[mindformers/core/callback/callback.py:747] - INFO - "
    head = "{ Epoch:[%3d/%3d], step:[%5d/%5d], " % (1, 2, 7, 40) + loss
    if lr is not None:
        body = "per_step_time: %dms, lr: %s, overflow cond: %s, loss_scale: %s, global_norm: %s%s" % (
            812, lr, False, 1.0, gnorm, tput)
    else:
        body = "per_step_time: %dms, overflow cond: %s, loss_scale: %s, global_norm: %s%s" % (
            812, False, 1.0, gnorm, tput)
    return prefix + head + body


def test_mindformers_19_formats():
    nonsink = _mf19_line(f"loss:[{0.004290:5.6f}/{0.005412:5.6f}], ", lr="[1.e-04]",
                         gnorm="[0.0248]", tput=", train_throughput_per_npu: 0.001T")
    assert "loss:[0.004290/0.005412], " in nonsink
    p = logparse.parse_loss(nonsink)
    assert p is not None
    assert (p.epoch, p.epochs, p.step, p.steps) == (1, 2, 7, 40)
    assert (p.loss, p.avg_loss, p.per_step_ms, p.lr) == (0.004290, 0.005412, 812, 1e-4)
    assert (p.global_norm, p.tflops_per_npu) == (0.0248, 0.001)
    sink = _mf19_line(f"loss: {2.5:5.6f}, ", lr=None, gnorm="0.5", tput="")
    q = logparse.parse_loss(sink)
    assert q is not None and (q.loss, q.avg_loss, q.lr, q.global_norm, q.tflops_per_npu) == (2.5, None, None, 0.5, None)
    bar = ("2025-11-28 10:00:00,001 - mindformers[x.py:764] - INFO -   17.5%% |%-50s| %.5f samples/s/p  %s }"
           % ("████████", 9.87654, "0:01:02"))
    st = LogState().feed_lines([sink, bar])
    assert st.samples_per_s == 9.87654 and st.eta_s == 62 and st.progress() == (7, 80)
    # 1.9 "Network Parameters: %s M." is in whole millions
    st.feed("2025-11-28 10:00:00,002 - mindformers[base_trainer.py:800] - INFO - Network Parameters: 3 M.")
    assert st.network_params == 3 and st.network_params_millions


def test_19_checkpoint_lines_give_paths():
    st = LogState().feed_lines([
        _mf19_line("loss: 1.000000, ", lr=None, gnorm="0.5", tput=""),
        "2025-11-28 10:00:01,000 - mindformers[checkpoint.py:373] - INFO - Model checkpoint successfully "
        "saved at '/w/output/checkpoint/iteration_00000007/model-0000001-0000002'.",
    ])
    assert [(c.step, c.path) for c in st.checkpoints] == [(7, "/w/output/checkpoint/iteration_00000007/model-0000001-0000002")]


# The failure-signature table has its own tests (tests/test_signatures.py, one per row, on real
# text); here: how one stream records what it saw.
def test_fatal_line_is_evidence_and_error_lines_are_counted():
    st = LogState(host="h", rank=1)
    st.feed("EI0006: 2024-08-05-18:15:21.270.506 Getting socket times out. Reason: Remote Rank did "
            "not send the data in time.")
    assert st.failure is not None and st.failure.kind == "hccl_connect_timeout" and st.failure.rank == 1
    st = LogState()
    st.feed("2024-07-06 21:00:00,000 - mindformers[mindformers/trainer/base_trainer.py:1] - ERROR - boom")
    assert st.failure is None and st.errors[0].kind == "error_line"


def test_retry_and_normal_hccl_lines_are_not_failures():
    for line in [
        "[WARNING] DISTRIBUTED(73857,ffff9337e010,python):2024-07-06-20:48:53.672.758 [mindspore/ccsrc/"
        "distributed/cluster/cluster_context.cc:194] BuildCluster] Topology build timed out., retry(1/200).",
        "[WARNING] DISTRIBUTED(73857,f,python):2024-07-06-20:49:24.420.348 [collective_manager.cc:335] "
        "CreateCommunicationGroup] Begin initialize communication group on the device side: hccl_world_group",
    ]:
        assert logparse.match_failure(line) is None
        st = LogState()
        st.feed(line)
        assert st.failure is None


TRACEBACK = """role MS_WORKER rank 1
Traceback (most recent call last):
  File "/tmp/msr/fail.py", line 9, in <module>
    load_dataset("/no/such/train.mindrecord")
  File "/tmp/msr/fail.py", line 8, in load_dataset
    raise FileNotFoundError(f"dataset not found: {path}")
FileNotFoundError: dataset not found: /no/such/train.mindrecord
after
"""


def test_traceback_block():
    st = LogState(host="n1", rank=1).feed_lines(TRACEBACK.splitlines())
    f = st.failure
    assert f is not None and f.kind == "traceback" and f.line == 2
    assert f.message == "FileNotFoundError: dataset not found: /no/such/train.mindrecord"
    assert f.lines[0].startswith("Traceback") and f.lines[-1] == f.message
    # a traceback cut off by the end of the stream is still reported
    st = LogState().feed_lines(TRACEBACK.splitlines()[:4])
    assert st.failure is None
    st.finish()
    assert st.failure is not None and st.failure.kind == "traceback"


def test_job_failure_comes_from_msrun_reports_not_log_lines():
    job = JobLogs()
    assert job.feed("a", 0, "2024-07-06 21:00:00,000 - mindformers[x] - INFO - fine") is None
    for line in TRACEBACK.splitlines():
        assert job.feed("b", 1, line) is None
    assert job.first_failure is None and job.log_failure() is not None
    job.note_worker("b", 4242, 1)
    fact = job.feed_msrun("b", "[ERROR] ME(1:2,MainProcess):2026-11-28-10:39:58.391.000 [mindspore/parallel/"
                               "cluster/process_entity/_api.py:364] Worker process 4242 exit with exception. "
                               "Error code: 1.")
    assert fact is not None and (fact.host, fact.rank) == ("b", 1)
    assert "FileNotFoundError: dataset not found" in fact.cause and fact.lines[0].startswith("Traceback")
    tb = job.best_traceback()
    assert tb is not None and tb.message.startswith("FileNotFoundError")


# ---------------------------------------------------------------- stragglers
def _loss(step: int, ms: int | None = None, at: str = "10:00:00") -> str:
    per = f", per_step_time: {ms}ms" if ms is not None else ""
    return (f"2025-03-02 {at},000 - mindformers[callback.py:1] - INFO - {{ Epoch:[  1/  1], "
            f"step:[{step:5d}/  200], loss: 2.0{per}, lr: 1e-05")


def _job(per_rank_ms: dict[int, list[int]]) -> JobLogs:
    job = JobLogs()
    for rank, times in per_rank_ms.items():
        for step, ms in enumerate(times, 1):
            job.feed("h0" if rank < 2 else "h1", rank, _loss(step, ms))
    return job


def test_a_rank_slower_than_the_median_of_the_others_is_named():
    from launcher.metrics.stragglers import find_stragglers
    even = [1000] * 30
    slow = [90000] + [1310] * 29  # the first step (compile) is left out
    found = find_stragglers(_job({0: even, 1: even, 2: slow, 3: even}))
    assert [(s.host, s.rank) for s in found] == [("h1", 2)]
    assert round(found[0].slower_pct) == 31 and found[0].steps == 29
    assert found[0].text().startswith("rank 2 on h1 is 31 % slower than the median for 29 steps")


def test_an_even_job_and_noise_name_no_straggler():
    from launcher.metrics.stragglers import find_stragglers
    assert find_stragglers(_job({0: [1000] * 30, 1: [1050] * 30})) == []  # 5 %: under the threshold
    spikes = [1000] * 27 + [3000, 1000, 1000]  # one slow step (a checkpoint) is not a slow rank
    assert find_stragglers(_job({0: [1000] * 30, 1: spikes})) == []
    assert find_stragglers(_job({0: [1000] * 30})) == []  # one rank: nothing to compare with
    assert find_stragglers(_job({0: [1000] * 30, 1: [1000] * 26 + [2000] * 4})) == []  # 4 slow of 29: its median is not


def test_step_time_from_the_time_between_loss_lines_when_none_is_printed():
    from launcher.metrics.stragglers import find_stragglers, step_times
    job = JobLogs()
    for step in range(1, 12):
        job.feed("h0", 0, _loss(step, at=f"10:00:{step * 2:02d}"))
        job.feed("h1", 1, _loss(step, at=f"10:{step * 3 // 60:02d}:{step * 3 % 60:02d}"))
    assert {t for _, t, _ in step_times(job.states[("h0", 0)])} == {2.0}
    found = find_stragglers(job)
    assert [(s.rank, round(s.slower_pct)) for s in found] == [(1, 50)]


def test_the_json_summary_lists_stragglers():
    from launcher.cli.logview import summary_payload
    payload = summary_payload(_job({0: [1000] * 30, 1: [1500] * 30}))
    assert [(s["rank"], round(s["slower_pct"])) for s in payload["stragglers"]] == [(1, 50)]


def test_the_text_summary_says_the_straggler(run_cli, tmp_path):
    run = tmp_path / "run" / "msrun_log"
    run.mkdir(parents=True)
    for rank, ms in ((0, 1000), (1, 1500)):
        (run / f"worker_{rank}.log").write_text("".join(_loss(s, ms) + "\n" for s in range(1, 30)))
    code, out, err = run_cli("logs", str(tmp_path / "run"), "--summary")
    assert "straggler: rank 1 is 50 % slower than the median for 28 steps" in out, out
