"""The test cluster itself: hosts are really separate, and npu-smi prints the real table."""


import pytest

from launcher.ops.npusmi import parse_npu_smi
from tests.cluster.npu_smi import table_for
from tests.conftest import FIXTURES

FIXTURE = FIXTURES / "npu-smi" / "910B2-8cards-busy4.txt"  # the real table, in the repo


def test_emulator_table_has_the_real_layout_and_config():
    text = table_for({"cards": 4, "health": ["OK", "Alarm", "OK", "OK"], "hbm_used_mb": [100, 200, 30000, 400],
                      "processes": {"2": [[4242, "python3.9", 29000]]}})
    cards = parse_npu_smi(text)
    assert [c.health for c in cards] == ["OK", "Alarm", "OK", "OK"]
    assert [c.hbm_used_mb for c in cards] == [100, 200, 30000, 400]
    assert cards[2].processes[0].pid == 4242
    real = FIXTURE.read_text().splitlines()
    ours = text.splitlines()
    assert ours[:6] == real[:6]  # banner and headers byte for byte
    assert {len(line) for line in ours} == {len(real[0])}


@pytest.mark.cluster
def test_hosts_have_own_address_hostname_and_filesystem(ssh_cluster):
    names, addrs = [], []
    for h in ssh_cluster.hosts:
        res = ssh_cluster.exec_on(h.index, ["sh", "-c", "hostname; ip -4 -o addr show eth0"])
        name, addr_line = res.stdout.splitlines()
        names.append(name)
        addrs.append(addr_line.split()[3].split("/")[0])
    assert names == [h.name for h in ssh_cluster.hosts]
    assert addrs == [h.address for h in ssh_cluster.hosts]
    ssh_cluster.exec_on(0, ["sh", "-c", "echo mine > /root/only-on-0; echo t > /tmp/only-on-0"])
    for i in range(1, len(ssh_cluster.hosts)):
        res = ssh_cluster.exec_on(i, ["ls", "/root/only-on-0", "/tmp/only-on-0"])
        assert res.returncode != 0
    assert ssh_cluster.hosts[0].path("/root/only-on-0").read_text() == "mine\n"
    # ... but the shared dir is shared, and the venv's python is there (read-only)
    ssh_cluster.exec_on(1, ["sh", "-c", "echo s > /srv/shared/from-1"])
    assert ssh_cluster.exec_on(2, ["cat", "/srv/shared/from-1"]).stdout == "s\n"
    res = ssh_cluster.exec_on(0, ["python3", "-c", "import sys; print(sys.prefix)"])
    assert res.stdout.strip().endswith(".venv"), res.stderr


@pytest.mark.cluster
def test_hosts_reach_each_other_over_tcp(ssh_cluster):
    """What msrun's master_port needs: a port opened on one host is reachable from another."""
    a = ssh_cluster.hosts[0]
    res = ssh_cluster.exec_on(1, ["python3", "-c",
                                  "import socket,sys; socket.create_connection((sys.argv[1], 22), 3).close(); print('ok')",
                                  a.address])
    assert res.stdout.strip() == "ok", res.stderr


@pytest.mark.cluster
def test_npu_smi_on_host_path_follows_config(ssh_cluster):
    from tests.cluster import HostSpec
    ssh_cluster.write_npu_config(2, HostSpec(cards=2, health=["OK", "Warning"]))
    try:
        res = ssh_cluster.exec_on(2, ["npu-smi", "info"])
        assert [c.health for c in parse_npu_smi(res.stdout)] == ["OK", "Warning"]
    finally:
        ssh_cluster.write_npu_config(2, HostSpec())


# ----------------------------------------------------------------------------- live values

from launcher.ops.npusmi import parse_npu_smi_version, render_npu_smi_table  # noqa: E402
from tests.cluster.npu_smi import Worker, find_workers, live_card  # noqa: E402
from tests.conftest import FIXTURES  # noqa: E402

BUSY = ["910B3-8cards-23.0.rc3.3-busy-python-procs.txt", "910B2C-2cards-25.0.rc1.2-multiproc.txt"]


@pytest.mark.parametrize("name", BUSY)
def test_real_loaded_tables_are_what_the_renderer_prints(name):
    # the emulator's live tables go through this renderer: real busy outputs come back byte for byte
    text = (FIXTURES / "npu-smi" / name).read_text()
    assert render_npu_smi_table(parse_npu_smi(text), parse_npu_smi_version(text)) == text


def test_a_card_follows_its_job_process_and_changes_with_time():
    idle = table_for({"cards": 4})
    compiling = parse_npu_smi(table_for({"cards": 4}, [Worker(4321, 2, "python3.11", 2.0)]))
    running = [parse_npu_smi(table_for({"cards": 4}, [Worker(4321, 2, "python3.11", age)])) for age in (20.0, 21.5)]
    assert parse_npu_smi(idle)[2].processes == () and compiling[2].aicore_pct == 0
    assert compiling[2].processes[0].pid == 4321 and 3347 < compiling[2].hbm_used_mb < running[0][2].hbm_used_mb
    a, b = running[0][2], running[1][2]
    assert 55 <= a.aicore_pct <= 90 and a.aicore_pct != b.aicore_pct and a.power_w > compiling[2].power_w
    assert a.temp_c > parse_npu_smi(idle)[2].temp_c and a.processes[0].memory_mb > 25000
    assert [c.aicore_pct for i, c in enumerate(running[0]) if i != 2] == [0, 0, 0]  # the others stay idle
    # the layout stays the real one: every line as wide as the real table's
    real = (FIXTURES / "npu-smi" / BUSY[0]).read_text().splitlines()
    assert {len(line) for line in table_for({"cards": 4}, [Worker(4321, 2, "python3.11", 20.0)]).splitlines()} \
        == {len(real[0])}


def test_the_emulator_finds_msrun_workers_by_their_cards(tmp_path):
    import os
    import subprocess
    import sys
    # cards no other process on this machine uses (other suites' workers are visible here too)
    env = {**os.environ, "MS_ROLE": "MS_WORKER", "ASCEND_RT_VISIBLE_DEVICES": "902,903", "DEVICE_ID": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "import sys, time; print('up', flush=True); time.sleep(30)"],
                            env=env, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"up\n"
        mine = [w for w in find_workers() if w.pid == proc.pid]
        assert [w.card for w in mine] == [903]
    finally:
        proc.kill()
        proc.wait()
    assert not [w for w in find_workers() if w.pid == proc.pid]
    assert live_card(parse_npu_smi(table_for({"cards": 4}))[3], []) == parse_npu_smi(table_for({"cards": 4}))[3]
