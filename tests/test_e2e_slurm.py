"""The job file on a real Slurm cluster: sbatch + srun + msrun, states from the scheduler.

The cluster (tests/slurm/cluster.py) is a real munged + slurmctld on this machine and one
slurmd per network namespace (n1, n2; 1 CPU each), no accounting. The login node is
``localhost``; the workdir is this machine's disk, shared by both nodes as a cluster's shared
filesystem would be. Every test drives the CLI (``-H target.yaml``) as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from launcher.errors import ExitCode
from launcher.ops.registry import Registry
from tests.test_e2e_local import losses, write_job, write_toy_data

pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.ms]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_data(tmp_path_factory.mktemp("toy"))


def _target(cluster, tmp_path: Path, **extra) -> Path:
    path = tmp_path / f"slurm-{len(extra)}-{'-'.join(map(str, extra.values()))}.yaml".replace(":", "")
    path.write_text(cluster.target_text(tmp_path / "shared", **extra))
    return path


def _record(job_id: str):
    with Registry.in_state_dir() as registry:
        return registry.get(job_id)


def _lora(ckpt: Path) -> dict:
    import mindspore as ms
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(ckpt)).items() if "lora" in k.lower()}


def _wait(run_cli, job_id: str, states: set[str], timeout: float = 300) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        run_cli("status", job_id)
        state = _record(job_id).state
        if state in states:
            return state
        time.sleep(1)
    raise AssertionError(f"{job_id} still {_record(job_id).state} after {timeout} s, not in {states}")


def _sleeper(tmp_path: Path, toy, name: str, seconds: int, fail_rank: int | None = None) -> Path:
    """A job whose entry (a real python under msrun) sleeps, or exits 3 on one rank."""
    code = tmp_path / f"{name}-code"
    code.mkdir()
    (code / "entry.py").write_text(
        "import os, sys, time\n"
        "rank = int(os.environ.get('RANK_ID', os.environ.get('MS_NODE_ID', '0')))\n"
        "print('entry started rank', rank, flush=True)\n"
        f"if rank == {fail_rank!r}:\n"
        "    time.sleep(2)\n"
        "    raise RuntimeError('injected failure on rank %d' % rank)\n"
        f"time.sleep({seconds})\n")
    job = yaml.safe_load(write_job(tmp_path, toy, epochs=1, name=name).read_text())
    job["code"] = {"local": str(code)}
    job["entry"] = {"script": "entry.py"}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, allow_unicode=True))
    return path


def _job_procs(slurm_id: str) -> list[int]:
    """Processes of one Slurm job on this machine (its tasks carry SLURM_JOB_ID in their env)."""
    want = f"SLURM_JOB_ID={slurm_id}".encode()
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if want in (p / "environ").read_bytes().split(b"\0"):
                    found.append(int(p.name))
            except OSError:
                pass
    return found


def _worker_pid(slurm_id: str, rank: int) -> int:
    """The msrun worker process of ``rank`` in one Slurm job (its env: MS_ROLE and RANK_ID)."""
    for pid in _job_procs(slurm_id):
        try:
            env = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if b"MS_ROLE=MS_WORKER" in env and f"RANK_ID={rank}".encode() in env:
            return pid
    raise AssertionError(f"no worker of rank {rank} in Slurm job {slurm_id}")


def _cards_of(run_cli, job_id: str, want: set, timeout: float = 120) -> dict:
    """``status --json``'s telemetry rows {(host, card): row} once they cover ``want``."""
    import json
    rows, end = {}, time.monotonic() + timeout
    while time.monotonic() < end:
        code, out, err = run_cli("status", job_id, "--json")
        rows = {(r["host"], r["card"]): r for r in json.loads(out)["telemetry"]}
        if want <= set(rows) and all(r["samples"] >= 2 for r in rows.values()):
            return rows
        time.sleep(2)
    raise AssertionError(f"no telemetry of {sorted(want)} after {timeout} s: {rows}")


def test_queued_with_reason_then_runs_cancel_and_timeout(slurm_env, run_cli, toy, tmp_path, monkeypatch):
    """A holds both nodes; B (time limit 1 min) waits `queued` (Resources); cancelling A leaves
    none of its processes and B starts; B then outlives its limit -> failed (TIMEOUT).
    A, followed (`logs -f`) on nodes with an npu-smi: its `status --json` has each node's card
    (the one Slurm gave it, sampled on that node, not the login host's), and its cancel leaves no
    sampler behind either."""
    import subprocess
    import sys
    monkeypatch.chdir(tmp_path)
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", f"{slurm_env.npu_smi_bin()}:{path}")  # A's nodes have npu-smi (sbatch exports it)
    first = _sleeper(tmp_path, toy, "holder", 600)
    job = yaml.safe_load(first.read_text())
    first.write_text(yaml.safe_dump({**job, "telemetry_every": 2}, allow_unicode=True))
    second = _sleeper(tmp_path, toy, "limited", 600)
    code, out, err = run_cli("submit", str(first), "-H", str(_target(slurm_env, tmp_path)))
    assert code == 0, err
    a = out.strip().splitlines()[-1]
    monkeypatch.setenv("PATH", path)  # B's do not: no sampler runs for it
    assert _wait(run_cli, a, {"running"}, 120) == "running"
    follower = subprocess.Popen([sys.executable, "-m", "launcher", "logs", a, "-f", "--raw"], env=dict(os.environ),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rows = _cards_of(run_cli, a, {("n1", 0), ("n2", 0)})
    finally:
        follower.terminate()
        follower.wait(30)
    assert set(rows) == {("n1", 0), ("n2", 0)}, rows  # the job's card on each node, no other
    assert all(r["health"] == "OK" and r["hbm_total_mb"] == 65536 for r in rows.values()), rows
    # `top` on the Slurm target: each node's state and the job on it (sinfo, squeue through the
    # login node), its cards from the job's newest sample there: the job's card held by it
    code, out, err = run_cli("top", "-H", str(_target(slurm_env, tmp_path)), "--json")
    top = {h["host"]: h for h in json.loads(out)["hosts"]}
    assert code == 0 and sorted(top) == ["n1", "n2"], out + err
    sid = _record(a).meta["slurm_job_id"]
    for host in top.values():
        assert f"{a} (Slurm {sid})" in host["scheduler"] and len(host["cards"]) == 8, host
        held = {c["card"]: (c["holder"] or {}).get("job_id") for c in host["cards"]}
        assert held[0] == a and 0 not in host["free"], host
    code, out, err = run_cli("submit", str(second), "-H", str(_target(slurm_env, tmp_path, time="1")))
    assert code == 0, err
    b = out.strip().splitlines()[-1]
    deadline = time.monotonic() + 30  # Slurm gives the reason at its next scheduling pass
    while True:
        code, out, _ = run_cli("status", b)
        record = _record(b)
        if "(Resources)" in (record.reason or "") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert code == ExitCode.JOB_RUNNING and "queued" in out
    assert record.state == "queued" and "PENDING (Resources)" in record.reason, record.reason
    code, out, _ = run_cli("jobs")
    assert "queued" in out and "running" in out

    sid_a = _record(a).meta["slurm_job_id"]
    deadline = time.monotonic() + 60
    while not _job_procs(sid_a) and time.monotonic() < deadline:  # msrun + the entry are up
        time.sleep(0.5)
    assert _job_procs(sid_a)
    code, out, err = run_cli("cancel", a)
    assert code == 0 and "left the queue" in out, out + err
    assert _record(a).state == "cancelled"
    assert _job_procs(sid_a) == []  # nothing of A is left on either node

    assert _wait(run_cli, b, {"running"}, 60) == "running"
    state = _wait(run_cli, b, {"failed", "succeeded", "cancelled"}, 240)
    record = _record(b)
    assert state == "failed" and "TIMEOUT" in record.reason, record.reason
    assert run_cli("status", b)[0] == ExitCode.JOB_FAILED
    assert _job_procs(record.meta["slurm_job_id"]) == []


def test_failing_rank_fails_the_job_naming_rank_and_cause(slurm_env, run_cli, toy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = _sleeper(tmp_path, toy, "bad-rank", 600, fail_rank=1)
    code, out, err = run_cli("submit", str(job), "-H", str(_target(slurm_env, tmp_path)), "--follow")
    assert code == ExitCode.JOB_FAILED, err[-2000:]
    job_id = out.strip().splitlines()[-1]
    record = _record(job_id)
    assert record.state == "failed"
    assert "rank 1" in record.reason and "injected failure on rank 1" in record.reason, record.reason
    assert "first failure: localhost rank 1" in err
    assert _job_procs(record.meta["slurm_job_id"]) == []  # rank 0's sleeper was stopped too


def test_follow_ends_when_slurm_kills_the_script_without_a_word(slurm_env, toy, tmp_path):
    """SIGKILL to the batch script (no trap runs, no exit code written; Slurm ends the job and
    kills its steps): the follower still ends, because the watcher writes the end from Slurm's
    verdict."""
    import subprocess
    import sys
    job = _sleeper(tmp_path, toy, "killed", 600)
    env = {**os.environ, "SLURM_CONF": str(slurm_env.conf), "ALAUNCH_STATE_DIR": str(tmp_path / "st")}
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "submit", str(job), "-H",
                             str(_target(slurm_env, tmp_path)), "--follow"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        sid = None
        while time.monotonic() < deadline and sid is None:
            with Registry(tmp_path / "st" / "registry.sqlite3") as registry:
                jobs = registry.list()
                if jobs and jobs[0].state == "running":
                    sid = jobs[0].meta["slurm_job_id"]
            time.sleep(0.5)
        assert sid, "the job did not start"
        while not _job_procs(sid) and time.monotonic() < deadline:
            time.sleep(0.5)
        script = [p for p in _job_procs(sid)  # the batch shell (slurmd runs its copy, slurm_script)
                  if b"slurm_script" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert script
        for pid in script:
            os.kill(pid, 9)  # as a crash would: no trap runs, nothing written
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, err[-2000:]
    with Registry(tmp_path / "st" / "registry.sqlite3") as registry:
        record = registry.list()[0]
    assert record.state in ("failed", "cancelled"), record.reason
    assert "Slurm job" in record.reason and "FAILED" in record.reason, record.reason  # Slurm's verdict
    assert (Path(record.meta["root"]) / "state" / "exit_code").exists()
    assert _job_procs(sid) == []


@pytest.mark.timeout(1500)
def test_the_demo_pipeline_runs_on_slurm(slurm_env, run_cli, tmp_path, monkeypatch):
    """`alaunch run jobs/pipelines/demo.yaml -H <slurm target>`: data here, each job step an
    sbatch job (the training on both nodes), its outputs left in the shared workdir, the merge
    of the 2 ranks' checkpoints a one-node sbatch job of its own (before: on the login node),
    the predictions scored, the results table (before: 'missing slots=N for host slurm:')."""
    root = Path(__file__).resolve().parents[1]
    target = _target(slurm_env, tmp_path)
    code, out, err = run_cli("run", str(root / "jobs" / "pipelines" / "demo.yaml"), "-H", str(target),
                             "--runs", str(tmp_path / "runs"))
    if code != 0:  # what Slurm and msrun said, before pytest's tmp dirs rotate away
        for f in sorted((tmp_path / "shared" / "alaunch").glob("*/state/*.out")) + sorted(
                (tmp_path / "shared" / "alaunch").glob("*/state/versions/*")) + sorted(
                (tmp_path / "shared" / "alaunch").glob("*/msrun_log/*.log")):
            print(f"--- {f}\n" + f.read_text(errors="replace")[-2000:])
    assert code == 0, (out + err)[-4000:]
    with Registry.in_state_dir() as registry:
        run = registry.pipeline("demo")
        steps = {s.step: s for s in run.steps}
        assert [(s.step, s.state) for s in run.steps] == [(n, "succeeded") for n in (
            "data", "before", "train", "merge", "after", "score-before", "score-after", "results")]
        train = registry.get(steps["train"].job_id)
        after = registry.get(steps["after"].job_id)
    assert train.meta["slurm_job_id"] and sorted(n.host for n in train.nodes) == ["n1", "n2"]
    merge = steps["merge"].outputs["merge"]
    assert (merge["mode"], merge["ranks"]) == ("data-parallel", 2)
    assert f"checkpoint:\n  remote: {merge['out']}" in after.spec_text  # read where the merge left it
    assert merge["out"].startswith(str(tmp_path / "shared"))  # in the shared workdir, never copied
    merged_dir = Path(merge["out"]).parent  # the merge's own Slurm job: its script and output beside it
    assert merge["slurm_job_id"] and list(merged_dir.glob(f"merge-*-{merge['slurm_job_id']}.out"))
    assert "#SBATCH --nodes=1" in next(merged_dir.glob("merge-*.sbatch")).read_text()


@pytest.mark.timeout(900)
def test_two_nodes_train_through_sbatch_srun_msrun_and_resume_past_a_checkpoint_as_attempt_2(
        slurm_env, run_cli, toy, tmp_path, monkeypatch):
    """One 2-node training checks both: rank 1's worker SIGKILLed (as the OOM killer does)
    after both ranks saved a checkpoint: the job fails naming the worker's signal from msrun's
    report in slurm-<id>.out (before: 'exit code 1', which `retries:` read as permanent); then
    `alaunch resume -f`: the same job dir, sbatch'd again as attempt 2, its loss lines
    continuing after the checkpoint's step, attempt 1's logs kept (before: resume had no Slurm
    path); and what a 2-node training through sbatch + srun + msrun must
    show (one job for both: the suite's Slurm file was among its slowest): hosts check and plan,
    Slurm's nodes in the record, both ranks' lines through the follower, falling losses, equal
    LoRA weights on both ranks, status / logs / jobs / fetch through the login node."""
    from tests.test_pipeline_resume import global_steps
    monkeypatch.chdir(tmp_path)
    target = _target(slurm_env, tmp_path)
    code, out, err = run_cli("hosts", "check", "-H", str(target))
    assert code == 0 and "n1" in out and "n2" in out and "idle" in out, out + err
    job = yaml.safe_load(write_job(tmp_path, toy, epochs=6, name="slurm-resume").read_text())
    job["overrides"]["callbacks"] = [{"type": "MFLossMonitor"}, {
        "type": "CheckpointMonitor", "prefix": "tiny", "integrated_save": False, "save_checkpoint_steps": 8,
        "async_save": False}]
    path = tmp_path / "slurm-resume.yaml"
    path.write_text(yaml.safe_dump(job, allow_unicode=True))
    code, plan, err = run_cli("plan", str(path), "-H", str(target))
    assert code == 0, err
    assert "sbatch --parsable" in plan and "#SBATCH --nodes=2" in plan and "--worker_num=2" in plan
    assert "srun --ntasks-per-node=1 --kill-on-bad-exit=1" in plan and "--join=True" in plan
    code, out, err = run_cli("submit", str(path), "-H", str(target))
    assert code == 0, err
    job_id = out.strip().splitlines()[-1]
    root = Path(_record(job_id).meta["root"])
    end = time.monotonic() + 400
    while not all(list((root / "output" / "checkpoint" / f"rank_{r}").glob("*.ckpt")) for r in (0, 1)):
        assert time.monotonic() < end, f"no checkpoint of both ranks: {_record(job_id).state}"
        run_cli("status", job_id)
        time.sleep(1)
    worker = _worker_pid(_record(job_id).meta["slurm_job_id"], 1)
    os.kill(worker, signal.SIGKILL)
    assert _wait(run_cli, job_id, {"failed", "succeeded", "cancelled"}, 120) == "failed"
    reason = _record(job_id).reason
    assert f"worker process {worker} was killed by signal 9 (SIGKILL), as msrun reported" in reason, reason
    from launcher.metrics.retry import classify
    assert classify([1], [reason]).transient  # a pipeline step's `retries:` resumes it
    code, out, err = run_cli("resume", job_id, "--follow")
    record = _record(job_id)
    if code != 0:
        for f in sorted((root / "state").glob("*.out")) + sorted((root / "msrun_log").glob("*.log")):
            print(f"--- {f}\n" + f.read_text(errors="replace")[-2000:])
    assert code == 0, err[-3000:]
    assert record.state == "succeeded" and record.meta["attempt"] == 2, record.reason
    first = global_steps(root / "attempts" / "1" / "msrun_log" / "worker_0.log")
    second = global_steps(root / "msrun_log" / "worker_0.log")
    step = record.meta["resumed_from_step"]  # the checkpoint's own global step
    assert first and first[0] == 1 and second[0] == step + 1, (first[:3], second[:3], step)
    assert second[-1] == 6 * 8, second[-3:]

    assert sorted(n.host for n in record.nodes) == ["n1", "n2"]  # Slurm's nodes, from the allocation
    assert (root / "state" / "exit_code").read_text().strip() == "0"
    # both ranks' lines came through the follower: what it handled of each rank's log, as its
    # saved offsets say (the story itself may show no line of a rank: a healthy run's routine
    # warnings are folded into one count, so "localhost/0" in its output was a matter of timing)
    handled = json.loads((Path(os.environ["ALAUNCH_STATE_DIR"]) / "follow" / f"{job_id}.json").read_text())
    ends = {Path(p).name: end for files in handled.values() for p, (_, end) in files.items()}
    assert ends.get("worker_0.log", 0) > 0 and ends.get("worker_1.log", 0) > 0, (ends, out)
    for rank in (0, 1):
        values = losses(root / "msrun_log" / f"worker_{rank}.log")
        assert len(values) >= 4 and values[-1] < values[0], values
    ckpts = [sorted((root / "output" / "checkpoint" / f"rank_{r}").glob("*.ckpt"))[-1] for r in (0, 1)]
    w0, w1 = _lora(ckpts[0]), _lora(ckpts[1])
    assert w0 and w0.keys() == w1.keys() and all((w0[k] == w1[k]).all() for k in w0)
    assert not all((w0[k] == 0).all() for k in w0)
    # each node ran its own msrun, and only node 0 a scheduler (its address is local to it only)
    assert (root / "msrun_log" / "scheduler.log").exists()
    assert run_cli("status", job_id)[0] == ExitCode.OK
    code, out, _ = run_cli("logs", job_id, "--rank", "1")  # the shared job dir, via the login node
    assert code == 0 and "Training Over" in out
    code, out, _ = run_cli("jobs", "--json")
    assert '"state": "succeeded"' in out
    code, out, err = run_cli("fetch", job_id, "--dest", str(tmp_path / "runs"))
    assert code == 0, err
    assert list((tmp_path / "runs" / job_id).rglob("worker_1.log"))
    # the LoRA delta through the login node: each rank's newest checkpoint cut to its LoRA
    # tensors there (no MindSpore on the login side), byte for byte the trained ones
    code, out, err = run_cli("fetch", job_id, "--what", "lora", "--dest", str(tmp_path / "lora"))
    assert code == 0 and "lora: " in err + out, err
    import mindspore as ms

    from launcher.core import lora
    config = yaml.safe_load((root / "config" / "job.yaml").read_text())
    mc = config["model"]["model_config"]
    names = lora.trainable_parameters(mc, mc["pet_config"], lora.family_for(config))  # LoRA + lm_head here
    for ckpt in ckpts:
        (delta,) = (tmp_path / "lora" / job_id).rglob(f"lora/{ckpt.relative_to(root)}")
        cut, full = ms.load_checkpoint(str(delta)), ms.load_checkpoint(str(ckpt))
        assert set(cut) == set(names), sorted(cut)
        assert all(cut[k].asnumpy().tobytes() == full[k].asnumpy().tobytes() for k in cut)


def test_a_controller_outage_never_fails_a_running_job(slurm_env, run_cli, toy, tmp_path, monkeypatch):
    """The engine outage drill: slurmctld stopped for 30 s while a job runs, then started again.
    Meanwhile every `status` reads the job running (its nodes unknown: Slurm cannot be asked),
    never failed; afterwards the job ends succeeded. Before, the first squeue/scontrol that
    exited non-zero recorded it `failed ... gone from squeue/scontrol without an exit code`."""
    from tests.cluster.cluster import stop_pid
    monkeypatch.chdir(tmp_path)
    job = _sleeper(tmp_path, toy, "outage", 50)
    code, out, err = run_cli("submit", str(job), "-H", str(_target(slurm_env, tmp_path)))
    assert code == 0, err
    job_id = out.strip().splitlines()[-1]
    assert _wait(run_cli, job_id, {"running"}, 120) == "running"
    # the training step itself must be up: a step Slurm has not created yet cannot start while the
    # controller is down (srun: "Unable to confirm allocation"), which is Slurm's failure, not ours
    state_dir = Path(_record(job_id).meta["root"]) / "state"
    end = time.monotonic() + 120
    while not all(f"entry started rank {r}" in "".join(p.read_text(errors="replace")
                                                       for p in state_dir.glob("slurm-*.out")) for r in (0, 1)):
        assert time.monotonic() < end, "the entry never started on both nodes"
        time.sleep(0.5)
    seen, outputs = set(), []
    stop_pid(slurm_env.ctld_pid)  # SIGTERM: slurmctld saves its state and exits
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            code, out, err = run_cli("status", job_id)
            seen.add(_record(job_id).state)
            outputs.append(out + err)
            time.sleep(3)
    finally:
        slurm_env._start_slurmctld()
    assert seen == {"running"}, (seen, outputs[-1])
    assert any("unknown" in o for o in outputs), outputs[-1]  # said: Slurm could not be asked
    state = _wait(run_cli, job_id, {"succeeded", "failed", "cancelled"}, 300)
    record = _record(job_id)
    if state != "succeeded":
        with Registry.in_state_dir() as registry:
            for e in registry.events(job_id):
                print(e.time, e.kind, e.message)
        print(record.meta, slurm_env.log_tail(40))
    assert state == "succeeded", record.reason


@pytest.mark.timeout(600)
def test_a_sweep_runs_its_trials_as_sbatch_jobs_ranks_them_and_a_rerun_keeps_them(
        slurm_env, run_cli, toy, tmp_path, monkeypatch):
    """`alaunch sweep -H <slurm target>`: each trial its own sbatch job (Slurm places it; at
    most 2 at once), its curve read from the shared workdir's logs (the last loss of the
    leaderboard is the worker log's), ranked by final loss; run again, every trial is kept and
    no job is submitted again (the sweep on Slurm had only a dry-run test)."""
    monkeypatch.chdir(tmp_path)
    target = _target(slurm_env, tmp_path)
    job = write_job(tmp_path, toy, epochs=1, name="slurm-sweep")
    rates = (1e-3, 1e-2, 3e-3)  # none diverges: a NaN final loss would have no rank
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "slurm-lr", "base": str(job), "job": {"nodes": 1, "cards_per_node": 1},
        "space": {"list": [{"learning_rate": r} for r in rates]},
        "objective": {"metric": "final_loss", "goal": "min"}, "budget": {"max_parallel": 2}}))
    code, out, err = run_cli("sweep", str(tmp_path / "sweep.yaml"), "-H", str(target), "--poll", "0.5")
    assert code == 0, err[-4000:]
    with Registry.in_state_dir() as registry:
        trials = registry.sweep("slurm-lr").trials
        jobs = {t["trial"]: registry.get(t["run_id"]) for t in trials}
    assert sorted(t["params"]["learning_rate"] for t in trials) == sorted(rates)
    for t in trials:
        record = jobs[t["trial"]]
        assert t["state"] == "succeeded" and record.state == "succeeded" and record.meta["slurm_job_id"], t
        logged = losses(Path(record.meta["root"]) / "msrun_log" / "worker_0.log")
        assert t["result"]["steps"] == len(t["curve"]) == len(logged) > 0, t
        assert abs(t["result"]["final_loss"] - logged[-1]) < 1e-3 * max(1.0, abs(logged[-1])), (t, logged[-1])
    code, out, err = run_cli("results", "slurm-lr", "--csv")
    ranked = [float(line.split(",")[out.splitlines()[0].split(",").index("final_loss")])
              for line in out.splitlines()[1:]]
    assert code == 0 and ranked == sorted(t["result"]["final_loss"] for t in trials), out

    code, out, err = run_cli("sweep", str(tmp_path / "sweep.yaml"), "-H", str(target), "--poll", "0.5")
    assert code == 0 and err.count("earlier, kept") == len(rates), err[-3000:]
    with Registry.in_state_dir() as registry:
        assert sorted(j.id for j in registry.list(limit=None) if j.name.startswith("slurm-lr")) == sorted(
            j.id for j in jobs.values())
