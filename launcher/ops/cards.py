"""Card claims on the hosts: who holds what (from the preflight or a look), take, release;
and ``alaunch top``'s survey.

The choice of cards is pure (:mod:`launcher.core.cards`); this is its I/O edge. A claim is a
small file per job in the host's one claims dir that every user of the host shares
(``/var/tmp/alaunch-cards``, sticky and world-writable like /tmp; or the hostfile's
``claims=``), taken by ``launcher/remote/stage.py``'s CLAIM under one ``flock`` per card: two
``submit`` s racing for the same cards serialise there — whoever runs them — and the loser
gets the winner's claim (job, user) back in the same answer, so it re-chooses without
another round trip. A claim holds while its job lives on the host: the supervisor DETACH
noted in it (pid + start time, readable by every user), a process with its marker, or before
the launch a 5-min grace. A job that ends, fails, is cancelled or killed frees its cards
without anyone releasing them; RELEASE is for a submit that claimed and then did not start.
The claims of the release before (``<workdir>/alaunch/cards/<hostname>/``) are still read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from launcher.core.cards import Holder, HostView, holders_from_claims, holders_from_npu_smi, host_view, merge_holders
from launcher.core.hostfile import Host
from launcher.errors import AlaunchError
from launcher.ops.npusmi import NpuSmiParseError, parse_npu_smi
from launcher.runners import CommandRunner


def held_cards(claims: Sequence[Mapping], smi: Mapping | None, own_job: str | None = None) -> dict[int, Holder]:
    """card -> holder on one host, from its live claims and its ``npu-smi info`` answer.

    An ``npu-smi`` that fails or prints something unreadable adds nothing: the claims still
    keep alaunch jobs apart, and ``hosts check`` is where a broken npu-smi is reported."""
    smi_holders: list[Holder] = []
    if smi and smi.get("code") == 0:
        try:
            smi_holders = holders_from_npu_smi(parse_npu_smi(smi.get("out", "")))
        except NpuSmiParseError:
            smi_holders = []
    return merge_holders(holders_from_claims(claims, own_job), smi_holders)


@dataclass(frozen=True)
class ClaimAnswer:
    host: str
    ok: bool
    held: dict[int, Holder]  # what the other live claims (and npu-smi, when asked) hold now


def claim(node: CommandRunner, base: str, job_id: str, cards: Sequence[int], state_dir: str,
          smi: bool = True) -> ClaimAnswer:
    """Take ``cards`` of this host for ``job_id`` (empty: only look); who else holds what."""
    data = node.call("stage", {"op": "claim", "base": base, "job_id": job_id, "cards": list(cards),
                               "state_dir": state_dir, "smi": smi, "claims_dir": node.host.claims_dir},
                     timeout=60, what="claim cards")
    return ClaimAnswer(node.host.name, bool(data["ok"]), held_cards(data["claims"], data.get("npu_smi"), job_id))


def release(node: CommandRunner, base: str, job_id: str) -> bool:
    """Drop ``job_id``'s claim on this host (a submit that claimed, then did not start)."""
    return bool(node.call("stage", {"op": "release", "base": base, "job_id": job_id,
                                    "claims_dir": node.host.claims_dir}, timeout=60,
                          what="release cards")["released"])


def look(hosts: Sequence[Host], exec_factory: Callable[[Host], CommandRunner],
         pythons: Mapping[str, str], port_ask: Mapping[str, Any] | None = None,
         ports: dict[str, int | None] | None = None) -> dict[str, dict[int, Holder] | str]:
    """Ask every host once, in parallel, who holds which card (the preflight's INVENTORY with
    ``cards``; it takes no claim): host -> card -> holder, or the one-line reason a host
    could not be asked (``plan`` then shows its first cards, not asked). ``port_ask``: node 0
    is also asked for a master port as submit's preflight asks it (same request, same host
    code), the answer put in ``ports``."""
    from launcher.ops.fanout import run_parallel
    from launcher.ops.stage import inventory

    def one(host: Host) -> dict[int, Holder]:
        node = exec_factory(host).using(pythons.get(host.name))
        ask = dict(port_ask) if port_ask is not None and host.name == hosts[0].name else {}
        try:
            inv = inventory(node, (), cards=True, **ask)
        finally:
            node.close()
        if ask and ports is not None:
            ports[host.name] = inv.port
        return held_cards(inv.claims, inv.npu_smi)

    out: dict[str, dict[int, Holder] | str] = {}
    for host, got in run_parallel(hosts, one).items():
        if isinstance(got, AlaunchError):
            out[host.name] = got.message.splitlines()[0] if got.message else type(got).__name__
        elif isinstance(got, BaseException):
            raise got
        else:
            out[host.name] = got
    return out


# ----------------------------------------------------------------------------- alaunch top

def top_host(node: CommandRunner, python: str, timeout: float = 15) -> HostView:
    """One host's cards and holders in ONE round trip (``remote/stage.py``'s TOP: every user's
    live claims, ``npu-smi info``, the owner of each process it lists, our jobs' log tails)."""
    from launcher.metrics.logparse import tails_progress
    from launcher.ops.stage import store_base
    host = node.host
    data = node.using(python).call("stage", {"op": "top", "base": store_base(host), "claims_dir": host.claims_dir},
                                   timeout=timeout, what="top")
    smi, notes, cards = data.get("npu_smi"), [], None
    if data.get("problem"):
        notes.append(data["problem"])
    if smi is not None:
        try:
            if smi.get("code") != 0:
                raise NpuSmiParseError(f"npu-smi info exited {smi.get('code')}: {(smi.get('err') or '').strip()[:120]}")
            cards = parse_npu_smi(smi.get("out", ""))
        except NpuSmiParseError as exc:
            notes.append(exc.message.splitlines()[0])
    progress = {job: text for job, tails in (data.get("tails") or {}).items()
                if (text := tails_progress(host.name, tails))}
    return host_view(host, data.get("claims") or (), cards, data.get("procs") or {}, progress,
                     "; ".join(notes) or None, claims_read=not data.get("problem"))


def survey(runners: Mapping[str, CommandRunner], hosts: Sequence[Host], pythons: Mapping[str, str],
           timeout: float = 15) -> list[HostView]:
    """Every host once, in parallel (the one fan-out, ``ops.fanout.run_parallel``): its view,
    or, for a host that did not answer, a view that says why (``unreachable``). The runners
    stay open between refreshes (their ssh masters are reused: one round trip per host)."""
    from launcher.ops.fanout import error_text, run_parallel
    got = run_parallel(hosts, lambda h: top_host(runners[h.name], pythons[h.name], timeout))
    out = []
    for host, view in got.items():
        if isinstance(view, BaseException):
            if not isinstance(view, (AlaunchError, OSError)):
                raise view
            text = error_text(host, view).split(": ", 1)[-1].splitlines()[0]
            out.append(HostView(host.name, error=text))
        else:
            out.append(view)
    return out


class TopSource(ABC):
    """``alaunch top``'s source, for the terminal and the dashboard, whatever the engine: the
    last survey, which :meth:`snapshot` reuses for ``interval`` s — a dashboard with three
    browsers open asks the cluster once per interval, not three times a second. One survey
    at a time. An engine's source says how one survey asks (:meth:`ask`)."""

    def __init__(self, interval: float = 2.0, timeout: float = 15):
        import threading
        self.interval, self.timeout = interval, timeout
        self._lock = threading.Lock()
        self._last: tuple[float, list[HostView]] | None = None

    @abstractmethod
    def ask(self) -> list[HostView]:
        """One survey of the cluster, now."""

    def survey(self) -> list[HostView]:
        """Ask now."""
        import time
        with self._lock:
            views = self.ask()
            self._last = (time.monotonic(), views)
            return views

    def snapshot(self) -> dict:
        """``{"hosts": [...]}`` (``--json``'s shape), asked again once ``interval`` s have passed."""
        import time
        last = self._last
        if last is None or time.monotonic() - last[0] >= self.interval:
            with self._lock:  # whoever waited here gets the survey the first one made
                last = self._last
                if last is None or time.monotonic() - last[0] >= self.interval:
                    views = self.ask()
                    last = self._last = (time.monotonic(), views)
        return {"hosts": [v.to_json() for v in last[1]]}

    def close(self) -> None:  # noqa: B027 - a source without connections has nothing to close
        """Release what the source keeps open between surveys (its connections)."""


class Surveyor(TopSource):
    """A hostfile's hosts: their runners opened once and kept between refreshes (one round
    trip per host)."""

    def __init__(self, hosts: Sequence[Host], exec_factory: Callable[[Host], CommandRunner],
                 pythons: Mapping[str, str], interval: float = 2.0, timeout: float = 15):
        super().__init__(interval, timeout)
        self.hosts, self.pythons = list(hosts), dict(pythons)
        self.runners = {h.name: exec_factory(h) for h in self.hosts}

    def ask(self) -> list[HostView]:
        return survey(self.runners, self.hosts, self.pythons, self.timeout)

    def close(self) -> None:
        for r in self.runners.values():
            r.close()
