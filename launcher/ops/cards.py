"""Card claims on the hosts: who holds what (from the preflight or a look), take, release.

The choice of cards is pure (:mod:`launcher.core.cards`); this is its I/O edge. A claim is a
small file per job under ``<workdir>/alaunch/cards/<hostname>/``, taken by
``launcher/remote/stage.py``'s CLAIM under an ``flock``: two ``submit`` s racing for the same
cards serialise there, and the loser gets the winner's claim back in the same answer, so it
re-chooses without another round trip. A claim holds while a process of its job lives on
the host (the ``ALAUNCH_JOB_ID`` marker), so a job that ends, fails or is cancelled frees its
cards without anyone releasing them; RELEASE is for a submit that claimed and then did not
start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from launcher.core.cards import Holder, holders_from_claims, holders_from_npu_smi, merge_holders
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
                                  "state_dir": state_dir, "smi": smi}, timeout=60, what="claim cards")
    return ClaimAnswer(node.host.name, bool(data["ok"]), held_cards(data["claims"], data.get("npu_smi"), job_id))


def release(node: CommandRunner, base: str, job_id: str) -> bool:
    """Drop ``job_id``'s claim on this host (a submit that claimed, then did not start)."""
    return bool(node.call("stage", {"op": "release", "base": base, "job_id": job_id}, timeout=60,
                          what="release cards")["released"])


def look(hosts: Sequence[Host], exec_factory: Callable[[Host], CommandRunner],
         pythons: Mapping[str, str]) -> dict[str, dict[int, Holder] | str]:
    """Ask every host once, in parallel, who holds which card (the preflight's INVENTORY with
    ``cards``; it takes no claim): host -> card -> holder, or the one-line reason a host
    could not be asked (``plan`` then shows its first cards, not asked)."""
    from launcher.ops.fanout import run_parallel
    from launcher.ops.stage import inventory

    def one(host: Host) -> dict[int, Holder]:
        node = exec_factory(host).using(pythons.get(host.name))
        try:
            inv = inventory(node, (), cards=True)
        finally:
            node.close()
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
