"""Relay staging: the route (pure), the RELAY host op run for real (hops as local processes),
and laptop -> host0 -> {host1, host2} on the real SSH cluster, a broken hop falling back."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from launcher.core.hostfile import Host
from launcher.core.plan import StageItem
from launcher.core.route import direct_route, parse_mode, plan_route, should_relay
from launcher.errors import InputError
from launcher.ops.stage import HashCache, LocalFile, Stager, collect, tar_stream
from launcher.ops.stage_relay import RelayOutcome, hop_ssh, read_answer, relay_request
from launcher.remote import wire
from launcher.runners import LocalRunner

PY = sys.executable


# ----------------------------------------------------------------------------- the route (pure)

def test_route_is_a_binary_tree_in_hostfile_order():
    hosts = [f"h{i}" for i in range(8)]
    route = plan_route(hosts)
    assert route.roots == ("h0",)
    assert route.children["h0"] == ("h1", "h2") and route.children["h1"] == ("h3", "h4")
    assert route.children["h3"] == ("h7",) and route.hosts() == hosts
    assert route.depth() == 4 and route.subtree("h1") == ["h1", "h3", "h4", "h7"]
    assert plan_route(hosts[:3]).describe() == "laptop -> h0 -> {h1, h2}"
    assert plan_route([f"h{i}" for i in range(64)]).depth() == 7  # log2(64) + 1
    chain = plan_route(hosts[:4], degree=1)
    assert chain.describe() == "laptop -> h0 -> h1; h1 -> h2; h2 -> h3" and chain.depth() == 4
    two = plan_route(hosts[:6], roots=2)
    assert two.roots == ("h0", "h1") and two.children["h0"] == ("h2", "h3")
    assert direct_route(hosts[:2]).describe() == "laptop -> {h0, h1}"
    long = plan_route([f"h{i}" for i in range(64)]).describe()
    assert long.startswith("laptop -> h0 -> {h1, h2}; h1 -> {h3, h4}") and "more hop(s), depth 7" in long
    with pytest.raises(InputError, match="degree and roots must be >= 1"):
        plan_route(hosts, degree=0)


def test_relay_mode_and_when_auto_relays():
    assert parse_mode(None) == "auto" and parse_mode(" ON ") == "on"
    with pytest.raises(InputError, match=r"ALAUNCH_RELAY='sometimes' is not valid \(valid: auto, on, off\)"):
        parse_mode("sometimes")
    assert not should_relay("auto", 1, 1 << 40)  # one filesystem: nothing to relay
    assert not should_relay("auto", 8, 1 << 20) and should_relay("auto", 8, 64 << 20)
    assert should_relay("on", 2, 1) and not should_relay("off", 8, 1 << 40)


def test_requests_nest_the_route_and_quote_nothing_into_shell():
    hosts = {n: Host(n, 1, user="root", port=2222) for n in ("a", "b", "c")}
    route = plan_route(["a", "b", "c"])
    req = relay_request(route, "a", cas={n: f"/s/{n}/cas" for n in hosts}, python={n: "python3" for n in hosts},
                        hosts=hosts, addresses={"c": "10.0.0.3"})
    assert req["name"] == "a" and req["cas"] == "/s/a/cas" and [c["name"] for c in req["children"]] == ["b", "c"]
    b, c = req["children"]
    assert b["request"]["children"] == [] and b["ssh"][-2:] == ["--", "b"] and c["ssh"][-1] == "10.0.0.3"
    ssh = hop_ssh(hosts["b"])
    assert "BatchMode=yes" in ssh and "StrictHostKeyChecking=yes" in ssh and ssh[ssh.index("-p") + 1] == "2222"
    assert wire.decode(wire.request(req)) == req  # marshals as-is


def test_a_failed_hop_marks_its_subtree_not_reached():
    route = plan_route([f"h{i}" for i in range(7)])
    outcome = RelayOutcome(route)
    read_answer(route, {"host": "h0", "objects": 2, "bytes": 10, "children": [
        {"host": "h1", "error": "Host key verification failed."},
        {"host": "h2", "objects": 2, "bytes": 10, "children": [{"host": "h5", "objects": 2, "bytes": 10,
                                                                 "children": []}]}]}, outcome)
    assert set(outcome.received) == {"h0", "h2", "h5"}
    assert outcome.failed == {"h1": "Host key verification failed.", "h3": "not reached: h1 failed",
                              "h4": "not reached: h1 failed"}


# ----------------------------------------------------------------------------- the host op, for real

def _objects(tmp_path: Path, n: int = 3) -> list[LocalFile]:
    out = []
    for i in range(n):
        data = os.urandom(300_000 + i)
        p = tmp_path / f"obj{i}"
        p.write_bytes(data)
        out.append(LocalFile(f"d/obj{i}", str(p), len(data), hashlib.sha256(data).hexdigest(), 0o644))
    return out


def _hop(name: str, cas: Path, children=(), ssh=("sh", "-c")) -> dict:
    """A child hop reached by ``sh -c`` instead of ssh: the same op, forwarding and checks."""
    return {"name": name, "python": PY, "ssh": list(ssh),
            "request": {"op": "relay", "name": name, "cas": str(cas), "children": list(children)}}


def _run_relay(tmp_path, objects, children):
    program = wire.program("stage", "relay")
    req = {"op": "relay", "name": "a", "cas": str(tmp_path / "a"), "program": program, "children": children}
    node = LocalRunner(Host("localhost", 1))
    return node.exec([PY, "-S", "-c", program], [wire.request(req), *tar_stream(objects, None, lambda n: None)])


def _stored(cas: Path, obj: LocalFile) -> bool:
    path = cas / obj.sha256[:2] / obj.sha256
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == obj.sha256


def test_relay_op_stores_verifies_and_forwards_down_the_tree(tmp_path):
    objects = _objects(tmp_path)
    d = _hop("d", tmp_path / "d")
    children = [_hop("b", tmp_path / "b", [d]), _hop("c", tmp_path / "c"),
                _hop("gone", tmp_path / "gone", ssh=["sh", "-c", "echo 'ssh: connect refused' >&2; exit 255"])]
    result = _run_relay(tmp_path, objects, children)
    assert result.exit_code == 0, result.stderr
    answer = wire.answer(result.stdout)
    assert (answer["host"], answer["objects"], answer["bytes"]) == ("a", 3, sum(o.size for o in objects))
    by = {c["host"]: c for c in answer["children"]}
    assert by["b"]["objects"] == 3 and by["b"]["children"][0]["host"] == "d" and by["c"]["objects"] == 3
    assert by["gone"]["error"] == "ssh: connect refused" and by["gone"]["code"] == 255
    for hop in "abcd":
        assert all(_stored(tmp_path / hop, o) for o in objects), hop
    assert not (tmp_path / "gone").exists()


def test_relay_op_refuses_a_corrupted_object_at_every_hop(tmp_path):
    objects = _objects(tmp_path, 2)
    bad = LocalFile("d/bad", objects[1].path, objects[1].size, "0" * 64, 0o644)
    result = _run_relay(tmp_path, [objects[0], bad], [_hop("b", tmp_path / "b")])
    assert result.exit_code != 0 and b"sha256 mismatch" in result.stderr
    for hop in "ab":
        assert _stored(tmp_path / hop, objects[0])  # what arrived whole stays: resumable per object
        assert not (tmp_path / hop / "00" / ("0" * 64)).exists() and list((tmp_path / hop / "tmp").iterdir()) == []


# ----------------------------------------------------------------------------- over real sshd

@pytest.mark.slow
@pytest.mark.cluster
def test_relay_laptop_host0_then_host1_host2_and_a_broken_hop_falls_back(ssh_cluster, tmp_path):
    """laptop -> host0 -> {host1, host2}: the laptop sends each object once, every host holds
    every object (sha256 checked here too) and its job dir. Then host0 no longer trusts
    host2's key: host2 is staged directly instead, and the route says why."""
    from launcher.runners import make_runner as make_exec
    from launcher.runners.ssh import ConnectOptions
    cluster = ssh_cluster
    hosts = cluster.hosts_as_launcher_hosts(slots=1)
    opts = ConnectOptions(known_hosts=cluster.known_hosts, control_persist=0)
    (tmp_path / "data").mkdir()
    for i in range(3):
        (tmp_path / "data" / f"part{i}.bin").write_bytes(os.urandom(2 << 20))
    items = [StageItem("data", local=str(tmp_path / "data")), StageItem("config/job.yaml", text="a: 1\n")]
    local = collect(items, HashCache(None))
    nodes = {h.name: make_exec(h, options=opts).using(cluster.python) for h in hosts}
    try:
        stager = Stager(nodes, relay="on")
        result = stager.stage(local, {h.name: "~/alaunch/relay-j1" for h in hosts})
        outcome = result.relay
        assert outcome.route.describe() == f"laptop -> {hosts[0].name} -> {{{hosts[1].name}, {hosts[2].name}}}"
        assert set(outcome.received) == {h.name for h in hosts} and not outcome.failed
        assert result.bytes_sent == local.total_bytes  # once, not once per host
        assert result.reports[hosts[2].name].via == hosts[0].name
        assert result.reports[hosts[2].name].relayed_objects == 3
        for i in range(3):  # read inside each host: the data dir is a symlinked tree there
            sums = cluster.exec_on(i, ["sh", "-c", "cd /root/alaunch/relay-j1 && sha256sum data/* && cat config/job.yaml"])
            assert sums.stdout == "".join(f"{f.sha256}  {f.dest}\n" for f in local.files) + "a: 1\n"

        kh = cluster.hosts[0].path("/root/.ssh/known_hosts")
        saved = kh.read_text()
        kh.write_text("".join(line + "\n" for line in saved.splitlines()
                              if not line.startswith(cluster.hosts[2].address + " ")))
        try:
            (tmp_path / "data" / "part3.bin").write_bytes(os.urandom(1 << 20))
            local2 = collect(items, HashCache(None))
            second = Stager(nodes, relay="on").stage(
                local2, {h.name: "~/alaunch/relay-j2" for h in hosts})
        finally:
            kh.write_text(saved)
        assert set(second.relay.received) == {hosts[0].name, hosts[1].name}
        assert "Host key verification failed" in second.relay.failed[hosts[2].name]
        assert second.reports[hosts[2].name].via is None and second.reports[hosts[2].name].objects_sent == 1
        assert second.bytes_sent == 2 * (1 << 20)  # the new object: relayed once, sent once more to host2
        sums = cluster.exec_on(2, ["sha256sum", "/root/alaunch/relay-j2/data/part3.bin"])
        assert sums.stdout.split()[0] == hashlib.sha256((tmp_path / "data" / "part3.bin").read_bytes()).hexdigest()
    finally:
        for n in nodes.values():
            n.close()


def test_plan_note_and_the_cli_connection_defaults(monkeypatch):
    from launcher.cli.connect import control_persist
    from launcher.core.route import staging_note
    assert staging_note(["a"], "auto") == ""
    assert staging_note(["a", "b"], "off") == "laptop -> each host directly (ALAUNCH_RELAY=off)"
    assert staging_note(["a", "b", "c"], "on").startswith("laptop -> a -> {b, c} (relay; ")
    monkeypatch.delenv("ALAUNCH_CONTROL_PERSIST", raising=False)
    assert control_persist() == 60.0
    monkeypatch.setenv("ALAUNCH_CONTROL_PERSIST", "0")
    assert control_persist() == 0.0
    monkeypatch.setenv("ALAUNCH_CONTROL_PERSIST", "soon")
    with pytest.raises(InputError, match=r"ALAUNCH_CONTROL_PERSIST='soon' is not a number of seconds"):
        control_persist()
