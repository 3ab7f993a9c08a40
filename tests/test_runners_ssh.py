"""SSHRunner against the real sshd cluster: quoting, files, detached processes, host keys."""

import signal
import time

import pytest

from launcher.core.hostfile import Host
from launcher.runners import ConnectOptions, HostKeyError, SSHRunner

pytestmark = pytest.mark.cluster
HOSTILE_DIR = "/srv/we ird'dir\";$(touch /srv/CANARY);`touch /srv/CANARY2`"


def runner(cluster, i=0, **opts):
    o = ConnectOptions(known_hosts=opts.pop("known_hosts", cluster.known_hosts),
                       ssh_config=cluster.ssh_config, **opts)
    return SSHRunner(Host(cluster.hosts[i].name, 8), o)


def test_hostile_path_is_literal_for_run_put_get(ssh_cluster, tmp_path):
    r = runner(ssh_cluster)
    r.run(["mkdir", "-p", HOSTILE_DIR])
    src = tmp_path / "payload"
    src.write_bytes(b"x" * 300_000)
    r.put(src, HOSTILE_DIR + "/f;$(id)")
    out = r.run(["ls", HOSTILE_DIR], cwd=HOSTILE_DIR, env={"V": "$(touch /srv/CANARY3)"})
    assert out.stdout == "f;$(id)\n"
    r.get(HOSTILE_DIR + "/f;$(id)", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == src.read_bytes()
    assert r.run(["sh", "-c", 'echo "$V"'], env={"V": "$(touch /srv/CANARY4)"}).stdout == "$(touch /srv/CANARY4)\n"
    host_srv = ssh_cluster.hosts[0].path("/srv")
    assert sorted(p.name for p in host_srv.iterdir() if p.name.startswith("CANARY")) == []
    assert (host_srv / HOSTILE_DIR[len("/srv/"):] / "f;$(id)").stat().st_size == 300_000
    r.close()


def test_put_tar_many_files(ssh_cluster, tmp_path):
    files = []
    for i in range(200):
        p = tmp_path / "src" / f"d{i % 7}" / f"f {i}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"file {i}")
        files.append(str(p.relative_to(tmp_path / "src")))
    r = runner(ssh_cluster, 1)
    r.put_tar(tmp_path / "src", files, "~/tar dest")
    dest = ssh_cluster.hosts[1].path("/root/tar dest")
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*.txt")) == sorted(files)
    assert (dest / "d3" / "f 10.txt").read_text() == "file 10"
    r.close()


def test_detached_survives_disconnect_and_records_exit_code(ssh_cluster):
    r = runner(ssh_cluster, 2)
    pid = r.start_detached(["sh", "-c", "sleep 1; echo finished; exit 5"], cwd="~",
                           log_path="~/job/log", pid_path="~/job/pid", exit_code_path="~/job/exit")
    assert r.process_state(pid).alive
    r.close()  # the connection goes; the job must not
    job = ssh_cluster.hosts[2].path("/root/job")
    deadline = time.monotonic() + 15
    while not (job / "exit").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (job / "exit").read_text().strip() == "5"
    assert (job / "log").read_text() == "finished\n"
    assert int((job / "pid").read_text()) == pid
    r2 = runner(ssh_cluster, 2)
    assert not r2.process_state(pid).alive  # exited (maybe a zombie): not alive
    r2.close()


def test_signal_group_kills_the_whole_group(ssh_cluster):
    r = runner(ssh_cluster, 0)
    pid = r.start_detached(["sh", "-c", "sleep 300 & sleep 300 & wait"], log_path="/tmp/g/log",
                           pid_path="/tmp/g/pid", exit_code_path="/tmp/g/exit")
    group = lambda: r.run(["ps", "-o", "pid=,stat=", "-g", str(pid)], check=False).stdout.split("\n")
    live = [l for l in group() if l.strip() and "Z" not in l.split()[-1]]
    assert len(live) == 4  # the wrapper, the job's sh and its two sleeps
    assert r.signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        live = [l for l in group() if l.strip() and "Z" not in l.split()[-1]]
        if not live:
            break
        time.sleep(0.05)
    assert live == []
    r.close()


def test_unknown_host_key_refused_then_accepted_with_flag(ssh_cluster, tmp_path):
    known = tmp_path / "known_hosts"
    with pytest.raises(HostKeyError, match="unknown host key.*--accept-new-host-keys"):
        runner(ssh_cluster, 1, known_hosts=known).run(["true"])
    assert not known.exists()
    r = runner(ssh_cluster, 1, known_hosts=known, accept_new_host_keys=True)
    assert r.run(["hostname"]).stdout.strip() == "host1"
    r.close()
    assert known.read_text().strip() == ssh_cluster.host_key_line(1)
    r = runner(ssh_cluster, 1, known_hosts=known)  # now known: strict mode connects
    assert r.run(["true"]).exit_code == 0
    r.close()


def test_changed_host_key_is_always_refused(ssh_cluster, tmp_path):
    known = tmp_path / "known_hosts"
    # host1's address with host2's key: what a reinstalled or impostor host looks like
    wrong = ssh_cluster.host_key_line(2).split(" ", 1)[1]
    known.write_text(f"{ssh_cluster.hosts[1].address} {wrong}\n")
    for accept in (False, True):
        with pytest.raises(HostKeyError, match="CHANGED"):
            runner(ssh_cluster, 1, known_hosts=known, accept_new_host_keys=accept).run(["true"])
    assert known.read_text() == f"{ssh_cluster.hosts[1].address} {wrong}\n"


def test_tcp_nodelay_round_trip_is_fast(ssh_cluster):
    r = runner(ssh_cluster, 0)
    r.run(["true"])
    best = min(r.run(["true"]).duration for _ in range(5))
    assert best < 0.035  # with Nagle + delayed ACK a round trip waits ~40 ms
    r.close()
