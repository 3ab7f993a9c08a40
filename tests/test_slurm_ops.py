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
