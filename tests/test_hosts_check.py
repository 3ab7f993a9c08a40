"""`hosts check`: the pure verdict rules, and the real command against the cluster."""

import json
import subprocess
import time

import pytest

from launcher.core.hostfile import Host
from launcher.errors import ExitCode
from launcher.ops.probe import CheckPolicy, check_host, evaluate
from launcher.remote import wire
from launcher.runners import ExecResult, LocalRunner
from tests.cluster.npu_smi import table_for


def facts(**over):
    base = {"hostname": "h", "os": "Debian GNU/Linux 12 (bookworm)", "arch": "x86_64",
            "python": "3.11.7", "python_path": "/usr/bin/python3", "mindspore": "2.9.0",
            "mindformers": "1.9.0", "msrun": "/v/bin/msrun",
            "npu_smi": {"path": "/usr/local/bin/npu-smi", "code": 0, "out": table_for({"cards": 8}), "err": ""},
            "disk": {"path": "/root", "workdir_exists": False, "free": 100 * 2**30, "total": 200 * 2**30}}
    base.update(over)
    return base


H8 = Host("n1", 8)


def test_healthy_host_passes():
    row = evaluate(H8, facts(), 1.5, CheckPolicy())
    assert row.passed and row.reason == "ok" and row.npus == 8 and row.disk_free_gb == 100.0


def test_probe_is_one_call_with_workdir_in_the_request():
    """The probe runs with the host's site packages (no -S: it looks for MindSpore), the
    interpreter the policy names, and the workdir travels in the request, never in code."""
    seen = {}

    class Capture(LocalRunner):
        def exec(self, argv, stdin=(), **kw):
            seen["argv"], seen["stdin"] = list(argv), b"".join(stdin)
            return ExecResult("n1", 0, f"\n{wire.ANSWER_MARK}{{}}\n".encode(), b"", 0.0)

        def ping(self):
            return 0.0

    check_host(Capture(Host("n1", 1, workdir="~/my dir;$(x)")), CheckPolicy(python="/opt/py 3/python3"), 5)
    assert seen["argv"][:2] == ["/opt/py 3/python3", "-c"] and len(seen["argv"]) == 3
    assert wire.decode(seen["stdin"]) == {"op": "probe", "workdir": "~/my dir;$(x)"}


@pytest.mark.parametrize("over,needle", [
    ({"mindspore": None}, "mindspore not installed"),
    ({"mindformers": None}, "mindformers not installed"),
    ({"msrun": None}, "msrun not found"),
    ({"python": "3.8.10"}, "python 3.8.10 < 3.9"),
    ({"disk": {"path": "/", "free": 2**30, "total": 2**31}}, "1.0 GiB free at / < 5 GiB"),
    ({"npu_smi": {"code": 0, "out": table_for({"cards": 8, "health": ["OK"] * 7 + ["Alarm"]})}},
     "unhealthy: NPU 7 Alarm"),
    ({"npu_smi": {"code": 0, "out": table_for({"cards": 4})}}, "hostfile uses NPU 4,5,6,7 but npu-smi shows 4"),
    ({"npu_smi": {"code": 0, "out": table_for({"cards": 8, "hbm_used_mb": [29954] * 4 + [3347] * 4})}},
     "busy: NPU 0 (29954 MiB HBM in use (no process listed)), NPU 1"),
    ({"npu_smi": {"code": 0, "out": table_for({"cards": 8, "processes": {"5": [[77, "python3", 1000]]}})}},
     "busy: NPU 5 (pid 77 (python3))"),
    ({"npu_smi": {"code": 9, "out": "", "err": "dcmi module initialize failed"}}, "exited 9: dcmi module"),
    ({"npu_smi": {"code": 0, "out": "hello"}}, "cannot read `npu-smi info`"),
])
def test_each_problem_fails_with_its_reason(over, needle):
    row = evaluate(H8, facts(**over), 1.0, CheckPolicy())
    assert not row.passed and needle in row.reason, row.reason


def test_busy_cards_outside_the_used_slots_do_not_fail():
    busy = {"npu_smi": {"code": 0, "out": table_for({"cards": 8, "hbm_used_mb": [29954] * 4 + [3347] * 4})}}
    row = evaluate(Host("n1", 8, slot_ids=(4, 5, 6, 7)), facts(**busy), 1.0, CheckPolicy())
    assert row.passed, row.reason


def test_cpu_only_host_passes_unless_npus_required():
    row = evaluate(Host("localhost", 1), facts(npu_smi=None), 0.0, CheckPolicy())
    assert row.passed and "CPU only" in row.reason and row.npu_summary == "no NPUs (CPU only)"
    row = evaluate(Host("localhost", 1), facts(npu_smi=None), 0.0, CheckPolicy(require_npus=True))
    assert not row.passed and "npu-smi not found" in row.reason


def test_no_hosts_is_a_usage_error(run_cli):
    code, _out, err = run_cli("hosts", "check")
    assert code == ExitCode.USAGE and "-H HOSTFILE" in err


@pytest.mark.ms
def test_local_check_passes_on_this_machine(run_cli, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("hosts", "check", "--local", "--json", "--min-disk-gb", "0")
    rows = json.loads(out)
    assert code == 0, err
    assert rows[0]["mindspore"] == "2.9.0" and rows[0]["mindformers"] == "1.9.0"
    assert rows[0]["msrun"].endswith("/msrun") and rows[0]["npus"] == 0
    assert not (tmp_path / "output").exists()  # the probe did not import mindformers here


def _hostfile(cluster, tmp_path, text=None):
    hf = tmp_path / "hostfile"
    hf.write_text(text if text is not None else cluster.hostfile_text())
    return str(hf)


@pytest.mark.cluster
def test_three_hosts_pass(ssh_cluster, run_cli, tmp_path):
    code, out, err = run_cli("hosts", "check", "-H", _hostfile(ssh_cluster, tmp_path), "--known-hosts",
                             str(ssh_cluster.known_hosts), "--min-disk-gb", "0")
    assert code == 0, out + err
    for h in ssh_cluster.hosts:
        assert h.address in out
    assert out.count("PASS") == 3 and "8x 910B2, all OK, idle" in out and "2.9.0" in out


@pytest.mark.cluster
def test_stopped_sshd_is_a_failed_row_quickly(cluster_sshd, run_cli, tmp_path):
    cluster = cluster_sshd
    cluster.stop_sshd(1)
    t0 = time.monotonic()
    code, out, err = run_cli("hosts", "check", "-H", _hostfile(cluster, tmp_path), "--known-hosts",
                             str(cluster.known_hosts), "--json", "--min-disk-gb", "0")
    elapsed = time.monotonic() - t0
    rows = {r["host"]: r for r in json.loads(out)}
    assert code == ExitCode.CHECK_FAILED and elapsed < 10
    bad = rows[cluster.hosts[1].address]
    assert not bad["reachable"] and not bad["passed"] and "connection refused" in bad["reason"]
    assert rows[cluster.hosts[0].address]["passed"] and rows[cluster.hosts[2].address]["passed"]
    assert "1 of 3 host(s) failed" in err


@pytest.mark.cluster
def test_host_key_problems_are_rows_not_tracebacks(ssh_cluster, run_cli, tmp_path):
    known = tmp_path / "kh"
    hf = _hostfile(ssh_cluster, tmp_path, ssh_cluster.hostfile_text().splitlines(True)[0])
    code, out, err = run_cli("hosts", "check", "-H", hf, "--known-hosts", str(known), "--json")
    row = json.loads(out)[0]
    assert code == ExitCode.CHECK_FAILED and "unknown host key" in row["reason"]
    assert "--accept-new-host-keys" in row["reason"] and "Traceback" not in err
    code, out, err = run_cli("hosts", "check", "-H", hf, "--known-hosts", str(known), "--json",
                             "--accept-new-host-keys", "--min-disk-gb", "0")
    assert code == 0, out + err
    # the key was added for that address (OpenSSH may hash the name, as the user's ssh_config says)
    found = subprocess.run(["ssh-keygen", "-F", ssh_cluster.hosts[0].address, "-f", str(known)],
                           capture_output=True, text=True)
    assert found.returncode == 0 and "ssh-ed25519" in found.stdout


@pytest.mark.cluster
def test_alias_and_unhealthy_card_from_ssh_config(ssh_cluster, run_cli, tmp_path):
    from tests.cluster import HostSpec
    ssh_cluster.write_npu_config(0, HostSpec(cards=8, health=["OK", "Alarm"] + ["OK"] * 6))
    try:
        hf = _hostfile(ssh_cluster, tmp_path, "host0 slots=8\nhost1 slots=8\n")
        code, out, err = run_cli("hosts", "check", "-H", hf, "--ssh-config", str(ssh_cluster.ssh_config),
                                 "--json", "--min-disk-gb", "0")
        rows = {r["host"]: r for r in json.loads(out)}
        assert code == ExitCode.CHECK_FAILED
        assert "unhealthy: NPU 1 Alarm" in rows["host0"]["reason"] and rows["host0"]["hostname"] == "host0"
        assert rows["host1"]["passed"], rows["host1"]
    finally:
        ssh_cluster.write_npu_config(0, HostSpec())
