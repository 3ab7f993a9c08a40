"""The failure-signature table (launcher/metrics/signatures.py), one test per signature on real
text, and the rule that log text explains failures but never makes one.

Sources of the text: tests/fixtures/real-world/ (see its README: other people's Ascend runs),
tests/fixtures/real-ascend/, msrun's own messages (mindspore/parallel/cluster/process_entity/
_api.py of the installed MindSpore 2.9), strings of the installed libmindspore_*.so (``is timed
out. It may exit with exception``, ``memory isn't enough and alloc failed``, ``Sync stream
failed``), and CANN error blocks as public Ascend issue reports print them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.metrics import signatures
from launcher.metrics.logparse import JobLogs, LogState

FIX = Path(__file__).parent / "fixtures"
RW = FIX / "real-world"


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def _state(lines, host="h", rank=0) -> LogState:
    st = LogState(host=host, rank=rank).feed_lines(lines)
    st.finish()
    return st


# (signature name, line, words the cause must contain, words the hint must contain)
CASES = [
    ("cann_error",
     "EE9999: Inner Error!", "CANN error EE9999 from the CANN runtime", "CANN error code"),
    ("cann_error",
     "EL0003: [PID: 3213] 2024-09-01-10:00:00.000.000 The argument is invalid.", "EL0003 from the driver", ""),
    ("cann_error",
     "EZ3002: [PID: 11] 2024-09-01-10:00:00 Optype [Xyz] of Ops kernel [AIcoreEngine] is unsupported.",
     "EZ3002 from an operator", ""),
    ("hccl_notify_timeout", _lines(RW / "errors" / "hccl_EI0002_notify_timeout_excerpt.log")[1],
     "HCCL collective timed out", "HCCL_EXEC_TIMEOUT"),
    ("hccl_connect_timeout",
     "EI0006: 2024-08-05-18:15:21.270.506 Getting socket times out. Reason: Remote Rank did not send the data "
     "in time.", "could not connect", "HCCL_CONNECT_TIMEOUT"),
    ("hccl_connect_timeout",
     "[ERROR] HCCL(2717288,python3):2025-07-23-03:49:57.177.194 [hccl_socket_manager.cc:778] [2734049][Wait]"
     "[LinkEstablish]wait socket establish timeout, role[1] rank[12] timeout[120]", "could not connect",
     "HCCL_CONNECT_TIMEOUT"),
    ("stream_sync",
     "[ERROR] DEVICE(3456,ffff8c2cf010,python):2024-05-20-10:11:12.123.456 [mindspore/ccsrc/plugin/device/"
     "ascend/hal/device/ascend_stream_manager.cc:300] SyncAllStreams] Call runtime "
     "aclrtSynchronizeStreamWithTimeout error.", "aclrtSynchronizeStreamWithTimeout", "npu-smi"),
    ("stream_sync", "RuntimeError: Sync stream failed:Ascend_0", "NPU stream did not finish", ""),
    ("device_oom",
     "[EXCEPTION] DEVICE(12,ffff,python):2024-05-20-10:11:12.123.456 [mindspore/ccsrc/runtime/pynative/"
     "op_runner.cc:1] Device(id:0) memory isn't enough and alloc failed, kernel name: Default/MatMul-op1, "
     "alloc size: 1073741824B.", "out of device memory", "batch size"),
    ("nodes_timed_out", _lines(RW / "errors" / "msrun_time_out_nodes_excerpt.log")[3],
     "node(s) ['3'] never joined", "master_addr:master_port"),
    ("worker_exit",
     "[ERROR] ME(10534:140159504735104,MainProcess):2026-11-28-10:39:58.391.000 [mindspore/parallel/cluster/"
     "process_entity/_api.py:364] Worker process 10561 exit with exception. Error code: -9.",
     "worker process 10561 exited abnormally (code -9)", ""),
    ("main_process_gone",
     "[ERROR] MD(2212,fffe,python):2024-07-06-21:40:01.000.000 [mindspore/ccsrc/minddata/dataset/engine/"
     "datasetops/data_queue_op.cc:1] main process disappeared!", "msrun) disappeared", "dmesg"),
    ("scheduler_exit", _lines(RW / "errors" / "msrun_time_out_nodes_excerpt.log")[1],
     "scheduler (process 162146) exited abnormally", "scheduler.log"),
    ("node_lost",
     "[ERROR] DISTRIBUTED(7,f,python):2026-01-01-00:00:00.000.000 [meta_server_node.cc:1] The node: 1 is "
     "timed out. It may exit with exception, please check this node's log.",
     "node 1 lost from the cluster network", "link between the nodes"),
    ("signal", "Fatal Python error: Segmentation fault", "killed by a signal", "OOM killer"),
]


@pytest.mark.parametrize("name,line,cause,hint", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_signature(name, line, cause, hint):
    found = signatures.match(line)
    assert found is not None and found.name == name, found
    assert found.severity == signatures.FATAL
    assert cause in found.cause and hint in found.hint


def test_every_row_is_tested():
    tested = {c[0] for c in CASES} | {"cluster_retry", "error_line", "hccl_exec_timeout", "hccl_error",
                                      "cluster_build_timeout", "ring_allreduce"}
    assert {s.name for s in signatures.SIGNATURES} <= tested


@pytest.mark.parametrize("line", [
    # the real scheduler log: a retry, then success
    "[WARNING] DISTRIBUTED(73857,ffff9337e010,python):2024-07-06-20:48:53.672.758 [mindspore/ccsrc/"
    "distributed/cluster/cluster_context.cc:194] BuildCluster] Topology build timed out., retry(1/200).",
    "[INFO] HCCL(123,python):2024-01-01-00:00:00.000.000 [hccl_comm.cc:10] hccl comm init: no error",
    "[WARNING] HCCL(9,python):2024-01-01-00:00:00.000.000 [x.cc:1] HcclInit failed on device 0, use default",
    "2024-07-06 21:00:00,000 - mindformers[x.py:1] - WARNING - hccl error count 0, HCCL_EXEC_TIMEOUT not set",
    # the real dian-team scheduler.log's last line (pyarrow at exit): a warning, not a segfault
    "/arrow/cpp/src/arrow/filesystem/s3fs.cc:2598:  arrow::fs::FinalizeS3 was not called even though S3 was "
    "initialized.  This could lead to a segmentation fault at exit",
    "[WARNING] DISTRIBUTED(73857,f,python):2024-07-06-20:49:24.420.348 [collective_manager.cc:335] "
    "CreateCommunicationGroup] Begin initialize communication group on the device side: hccl_world_group",
])
def test_benign_lines_never_rate_as_fatal(line):
    found = signatures.match(line)
    assert found is None or found.severity != signatures.FATAL
    st = _state([line])
    assert st.failure is None and st.status == "ok"


def test_real_scheduler_log_with_retries_is_healthy():
    st = _state(_lines(RW / "train" / "dian-team_scheduler.log"), rank=None)
    assert st.cluster_retries >= 1 and st.failure is None


HANDLED = """2024-07-06 21:00:00,000 - mindformers[x] - INFO - { Epoch:[  1/  1], step:[    1/    4], loss: 2.0
Traceback (most recent call last):
  File "probe.py", line 3, in <module>
    import apex
ModuleNotFoundError: No module named 'apex'
[WARNING] HCCL(9,python):2024-01-01-00:00:00.000.000 [x.cc:1] hccl error: fallback to default, no error
2024-07-06 21:00:01,000 - mindformers[x] - INFO - { Epoch:[  1/  1], step:[    2/    4], loss: 1.5
2024-07-06 21:00:02,000 - mindformers[x] - INFO - { Epoch:[  1/  1], step:[    4/    4], loss: 1.0
2024-07-06 21:00:03,000 - mindformers[x] - INFO - .........Training Over!.............
""".splitlines()


def test_handled_traceback_is_not_a_failure():
    st = _state(HANDLED)
    assert st.failure is None and st.handled == 1 and st.status == "ok"
    job = JobLogs()
    for line in HANDLED:
        assert job.feed("h", 0, line) is None  # log lines never make a failure
    assert job.finish() is None and job.verdict() is None


def test_ee9999_failure_reads_failed_with_cause_and_hint():
    lines = HANDLED[:1] + [
        "[ERROR] DEVICE(3456,f,python):2024-05-20-10:11:12.123.456 [ascend_stream_manager.cc:300] SyncAllStreams] "
        "Call runtime aclrtSynchronizeStreamWithTimeout error.",
        "Traceback (most recent call last):",
        '  File "run_mindformer.py", line 9, in <module>',
        "    trainer.train()",
        "RuntimeError: Call runtime aclrtSynchronizeStreamWithTimeout error.",
        "EE9999: Inner Error!",
        "EE9999  The error from device(chipId:0, dieId:0), there is an aicore error, error code = 0x800000",
    ]
    st = _state(lines)
    assert st.status == "failed"
    f = st.failure
    assert f.kind == "stream_sync" and "aclrtSynchronizeStreamWithTimeout" in f.cause
    assert f.lines[-1].startswith("RuntimeError")  # the traceback comes with it


def test_real_msrun_excerpt_names_the_missing_node():
    st = _state(_lines(RW / "errors" / "msrun_time_out_nodes_excerpt.log"))
    assert st.status == "failed"
    assert st.failure.kind == "nodes_timed_out" and "['3']" in st.failure.cause


def test_real_hccl_excerpt_names_the_timeout_and_the_variable():
    st = _state(_lines(RW / "errors" / "hccl_EI0002_notify_timeout_excerpt.log"))
    assert st.failure is not None and st.failure.kind == "hccl_notify_timeout"
    assert "HCCL_EXEC_TIMEOUT" in st.failure.hint


def test_worker_log_ending_mid_training_then_main_process_gone():
    lines = _lines(FIX / "real-ascend" / "train-run-4card" / "worker_0.log")[:1500]
    st = _state(lines)
    assert st.status == "incomplete" and st.complete is False
    st = _state(lines + ["[ERROR] MD(1,f,python):2024-07-06-21:40:01.000.000 [data_queue_op.cc:1] "
                         "main process disappeared!"])
    assert st.status == "failed" and st.failure.kind == "main_process_gone"


def test_end_marker_makes_a_short_last_step_complete():
    # sink_size 2: the last logged step is 3124 of 3125, then "Training Over"
    st = _state(_lines(RW / "train" / "dian-team_worker_0.log"))
    assert st.progress() == (3 * 3125 - 1, 3 * 3125) and st.ended and st.status == "ok"


def test_process_fact_is_explained_by_the_rank_log_and_the_cluster():
    job = JobLogs()
    job.feed("h1", 1, "Traceback (most recent call last):")
    job.feed("h1", 1, '  File "x.py", line 1, in <module>')
    job.feed("h1", 1, "FileNotFoundError: dataset not found: /no/such")
    assert job.first_failure is None  # the log alone changes nothing
    f = job.feed_msrun("h1", "[ERROR] ME(1:2,MainProcess):2026-11-28-10:39:58.391.000 [mindspore/parallel/"
                             "cluster/process_entity/_api.py:364] Worker process 77 exit with exception. "
                             "Error code: 1.")
    assert f is not None and f.rank == 1 and "FileNotFoundError" in f.cause
    # a rank that SIGTERMed itself after its node left the cluster network: the cluster's words win
    job = JobLogs()
    job.feed("h0", None, "[ERROR] DISTRIBUTED(7,f,python):2026-01-01-00:00:00.000.000 [meta_server_node.cc:1] "
                         "The node: 1 is timed out. It may exit with exception, please check this node's log.")
    f = job.note_exit("h1", 1, 143)
    assert f is not None and "node 1 lost from the cluster network" in f.cause


def test_a_rank_own_exception_is_not_replaced_by_the_cluster_echo():
    job = JobLogs()
    job.feed("h0", None, "[ERROR] DISTRIBUTED(7,f,python):2026-01-01-00:00:00.000.000 [meta_server_node.cc:1] "
                         "The node: 1 is timed out. It may exit with exception, please check this node's log.")
    for line in ("Traceback (most recent call last):", '  File "x.py", line 1, in <module>',
                 "FileNotFoundError: dataset not found: /no/such"):
        job.feed("h1", 1, line)
    job.note_worker("h1", 5, 1)
    f = job.feed_msrun("h1", "[ERROR] ME(1:2,MainProcess):2026-11-28-10:39:58.391.000 [mindspore/parallel/"
                             "cluster/process_entity/_api.py:364] Worker process 5 exit with exception. Error code: 1.")
    assert "FileNotFoundError" in f.cause  # the rank's own words, not "node 1 lost"
    # ... but a failed all-reduce on the surviving rank is the echo of the lost node
    job = JobLogs()
    job.feed("h0", None, "[ERROR] DISTRIBUTED(7,f,python):2026-01-01-00:00:00.000.000 [meta_server_node.cc:1] "
                         "The node: 1 is timed out. It may exit with exception, please check this node's log.")
    for line in ("Traceback (most recent call last):", '  File "x.py", line 1, in <module>',
                 "RuntimeError: RunRingAllReduce failed."):
        job.feed("h0", 0, line)
    f = job.note_exit("h0", 0, 1)
    assert "node 1 lost from the cluster network" in f.cause and f.lines[-1].startswith("RuntimeError")


def test_the_lost_node_wins_over_the_all_reduce_echo_that_arrived_first():
    """Seen on the cluster (eth0 down): rank 0's failed all-reduce and msrun's report of its
    death arrived before the scheduler's word; once that word is read the cause names the lost
    node, not the echo (the end of a follow explains the first failure again)."""
    job = JobLogs()
    for line in ("Traceback (most recent call last):", '  File "x.py", line 1, in <module>',
                 "RuntimeError: RunRingAllReduce failed.", "[INFO] after the traceback"):
        job.feed("h0", 0, line)
    first = job.note_exit("h0", 0, 143)
    assert "all-reduce" in first.cause  # all that is known yet
    job.feed("h0", None, "[ERROR] DISTRIBUTED(7,f,python):2026-01-01-00:00:00.000.000 [meta_server_node.cc:1] "
                         "The node: 1 is timed out. It may exit with exception, please check this node's log.")
    assert "node 1 lost from the cluster network" in job.verdict().cause  # what every report reads
    job.finish()
    assert "node 1 lost from the cluster network" in job.first_failure.cause, job.first_failure.cause
