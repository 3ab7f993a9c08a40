"""The pure Slurm half: target file, batch script, state mapping (no Slurm needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from launcher.core import slurm
from launcher.core.spec import parse_job
from launcher.errors import InputError

TARGET = """\
# the cluster
slurm:
  login: login01
  partition: npu
  nodes: 2
  cards_per_node: 8
  account: myproj
  qos: normal
  time: "04:00:00"
  workdir: /shared/alaunch
  extra_sbatch: ["--exclusive"]
"""


def _spec(tmp_path: Path, **extra):
    data = {"name": "tiny", "kind": "finetune", "template": "tiny_llama_cpu/finetune.yaml",
            "entry": {"script": "alaunch:run_cpu"}, "nodes": "all", "cards_per_node": "all", **extra}
    return parse_job(data, str(tmp_path / "job.yaml"), str(tmp_path))


def test_target_parses_and_gres_defaults_to_cards():
    t = slurm.parse_target(TARGET, "t.yaml")
    assert (t.login, t.nodes, t.cards_per_node, t.gres_option, t.extra_sbatch) == \
        ("login01", 2, 8, "npu:8", ("--exclusive",))
    assert slurm.parse_target(TARGET.replace("  qos: normal", '  gres: ""'), "t").gres_option is None


def test_the_chooser_tells_a_slurm_target_from_a_hostfile():
    from launcher.ops.engines import kind_of_text
    assert kind_of_text("# a target\n" + TARGET) == "slurm"
    assert kind_of_text("# slurm: no\nworker-0 slots=8\n") == "hosts"
    assert kind_of_text("hosts: 3\n") == "hosts"  # not an engine's name: a (bad) hostfile


@pytest.mark.parametrize("line,key,words", [
    ("  partiton: npu", "slurm.partiton", "did you mean 'partition'"),
    ("  nodes: 0", "slurm.nodes", "positive integer"),
    ("  time: 4h", "slurm.time", "not a Slurm time"),
    ("  account: 'a b'", "slurm.account", "characters"),
    ('  extra_sbatch: ["--exclusive --mem=1"]', "slurm.extra_sbatch", "one --option"),
    ('  extra_sbatch: ["--nodes=9"]', "slurm.extra_sbatch", "set by alaunch"),
    ("  workdir: ~/alaunch", "slurm.workdir", "absolute path"),
    ("  login: '-oProxyCommand=x'", "slurm.login", "invalid host name"),
])
def test_target_errors_name_file_line_key(line, key, words):
    name = line.split(":")[0].strip()
    lines = [ln for ln in TARGET.splitlines() if not ln.startswith(f"  {name}:")] + [line]
    with pytest.raises(InputError) as exc:
        slurm.parse_target("\n".join(lines) + "\n", "t.yaml")
    assert exc.value.key == key and words in exc.value.message and exc.value.line == len(lines)


def test_batch_script_lines(tmp_path):
    t = slurm.parse_target(TARGET, "t")
    spec = _spec(tmp_path, env={"HF_TOKEN": {"from_local": "TOK", "secret": True}})
    plan = slurm.build_batch(spec, t, "tiny-1", environ={"TOK": "s3cret"})
    root = "/shared/alaunch/alaunch/tiny-1"
    assert plan.root == root and plan.script_path == f"{root}/state/job.sbatch"
    for opt in ("--nodes=2", "--ntasks-per-node=1", "--partition=npu", "--gres=npu:8", "--account=myproj",
                "--qos=normal", "--time=04:00:00", "--exclusive", f"--output={root}/state/slurm-%j.out"):
        assert f"#SBATCH {opt}\n" in plan.script
    assert "srun --ntasks-per-node=1 --kill-on-bad-exit=1" in plan.script
    assert plan.msrun_argv[:3] == ("msrun", "--worker_num=16", "--local_worker_num=8")
    assert "--join=True" in plan.msrun_argv and '--node_rank="$SLURM_NODEID"' in slurm.NODE_SCRIPT
    assert "s3cret" not in plan.script and "s3cret" not in plan.render()
    assert plan.env_values()["HF_TOKEN"] == "s3cret"  # it travels in sbatch's environment
    subprocess.run(["bash", "-n"], input=plan.script, text=True, check=True)
    subprocess.run(["bash", "-n", "-c", slurm.NODE_SCRIPT], check=True)


def test_batch_refuses_reserved_env(tmp_path):
    spec = _spec(tmp_path, env={"SLURM_NODEID": "3"})
    with pytest.raises(InputError, match="SLURM_NODEID"):
        slurm.build_batch(spec, slurm.parse_target(TARGET, "t"), "j")


@pytest.mark.parametrize("slurm_state,state", [
    ("PENDING", "queued"), ("RUNNING", "running"), ("COMPLETING", "running"), ("COMPLETED", "succeeded"),
    ("FAILED", "failed"), ("NODE_FAIL", "failed"), ("TIMEOUT", "failed"), ("OUT_OF_MEMORY", "failed"),
    ("PREEMPTED", "failed"), ("CANCELLED", "cancelled"), ("CANCELLED by 0", "cancelled"), ("", "unknown"),
])
def test_map_state(slurm_state, state):
    assert slurm.map_state(slurm_state) == state


def test_parse_squeue_and_scontrol():
    q = slurm.parse_squeue("12|PENDING|Resources|\n13|RUNNING|None|n[1-2]\n")
    assert q["12"].state == "queued" and q["12"].describe() == "PENDING (Resources)"
    assert q["13"].fields["NodeList"] == "n[1-2]"
    line = ("JobId=14 JobName=a b UserId=root(0) JobState=TIMEOUT Reason=TimeLimit Dependency=(null) "
            "ExitCode=0:15 NodeList=n[1-2] Command=/x/job.sbatch")
    s = slurm.parse_scontrol(line)["14"]
    assert (s.state, s.reason, s.signal, s.fields["JobName"]) == ("failed", "TimeLimit", 15, "a b")
    assert s.describe() == "TIMEOUT (TimeLimit), exit code 0 signal 15"


def test_sbatch_job_id():
    assert slurm.sbatch_job_id("42\n") == "42" and slurm.sbatch_job_id("42;clusterA") == "42"
    with pytest.raises(ValueError):
        slurm.sbatch_job_id("sbatch: error: Batch job submission failed")


def test_plan_text_is_yaml_free_of_user_shell(tmp_path):
    spec = _spec(tmp_path, entry={"script": "alaunch:run_cpu", "args": ["--x=$(reboot)"]})
    plan = slurm.build_batch(spec, slurm.parse_target(TARGET, "t"), "j")
    assert "'--x=$(reboot)'" in plan.script  # quoted: an argument, never code
