"""The OpenSSH-client transport: pure option building, then real ssh against the sshd cluster."""

import io
import os
import shlex
from pathlib import Path

import pytest

from launcher.core.hostfile import Host
from launcher.runners import ConnectOptions, HostKeyError, OpenSSHRunner, make_runner, ssh_argv
from launcher.runners.openssh import classify, control_path, rsync_rsh, ssh_options

HOSTILE = "/srv/ossh we ird'dir\";$(touch /srv/CANARY);`touch /srv/CANARY2`"


# ----------------------------------------------------------------------------- pure

def _opt(argv, key):
    return [argv[i + 1].split("=", 1)[1] for i, a in enumerate(argv)
            if a == "-o" and argv[i + 1].startswith(key + "=")]


def test_ssh_argv_quotes_every_remote_word_and_ends_options():
    host = Host("h1", 8, user="bob", port=2222, identity="~/k")
    argv = ssh_argv(host, ConnectOptions(), ["cat", "--", HOSTILE], ssh="/usr/bin/ssh")
    assert argv[0] == "/usr/bin/ssh"
    assert argv[-3:-1] == ["--", "h1"]
    assert shlex.split(argv[-1]) == ["cat", "--", HOSTILE]  # the remote shell sees exactly these words
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-l") + 1] == "bob"
    assert argv[argv.index("-i") + 1] == os.path.expanduser("~/k")


@pytest.mark.parametrize("plant", ["other user", "symlink", "group-writable", "world-writable", "a file"])
def test_a_control_directory_someone_else_prepared_is_refused_in_one_line(tmp_path, monkeypatch, plant):
    """/tmp/alaunch-ssh-<uid> has a predictable name: one made first by another user, a
    symlink, or one others can write is refused, saying what to do; never used (as root the
    old code took another user's directory over, and followed a symlink)."""
    import tempfile

    from launcher.errors import UnsafeDirectory
    from launcher.runners.openssh import control_dir
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    d = tmp_path / f"alaunch-ssh-{os.getuid()}"
    if plant == "other user":
        if os.geteuid() != 0:
            pytest.skip("making another user's directory needs root")
        d.mkdir(mode=0o700)
        os.chown(d, 65534, 65534)
    elif plant == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        d.symlink_to(tmp_path / "elsewhere")
    elif plant == "a file":
        d.write_text("")
    else:
        d.mkdir()
        d.chmod(0o770 if plant == "group-writable" else 0o777)
    with pytest.raises(UnsafeDirectory) as err:
        control_dir()
    assert str(d) in err.value.message and "remove it" in err.value.message and "TMPDIR" in err.value.message
    assert "\n" not in err.value.message
    with pytest.raises(UnsafeDirectory):  # a runner is never built over it
        OpenSSHRunner(Host("h1", 1), ConnectOptions())


def test_the_control_directory_is_made_private_and_reused(tmp_path, monkeypatch):
    import tempfile

    from launcher.runners.openssh import control_dir
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    d = control_dir()
    assert d == tmp_path / f"alaunch-ssh-{os.getuid()}" and (d.stat().st_mode & 0o777) == 0o700
    d.chmod(0o750)  # ours, others cannot write: kept, and private again
    assert control_dir() == d and (d.stat().st_mode & 0o777) == 0o700


def test_host_key_policy_matches_the_paramiko_path():
    h = Host("h1", 1)
    strict = ssh_options(h, ConnectOptions(known_hosts=Path("/k h/known")))
    assert _opt(strict, "StrictHostKeyChecking") == ["yes"]
    assert _opt(strict, "BatchMode") == ["yes"]
    assert _opt(strict, "UserKnownHostsFile") == ['"/k h/known"']  # spaces survive ssh's tokenizer
    accept = ssh_options(h, ConnectOptions(accept_new_host_keys=True))
    assert _opt(accept, "StrictHostKeyChecking") == ["accept-new"]  # never "no": changed keys refused
    assert _opt(accept, "UserKnownHostsFile") == []  # default: ssh_config's, else ~/.ssh/known_hosts


def test_config_file_timeout_and_multiplexing_options(tmp_path):
    o = ConnectOptions(ssh_config=Path("/etc/x/ssh_config"), connect_timeout=2.4)
    argv = ssh_options(Host("h", 1), o)
    assert argv[argv.index("-F") + 1] == "/etc/x/ssh_config"
    assert _opt(argv, "ConnectTimeout") == ["2"]
    assert _opt(argv, "ControlMaster") == []  # only with a control path
    private = control_path(ConnectOptions(), tmp_path)
    assert private != control_path(ConnectOptions(), tmp_path)  # default: one master per runner
    withcp = ssh_options(Host("h", 1), ConnectOptions(), control=private)
    assert _opt(withcp, "ControlPath") == [private] and _opt(withcp, "ControlMaster") == ["auto"]
    known = tmp_path / "known_hosts"
    known.write_text("a ssh-ed25519 AAAA\n")
    shared = ConnectOptions(known_hosts=known, control_persist=60)
    first = control_path(shared, tmp_path)
    assert first == control_path(ConnectOptions(known_hosts=known, control_persist=60), tmp_path)
    assert _opt(ssh_options(Host("h", 1), shared, control=first), "ControlPersist") == ["60"]
    known.write_text("a ssh-ed25519 BBBB\n")  # an edited known_hosts never reuses the old master
    assert control_path(shared, tmp_path) != first
    assert first != control_path(ConnectOptions(known_hosts=known, control_persist=60,
                                                accept_new_host_keys=True), tmp_path)
    assert shlex.split(rsync_rsh(Host("h", 1, port=22), o)) == ["ssh", *ssh_options(Host("h", 1, port=22), o)]


def test_classify_ssh_failures():
    changed = "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed."
    assert isinstance(classify("h", changed, "/kh"), HostKeyError)
    assert "CHANGED" in str(classify("h", changed, "/kh"))
    assert "unknown host key" in str(classify("h", "No ED25519 host key is known for x and you have "
                                                   "requested strict checking.\nHost key verification failed.", "/kh"))
    assert "refused" in str(classify("h", "ssh: connect to host x port 22: Connection refused", None))
    assert classify("h", "some remote program said this", None) is None


def test_make_runner_prefers_openssh_when_installed():
    assert isinstance(make_runner(Host("h", 1)), OpenSSHRunner)


# ----------------------------------------------------------------------------- real ssh

def runner(cluster, i=0, **opts):
    o = ConnectOptions(known_hosts=opts.pop("known_hosts", cluster.known_hosts),
                       ssh_config=cluster.ssh_config, **opts)
    return OpenSSHRunner(Host(cluster.hosts[i].name, 8), o)


@pytest.mark.cluster
def test_upload_download_offset_hostile_path(ssh_cluster):
    payload = os.urandom(3 << 20) + b"tail"
    with runner(ssh_cluster) as r:
        path = HOSTILE + "/f.bin"
        assert r.upload_stream([payload[:1 << 20], payload[1 << 20:]], path) == len(payload)
        buf = io.BytesIO()
        assert r.download(path, buf) == len(payload) and buf.getvalue() == payload
        buf = io.BytesIO()
        assert r.download(path, buf, offset=(3 << 20) + 1) == 3 and buf.getvalue() == b"ail"
        res = r.exec(["sh", "-c", "ls /srv/CANARY* 2>/dev/null | wc -l"])
        code, out = res.exit_code, res.stdout
        assert code == 0 and out.decode().split()[-1] == "0"
        res = r.exec(["ls", "--", HOSTILE])
        code, out = res.exit_code, res.stdout
        assert code == 0 and out.decode().split() == ["f.bin"]  # no .part left behind
        with pytest.raises(Exception, match="No such file"):
            r.download("/srv/nope", io.BytesIO())


@pytest.mark.cluster
def test_unknown_host_key_refused_then_accepted_through_ssh(ssh_cluster, tmp_path):
    known = tmp_path / "known hosts"
    with pytest.raises(HostKeyError, match="unknown host key.*--accept-new-host-keys"):
        runner(ssh_cluster, 2, known_hosts=known).exec(["true"])
    assert not known.exists() or ssh_cluster.hosts[2].address not in known.read_text()
    with runner(ssh_cluster, 2, known_hosts=known, accept_new_host_keys=True) as r:
        assert r.exec(["hostname"]).stdout.strip() == b"host2"
    assert ssh_cluster.host_key_line(2).split()[2] in known.read_text()
    with runner(ssh_cluster, 2, known_hosts=known) as r:  # now known: strict mode connects
        assert r.exec(["true"]).exit_code == 0


@pytest.mark.cluster
def test_changed_host_key_refused_through_ssh_even_with_accept_new(ssh_cluster, tmp_path):
    known = tmp_path / "known_hosts"
    wrong = ssh_cluster.host_key_line(2).split(" ", 1)[1]
    known.write_text(f"{ssh_cluster.hosts[1].address} {wrong}\n")
    for accept in (False, True):
        r = runner(ssh_cluster, 1, known_hosts=known, accept_new_host_keys=accept)
        with pytest.raises(HostKeyError, match="CHANGED"):
            r.exec(["true"])
        with pytest.raises(HostKeyError, match="CHANGED"):
            r.download("/etc/hostname", io.BytesIO())
        r.close()
    assert known.read_text() == f"{ssh_cluster.hosts[1].address} {wrong}\n"


@pytest.mark.cluster
def test_master_connection_reused_and_closed(ssh_cluster):
    r = runner(ssh_cluster, 0)
    r.exec(["true"])
    prefix = Path(r._control).name.split("%")[0]
    socks = [p for p in Path(r._control).parent.iterdir() if p.name.startswith(prefix)]
    assert len(socks) == 1
    r.close()
    assert not [p for p in Path(r._control).parent.iterdir() if p.name.startswith(prefix)]


@pytest.mark.cluster
def test_shared_master_survives_close_and_serves_the_next_runner(ssh_cluster):
    from launcher.runners.openssh import close_master
    a = runner(ssh_cluster, 2, control_persist=20)
    a.exec(["true"])
    a.close()
    prefix = Path(a._control).name.split("%")[0]
    assert [p for p in Path(a._control).parent.iterdir() if p.name.startswith(prefix)]  # still there
    b = runner(ssh_cluster, 2, control_persist=20)
    assert b._control == a._control
    assert b.exec(["hostname"]).stdout.strip() == b"host2"
    close_master(b.ssh, b.host, b.options, b._control)  # leave no master behind for other tests
    assert not [p for p in Path(a._control).parent.iterdir() if p.name.startswith(prefix)]


def test_single_use_asks_ssh_for_no_master_of_its_own():
    h = Host("h", 1)
    assert _opt(ssh_options(h, ConnectOptions(), control="/s/%C", master=False), "ControlMaster") == ["no"]
    assert _opt(ssh_options(h, ConnectOptions(), control="/s/%C", master=False), "ControlPath") == ["/s/%C"]
    assert _opt(ssh_options(h, ConnectOptions(), control="/s/%C", master=False), "ControlPersist") == []


@pytest.mark.cluster
def test_single_use_rides_a_master_that_is_up_else_connects_plainly(ssh_cluster):
    """The client's TCP port on the host ($SSH_CONNECTION) tells which connection a command used."""
    from launcher.runners.openssh import close_master
    port = ["sh", "-c", 'echo "$SSH_CONNECTION" | cut -d" " -f2']
    a = runner(ssh_cluster, 1, control_persist=20)
    try:
        master_port = a.exec(port).stdout.strip()
        b = runner(ssh_cluster, 1, control_persist=20).single_use()
        assert b.exec(port).stdout.strip() == master_port  # rode the shared master
    finally:
        close_master(a.ssh, a.host, a.options, a._control)
    c = runner(ssh_cluster, 1).single_use()  # a private socket path: no master is up for it
    prefix = Path(c._control).name.split("%")[0]

    def socks():
        return [p for p in Path(c._control).parent.iterdir() if p.name.startswith(prefix)]
    first = c.exec(port).stdout.strip()
    assert not socks() and first != master_port  # a plain connection, no master left behind
    second = c.exec(port).stdout.strip()  # used again: now it keeps a master
    assert len(socks()) == 1 and second not in (first, master_port)
    assert c.exec(port).stdout.strip() == second
    c.close()
    assert not socks()


@pytest.mark.cluster
def test_connect_opens_the_master_without_running_anything(ssh_cluster, tmp_path):
    r = runner(ssh_cluster, 1)
    prefix = Path(r._control).name.split("%")[0]

    def socks():
        return [p for p in Path(r._control).parent.iterdir() if p.name.startswith(prefix)]
    r.connect()
    assert len(socks()) == 1
    assert r.exec(["hostname"]).stdout.strip() == b"host1"
    r.close()
    assert not socks()
    with pytest.raises(HostKeyError):
        runner(ssh_cluster, 1, known_hosts=tmp_path / "empty_known_hosts").connect()


def test_a_followers_process_opens_no_master_and_a_reconnect_bypasses_any():
    r = OpenSSHRunner(Host("h", 1), ConnectOptions(control_persist=60), ssh="/usr/bin/ssh")
    first = r.process_argv(["python3", "-c", "x"])
    assert _opt(first, "ControlMaster") == ["no"] and _opt(first, "ControlPath") == [r._control]
    again = r.process_argv(["python3", "-c", "x"], fresh=True)  # a master may hang on a cut link
    assert _opt(again, "ControlMaster") == [] and _opt(again, "ControlPath") == []
    assert again[-2:] == ["h", "python3 -c x"] and first[-2:] == again[-2:]
