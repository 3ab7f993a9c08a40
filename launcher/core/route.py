"""The staging route through the hosts (pure): who receives each object from whom.

Direct staging sends every object once per filesystem *from the laptop*: a 16 GB checkpoint
to 64 nodes over a 1 Gb/s laptop link is over two hours, although the nodes are linked to
each other by far faster networks. Relay staging sends each object once from the laptop (to
the tree's root, or to ``roots`` hosts) and every host forwards the verified stream on to its
children over the hosts' own ssh, while it writes it to its own store.

The route is a complete ``degree``-ary tree over the hosts in hostfile order (a heap layout:
host ``i``'s children are ``degree*i + 1 .. degree*i + degree``). Why a tree and not a chain:
every hop starts its children's ssh when the stream starts, so the handshakes of one level run
at once; a chain of 64 pays 63 handshakes (~0.15 s each plus a Python start) one after the
other before the last host sees its first byte, a binary tree 6. Why a small degree: a host
sends ``degree`` copies, so its uplink is shared ``degree`` ways; 2 keeps each link at half its
speed at most while the depth stays ``log2(n)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from launcher.errors import InputError

LAPTOP = "laptop"
DEFAULT_DEGREE = 2
MODES = ("auto", "on", "off")
AUTO_MIN_BYTES = 16 << 20  # auto relays when at least this much is missing on 2+ filesystems


@dataclass(frozen=True)
class Route:
    """``children[parent]`` in send order; the laptop's children are the roots."""

    children: Mapping[str, tuple[str, ...]]

    @property
    def roots(self) -> tuple[str, ...]:
        return self.children.get(LAPTOP, ())

    def hosts(self) -> list[str]:
        """Every host on the route, parents before children."""
        out, todo = [], list(self.roots)
        while todo:
            h = todo.pop(0)
            out.append(h)
            todo.extend(self.children.get(h, ()))
        return out

    def subtree(self, host: str) -> list[str]:
        """``host`` and everything below it."""
        out, todo = [], [host]
        while todo:
            h = todo.pop(0)
            out.append(h)
            todo.extend(self.children.get(h, ()))
        return out

    def depth(self) -> int:
        def d(h: str) -> int:
            return 1 + max((d(c) for c in self.children.get(h, ())), default=0)
        return max((d(r) for r in self.roots), default=0)

    def describe(self, limit: int = 4) -> str:
        """``laptop -> h0 -> {h1, h2}; h1 -> {h3, h4}, ...`` (the first ``limit`` hops)."""
        if not self.roots:
            return "nothing to send"
        parts = []
        for parent in [LAPTOP] + self.hosts():
            kids = self.children.get(parent, ())
            if not kids:
                continue
            group = kids[0] if len(kids) == 1 else "{" + ", ".join(kids) + "}"
            if parent == LAPTOP:
                first = self.children.get(kids[0], ()) if len(kids) == 1 else ()
                if first:
                    sub = first[0] if len(first) == 1 else "{" + ", ".join(first) + "}"
                    parts.append(f"laptop -> {group} -> {sub}")
                    continue
                parts.append(f"laptop -> {group}")
            elif not (len(self.roots) == 1 and parent == self.roots[0]):
                parts.append(f"{parent} -> {group}")
        more = len(parts) - limit
        text = "; ".join(parts[:limit])
        return text + (f"; ... ({more} more hop(s), depth {self.depth()})" if more > 0 else "")


def plan_route(hosts: Sequence[str], degree: int = DEFAULT_DEGREE, roots: int = 1) -> Route:
    """The tree over ``hosts`` (hostfile order): ``roots`` hosts fed by the laptop, each host
    feeding up to ``degree`` others. ``degree=1`` is a chain."""
    if degree < 1 or roots < 1:
        raise InputError(f"relay degree and roots must be >= 1 (got degree={degree}, roots={roots})",
                         key="ALAUNCH_RELAY_DEGREE")
    hosts = list(dict.fromkeys(hosts))
    children: dict[str, list[str]] = {LAPTOP: hosts[:roots]}
    # heap layout over the non-root hosts, fed round-robin from the roots' subtrees
    queue = list(hosts[:roots])
    rest = hosts[roots:]
    i = 0
    while rest:
        parent = queue[i]
        take, rest = rest[:degree], rest[degree:]
        children[parent] = take
        queue.extend(take)
        i += 1
    return Route({k: tuple(v) for k, v in children.items() if v})


def direct_route(hosts: Sequence[str]) -> Route:
    """The laptop sends to every host itself (what staging did before relays)."""
    return Route({LAPTOP: tuple(dict.fromkeys(hosts))} if hosts else {})


def parse_mode(value: str | None) -> str:
    """``$ALAUNCH_RELAY``: auto (default), on, off."""
    mode = (value or "auto").strip().lower()
    if mode not in MODES:
        raise InputError(f"ALAUNCH_RELAY={value!r} is not valid (valid: {', '.join(MODES)})", key="ALAUNCH_RELAY")
    return mode


def should_relay(mode: str, filesystems: int, missing_bytes: int) -> bool:
    """Relay when asked (``on``), or (``auto``) when 2+ filesystems lack at least
    :data:`AUTO_MIN_BYTES`: below that the extra hop's handshakes cost more than the bytes."""
    if mode == "off" or filesystems < 2:
        return False
    return mode == "on" or missing_bytes >= AUTO_MIN_BYTES


def staging_note(remote: Sequence[str], mode: str, degree: int = DEFAULT_DEGREE) -> str:
    """What ``plan`` says about staging to these remote hosts (empty for fewer than 2)."""
    if len(remote) < 2:
        return ""
    if mode == "off":
        return "laptop -> each host directly (ALAUNCH_RELAY=off)"
    when = "" if mode == "on" else f" when >= {AUTO_MIN_BYTES >> 20} MiB is missing"
    return (f"{plan_route(remote, degree).describe()} (relay{when}; hosts sharing a filesystem are staged "
            f"once; a hop that fails falls back to direct sends)")
