"""Slurm I/O helpers that need no Slurm: srun's failure lines, sinfo rows, the login view."""

from __future__ import annotations

from launcher.core.hostfile import Host, format_hostfile
from launcher.ops import registry as reg
from launcher.ops import slurm


def test_srun_failures_name_node_and_task():
    text = ("srun: error: n2: task 1: Exited with exit code 1\n"
            "srun: Terminating StepId=7.0\nsrun: error: n1: task 0: Killed\n")
    assert slurm.srun_failures(text) == ["node 1 (n2): exited with exit code 1", "node 0 (n1): killed"]


def test_parse_sinfo():
    nodes = slurm.parse_sinfo("n1|idle|npu:8|192\nn2|alloc|(null)|192\nbad line\n")
    assert [(n.name, n.state, n.gres) for n in nodes] == [("n1", "idle", "npu:8"), ("n2", "alloc", "(null)")]


def test_login_view_is_one_node_on_the_login_host(tmp_path):
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        job = r.create_job("j", "finetune", hostfile_text=format_hostfile([Host("login01", 8)]),
                           nodes=[("n1", "/shared/a/j"), ("n2", "/shared/a/j")],
                           meta={"backend": "slurm", "root": "/shared/a/j"})
        view = slurm.login_view(r.get(job.id))
    assert slurm.is_slurm(view)
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
