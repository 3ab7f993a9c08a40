"""Issue #7's fault: a worker process SIGKILLed mid-training.

Two real sshd hosts, one worker each under the real msrun; while ``submit --follow`` runs,
a thread finds rank 1's worker process on host 1 from outside (its environment carries the
job's marker and ``RANK_ID=1``; msrun and the scheduler are left alone) and kills it with
SIGKILL — no traceback, no last words, only the exit status msrun sees. The job must fail
within seconds naming host 1 and rank 1 and the signal, and nothing of it may be left on
either host. The parts that make that possible (msrun's own output followed, worker pids
mapped to ranks, the death put in words) are tested first without SSH.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import threading
import time

import pytest

from launcher.errors import ExitCode
from launcher.metrics.logparse import JobLogs, exit_status_text
from launcher.ops.follow_transport import parse_message
from launcher.ops.registry import Registry
from tests.conftest import write_exit_code
from tests.test_follow import _stream, _take
from tests.test_follow_cluster import BIN, _hostfile, _marked, _ssh, write_follow_job

#: msrun 2.9's line for a worker that died, as it lands in the node's state/launcher.log
MSRUN_LINE = ("[ERROR] ME(21:139715028351872,MainProcess):2026-11-28-16:51:26.179.000 "
              "[mindspore/parallel/cluster/process_entity/_api.py:364] Worker process {pid} exit with exception. "
              "Error code: {code}.")
LOSS = ("2026-11-28 16:51:25,100 - mindformers[mindformers/core/callback/callback.py:500] - INFO - "
        "{{ Epoch:[  1/  1], step:[    {step}/  400], loss: 1.000000, per_step_time: 250ms, lr: 0.0001")


# ---------------------------------------------------------------- the parts, without SSH
def test_exit_status_in_words():
    assert exit_status_text(-9) == "was killed by signal 9 (SIGKILL)"
    assert exit_status_text(-15) == "was killed by signal 15 (SIGTERM)"
    assert exit_status_text(1) == "exited with code 1"
    assert exit_status_text(137, shell=True) == "exited with code 137 (killed by signal 9 (SIGKILL))"
    assert exit_status_text(137) == "exited with code 137"  # Popen's codes: 137 is a plain exit
    assert exit_status_text(2, shell=True) == "exited with code 2"


def test_pid_message_parses():
    ev = parse_message("h1", "P\t4242\t3", 1.0)
    assert (ev.kind, ev.rank, ev.text) == ("pid", 3, "4242")
    assert parse_message("h1", "P\tx\t3") is None and parse_message("h1", "P\t42\t") is None


def test_msrun_line_names_the_rank_by_pid_and_marks_its_stream():
    job = JobLogs()
    for rank in (2, 3):
        job.feed("h1", rank, LOSS.format(step=4))
    job.note_worker("h1", 41, 3)
    job.note_worker("h1", 40, 2)
    assert job.feed_msrun("h1", "[WARNING] ME(21) Distributed job is spawned.") is None
    failure = job.feed_msrun("h1", MSRUN_LINE.format(pid=41, code=-9))
    assert (failure.host, failure.rank, failure.kind, failure.fatal) == ("h1", 3, "worker_exit", True)
    assert failure.message == "worker process 41 (rank 3) was killed by signal 9 (SIGKILL), as msrun reported"
    assert job.first_failure is failure  # a process fact, as msrun saw it
    assert job.states[("h1", 3)].failure is None and job.states[("h1", 2)].failure is None  # logs: silent
    assert failure.lines == (MSRUN_LINE.format(pid=41, code=-9),)  # the evidence, shown under it


def test_msrun_line_without_a_known_pid():
    one = JobLogs()
    one.feed("h1", 1, LOSS.format(step=2))
    assert one.feed_msrun("h1", MSRUN_LINE.format(pid=7, code=-9)).rank == 1  # the host's only rank
    two = JobLogs()
    two.feed("h1", 0, LOSS.format(step=2))
    two.feed("h1", 1, LOSS.format(step=2))
    failure = two.feed_msrun("h1", MSRUN_LINE.format(pid=7, code=-9))
    assert failure.rank is None and failure.message.startswith("worker process 7 was killed by signal 9")


def test_a_traceback_before_msrun_explains_the_failure_msrun_reports():
    job = JobLogs()
    for line in ("Traceback (most recent call last):", '  File "train.py", line 3, in <module>',
                 "ValueError: bad batch"):
        assert job.feed("h1", 1, line) is None  # the traceback alone is not a failure
    assert job.first_failure is None
    job.note_worker("h1", 9, 1)
    failure = job.feed_msrun("h1", MSRUN_LINE.format(pid=9, code=1))
    assert failure is not None and failure.kind == "worker_exit" and failure.rank == 1
    assert "ValueError: bad batch" in failure.cause and failure.lines[-1] == "ValueError: bad batch"
    assert job.states[("h1", 1)].failure.kind == "traceback"


def test_follow_script_maps_worker_pids_and_sends_msrun_after_the_workers(tmp_path):
    root = tmp_path / "job"
    (root / "state").mkdir(parents=True)
    (root / "msrun_log").mkdir()
    (root / "state" / "pid").write_text(f"1 {os.getpid()}\n")  # supervisor: this test
    launcher_log = root / "state" / "launcher.log"
    # msrun's own line, then a worker's line that msrun's `tail -f` copied (--join=True): only
    # the first is sent from this file (the worker's comes from worker_N.log)
    launcher_log.write_text("[WARNING] ME(21:1,MainProcess):2026-11-28-16:51:20.000.000 [mindspore/parallel/"
                            "cluster/process_entity/_api.py:250] Distributed job is spawned.\n"
                            "copied worker line\n")
    q, stop, t = _stream(root)
    worker = None
    try:
        # msrun's log is there before any worker's (so a naive reader would read it first)
        spawned = _take(q, lambda e: "spawned" in e.text)[-1]
        assert (spawned.kind, spawned.role, spawned.rank) == ("line", "msrun", None)
        worker_log = root / "msrun_log" / "worker_1.log"
        with worker_log.open("w") as fh:  # what msrun does: the log file is the worker's stdout
            worker = subprocess.Popen(["sleep", "60"], stdout=fh, stderr=subprocess.STDOUT)
        got = _take(q, lambda e: e.kind == "pid")
        assert (got[-1].rank, got[-1].text) == (1, str(worker.pid))
        # the worker's last words, then msrun's report, written back to back: always in that order
        with worker_log.open("a") as fh:
            fh.write("last words\n")
        with launcher_log.open("a") as fh:
            fh.write(MSRUN_LINE.format(pid=worker.pid, code=-9) + "\n")
        got = _take(q, lambda e: "Worker process" in e.text)
        texts = [e.text for e in got if e.kind == "line"]
        assert "last words" in texts and texts.index("last words") < len(texts) - 1, texts
        assert "copied worker line" not in texts
        assert got[-1].role == "msrun" and got[-1].rank is None
        worker.kill()
        worker.wait()
        write_exit_code(root / "state", 1)
        got = _take(q, lambda e: e.kind == "end")
        assert not [e for e in got if e.kind == "pid"]  # each worker is reported once
    finally:
        if worker is not None:
            worker.kill()
            worker.wait()
        stop.set()
        t.join(5)

#: Prints "<pid> <cmdline>" of every process on the host whose environment has both the
#: job's marker and RANK_ID=<rank>, except msrun itself (run inside the host: sh -c F sh JOB RANK).
FIND_RANK = r'''
for d in /proc/[0-9]*; do
  env=$(tr '\0' '\n' < "$d/environ" 2>/dev/null) || continue
  printf '%s\n' "$env" | grep -qx "ALAUNCH_JOB_ID=$1" || continue
  printf '%s\n' "$env" | grep -qx "RANK_ID=$2" || continue
  cmd=$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null)
  case "$cmd" in *msrun*) continue ;; esac
  echo "${d#/proc/} $cmd"
done
'''


class RankKiller(threading.Thread):
    """Waits for the job's rank 1 to log a few steps on host 1, then SIGKILLs its worker."""

    def __init__(self, cluster, name: str, *, rank: int = 1, after_step: int = 4, timeout: float = 60):
        super().__init__(name="rank-killer", daemon=True)
        self.cluster, self.name_, self.rank = cluster, name, rank
        self.after_step, self.deadline = after_step, time.monotonic() + timeout
        self.killed_at: dt.datetime | None = None  # wall time, local, of the kill
        self.victim: str = ""
        self.error: str = ""

    def _job(self):
        with Registry.in_state_dir() as registry:
            for record in registry.list():
                if record.name == self.name_ and len(record.nodes) > self.rank and record.nodes[self.rank].job_dir:
                    return record
        return None

    def _stepped(self, record) -> bool:
        log = self.cluster.hosts[self.rank].path(f"{record.nodes[self.rank].job_dir}/msrun_log/worker_{self.rank}.log")
        try:
            text = log.read_text(errors="replace")
        except OSError:
            return False
        return re.search(rf"step:\[\s*{self.after_step}/", text) is not None

    def run(self) -> None:
        record = None
        while time.monotonic() < self.deadline:
            record = record or self._job()
            if record is not None and self._stepped(record):
                break
            time.sleep(0.1)
        else:
            self.error = "rank 1 never logged its steps"
            return
        found = self.cluster.exec_on(self.rank, ["sh", "-c", FIND_RANK, "sh", record.id, str(self.rank)])
        procs = [line for line in found.stdout.splitlines() if line.strip()]
        workers = [p for p in procs if "train.py" in p]
        if len(workers) != 1:
            self.error = f"expected one rank-{self.rank} worker, found {procs!r} ({found.stderr.strip()})"
            return
        self.victim = workers[0]
        pid = self.victim.split()[0]
        self.killed_at = dt.datetime.now()
        kill = self.cluster.exec_on(self.rank, ["kill", "-9", pid])
        if kill.returncode != 0:
            self.error = f"kill -9 {pid} failed: {kill.stderr.strip()}"


@pytest.mark.slow
@pytest.mark.cluster
def test_worker_sigkilled_mid_training_fails_the_job_names_it_and_stops_both_hosts(
        ssh_cluster, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = write_follow_job(tmp_path, "kill1", steps=400, step_s=0.25)  # no FAIL_RANK: only the kill ends it
    killer = RankKiller(ssh_cluster, "kill1")
    killer.start()
    t0 = time.monotonic()
    code, out, err = run_cli("submit", str(job), "-H", str(_hostfile(ssh_cluster, tmp_path)), "--bin-dir", BIN,
                             "--cluster-time-out", "60", "--follow", *_ssh(ssh_cluster))
    took = time.monotonic() - t0
    killer.join(5)
    assert killer.error == "" and killer.killed_at is not None, killer.error
    assert code == ExitCode.JOB_FAILED, err
    job_id = out.strip().splitlines()[-1]
    host1 = ssh_cluster.hosts[1].address
    # the victim was the worker of this job (its command line is the job's entry script)
    assert "train.py" in killer.victim and "msrun" not in killer.victim
    # the user reads which host, which rank, and that it was killed by signal 9
    first = next((ln for ln in err.splitlines() if ln.startswith("first failure:")), "")
    assert f"{host1} rank 1" in first, err
    assert re.search(r"SIGKILL|signal 9", first), err
    with Registry.in_state_dir() as registry:
        record = registry.get(job_id)
        events = {e.kind: e for e in registry.events(job_id)}
    assert record.state == "failed", record
    assert f"rank 1 on {host1}" in record.reason and re.search(r"SIGKILL|signal 9", record.reason), record.reason
    # the gang stop came within 10 s of the kill, and nothing of the job is left on either host
    stopped_at = dt.datetime.fromisoformat(events["gang-stop"].time).astimezone().replace(tzinfo=None)
    to_stop = (stopped_at - killer.killed_at).total_seconds()
    print(f"killed [{killer.victim}]; kill -> gang stop {to_stop:.2f} s; submit --follow took {took:.1f} s")  # -s
    assert 0 < to_stop < 10, (killer.killed_at, stopped_at)
    assert _marked(ssh_cluster, job_id) == []
    assert took < 60  # unharmed, the job would have run 400 * 0.25 s = 100 s
