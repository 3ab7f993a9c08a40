"""SSHRunner against the real sshd cluster: quoting, bytes both ways, detached processes, host keys."""


import pytest

from launcher.core.hostfile import Host
from launcher.runners import CommandTimeout, ConnectOptions, HostKeyError, SSHRunner

pytestmark = pytest.mark.cluster
HOSTILE = "a b'c\"d $(x) `y` ; z"
HOSTILE_DIR = "/srv/we ird'dir\";$(touch /srv/CANARY);`touch /srv/CANARY2`"


def runner(cluster, i=0, **opts):
    o = ConnectOptions(known_hosts=opts.pop("known_hosts", cluster.known_hosts),
                       ssh_config=cluster.ssh_config, **opts)
    return SSHRunner(Host(cluster.hosts[i].name, 8), o)


def test_hostile_path_is_literal_for_run_upload_download(ssh_cluster, tmp_path):
    r = runner(ssh_cluster)
    r.run(["mkdir", "-p", HOSTILE_DIR])
    payload = b"x" * 300_000
    assert r.upload_stream([payload[:1000], payload[1000:]], HOSTILE_DIR + "/f;$(id)") == len(payload)
    out = r.run(["ls", HOSTILE_DIR], cwd=HOSTILE_DIR, env={"V": "$(touch /srv/CANARY3)"})
    assert out.stdout == "f;$(id)\n"
    with open(tmp_path / "back", "wb") as f:
        r.download(HOSTILE_DIR + "/f;$(id)", f)
    assert (tmp_path / "back").read_bytes() == payload
    assert r.run(["sh", "-c", 'echo "$V"'], env={"V": "$(touch /srv/CANARY4)"}).stdout == "$(touch /srv/CANARY4)\n"
    host_srv = ssh_cluster.hosts[0].path("/srv")
    assert sorted(p.name for p in host_srv.iterdir() if p.name.startswith("CANARY")) == []
    assert (host_srv / HOSTILE_DIR[len("/srv/"):] / "f;$(id)").stat().st_size == 300_000
    r.close()


def test_paramiko_exec_streams_both_ways_and_times_out(ssh_cluster, tmp_path):
    """The paramiko runner's exec (the fallback without an ssh binary): stdin chunks in,
    stdout into a file as it arrives, the exit code as data, a bounded wait."""
    r = runner(ssh_cluster, 2)
    res = r.exec(["sh", "-c", "cat; echo err >&2; exit 4"], [b"z" * 300000, b"!"])
    assert res.exit_code == 4 and res.stdout == b"z" * 300000 + b"!" and res.stderr == b"err\n"
    with open(tmp_path / "out", "wb") as f:
        assert r.exec(["printf", "%s", HOSTILE], stdout=f).ok
    assert (tmp_path / "out").read_text() == HOSTILE
    with pytest.raises(CommandTimeout):
        r.exec(["sleep", "30"], timeout=0.5)
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


def test_tcp_nodelay_is_set_on_the_connection_unless_turned_off(ssh_cluster):
    """With Nagle + delayed ACK a round trip waits ~40 ms; the figures, with and without
    TCP_NODELAY, are benchmarks/bench_transport.py's (a timing here would flake under load)."""
    import socket
    for nodelay in (True, False):
        r = runner(ssh_cluster, 0, nodelay=nodelay)
        assert r.run(["true"]).exit_code == 0
        sock = r.connection.client.get_transport().sock
        assert bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)) is nodelay
        r.close()


def test_stream_ends_when_the_transport_dies_no_busy_loop(ssh_cluster):
    """A dead transport sets the channel `closed`, never `eof_received`, and select() returns at
    once on it: the stream loop used to spin a core forever. It must return, quickly, idle."""
    import resource
    import threading
    import time

    r = runner(ssh_cluster, 2)
    got: list[str] = []
    first = threading.Event()

    def on_line(line: str):
        got.append(line)
        first.set()

    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("r", r.stream(
        ["sh", "-c", "echo up; sleep 60"], on_line)), daemon=True)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t.start()
    assert first.wait(20) and got == ["up"]
    transport = r.connection.client.get_transport()
    transport.sock.close()  # the link dies under paramiko
    t0 = time.monotonic()
    t.join(15)
    took = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    assert not t.is_alive(), "stream() still looping on a dead transport"
    assert result["r"].exit_code is None and took < 15
    assert (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime) < 5  # no spinning core
    r.close()
