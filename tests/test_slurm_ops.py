"""Slurm I/O helpers that need no Slurm: srun's failure lines, sinfo rows, the login view."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from launcher.core.hostfile import Host, format_hostfile
from launcher.ops import registry as reg
from launcher.ops import slurm


def test_srun_failures_name_node_and_task():
    text = ("srun: error: n2: task 1: Exited with exit code 1\n"
            "srun: Terminating StepId=7.0\nsrun: error: n1: task 0: Killed\n")
    assert slurm.srun_failures(text) == ["node 1 (n2): exited with exit code 1", "node 0 (n1): killed"]


def test_parse_sinfo():
    from launcher.core.slurm import parse_top_sinfo
    nodes = parse_top_sinfo("n1|idle|npu:8|192|none\nn2|drain|(null)|192|disk full\nbad line\n")
    assert [(n.name, n.state, n.gres, n.reason) for n in nodes] == [("n1", "idle", "npu:8", ""),
                                                                   ("n2", "drain", "", "disk full")]


def test_login_view_is_one_node_on_the_login_host(tmp_path):
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        job = r.create_job("j", "finetune", hostfile_text=format_hostfile([Host("login01", 8)]),
                           nodes=[("n1", "/shared/a/j"), ("n2", "/shared/a/j")],
                           meta={"backend": "slurm", "root": "/shared/a/j"})
        view = slurm.login_view(r.get(job.id))
    from launcher.ops.engines import kind_of
    assert kind_of(view) == "slurm" and view.meta["state_per_node"] is False
    assert [(n.node_rank, n.host, n.job_dir) for n in view.nodes] == [(0, "login01", "/shared/a/j")]


def _cli_files(tmp_path):
    import yaml
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "tiny", "kind": "finetune", "template": "tiny_llama_cpu/finetune.yaml",
                                   "entry": {"script": "alaunch:run_cpu"}, "nodes": "all",
                                   "cards_per_node": "all", "env": {"TOKEN": {"value": "s3cret", "secret": True}}}))
    target = tmp_path / "slurm.yaml"
    target.write_text("slurm:\n  login: login01\n  partition: npu\n  nodes: 2\n  cards_per_node: 4\n"
                      "  workdir: /shared/w\n  time: '1:00:00'\n  bin_dir: /opt/ms/bin\n")
    return job, target


def test_plan_and_render_take_a_slurm_target(run_cli, tmp_path):
    job, target = _cli_files(tmp_path)
    code, out, err = run_cli("plan", str(job), "-H", str(target), "--job-id", "tiny-1")
    assert code == 0, err
    assert "#SBATCH --nodes=2\n" in out and "#SBATCH --gres=npu:4\n" in out and "#SBATCH --time=1:00:00\n" in out
    assert "/opt/ms/bin/msrun --worker_num=8 --local_worker_num=4" in out
    assert "sbatch --parsable /shared/w/alaunch/tiny-1/state/job.sbatch" in out
    assert "TOKEN='***'" in out and "s3cret" not in out
    code, out, err = run_cli("render", str(job), "-H", str(target), "--no-mindformers", "--summary")
    assert code == 0, err
    assert "8 (2 node(s) x 4 card(s))" in out  # the target's nodes x cards, not a hostfile's


def test_a_bad_target_is_one_line_naming_file_line_key(run_cli, tmp_path):
    job, target = _cli_files(tmp_path)
    target.write_text(target.read_text().replace("nodes: 2", "nodes: two"))
    code, _, err = run_cli("plan", str(job), "-H", str(target))
    assert code != 0 and f"{target}:4" in err and "slurm.nodes" in err and "positive integer" in err


def test_jobs_says_which_login_node_it_could_not_ask(tmp_path):
    """A login node that cannot be reached leaves its jobs' last recorded states, and says so
    (before: silently shown as if current)."""
    from functools import partial

    from launcher.runners import ConnectOptions, make_runner
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        job = r.create_job("j", "finetune", hostfile_text="127.0.0.1 port=1 slots=8\n", nodes=[("n1", "/s/j")],
                           meta={"backend": "slurm", "root": "/s/j", "slurm_job_id": "41"}, state=reg.RUNNING)
        service = slurm.SlurmService(r, tmp_path, exec_factory=partial(
            make_runner, options=ConnectOptions(known_hosts=tmp_path / "kh", connect_timeout=3)))
        failed = service.refresh_many([r.get(job.id)])
        assert list(failed) == ["127.0.0.1"] and "refused" in failed["127.0.0.1"]
        assert r.get(job.id).state == reg.RUNNING  # as last recorded


def _fake_slurm(tmp_path, monkeypatch, **scripts) -> Path:
    """squeue/scontrol/scancel/sbatch as shell scripts first on PATH (the login node is this
    machine: a real LocalRunner runs them); every call is logged to calls.log."""
    import os
    import stat
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir()
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> {tmp_path}/calls.log\n{body}\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "calls.log"


def _running_job(r: reg.Registry, root: Path) -> reg.JobRecord:
    """A running one-node Slurm job (Slurm id 41) whose shared job dir is ``root``."""
    import sys
    return r.create_job("j", "finetune", hostfile_text=format_hostfile([Host("localhost", 1)]),
                        nodes=[("n1", str(root))], state=reg.RUNNING,
                        meta={"backend": "slurm", "root": str(root), "slurm_job_id": "41",
                              "pythons": {"localhost": sys.executable}})


HICCUP = 'echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2; exit 1'


def test_a_controller_hiccup_never_ends_a_running_job(tmp_path, monkeypatch):
    """squeue and scontrol exit non-zero (slurmctld restarting): the job stays running, its
    nodes read unknown with the reason, nothing is written into its state/ (before: read as
    'gone from squeue/scontrol without an exit code' and recorded FAILED)."""
    import threading
    calls = _fake_slurm(tmp_path, monkeypatch, squeue=HICCUP, scontrol=HICCUP)
    root = tmp_path / "w" / "alaunch" / "j"
    (root / "state").mkdir(parents=True)
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        job = _running_job(r, root)
        service = slurm.SlurmService(r, tmp_path)
        record, statuses = service.refresh(job.id)
        assert record.state == reg.RUNNING
        assert [s.state for s in statuses] == ["unknown"] and "squeue failed" in statuses[0].detail
        assert service.refresh_many([r.get(job.id)]) == {
            "localhost": "localhost: squeue failed: slurm_load_jobs error: Unable to contact slurm controller "
                         "(connect failure)"}
        stop, said = threading.Event(), []
        watcher = threading.Thread(target=service.watch, args=(job.id, stop), kwargs={"first": 0.01,
                                                                                      "note": said.append})
        watcher.start()
        while calls.read_text().count("squeue") < 4:  # the follower's watch asked again and again
            stop.wait(0.05)
        stop.set()
        watcher.join()
        assert r.get(job.id).state == reg.RUNNING
    assert list((root / "state").iterdir()) == []  # no exit_code written by alaunch
    assert {line.split()[0] for line in calls.read_text().splitlines()} == {"squeue"}  # asked, wrote nothing
    assert said == ["cannot ask Slurm now (localhost: squeue failed: slurm_load_jobs error: Unable to contact "
                    "slurm controller (connect failure)); following on, asking again"]  # once


def test_an_orphaned_sbatch_is_found_by_its_name_and_cancelled(tmp_path, monkeypatch):
    """sbatch ran but its answer was lost (exit 255 as a dropped ssh link): the record keeps
    the job name alaunch submitted it with, and cancel finds the Slurm job by it and scancels
    it (before: 'already failed; nothing to cancel', the job ran on unseen)."""
    import pytest

    from launcher.errors import AlaunchError
    from launcher.ops.engines import read_target
    from launcher.ops.service import SubmitOptions
    gone = tmp_path / "gone"
    calls = _fake_slurm(
        tmp_path, monkeypatch, sbatch="exit 255",
        squeue=f'case "$*" in *--name=*) [ -e {gone} ] || echo 77;; *) '
               'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1;; esac',
        scontrol='echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1',
        scancel=f"touch {gone}")
    job, target = _cli_files(tmp_path)
    target.write_text(target.read_text().replace("login01", "localhost").replace("/shared/w", str(tmp_path / "w"))
                      .replace("  bin_dir: /opt/ms/bin\n", ""))
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        service = slurm.SlurmService(r, tmp_path / "state")
        with pytest.raises(AlaunchError, match="sbatch"):
            service.submit(job, read_target(target), SubmitOptions())
        record = r.list(limit=1)[0]
        assert record.state == reg.FAILED and record.meta["slurm_job_name"] == record.id
        assert "sbatch --parsable" in calls.read_text()
        after, outcome = service.cancel(record.id)
        assert f"squeue -h --name={record.id} -o %i" in calls.read_text() and "scancel 77" in calls.read_text()
        assert after.state == reg.FAILED and after.meta["slurm_job_id"] == "77"
        assert outcome["localhost"].startswith("scancel 77: left the queue")


def test_a_cancel_during_staging_wins_nothing_reaches_slurm(tmp_path, monkeypatch):
    """The shared phases: a cancel while the login node is staged is CANCELLED at once and
    sbatch never runs (before: Slurm's own submit staged, then sbatch'd the cancelled job)."""
    import pytest

    from launcher.ops.engine import JobCancelled
    from launcher.ops.engines import read_target
    from launcher.ops.service import SubmitOptions
    from launcher.ops.stage import Progress
    calls = _fake_slurm(tmp_path, monkeypatch, sbatch="echo 5", squeue="exit 0")
    job, target = _cli_files(tmp_path)
    target.write_text(target.read_text().replace("login01", "localhost").replace("/shared/w", str(tmp_path / "w"))
                      .replace("  bin_dir: /opt/ms/bin\n", ""))
    cancelled = {}

    class CancelWhileStaging(Progress):
        def done(self, host, report) -> None:  # another terminal runs `alaunch cancel`
            with reg.Registry(tmp_path / "r.sqlite3") as other:
                job_id = other.list(limit=1)[0].id
                assert other.get(job_id).state == reg.STAGING
                cancelled["record"], _ = slurm.SlurmService(other, tmp_path / "state").cancel(job_id)

    with reg.Registry(tmp_path / "r.sqlite3") as r:
        service = slurm.SlurmService(r, tmp_path / "state", progress=CancelWhileStaging())
        with pytest.raises(JobCancelled, match="nothing was submitted to Slurm"):
            service.submit(job, read_target(target), SubmitOptions())
        record = r.list(limit=1)[0]
    assert cancelled["record"].reason == "cancelled by the user during staging"
    assert record.state == reg.CANCELLED and "sbatch" not in calls.read_text()


def test_the_login_node_script_answers_through_wire(tmp_path):
    """launcher/remote/slurm.py, run as the engine runs it (``python -S -c PROGRAM``, the
    request frame on stdin): the secret reaches the command's environment only, the script is
    written 0700, the answers are framed (a chatty login shell cannot break them)."""
    import subprocess
    import sys

    from launcher.remote import wire

    def call(request):
        res = subprocess.run([sys.executable, "-S", "-c", wire.program("slurm", request["op"])],
                             input=wire.request(request), capture_output=True, check=True)
        return wire.answer(b"Welcome to login01\n" + res.stdout)

    script = tmp_path / "state" / "job.sbatch"
    out = call({"op": "submit", "script_path": str(script), "script": "#!/bin/sh\n", "env": {"TOKEN": "s3cret"},
                "argv": ["sh", "-c", 'echo "1234;cluster $TOKEN"']})
    assert out == {"code": 0, "out": "1234;cluster s3cret\n", "err": ""}
    assert script.stat().st_mode & 0o777 == 0o700 and "s3cret" not in script.read_text()
    code = tmp_path / "state" / "exit_code"
    assert call({"op": "mark_end", "path": str(code), "code": "143"}) == {"written": True}
    assert call({"op": "mark_end", "path": str(code), "code": "0"}) == {"written": False}  # never overwrites
    assert call({"op": "read", "paths": [str(code), str(tmp_path / "none")]}) == {str(code): "143\n",
                                                                                 str(tmp_path / "none"): None}


def test_a_pipeline_dry_run_on_a_slurm_target_prints_each_steps_sbatch_script(run_cli, tmp_path):
    """Before: 'slurm.yaml:1: missing slots=N for host 'slurm:'' (pipelines read the target as
    a hostfile). Each job step is one sbatch job; independent steps are queued together."""
    root = Path(__file__).resolve().parents[1]
    target = tmp_path / "slurm.yaml"
    target.write_text("slurm:\n  login: login01\n  partition: npu\n  nodes: 2\n  cards_per_node: 8\n"
                      "  workdir: /shared/w\n  bin_dir: /opt/ms/bin\n")
    code, out, err = run_cli("run", str(root / "jobs/pipelines/llama3_8b_math.yaml"), "-H", str(target), "--dry-run",
                             "--verbose")
    assert code == 0, err
    steps = [line for line in out.splitlines() if line.startswith("# ") and line[2:3].isdigit()]
    assert [s.split()[2] for s in steps] == ["train", "squad", "math", "fetch", "score-squad", "score-math"]
    assert out.count("sbatch --parsable '/shared/w/alaunch/") == 3 and out.count("#SBATCH --partition=npu") == 3
    assert "runs together with math" in steps[1] and "waits for" not in out  # Slurm queues them
    assert "copied from" not in out  # the workdir is shared: outputs stay where they are


def _ckpt(step: int, epoch: int) -> bytes:
    """A minimal MindSpore checkpoint (protobuf Checkpoint) holding only MindFormers' step_num and
    epoch_num records: what the host reads a checkpoint's global step from (names never decide)."""
    import struct

    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    def value(tag: str, n: int) -> bytes:
        tensor = b"\x08\x01" + field(2, b"Int64") + field(3, struct.pack("<q", n))
        return field(1, field(1, tag.encode()) + field(2, tensor))
    return value("step_num", step) + value("epoch_num", epoch)


def test_resume_on_slurm_is_attempt_2_sbatched_from_the_shared_checkpoints(tmp_path, monkeypatch):
    """A stopped Slurm training resumes as attempt 2: the previous attempt's state/ kept under
    attempts/1/, the config resumed from the job dir's checkpoints (the newest step every rank
    saved), the batch script sbatch'd again with the job's secret (from the job file, never
    the registry) in sbatch's environment (before: no Slurm path; resume read the stand-in
    node rows as hosts)."""
    from launcher.ops.engines import engine_of, read_target
    from launcher.ops.service import SubmitOptions
    calls = _fake_slurm(tmp_path, monkeypatch, sbatch='echo "$TOKEN" >> ' + str(tmp_path / "env.log")
                        + '; echo "$ALAUNCH_SAMPLER" >> ' + str(tmp_path / "sampler.log") + '; echo 5',
                        squeue="exit 0")
    job, target = _cli_files(tmp_path)
    target.write_text(target.read_text().replace("login01", "localhost").replace("/shared/w", str(tmp_path / "w"))
                      .replace("  bin_dir: /opt/ms/bin\n", ""))
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        record = slurm.SlurmService(r, tmp_path / "state").submit(job, read_target(target), SubmitOptions())
        root = Path(record.meta["root"])
        for rank, steps in ((0, (2, 4)), (1, (2,))):  # rank 1 died before saving step 4
            for s in steps:
                (root / "output" / "checkpoint" / f"rank_{rank}").mkdir(parents=True, exist_ok=True)
                (root / "output" / "checkpoint" / f"rank_{rank}" / f"llama_rank_{rank}-1_{s}.ckpt").write_bytes(
                    _ckpt(step=s, epoch=1))
        (root / "state" / "exit_code").write_text("1\n")
        r.set_state(record.id, reg.FAILED, "Slurm job 5: FAILED")
        said = []
        after = engine_of(r.get(record.id), r, tmp_path / "state").resume(record.id, said.append)
        assert after.state == reg.QUEUED and after.meta["attempt"] == 2 and after.meta["resumed_from_step"] == 2
        assert said == [f"{record.id}: attempt 2, resuming from the checkpoint of global step 2"]
    assert (root / "attempts" / "1" / "state" / "exit_code").read_text() == "1\n"
    assert not (root / "state" / "exit_code").exists() and (root / "state" / "job.sbatch").exists()
    config = yaml.safe_load((root / "config" / "job.yaml").read_text())
    assert config["resume_training"] is True and config["load_checkpoint"] == str(root / "output" / "checkpoint")
    assert calls.read_text().count("sbatch --parsable") == 2
    assert (tmp_path / "env.log").read_text() == "s3cret\ns3cret\n"
    sampler = root / "config" / "alaunch-sample.py"  # each node's npu-smi sampler, staged, in both attempts
    assert (tmp_path / "sampler.log").read_text() == f"{sampler}\n{sampler}\n" and sampler.exists()


def test_prune_on_slurm_never_removes_a_job_slurm_still_has(run_cli, tmp_path, monkeypatch):
    """`alaunch prune -H slurm.yaml`: the shared workdir through the login node. A job whose
    submit failed in the registry but that Slurm queued (its sbatch answer lost) is running on
    compute nodes the scan cannot see: squeue's job names protect it. Before: prune read the
    target as a hostfile ('missing slots=N for host slurm:')."""
    import os
    monkeypatch.setenv("ALAUNCH_STATE_DIR", str(tmp_path / "state"))
    _fake_slurm(tmp_path, monkeypatch, squeue="echo tiny-20260101-000000-aaaa")
    target = tmp_path / "slurm.yaml"
    target.write_text(f"slurm:\n  login: localhost\n  nodes: 2\n  cards_per_node: 1\n  workdir: {tmp_path / 'w'}\n")
    with reg.Registry.in_state_dir(tmp_path / "state") as r:
        for job_id in ("tiny-20260101-000000-aaaa", "tiny-20260101-000000-bbbb"):
            (tmp_path / "w" / "alaunch" / job_id / "state").mkdir(parents=True)
            os.utime(tmp_path / "w" / "alaunch" / job_id, (0, 0))
            r.create_job("tiny", "finetune", nodes=[("slurm-node0", str(tmp_path / "w" / "alaunch" / job_id))],
                         job_id=job_id, state=reg.FAILED, meta={"backend": "slurm", "slurm_job_name": job_id})
    code, out, err = run_cli("prune", "-H", str(target), "--older-than", "0s", "--grace", "0s")
    assert code == 0, err
    assert (tmp_path / "w" / "alaunch" / "tiny-20260101-000000-aaaa").exists()  # Slurm still has it
    assert not (tmp_path / "w" / "alaunch" / "tiny-20260101-000000-bbbb").exists()
    assert "localhost" in out


def test_the_nodes_software_is_compared_before_msrun_as_a_hostfile_preflight_does(tmp_path):
    """Each node's VERSIONS answer, then SKEW on the batch host: the same lines as the hostfile
    preflight's version_skew, exit 1 and no msrun when they differ (before: Slurm jobs were
    never checked; a mixed allocation failed late and obscurely)."""
    import subprocess
    import sys

    from launcher.core import slurm as core
    from launcher.ops.service import version_skew
    from launcher.remote import wire
    answers = tmp_path / "state" / "versions"
    answers.mkdir(parents=True)
    programs = slurm.check_programs()
    for rel, text in programs.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    check = slurm.node_check(str(tmp_path))
    mine = subprocess.run([sys.executable, "-S", *check.versions], capture_output=True, text=True, check=True)
    here = wire.answer(mine.stdout)
    assert set(here["versions"]) == {"mindspore", "mindformers", "cann", "driver"}
    assert here["versions"]["mindspore"]  # this venv has it
    (answers / "0.out").write_text("banner\n" + mine.stdout)
    other = dict(here["versions"], mindspore="2.2.0")
    (answers / "1.out").write_text(wire.ANSWER_MARK + f'{{"node": "n2", "versions": {json.dumps(other)}}}\n')
    res = subprocess.run([sys.executable, "-S", *check.skew], capture_output=True, text=True)
    expected = version_skew({here["node"]: here["versions"], "n2": other})
    assert res.returncode == 1 and expected == [f"mindspore differs between nodes: {here['versions']['mindspore']} "
                                                f"on {here['node']}; 2.2.0 on n2"]
    assert res.stderr == ("alaunch: the nodes run different software; a job needs the same everywhere: "
                          + " | ".join(expected) + "\n")
    (answers / "1.out").write_text(mine.stdout.replace(here["node"], "n2"))
    assert subprocess.run([sys.executable, "-S", *check.skew], capture_output=True).returncode == 0
    job, target = _cli_files(tmp_path)
    from launcher.core.spec import load_job
    spec = load_job(job)
    two = core.build_batch(spec, core.parse_target(target.read_text()), "j-1", root=str(tmp_path), check=check)
    assert "srun --ntasks-per-node=1 --output=" in two.script and "alaunch-skew.py" in two.script
    assert two.script.index("alaunch-skew.py") < two.script.index("--kill-on-bad-exit")  # before msrun
    one = core.build_batch(spec, core.parse_target(target.read_text().replace("nodes: 2", "nodes: 1")), "j-1",
                           root=str(tmp_path), check=check)
    assert "alaunch-skew.py" not in one.script


def test_a_skewed_allocation_is_the_jobs_reason(tmp_path, monkeypatch):
    """The batch script's 'alaunch:' line is read back as the job's reason, as a hostfile
    submit names the packages and nodes."""
    import sys
    line = "alaunch: the nodes run different software; a job needs the same everywhere: cann differs between nodes"
    _fake_slurm(tmp_path, monkeypatch, squeue='echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1',
                scontrol='case "$*" in *hostnames*) echo n1; echo n2;; *) '
                         'echo "JobId=41 JobState=FAILED Reason=NonZeroExitCode ExitCode=1:0 NodeList=n[1-2]";; esac')
    root = tmp_path / "w" / "alaunch" / "j"
    (root / "state").mkdir(parents=True)
    (root / "state" / "slurm-41.out").write_text(line + "\n")
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        job = r.create_job("j", "finetune", hostfile_text=format_hostfile([Host("localhost", 1)]),
                           nodes=[("slurm-node0", str(root)), ("slurm-node1", str(root))], state=reg.RUNNING,
                           meta={"backend": "slurm", "root": str(root), "slurm_job_id": "41",
                                 "pythons": {"localhost": sys.executable}})
        record, _ = slurm.SlurmService(r, tmp_path).refresh(job.id)
    assert record.state == reg.FAILED and line[len("alaunch: "):] in record.reason


FIXTURES = Path(__file__).parent / "fixtures" / "slurm"


def test_a_sigkilled_worker_is_explained_from_the_batch_output_and_is_transient():
    """msrun 2.9's real output when a worker is SIGKILLed (captured here: msrun, 2 workers, rank 1
    kills itself), with srun's line after it, as the batch script's slurm-<id>.out holds it. The
    reason names the worker's signal as on hosts, so a step's `retries:` fires (before: the
    reason said only 'exit code 1' and `classify` called it permanent)."""
    from launcher.metrics.retry import classify
    text = (FIXTURES / "msrun-worker-sigkill.out").read_text() + "srun: error: n2: task 1: Exited with exit code 1\n"
    assert slurm.msrun_failure(text) == "worker process 9029 was killed by signal 9 (SIGKILL), as msrun reported"
    found = slurm.batch_failures(text)
    assert found == ["worker process 9029 was killed by signal 9 (SIGKILL), as msrun reported",
                     "node 1 (n2): exited with exit code 1"]
    reason = "Slurm job 7: FAILED (NonZeroExitCode), exit code 1; " + "; ".join(found)
    assert classify([1], [reason]).transient
    assert not classify([1], ["Slurm job 7: FAILED (NonZeroExitCode), exit code 1; node 1 (n2): exited with "
                              "exit code 1"]).transient  # what the reason was without msrun's report
    assert slurm.msrun_failure("srun: error: n2: task 1: Exited with exit code 1\n") is None


def test_the_follower_s_failure_gets_msrun_s_report_from_the_batch_output(tmp_path):
    """`fail` (the follower saw node 0's exit code) reads state/slurm-<id>.out first: the
    recorded reason says which worker died of what, as a hostfile job's does."""
    root = tmp_path / "w" / "alaunch" / "j"
    (root / "state").mkdir(parents=True)
    (root / "state" / "slurm-41.out").write_text((FIXTURES / "msrun-worker-sigkill.out").read_text())
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        job = _running_job(r, root)
        service = slurm.SlurmService(r, tmp_path)
        service._scancel = lambda record, grace: "scancel 41: left the queue"  # no Slurm here
        record = service.fail(job.id, "msrun on node 0 exited with code 1")
    assert record.state == reg.FAILED
    assert record.reason == ("msrun on node 0 exited with code 1; worker process 9029 was killed by signal 9 "
                             "(SIGKILL), as msrun reported")


def test_a_failure_seen_after_slurm_s_verdict_still_names_the_rank_and_cause(tmp_path):
    """The watcher recorded Slurm's verdict first (the failing rank ended msrun, Slurm ended the
    job): the follower's first failure then leads the reason instead of being dropped, as a
    full suite run saw ('rank 1' missing from the reason)."""
    root = tmp_path / "w" / "alaunch" / "j"
    (root / "state").mkdir(parents=True)
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        job = _running_job(r, root)
        verdict = "Slurm job 41: FAILED (NonZeroExitCode), exit code 143; node 1 (n2): exited with exit code 1"
        r.set_state(job.id, reg.FAILED, verdict)
        service = slurm.SlurmService(r, tmp_path)
        service._scancel = lambda record, grace: "scancel 41: not in the queue"  # no Slurm here
        record = service.fail(job.id, "rank 1: injected failure on rank 1")
        again = service.fail(job.id, "rank 1: injected failure on rank 1")  # a second look adds nothing
    assert record.state == again.state == reg.FAILED
    assert record.reason == again.reason == f"rank 1: injected failure on rank 1; {verdict}"


def _demo_dry_run(run_cli, tmp_path) -> str:
    root = Path(__file__).resolve().parents[1]
    target = tmp_path / "slurm.yaml"
    target.write_text("slurm:\n  login: login01\n  partition: npu\n  nodes: 2\n  cards_per_node: 1\n"
                      "  workdir: /shared/w\n  bin_dir: /opt/ms/bin\n")
    code, out, err = run_cli("run", str(root / "jobs/pipelines/demo.yaml"), "-H", str(target), "--dry-run")
    assert code == 0, err
    return out


def test_a_pipeline_dry_run_on_slurm_prints_the_merge_s_sbatch_script_in_the_shared_workdir(run_cli, tmp_path):
    """The merge is a one-node Slurm job of its own (before: merge_ckpt.py ran on the login node),
    its files beside the training's checkpoints in the shared workdir; every step's outputs
    are shown there (before: `~/alaunch/...`, the SSH hosts' workdir)."""
    out = _demo_dry_run(run_cli, tmp_path)
    merge = out.split("# 4. merge")[1].split("\n# 5.")[0]
    assert "as its own Slurm job" in merge and "#SBATCH --nodes=1\n" in merge
    assert "#SBATCH --partition=npu\n" in merge and "--gres" not in merge  # the merge takes no NPU
    assert "#SBATCH --output=/shared/w/alaunch/<train's job id>/output/merged/merge-<id>-%j.out" in merge
    assert "/opt/ms/bin/python3 '/shared/w/alaunch/<train'\"'\"'s job id>/output/merged/merge-<id>.py'" in merge
    assert "checkpoint <- merge's last output: /shared/w/alaunch/<train's job id>/output/merged/<job id>.ckpt" in out
    assert "~/alaunch" not in out


def test_a_task_is_an_sbatch_job_whose_answer_is_read_back(tmp_path, monkeypatch):
    """`run_task` on Slurm: the program and batch script written in the shared dir, sbatch'd,
    the answer read from the file the script wrote; a failing program is one error naming the
    Slurm job and its last words. (A fake sbatch runs the script at once.)"""
    import sys

    from launcher.core.slurm import SlurmTarget
    from launcher.errors import AlaunchError
    calls = _fake_slurm(tmp_path, monkeypatch, squeue="exit 0",
                        sbatch='bash "$2" > "${2%.sbatch}-77.out" 2>&1; echo 77')
    program = tmp_path / "prog.py"
    program.write_text("import json, sys\nr = json.loads(sys.argv[1])\n"
                       "if r.get('fail'):\n    sys.exit('boom: ' + r['fail'])\nprint(json.dumps({'got': r}))\n")
    target = SlurmTarget("localhost", str(tmp_path / "w"), 2, 1, partition="cpu", python=sys.executable,
                         bin_dir=str(Path(sys.executable).parent))
    where = str(tmp_path / "w" / "alaunch" / "train-1" / "output" / "merged")
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        service = slurm.SlurmService(r, tmp_path / "state")
        assert service.run_task(target, None, None, program, {"x": 1}, where, "merge") == {
            "got": {"x": 1}, "slurm_job_id": "77"}
        try:
            service.run_task(target, None, None, program, {"fail": "no ckpt"}, where, "merge")
            raise AssertionError("a failing task must raise")
        except AlaunchError as exc:
            assert "merge (Slurm job 77) failed with exit code 1: boom: no ckpt" in exc.message
    assert calls.read_text().count("sbatch --parsable") == 2
    scripts = sorted(Path(where).glob("merge-*.sbatch"))
    assert len(scripts) == 2 and "#SBATCH --nodes=1" in scripts[0].read_text()


def test_status_of_a_running_slurm_job_names_the_straggler(run_cli, tmp_path, monkeypatch):
    """`status` of a Slurm job reads every rank's log tail from the shared job dir (one read on
    the login node) as a hostfile job's status does: the progress per node and a rank 50 %
    slower than the others named, on the Slurm node that runs it (before: no tails, nothing
    named)."""
    import sys
    monkeypatch.setenv("ALAUNCH_STATE_DIR", str(tmp_path / "state"))
    _fake_slurm(tmp_path, monkeypatch, squeue='echo "41|RUNNING|None|n[1-2]"', scontrol='printf "n1\\nn2\\n"')
    root = tmp_path / "w" / "alaunch" / "slow"
    (root / "msrun_log").mkdir(parents=True)
    for rank, ms in ((0, 1000), (1, 1500)):
        (root / "msrun_log" / f"worker_{rank}.log").write_text("".join(
            f"2025-03-02 10:00:00,000 - mindformers[callback.py:1] - INFO - {{ Epoch:[  1/  1], step:[{s:5d}/  200], "
            f"loss: 2.0, per_step_time: {ms}ms, lr: 1e-05\n" for s in range(1, 30)))
    with reg.Registry(tmp_path / "state" / "registry.sqlite3") as r:
        job = r.create_job("slow", "finetune", hostfile_text=format_hostfile([Host("localhost", 1)]),
                           nodes=[("n1", str(root)), ("n2", str(root))], state=reg.RUNNING,
                           meta={"backend": "slurm", "root": str(root), "slurm_job_id": "41",
                                 "pythons": {"localhost": sys.executable}, "target": {"cards_per_node": 1}})
    code, out, err = run_cli("status", job.id)
    assert "straggler: rank 1 on n2 is 50 % slower than the median for 28 steps" in out, out + err
    assert "step 29/200, loss 2" in out
