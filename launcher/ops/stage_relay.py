"""Relay staging: the laptop sends the missing objects once, the hosts pass them on.

The route (who feeds whom) is planned purely in :mod:`launcher.core.route`. Here: build each
hop's RELAY request (pure, :func:`relay_request`), send the objects-only tar stream to the
route's root(s) through the one fan-out, and read the nested answer back into "which host now
holds every object" and "which host failed, and why".

Each hop stores and sha256-checks every object (as RECEIVE does) while it forwards the same
bytes to its children over its *own* ``ssh`` with ``BatchMode=yes`` and
``StrictHostKeyChecking=yes``: the hosts must already trust each other's keys (the laptop's
keys and known_hosts never leave the laptop). A hop that cannot reach a child, or fails, is
reported; the stager then surveys the hosts that did not get everything and sends them what
they lack directly (objects that did arrive are kept: the store is content-addressed, so a
relay cut half way resumes per object).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from launcher.core.hostfile import Host
from launcher.core.route import LAPTOP, Route
from launcher.errors import RemoteError
from launcher.ops import fanout
from launcher.remote import wire
from launcher.runners import CommandRunner
from launcher.runners.openssh import CIPHERS_FIRST, KEX_FIRST

HOP_CONNECT_TIMEOUT = 10  # seconds a hop waits for its child's ssh handshake


def hop_ssh(host: Host, address: str | None = None) -> list[str]:
    """The ssh argv a host runs to reach ``host`` (pure): the host's own keys, agent-less
    (BatchMode), known host keys only (the same policy as the laptop's default), our fast kex
    and cipher first. The remote command is appended on the hop, quoted word by word."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"ConnectTimeout={HOP_CONNECT_TIMEOUT}", "-o", f"KexAlgorithms=^{KEX_FIRST}",
            "-o", f"Ciphers=^{CIPHERS_FIRST}"]
    if host.port:
        argv += ["-p", str(host.port)]
    if host.user:
        argv += ["-l", host.user]
    return argv + ["--", address or host.name]


def relay_request(route: Route, name: str, *, cas: Mapping[str, str], python: Mapping[str, str],
                  hosts: Mapping[str, Host], addresses: Mapping[str, str] | None = None) -> dict:
    """The RELAY request for hop ``name``, its children's requests nested inside (pure). The
    program text is added once at the top (each hop hands its own on)."""
    addresses = addresses or {}
    return {"op": "relay", "name": name, "cas": cas[name],
            "children": [{"name": c, "python": python[c], "ssh": hop_ssh(hosts[c], addresses.get(c)),
                          "request": relay_request(route, c, cas=cas, python=python, hosts=hosts,
                                                   addresses=addresses)}
                         for c in route.children.get(name, ())]}


@dataclass
class RelayOutcome:
    """Per host: (objects, bytes) it stored from the relay, or why it did not get everything."""

    route: Route
    received: dict[str, tuple[int, int]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    via: dict[str, str] = field(default_factory=dict)  # host -> who fed it
    laptop_bytes: int = 0  # object bytes the laptop sent (once per root)


def read_answer(route: Route, answer: dict, outcome: RelayOutcome) -> None:
    """Fold one hop's nested answer into ``outcome``; the subtree of a failed hop is marked
    not reached (pure)."""
    name = answer["host"]
    if "error" in answer:
        outcome.failed[name] = answer["error"]
        for below in route.subtree(name)[1:]:
            outcome.failed.setdefault(below, f"not reached: {name} failed")
        return
    outcome.received[name] = (int(answer["objects"]), int(answer["bytes"]))
    for child in answer.get("children", ()):
        read_answer(route, child, outcome)


def parents(route: Route) -> dict[str, str]:
    return {c: p for p, kids in route.children.items() for c in kids}


def relay(route: Route, nodes: Mapping[str, CommandRunner], stream: Callable[[str], Iterable[bytes]],
          size: int, *, cas: Mapping[str, str], addresses: Mapping[str, str] | None = None) -> RelayOutcome:
    """Send the objects-only tar stream (``stream(root)``: ops.stage.tar_stream without a
    manifest, ``size`` object bytes) along ``route``, each hop's children run with their
    runner's interpreter; never raises for a host's failure: every host ends in ``received``
    or ``failed``."""
    hosts = {n: node.host for n, node in nodes.items()}
    python = {n: node.python for n, node in nodes.items()}
    program = wire.program("stage", "relay")  # each hop hands it on to its children
    outcome = RelayOutcome(route, via=parents(route))

    def send(root: str) -> dict:
        req = dict(relay_request(route, root, cas=cas, python=python, hosts=hosts, addresses=addresses),
                   program=program)
        return nodes[root].call("stage", req, stdin=stream(root), what="relay")

    done = fanout.run_parallel(route.roots, send)
    for root, answer in done.items():
        if isinstance(answer, BaseException):
            if not isinstance(answer, (RemoteError, OSError)):
                raise answer
            read_answer(route, {"host": root, "error": fanout.error_text(root, answer)}, outcome)
        else:
            outcome.laptop_bytes += size
            read_answer(route, answer, outcome)
    for name in route.hosts():  # a hop that vanished without answering for its child
        if name not in outcome.received:
            outcome.failed.setdefault(name, f"no answer from {outcome.via.get(name, LAPTOP)}")
    return outcome
