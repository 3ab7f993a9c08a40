"""A minimal real job for the follow tests: real msrun, a worker that prints MindFormers lines.

The worker (``train.py``, staged as the job's code tree) prints MindFormers 1.9 MFLossMonitor
lines for ``STEPS`` steps, ``STEP_S`` seconds apart, and raises on rank ``FAIL_RANK`` at step
``FAIL_AT`` — the shape of a real failure (a Python traceback in ``worker_1.log``, msrun's
``Worker process ... exit with exception``) in seconds instead of minutes.
"""

from __future__ import annotations

from pathlib import Path

import yaml

WORKER = r'''
import datetime, os, sys, time
if os.environ.get("MS_ROLE") == "MS_SCHED":
    print("scheduler up", flush=True)
    sys.exit(0)
rank = int(os.environ.get("RANK_ID", "0"))
steps, step_s = int(os.environ.get("STEPS", "8")), float(os.environ.get("STEP_S", "0.25"))
fail_rank, fail_at = int(os.environ.get("FAIL_RANK", "-1")), int(os.environ.get("FAIL_AT", "3"))

def now():
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]

def load_dataset(path):
    if not os.path.exists(path):
        raise FileNotFoundError("dataset not found: " + path)

handled_at = int(os.environ.get("HANDLED_AT", "-1"))
if rank == int(os.environ.get("SLOW_RANK", "-1")):  # a straggler: its steps take SLOW_FACTOR times longer
    step_s *= float(os.environ.get("SLOW_FACTOR", "1.5"))
peer_gone = []
if os.environ.get("WATCH_PEER") == "1":
    # rank 0 holds a connection from rank 1 (a collective's link); when rank 1's process dies the
    # link closes and rank 0 reports what HCCL would after its timeout: EI0002 naming remote rank 1
    import socket, threading
    port = int(os.environ["PEER_PORT"])
    if rank == 0:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", port))
        srv.listen(1)
        link, _ = srv.accept()

        def watch():
            link.recv(1)
            stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H:%M:%S.%f")
            print("EI0002: [PID: %d] %s.000 The wait execution of the Notify register times out. Reason: The "
                  "Notify register has not received the Notify record from remote rank: [1]." % (os.getpid(), stamp[:-3]),
                  flush=True)
            peer_gone.append(1)
        threading.Thread(target=watch, daemon=True).start()
    else:
        for _ in range(300):
            try:
                link = socket.create_connection((os.environ["MS_SCHED_HOST"], port), timeout=1)
                break
            except OSError:
                time.sleep(0.1)
for step in range(1, steps + 1):
    if peer_gone:
        raise RuntimeError("Sync stream failed:Ascend_0")
    if step == handled_at:
        # a healthy run's scary-looking lines: a handled traceback, HCCL words at INFO / WARNING
        try:
            load_dataset("/optional/extra_rank%d.mindrecord" % rank)
        except FileNotFoundError:
            import traceback
            traceback.print_exc()
            sys.stdout.flush()
        print("[WARNING] HCCL(%d,python):2026-01-01-00:00:00.000.000 [hccl_init.cc:1] HcclInit failed on "
              "device %d, use default" % (os.getpid(), rank), flush=True)
        print(now() + " - mindformers[train.py:30] - INFO - hccl comm init: no error", flush=True)
    if rank == fail_rank and step == fail_at:
        print(now() + " - mindformers[train.py:20] - INFO - failing now", flush=True)
        load_dataset("/no/such/dataset_rank%d.mindrecord" % rank)
    loss = 2.0 / step + 0.01 * rank
    print(now() + " - mindformers[mindformers/core/callback/callback.py:500] - INFO - "
          "{ Epoch:[  1/  1], step:[%5d/%5d], loss: %5.6f, per_step_time: %dms, lr: 0.0001, "
          "overflow cond: False, loss_scale: 1.0, global_norm: [0.0248], "
          "train_throughput_per_npu: 0.001T" % (step, steps, loss, int(step_s * 1000)), flush=True)
    time.sleep(step_s)
print(now() + " - mindformers[train.py:40] - INFO - done", flush=True)
'''


def write_follow_job(dirpath: Path, name: str, *, steps: int, step_s: float = 0.25,
                     fail_rank: int = -1, fail_at: int = 3, handled_at: int = -1, env: dict | None = None) -> Path:
    code = dirpath / f"{name}-code"
    code.mkdir(parents=True, exist_ok=True)
    (code / "train.py").write_text(WORKER, encoding="utf-8")
    job = {"name": name, "kind": "finetune", "template": "tiny_llama_cpu/finetune.yaml", "seed": 42,
           "nodes": "all", "cards_per_node": "all", "code": {"local": str(code)},
           "entry": {"script": "train.py"},
           "env": {"STEPS": steps, "STEP_S": step_s, "FAIL_RANK": fail_rank, "FAIL_AT": fail_at,
                   "HANDLED_AT": handled_at, **(env or {})}}
    path = dirpath / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- the tests
import datetime as dt  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from launcher.errors import ExitCode  # noqa: E402
from launcher.ops.registry import Registry  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
BIN = str(Path(sys.executable).parent)
REPO = Path(__file__).resolve().parent.parent


def _hostfile(cluster, tmp_path: Path) -> Path:
    hf = tmp_path / "hosts"
    hf.write_text("".join(cluster.hostfile_text(slots=1).splitlines(keepends=True)[:2]))
    return hf


def _ssh(cluster) -> list[str]:
    return ["--known-hosts", str(cluster.known_hosts)]


def _marked(cluster, job_id: str) -> list[str]:
    """Processes carrying the job's marker on host0 and host1 (read inside each host)."""
    found = []
    for i in (0, 1):
        out = cluster.exec_on(i, ["sh", "-c", f"grep -l ALAUNCH_JOB_ID={job_id} /proc/[0-9]*/environ 2>/dev/null"])
        found += [f"host{i}:{line}" for line in out.stdout.split() if "/self/" not in line]
    return found


def _ssh_children(pid: int) -> list[int]:
    """This machine's ``ssh`` processes whose parent is ``pid`` (the follower's clients)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            if d.name.isdigit() and int(stat[1]) == pid and (d / "comm").read_text().strip() == "ssh":
                found.append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_failure_on_rank_1_fails_the_job_names_it_and_stops_both_hosts(ssh_cluster, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = write_follow_job(tmp_path, "fail1", steps=400, step_s=0.25, fail_rank=1, fail_at=6)
    t0 = time.monotonic()
    code, out, err = run_cli("submit", str(job), "-H", str(_hostfile(ssh_cluster, tmp_path)), "--bin-dir", BIN,
                             "--cluster-time-out", "60", "--follow", "--verbose", *_ssh(ssh_cluster))
    took = time.monotonic() - t0
    assert code == ExitCode.JOB_FAILED, err
    job_id = out.strip().splitlines()[-1]
    host1 = ssh_cluster.hosts[1].address
    # the failing host and rank (msrun's report of the worker's exit: a process fact), the cause
    # in words from the rank's log, and the traceback's last lines
    assert f"first failure: {host1} rank 1 (worker_exit): worker process " in err, err
    assert "cause: Python exception on this rank: FileNotFoundError: dataset not found: " \
           "/no/such/dataset_rank1.mindrecord" in err, err
    assert 'raise FileNotFoundError("dataset not found: " + path)' in err
    assert "load_dataset(" in err
    # lines of both hosts, tagged host/rank, arrived while following
    assert f"{ssh_cluster.hosts[0].address}/0" in out and f"{host1}/1" in out
    with Registry.in_state_dir() as registry:
        record = registry.get(job_id)
        events = {e.kind: e for e in registry.events(job_id)}
    assert record.state == "failed" and f"rank 1 on {host1}" in record.reason
    # nothing of the job is left on either host ...
    assert _marked(ssh_cluster, job_id) == []
    # ... and the stop came within 10 s of the failure (the worker printed its time just before)
    log = ssh_cluster.hosts[1].path(f"{record.nodes[1].job_dir}/msrun_log/worker_1.log").read_text()
    failed_at = dt.datetime.strptime(re.search(r"^(\S+ \S+) - .* failing now$", log, re.M).group(1),
                                     "%Y-%m-%d %H:%M:%S,%f")
    stopped_at = dt.datetime.fromisoformat(events["gang-stop"].time).astimezone().replace(tzinfo=None)
    assert 0 < (stopped_at - failed_at).total_seconds() < 10, (failed_at, stopped_at)
    assert took < 90  # rank 0 alone would have run 400 * 0.25 s = 100 s


def test_logs_follow_tags_both_hosts_survives_sigkill_and_reattaches(ssh_cluster, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = write_follow_job(tmp_path, "reattach", steps=70, step_s=0.25)
    code, out, err = run_cli("submit", str(job), "-H", str(_hostfile(ssh_cluster, tmp_path)), "--bin-dir", BIN,
                             "--cluster-time-out", "60", *_ssh(ssh_cluster))
    assert code == 0, err
    job_id = out.strip().splitlines()[-1]
    # a separate alaunch follows, is SIGKILLed mid-job
    env = {**os.environ, "ALAUNCH_STATE_DIR": os.environ["ALAUNCH_STATE_DIR"]}
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "logs", job_id, "-f", "--verbose", *_ssh(ssh_cluster)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if "step:[   10/   70]" in line:
            break
    clients = _ssh_children(proc.pid)  # one OpenSSH client per node, read by one thread
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any("step:[" in s for s in seen), "".join(seen[-20:]) + proc.stderr.read()
    assert len(clients) == 2, clients
    # the job runs on; status reattaches and reads the progress from the logs
    code, out, _ = run_cli("status", job_id, *_ssh(ssh_cluster))
    assert code == ExitCode.JOB_RUNNING, out
    flat = re.sub(r"[\s│]+", " ", out)  # the table may wrap the detail cell at 80 columns
    assert re.search(r"step \d+/70, loss \d", flat), out
    # the remote followers of the killed alaunch go away (their heartbeat hits a closed channel)
    time.sleep(3)
    for i in (0, 1):
        # ('[.]': the grep's own command line must not match its pattern)
        ps = ssh_cluster.exec_on(i, ["sh", "-c", "grep -l 'WORKER[.]match' /proc/[0-9]*/cmdline 2>/dev/null"])
        assert [p for p in ps.stdout.split() if "/self/" not in p] == [], ps.stdout
    # ... and so do its ssh clients here (their next write hits the closed pipe): no orphans
    assert [p for p in clients if _running(p)] == [], clients
    # Ctrl-C, and kill (SIGTERM takes the same path): the follower kills and reaps its clients
    # before it exits, the job is not touched, and it says how to reattach
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen([sys.executable, "-m", "launcher", "logs", job_id, "-f", "--verbose",
                                 *_ssh(ssh_cluster)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        while "step:[" not in proc.stdout.readline():
            assert proc.poll() is None
        clients = _ssh_children(proc.pid)
        proc.send_signal(sig)
        proc.wait(timeout=15)
        assert len(clients) == 2 and [p for p in clients if _running(p)] == [], (sig, clients)
        said = proc.stderr.read()
        assert f"{job_id} keeps running on its hosts. Reattach: alaunch logs {job_id} -f" in said, said
        assert run_cli("status", job_id, *_ssh(ssh_cluster))[0] == ExitCode.JOB_RUNNING
    time.sleep(3)  # the host scripts end at their next heartbeat: nothing left behind there either
    for i in (0, 1):
        ps = ssh_cluster.exec_on(i, ["sh", "-c", "grep -l 'WORKER[.]match' /proc/[0-9]*/cmdline 2>/dev/null"])
        assert [p for p in ps.stdout.split() if "/self/" not in p] == [], ps.stdout
    # a new logs -f follows to the end: both hosts' lines, tagged, and the job's code; it says
    # where it resumes (the earlier followers' lines are read for the summary, not shown again)
    code, out, err = run_cli("logs", job_id, "-f", "--verbose", *_ssh(ssh_cluster))
    assert code == ExitCode.OK, err
    assert re.search(r"alaunch: resuming at step \d+/70, [\d,]+ lines skipped \(shown before\); --from-start "
                     r"for all", err), err
    assert re.search(r"loss lines\s+│\s+70\s", err), err  # every loss of the run, not those read last
    for i in (0, 1):
        tag = f"{ssh_cluster.hosts[i].address}/{i}"
        assert re.search(rf"^{re.escape(tag)}\s+\| .*step:\[   70/   70\]", out, re.M), out[-2000:]
    assert f"{job_id}: succeeded" in err
    assert run_cli("status", job_id, *_ssh(ssh_cluster))[0] == ExitCode.OK
    # after the end: -f says it ended and how to see every line; --summary reads the hosts
    code, out, err = run_cli("logs", job_id, "-f", *_ssh(ssh_cluster))
    assert code == ExitCode.OK and f"{job_id} has ended (succeeded): nothing to follow" in err, err
    assert f"alaunch logs {job_id} -f --from-start" in err, err
    code, out, err = run_cli("logs", job_id, "--summary", *_ssh(ssh_cluster))
    assert code == ExitCode.OK and re.search(r"progress\s+│\s+70/70 steps", out) and "step:[" not in out, out
