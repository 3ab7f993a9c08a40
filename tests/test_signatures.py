"""The failure-signature table (launcher/metrics/signatures.py) and how the first failure is picked.

Coverage by construction: every row of the table has lines it must match and near misses it
must not in tests/fixtures/signatures/rows.txt (a row without both fails
``test_every_row_has_a_line_it_matches_and_a_near_miss``); every known CANN code and runtime
result number is carried by one of those lines. The classes real logs were misjudged in
(tests/fixtures/diagnosis/, see its README) are read as ``alaunch logs FILE --json`` reads them.
Log text explains failures, never makes one.

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


ROWS_FILE = FIX / "signatures" / "rows.txt"


def read_rows(path: Path = ROWS_FILE) -> dict[str, dict[str, list[str]]]:
    """rows.txt: ``## row`` headers, ``+ line`` must match, ``- line`` near misses, ``#`` notes."""
    rows: dict[str, dict[str, list[str]]] = {}
    current = None
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if raw.startswith("## "):
            current = rows.setdefault(raw[3:].strip(), {"+": [], "-": []})
        elif raw[:2] in ("+ ", "- "):
            assert current is not None, f"{path}:{n}: a line before any '## row' header"
            current[raw[0]].append(raw[2:])
        else:
            assert not raw.strip() or raw.startswith("#"), f"{path}:{n}: not '## row', '+ ', '- ' or '#'"
    return rows


ROWS = read_rows()
MATCHES = [(name, line) for name, r in ROWS.items() for line in r["+"]]
MISSES = [(name, line) for name, r in ROWS.items() for line in r["-"]]


def test_every_row_has_a_line_it_matches_and_a_near_miss():
    """Coverage by construction: a row added to the table without text fails here."""
    names = {s.name for s in signatures.SIGNATURES}
    missing = sorted(n for n in names if not (ROWS.get(n, {}).get("+") and ROWS.get(n, {}).get("-")))
    assert not missing, f"rows with no '+' or no '-' line in {ROWS_FILE}: {missing}"
    assert set(ROWS) <= names, f"rows.txt names rows the table does not have: {set(ROWS) - names}"


def test_every_known_code_and_result_number_is_carried_by_a_line():
    found = {signatures.match(line).code for _, line in MATCHES if signatures.match(line) is not None}
    assert set(signatures.CANN_CODES) - found == set()
    assert {str(n) for n in signatures.RT_RESULTS} - found == set()


@pytest.mark.parametrize("name,line", MATCHES, ids=[f"{n}+{i}" for i, (n, _) in enumerate(MATCHES)])
def test_row_matches_its_lines(name, line):
    found = signatures.match(line)
    assert found is not None and found.name == name, found
    row = next(s for s in signatures.SIGNATURES if s.name == name)
    assert found.severity == row.severity
    assert found.cause and "{" not in found.cause and "?" not in found.cause.split("(")[0], found.cause


@pytest.mark.parametrize("name,line", MISSES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(MISSES)])
def test_row_misses_its_near_misses(name, line):
    found = signatures.match(line)
    assert found is None or found.name != name or found.severity != signatures.FATAL, found


@pytest.mark.parametrize("line,cause,hint", [
    ("EE9999: Inner Error!", "CANN error EE9999: an internal error of the CANN runtime", "lines just before"),
    ("EL0003: [PID: 3213] 2024-09-01-10:00:00.000.000 The argument is invalid.", "EL0003 from the driver", "npu-smi"),
    ("EZ3002: [PID: 11] 2024-09-01-10:00:00 Optype [Xyz] of Ops kernel [AIcoreEngine] is unsupported.",
     "EZ3002 from an operator", ""),
    ("EJ0001: 2024-05-21-11:57:54.167.645 Failed to initialize the HCCP process.", "last training process",
     "kill the previous job"),
    ("EH9999: [PID: 1] 2025-03-02-11:40:07.517.201 Inner Error! rtStreamSynchronizeWithTimeout execute failed, "
     "task timeout, error code is 107020", "task timeout", "HCCL_EXEC_TIMEOUT"),
    ("EB1234: [PID: 1] 2025-03-02-11:40:07.517.201 a code in no table", "EB1234 from the TBE pass compiler", ""),
    # a code in no table: what it says is the cause
    ("EE1001: [PID: 40213] 2025-01-01-10:00:00.000.000 The argument is invalid.Reason: Set device failed, invalid "
     "device id 8", "EE1001 from the CANN runtime (device execution): The argument is invalid.Reason: Set device "
     "failed, invalid device id 8", "npu-smi"),
    ("rtLaunchKernel failed, ret = 507099", "507099 (the device failed while executing)", ""),
    (_lines(RW / "errors" / "hccl_EI0002_notify_timeout_excerpt.log")[1], "HCCL collective timed out",
     "HCCL_EXEC_TIMEOUT"),
])
def test_cause_and_hint_words(line, cause, hint):
    found = signatures.match(line)
    assert found is not None and found.severity == signatures.FATAL
    assert cause in found.cause and hint in found.hint, (found.cause, found.hint)


def test_a_timeout_names_its_remote_rank():
    f = signatures.match(_lines(RW / "errors" / "hccl_EI0002_notify_timeout_excerpt.log")[1])
    assert f.remote == 24 and f.role == signatures.EFFECT


def test_shell_echo_is_never_a_finding():
    for line in ("export HCCL_EXEC_TIMEOUT=17340", "+ export HCCL_EXEC_TIMEOUT=17340", "HCCL_EXEC_TIMEOUT=17340",
                 "++ msrun --worker_num=8 run.py  # EI0002 HCCL execute timed out", "declare -x ASCEND_RT_VISIBLE_DEVICES=0"):
        assert signatures.match(line) is None, line


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


# ---------------------------------------------------------------- the classes of issue 26's "Why"
DIAG = FIX / "diagnosis"


def _json(path: Path) -> dict:
    from launcher.cli.logview import summary_payload
    from launcher.metrics.logfiles import discover, parse_files
    return summary_payload(parse_files(discover(path)))


@pytest.mark.parametrize("name,family,code,words,where", [
    ("prefixed_task_timeout.log", "ACL", "EH9999", "task timeout", ("worker-1", None)),
    ("aicpu_exception.log", "AICPU", "E39999", "AI CPU operator failed", ("local", None)),
    ("native_crash_hccl.log", "native crash", None, "Segmentation fault", ("local", None)),
    ("mf_global_norm_stop.log", "MindFormers monitor", None, "global norm [13.9]", ("local", None)),
    ("echoed_export_stream_timeout.log", "runtime", "EE1002", "stream synchronize timeout", ("local", None)),
    ("ej0001_hccp.log", "HCCP", "EJ0001", "last training process", ("local", None)),
    ("data_queue_then_stream.log", "data queue", None, "data channel failed", ("local", None)),
    # classes named right before: they stay right
    ("rank_table_invalid.log", "HCCL", "EI0004", "rank table file could not be read", ("local", None)),
    ("device_id_invalid.log", "runtime", "EE1001", "invalid device, set device=8", ("local", None)),
])
def test_each_class_is_named_with_its_family_and_cause(name, family, code, words, where):
    """What `alaunch logs FILE --json` says of each class the held-back logs missed."""
    d = _json(DIAG / name)
    first = d["first_failure"]
    assert d["status"] == "failed" and first is not None, d["status"]
    assert (first["family"], first["code"]) == (family, code), first
    assert words in first["cause"], first["cause"]
    assert (first["host"], first["rank"]) == where


def test_native_crash_names_the_library_from_its_backtrace():
    assert "in libhccl.so" in _json(DIAG / "native_crash_hccl.log")["first_failure"]["cause"]


def test_the_monitor_stop_stays_a_failure_when_another_rank_logs_after_it():
    """mf_global_norm_stop.log ends with a loss line after the ValueError (a combined console):
    the stop is final, not handled."""
    d = _json(DIAG / "mf_global_norm_stop.log")
    assert d["streams"][0]["status"] == "failed"


def test_the_first_in_time_across_ranks_is_the_failure_and_the_others_its_consequences():
    d = _json(DIAG / "first_in_time")
    first = d["first_failure"]
    assert first["rank"] == 1 and first["family"] == "memory" and first["at"].startswith("2025-03-02 10:02:11")
    assert [(c["rank"], c["code"]) for c in first["consequences"]] == [(0, "EI0002")]


def test_a_timeout_naming_a_silent_rank_names_that_rank():
    d = _json(DIAG / "silent_rank")
    first = d["first_failure"]
    assert first["rank"] == 1 and first["kind"] == "rank_silent", first
    assert "rank 1 stopped without a word after 10:00:12" in first["cause"]
    assert "rank 0" in first["cause"]


def test_a_tagged_console_is_split_into_ranks():
    d = _json(DIAG / "mpi_console.log")
    assert sorted(s["rank"] for s in d["streams"] if s["rank"] is not None) == [0, 1]
    first = d["first_failure"]
    assert first["rank"] == 1 and first["family"] == "native crash" and "libhccl.so" in first["cause"]


def test_healthy_log_with_warnings_exports_and_a_handled_traceback_stays_ok():
    d = _json(DIAG / "healthy_warnings.log")
    assert d["status"] == "ok" and d["first_failure"] is None, d["first_failure"]
    assert d["streams"][0]["handled"] == 1


def test_teardown_noise_after_the_end_marker_is_not_a_failure():
    lines = _lines(DIAG / "healthy_warnings.log") + [
        "[ERROR] HCCL(9,python):2025-03-02-10:00:16.000.000 [hccl_comm.cc:1] destroy comm failed, ret 4",
        "[ERROR] RUNTIME(9,python):2025-03-02-10:00:16.000.000 [device.cc:1] Device 0 report error."]
    assert _state(lines).status == "ok"
    assert _state(lines + ["Fatal Python error: Segmentation fault"]).status == "failed"  # a crash is not noise


def test_a_heartbeat_lost_report_points_at_the_server_it_names():
    """HCCL names the root of a cluster fault by server and device (CANN's HCCL guide, EI0002):
    the rank on that server whose log says why is the first failure, else that rank went silent."""
    job = JobLogs()
    job.feed("10.0.0.11", 0, "2025-03-02 10:00:10,000 - mindformers[x] - INFO - { Epoch:[  1/  1], step:[    1/  200], loss: 2.0")
    job.feed("10.0.0.12", 1, "2025-03-02 10:00:10,000 - mindformers[x] - INFO - { Epoch:[  1/  1], step:[    1/  200], loss: 2.0")
    job.feed("10.0.0.11", 0, "EI0002: [PID: 7277] 2025-03-02-10:32:11.645.648 The wait execution of the Notify register "
                             "times out. Reason: The Notify register has not received the Notify record from remote rank "
                             "[unknown].")
    job.feed("10.0.0.11", 0, "[ERROR]HCCL(7277,python):2025-03-02-10:32:11.700.000[task_exception_handler.cc:610][7277]"
                             "Cluster Exception Location[IP/ID]:[10.0.0.12/1], Arrival Time:[Sun Mar 2 10:02:34 2025], "
                             "Discoverer:[10.0.0.11/0], ExceptionType:[Heartbeat Lost Occurred], Possible Reason:1. "
                             "Process has exited, 2. Network Disconnected")
    job.finish()
    f = job.log_failure()
    assert (f.host, f.rank, f.kind) == ("10.0.0.12", 1, "rank_silent"), f


def test_a_followed_job_names_the_rank_a_timeout_waited_for_whichever_exit_msrun_reports_first():
    """The e2e shape without SSH: rank 1 SIGKILLed (no words), rank 0 times out on it and exits;
    msrun on host 0 happens to report rank 0's exit first. The first failure is rank 1; rank 0
    is listed as its consequence."""
    from launcher.cli.logview import summary_payload
    job = JobLogs()
    for host, rank in (("h0", 0), ("h1", 1)):
        job.feed(host, rank, "2025-03-02 10:00:10,000 - mindformers[x] - INFO - { Epoch:[  1/  1], "
                             "step:[    4/  200], loss: 2.0, per_step_time: 250ms")
    job.note_worker("h0", 100, 0)
    job.note_worker("h1", 101, 1)
    job.feed("h0", 0, "EI0002: [PID: 100] 2025-03-02-10:00:11.100.000 The wait execution of the Notify register "
                      "times out. Reason: The Notify register has not received the Notify record from remote rank: [1].")
    first = job.feed_msrun("h0", "[ERROR] ME(9:9,MainProcess):2025-03-02-10:00:12.000.000 [_api.py:364] "
                                 "Worker process 100 exit with exception. Error code: 1.")
    assert (first.host, first.rank, first.kind) == ("h1", 1, "rank_silent"), first  # named before msrun says
    job.feed_msrun("h1", "[ERROR] ME(9:9,MainProcess):2025-03-02-10:00:12.500.000 [_api.py:364] "
                         "Worker process 101 exit with exception. Error code: -9.")
    job.finish()
    d = summary_payload(job)["first_failure"]
    assert (d["host"], d["rank"]) == ("h1", 1) and "killed by signal 9 (SIGKILL)" in d["cause"], d
    assert "rank 0 on h0 timed out waiting for it" in d["cause"]
    assert [(c["host"], c["rank"], c["code"]) for c in d["consequences"]] == [("h0", 0, "EI0002")]


def test_the_cause_names_the_remote_rank_to_read_next():
    f = signatures.match(_lines(RW / "errors" / "hccl_EI0002_notify_timeout_excerpt.log")[1])
    assert "waiting for remote rank 24" in f.cause, f.cause


def test_msrun_names_the_signal_a_worker_died_of():
    f = signatures.match("[ERROR] ME(1:2,MainProcess):2026-11-28-10:39:58.391.000 [mindspore/parallel/cluster/"
                         "process_entity/_api.py:364] Worker process 77 exit with exception. Error code: -11.")
    assert "killed by signal 11 (SIGSEGV)" in f.cause, f.cause


def test_an_error_long_before_the_timeout_it_explains_is_named_not_the_timeout():
    first = _json(DIAG / "earlier_error_then_timeout.log")["first_failure"]
    assert first["kind"] == "cann_module" and "Run graph failed" in first["message"], first
    assert "30 min 0 s before the EE9999 failure it explains" in first["cause"], first["cause"]
    # the same error within seconds of the timeout is part of its report: the timeout is named
    lines = [ln.replace("10:02:11.482", "10:32:10.482") for ln in _lines(DIAG / "earlier_error_then_timeout.log")]
    f = _state(lines).failure
    assert f.kind == "stream_sync" or f.code == "EE9999", f


@pytest.mark.parametrize("line,host,rank,rest", [
    ("worker-1: EH9999: x", "worker-1", None, "EH9999: x"),
    ("10.0.0.12: EE1002: x", "10.0.0.12", None, "EE1002: x"),
    ("[1,3]<stderr>:Fatal Python error: Aborted", None, 3, "Fatal Python error: Aborted"),
    ("[rank2]: Traceback (most recent call last):", None, 2, "Traceback (most recent call last):"),
    ("(TaskRunner pid=467613) EJ0001: [PID: 468348] x", "TaskRunner", None, "EJ0001: [PID: 468348] x"),
])
def test_tool_prefixes_are_split_off(line, host, rank, rest):
    from launcher.metrics.logparse import split_prefix
    assert split_prefix(line) == (host, rank, rest)


@pytest.mark.parametrize("line", ["ValueError: x", "Note: x", "EE9999: Inner Error!", "E39999: x",
                                  "2024-05-20 10:11:12,000 - mindformers - INFO - x", "RuntimeError: a-b: c"])
def test_lines_that_only_look_prefixed_are_left_alone(line):
    from launcher.metrics.logparse import split_prefix
    assert split_prefix(line) is None


def test_the_json_is_plain_data_with_the_stream_failure_time_as_text():
    import json
    d = _json(DIAG / "first_in_time")
    json.dumps(d)  # no datetime left for a default= to hide
    assert {s["rank"]: s["failure"]["at"] for s in d["streams"]} == {0: "2025-03-02 10:32:11.713",
                                                                     1: "2025-03-02 10:02:11.482"}
