"""The plan is pure: per node rank, env, msrun argv and files, and a dry run that is real shell."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from launcher.core.hostfile import Host, apply_filters, parse_hostfile
from launcher.core.plan import WRAPPER, build_plan, quote_path
from launcher.core.spec import load_job, parse_job
from launcher.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def _spec(tmp_path: Path, **extra) -> object:
    (tmp_path / "train.mindrecord").write_bytes(b"x")
    (tmp_path / "train.mindrecord.db").write_bytes(b"y")
    (tmp_path / "tok.model").write_bytes(b"z")
    job = {"name": "tiny", "kind": "finetune", "template": "tiny_llama_cpu/finetune.yaml",
           "nodes": "all", "cards_per_node": "all", "entry": {"script": "alaunch:run_cpu"},
           "inputs": {"train": {"local": "train.mindrecord", "fills": "train_dataset.data_loader.dataset_dir"}},
           "tokenizer": {"local": "tok.model"},
           "env": {"GLOG_v": 2, "HF_TOKEN": {"from_local": "MY_TOKEN"}, "PASS": {"value": "s3cr$t", "secret": True}},
           **extra}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    return load_job(path)


def _hosts() -> list[Host]:
    hosts = parse_hostfile("10.0.0.1 slots=4\n10.0.0.2 slots=4 workdir=/srv/my\\ jobs\n", "hf")
    return apply_filters(hosts, include="10.0.0.1:1,3@10.0.0.2:0,1")


def test_two_nodes_msrun_lines_and_env(tmp_path):
    plan = build_plan(_spec(tmp_path), "a: 1\n", _hosts(), "tiny-1", 8118,
                      environ={"MY_TOKEN": "tok-123"}, bin_dir="/opt/venv/bin")
    assert plan.worker_num == 4 and plan.master_addr == "10.0.0.1"
    n0, n1 = plan.nodes
    assert n1.layout.root == "/srv/my jobs/alaunch/tiny-1"
    assert n0.layout.root == "~/alaunch/tiny-1"
    assert list(n1.argv[:10]) == [
        "/opt/venv/bin/msrun", "--worker_num=4", "--local_worker_num=2", "--master_addr=10.0.0.1",
        "--master_port=8118", "--node_rank=1", "--log_dir=/srv/my jobs/alaunch/tiny-1/msrun_log",
        "--join=True", "--cluster_time_out=600", "/srv/my jobs/alaunch/tiny-1/code/run_cpu.py"]
    assert n1.argv[10:] == ("--config", "/srv/my jobs/alaunch/tiny-1/config/job.yaml")
    env0, env1 = n0.env_values(), n1.env_values()
    assert env0["ASCEND_RT_VISIBLE_DEVICES"] == "1,3" and env1["ASCEND_RT_VISIBLE_DEVICES"] == "0,1"
    assert env1["ALAUNCH_PYTHONPATH"] == "/srv/my jobs/alaunch/tiny-1/code"
    assert env0["HF_TOKEN"] == "tok-123" and env0["PASS"] == "s3cr$t" and env0["GLOG_v"] == "2"
    assert n0.env_display()["HF_TOKEN"] == "***" and n0.env_display()["GLOG_v"] == "2"
    assert n0.launch_argv()[:3] == ["sh", "-c", WRAPPER]


def test_stage_items_cover_entry_data_index_tokenizer_config(tmp_path):
    plan = build_plan(_spec(tmp_path), "a: 1\n", _hosts(), "j", 9000, environ={"MY_TOKEN": "t"})
    dests = {i.dest: i for i in plan.items}
    assert set(dests) == {"code/run_cpu.py", "code/cpu_patches.py", "data/train/train.mindrecord",
                          "data/train/train.mindrecord.db", "tokenizer/tok.model", "config/job.yaml"}
    assert dests["config/job.yaml"].text == "a: 1\n"
    assert Path(dests["code/run_cpu.py"].local) == ROOT / "launcher" / "entry" / "run_cpu.py"


def test_dry_run_is_valid_shell_and_hides_secrets(tmp_path):
    plan = build_plan(_spec(tmp_path), "a: 1\n", _hosts(), "j", 9000, environ={"MY_TOKEN": "tok-123"})
    text = plan.render_shell()
    assert "tok-123" not in text and "s3cr$t" not in text and "HF_TOKEN='***'" in text
    assert "--node_rank=0" in text and "--node_rank=1" in text
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    # the '~' root still expands in the printed command, a path with a space stays one word
    assert '"$HOME"/alaunch/j' in text
    assert "'--log_dir=/srv/my jobs/alaunch/j/msrun_log'" in text


def test_dry_run_really_runs_the_wrapper(tmp_path):
    """The printed block, executed with msrun swapped for a printer, gives the planned argv and env."""
    spec = _spec(tmp_path, env={"ODD": "a b;$(touch pwned)"})
    host = Host("localhost", 2, workdir=str(tmp_path / "wd"))
    printer = tmp_path / "bin"
    printer.mkdir()
    (printer / "msrun").write_text("#!/bin/sh\nfor a in \"$@\"; do echo \"ARG=$a\"; done\n"
                                   "echo \"PP=$PYTHONPATH\"; echo \"ODD=$ODD\"; echo \"DEV=$ASCEND_RT_VISIBLE_DEVICES\"\n")
    (printer / "msrun").chmod(0o755)
    plan = build_plan(spec, "a: 1\n", [host], "j", 9000, environ={}, bin_dir=str(printer))
    out = subprocess.run(["bash", "-c", plan.render_shell()], capture_output=True, text=True,
                         cwd=tmp_path, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    args = [line[4:] for line in out.stdout.splitlines() if line.startswith("ARG=")]
    assert args == list(plan.nodes[0].argv[1:])
    assert f"PP={tmp_path}/wd/alaunch/j/code" in out.stdout
    assert "ODD=a b;$(touch pwned)" in out.stdout and "DEV=0,1" in out.stdout
    assert not (tmp_path / "pwned").exists()
    assert plan.master_addr == "127.0.0.1"


def test_refusals(tmp_path):
    spec = _spec(tmp_path)
    with pytest.raises(InputError, match="MY_TOKEN is not set"):
        build_plan(spec, "", _hosts(), "j", 9000, environ={})
    with pytest.raises(InputError, match="out of range"):
        build_plan(spec, "", _hosts(), "j", 70000, environ={"MY_TOKEN": "t"})
    with pytest.raises(InputError, match="node 0 is 'localhost'"):
        build_plan(spec, "", [Host("localhost", 1), Host("10.0.0.2", 1)], "j", 9000, environ={"MY_TOKEN": "t"})
    bad = _spec(tmp_path, env={"ASCEND_RT_VISIBLE_DEVICES": "0"})
    with pytest.raises(InputError, match="env.ASCEND_RT_VISIBLE_DEVICES"):
        build_plan(bad, "", _hosts(), "j", 9000, environ={})


def test_addresses_and_quote_path():
    assert quote_path("~/a b") == '"$HOME"/\'a b\''
    assert quote_path("/x;y") == "'/x;y'"
    spec = parse_job({"name": "t", "kind": "finetune", "template": "tiny_llama_cpu/finetune.yaml",
                      "entry": {"script": "/opt/run.py", "args": ["--x", "1 2"]}}, "t.yaml", str(ROOT))
    plan = build_plan(spec, "", [Host("host0", 1), Host("host1", 1)], "j", 9000,
                      addresses={"host0": "10.9.0.1"}, roots={"host1": "/abs/j"}, environ={})
    assert plan.master_addr == "10.9.0.1"
    assert plan.nodes[1].argv[-4:] == ("/opt/run.py", "--config", "/abs/j/config/job.yaml", "--x", "1 2")[-4:]
    assert plan.nodes[1].argv[9] == "/opt/run.py"
    assert [i.dest for i in plan.items] == ["config/job.yaml"]


def _wrapper(tmp_path, scripts, optional=False, argv=("sh", "-c", 'echo "A=$A B=$B"')):
    import subprocess
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ALAUNCH_ENV_SCRIPTS": "\n".join(scripts)}
    if optional:
        env["ALAUNCH_ENV_OPTIONAL"] = "1"
    from launcher.core.plan import WRAPPER, WRAPPER_NAME
    return subprocess.run(["sh", "-c", WRAPPER, WRAPPER_NAME, *argv], env=env, capture_output=True, text=True)


def test_wrapper_sources_env_scripts_in_order_and_reports_a_failing_one(tmp_path):
    (tmp_path / "a.sh").write_text("echo 'Welcome to CANN'\nexport A=1 B=from-a\n")
    (tmp_path / "b.sh").write_text("export B=from-b-after-$A\necho warn >&2\n")
    (tmp_path / "bad.sh").write_text("echo 'atb: libascend_hal.so not found' >&2\nfalse\n")
    ok = _wrapper(tmp_path, [str(tmp_path / "a.sh"), "~/b.sh"])
    assert ok.returncode == 0 and ok.stdout == "A=1 B=from-b-after-1\n"  # in order; ~/ is $HOME
    assert "Welcome to CANN" in ok.stderr and "warn" in ok.stderr  # a script's chatter: stderr (launcher.log)
    bad = _wrapper(tmp_path, [str(tmp_path / "a.sh"), str(tmp_path / "bad.sh")])
    assert bad.returncode == 126 and bad.stdout == ""
    assert f"alaunch: env script {tmp_path / 'bad.sh'} failed (exit 1): atb: libascend_hal.so not found" in bad.stderr
    missing = _wrapper(tmp_path, [str(tmp_path / "nope.sh")])
    assert missing.returncode == 126 and "env script" in missing.stderr and "nope.sh not found" in missing.stderr
    assert _wrapper(tmp_path, [str(tmp_path / "nope.sh"), str(tmp_path / "a.sh")], optional=True).stdout == "A=1 B=from-a\n"
    star = _wrapper(tmp_path, [str(tmp_path / "*.sh")])  # no glob expansion of a path
    assert star.returncode == 126 and "*.sh not found" in star.stderr


def test_plan_env_scripts_and_addr_from_the_hostfile():
    from launcher.core.hostfile import parse_hostfile
    from launcher.core.plan import DEFAULT_ENV_SCRIPTS, master_address
    h0, h1 = parse_hostfile("n0 slots=1 addr=192.168.9.1 env_scripts=/opt/a.sh,/opt/b.sh\nn1 slots=1\n", "hf")
    assert master_address([h0, h1], {"n0": "10.0.0.1"}) == "192.168.9.1"  # addr= beats the ssh HostName
    assert master_address([h1, h0], {"n1": "10.0.0.2"}) == "10.0.0.2"
    from launcher.core.plan import env_script_vars
    assert {v.name: v.value for v in env_script_vars(h0)} == {"ALAUNCH_ENV_SCRIPTS": "/opt/a.sh\n/opt/b.sh"}
    assert {v.name: v.value for v in env_script_vars(h1)} == {"ALAUNCH_ENV_SCRIPTS": "\n".join(DEFAULT_ENV_SCRIPTS),
                                                              "ALAUNCH_ENV_OPTIONAL": "1"}


def test_msrun_args_go_before_the_entry_are_shown_and_checked(tmp_path):
    spec = _spec(tmp_path, msrun_args=["--bind_core=True", "--tail_worker_log=0"])
    plan = build_plan(spec, "a: 1\n", _hosts(), "tiny-1", 8118, environ={"MY_TOKEN": "t"})
    n1 = plan.nodes[1]
    assert list(n1.argv[9:12]) == ["--bind_core=True", "--tail_worker_log=0", "/srv/my jobs/alaunch/tiny-1/code/run_cpu.py"]
    assert "--bind_core=True" in plan.render_shell()
    assert [n.ranks for n in plan.nodes] == [(0, 1), (2, 3)]
    with pytest.raises(InputError, match="--master_port is set by alaunch"):
        _spec(tmp_path, msrun_args=["--master_port=1"])
    with pytest.raises(InputError, match="'bind_core' is not an msrun flag"):
        _spec(tmp_path, msrun_args=["bind_core"])


def test_inventory_lists_the_hosts_msrun_flags(tmp_path):

    from launcher.ops.stage import inventory
    from launcher.runners.local import LocalRunner as LocalExec
    inv = inventory(LocalExec(Host("localhost", 1, workdir=str(tmp_path))), [], msrun_flags=True)
    assert {"--bind_core", "--sim_level", "--tail_worker_log", "--worker_num"} <= set(inv.msrun_flags)


def test_master_port_range_is_parsed_or_refused_in_one_line():
    from launcher.core.plan import DEFAULT_PORT_RANGE, parse_port_range
    assert parse_port_range("29500-29899") == DEFAULT_PORT_RANGE
    assert parse_port_range(" 40000-40000 ") == (40000, 40000)
    for bad in ("29500", "a-b", "30000-29000", "80-90", "60000-70000", ""):
        with pytest.raises(InputError, match=r"--master-port-range.*LO-HI"):
            parse_port_range(bad)


def test_submit_refuses_a_bad_master_port_range_before_touching_a_host(run_cli, tmp_path):
    code, out, err = run_cli("submit", "jobs/tiny_lora_cpu.yaml", "--local", "--master-port-range", "9-1")
    assert code == 2 and "--master-port-range" in err and len(err.strip().splitlines()) == 1
