"""A step's output copied to another host (ops.relay): streamed through this machine,
sha256-checked on both ends, a host that has the same bytes left alone, a directory or a
missing file refused naming the step, the path and the hosts. Locally (two runners of this
machine, two paths) and between two real sshd hosts of the test cluster."""

from __future__ import annotations

import hashlib
import os
import sys

import pytest

from launcher.core.hostfile import Host, parse_hostfile
from launcher.errors import AlaunchError
from launcher.ops.relay import relay
from launcher.runners import ConnectOptions, make_runner


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_relay_between_two_local_paths(tmp_path):
    data = os.urandom((3 << 20) + 17)  # more than one chunk, not a multiple of one
    src_path = tmp_path / "a" / "merged.ckpt"
    src_path.parent.mkdir()
    src_path.write_bytes(data)
    dst_path = tmp_path / "b" / "deep" / "merged.ckpt"
    host = Host("localhost", 1)
    with make_runner(host) as a, make_runner(host) as b:
        done = relay(a, b, str(src_path), str(dst_path), what="step after: checkpoint")
        assert (done.bytes, done.sha256) == (len(data), _sha(data))
        assert dst_path.read_bytes() == data and not list(dst_path.parent.glob("*.part*"))
        again = relay(a, b, str(src_path), str(dst_path))
        assert again.bytes == 0  # same bytes there already: nothing sent
        with pytest.raises(AlaunchError) as err:
            relay(a, b, str(tmp_path / "a"), str(tmp_path / "c"),
                  what="step after: checkpoint")
        assert "step after: checkpoint" in err.value.message and "a directory" in err.value.message
        with pytest.raises(AlaunchError) as err:
            relay(a, b, str(tmp_path / "nope.ckpt"))
        assert "not found" in err.value.message and "localhost" in err.value.message


@pytest.mark.cluster
def test_relay_between_two_sshd_hosts(ssh_cluster):
    hosts = parse_hostfile(ssh_cluster.hostfile_text(slots=1), "cluster")[:2]
    src_host, dst_host = ssh_cluster.hosts[0], ssh_cluster.hosts[1]
    data = os.urandom(5 << 20)
    path = "/root/alaunch/relaytest/output/merged/x.ckpt"
    src_file = src_host.path(path)
    src_file.parent.mkdir(parents=True, exist_ok=True)
    src_file.write_bytes(data)
    assert not dst_host.path(path).exists()
    options = ConnectOptions(known_hosts=ssh_cluster.known_hosts)
    with make_runner(hosts[0], options) as a, make_runner(hosts[1], options) as b:
        done = relay(a.using(sys.executable), b.using(sys.executable), path, what="step eval: checkpoint")
    assert (done.source, done.target, done.bytes) == (hosts[0].name, hosts[1].name, len(data))
    assert dst_host.path(path).read_bytes() == data
