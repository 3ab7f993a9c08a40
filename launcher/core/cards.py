"""Which cards of each node a job gets: pure, from what the host told us.

A shared 8-card host runs several jobs side by side (an eval on 1 card while a fine-tune
uses 4). Before this module every job got the first N slots, so two jobs on one host both
got cards 0..N-1 and the second failed at run time. Now a node's cards are chosen among its
*candidates* (the hostfile slots left after ``--include``/``--exclude``/``--devices``) that
nothing holds:

- a running alaunch job on that host, any user's (its claim in the host-wide claims dir, see
  ``launcher/remote/stage.py``), or
- a foreign process or HBM in use, per ``npu-smi info`` (:mod:`launcher.ops.npusmi`).

The first free candidates win (lowest ids), so two concurrent 2-card jobs on a 4-slot host
get ``0,1`` and ``2,3``. When a node has too few free candidates, :class:`CardsBusy` names
who holds the rest, in one line. Pinning is the candidates themselves: ``--devices 4,5``
with ``cards_per_node: 2`` leaves exactly those two, so the job runs on them or is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from launcher.core.hostfile import Host
from launcher.errors import AlaunchError, ExitCode, InputError


@dataclass(frozen=True)
class Holder:
    """Who holds one card of one host: an alaunch job (its user, and its supervisor's pid once
    started), or a foreign process / HBM in use."""

    card: int
    job_id: str | None = None
    pid: int | None = None
    process: str | None = None
    hbm_mb: int | None = None
    user: str | None = None

    def describe(self) -> str:
        if self.job_id:
            return f"job {self.job_id}" + (f" (user {self.user})" if self.user else "")
        if self.pid is not None:
            return f"pid {self.pid} ({self.process or '?'}" + (f", user {self.user})" if self.user else ")")
        if self.hbm_mb is not None:
            return f"{self.hbm_mb} MiB HBM in use (no process listed)"
        return "busy"


# said only to a submit that refuses: a queued job (submit --wait, a pipeline's step) waits by itself
BUSY_ADVICE = "wait for them with --wait, or pick others with --devices / --include"


class CardsBusy(AlaunchError):
    """Too few free cards on some node; ``holders`` says who holds the others."""

    exit_code = ExitCode.CARDS_BUSY

    def __init__(self, message: str, holders: Mapping[str, Sequence[Holder]] | None = None, advice: str = ""):
        super().__init__(message + (f"; {advice}" if advice else ""))
        self.holders = {h: tuple(v) for h, v in (holders or {}).items()}
        self.bare = message  # without the advice: the reason of a job that waits already (--wait, pipelines)


def holders_from_claims(claims: Iterable[Mapping[str, Any]], own_job: str | None = None) -> list[Holder]:
    """The host's live claims (``[{"job_id", "cards", "user", "pid"}]``) -> one holder per card."""
    return [Holder(int(c), job_id=claim["job_id"], user=claim.get("user"), pid=claim.get("pid"))
            for claim in claims if claim["job_id"] != own_job for c in claim["cards"]]


def holders_from_npu_smi(cards: Iterable[Any], hbm_threshold_mb: int | None = None) -> list[Holder]:
    """Busy cards of a parsed ``npu-smi info`` (``NpuCard``s): the first process listed, else the HBM."""
    out = []
    for card in cards:
        busy = card.busy() if hbm_threshold_mb is None else card.busy(hbm_threshold_mb)
        if not busy:
            continue
        if card.processes:
            p = card.processes[0]
            out.append(Holder(card.npu_id, pid=p.pid, process=p.name, hbm_mb=p.memory_mb))
        else:
            out.append(Holder(card.npu_id, hbm_mb=card.hbm_used_mb))
    return out


def merge_holders(*groups: Iterable[Holder]) -> dict[int, Holder]:
    """card -> its holder; an alaunch job wins over npu-smi's view of the same card (it names more)."""
    held: dict[int, Holder] = {}
    for group in groups:
        for h in group:
            if h.card not in held or (h.job_id and not held[h.card].job_id):
                held[h.card] = h
    return held


def describe_held(held: Mapping[int, Holder], cards: Iterable[int]) -> str:
    """'0,1 held by job a-…; 2 held by pid 77 (python)': grouped by holder, in card order."""
    groups: dict[str, list[int]] = {}
    for c in sorted(cards):
        if c in held:
            groups.setdefault(held[c].describe(), []).append(c)
    return "; ".join(f"{','.join(map(str, cs))} held by {who}" for who, cs in groups.items())


def choose(host: Host, want: int, held: Mapping[int, Holder]) -> tuple[int, ...]:
    """``want`` free cards among ``host.slot_ids`` (the candidates), lowest first; else CardsBusy."""
    free = [c for c in host.slot_ids if c not in held]
    if len(free) >= want:
        return tuple(free[:want])
    busy = [c for c in host.slot_ids if c in held]
    raise CardsBusy(f"{host.name}: needs {want} free card(s) of {','.join(map(str, host.slot_ids))}, "
                    f"{len(free)} free ({describe_held(held, busy)})",
                    {host.name: [held[c] for c in busy]})


def allocate(hosts: Sequence[Host], want: int, held: Mapping[str, Mapping[int, Holder]]) -> list[Host]:
    """Every node's chosen cards (as ``slot_ids``); one CardsBusy naming every short node."""
    out, problems, holders = [], [], {}
    for h in hosts:
        try:
            out.append(replace(h, slot_ids=choose(h, want, held.get(h.name, {}))))
        except CardsBusy as exc:
            problems.append(exc.message)
            holders.update(exc.holders)
    if problems:
        raise CardsBusy("cards busy: " + " | ".join(problems), holders, advice=BUSY_ADVICE)
    return out


def parse_devices(text: str, option: str = "--devices") -> tuple[int, ...]:
    """``4,5,6,7`` -> (4, 5, 6, 7); one-line error otherwise."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(p.isascii() and p.isdigit() for p in parts):
        raise InputError(f"malformed device list {text!r}; expected comma-separated card ids like 4,5,6,7",
                         key=option)
    ids = tuple(int(p) for p in parts)
    if len(set(ids)) != len(ids):
        raise InputError(f"device list {text!r} names a card twice", key=option)
    return ids


def pin_devices(hosts: Sequence[Host], devices: Sequence[int], option: str = "--devices") -> list[Host]:
    """Make ``devices`` the candidates on every host (each must be one of its slots)."""
    out = []
    for h in hosts:
        missing = [d for d in devices if d not in h.slot_ids]
        if missing:
            raise InputError(f"card {','.join(map(str, missing))} is not among {h.name}'s slots "
                             f"({','.join(map(str, h.slot_ids))})", source=h.source, line=h.line, key=option)
        out.append(replace(h, slot_ids=tuple(devices)))
    return out


# ----------------------------------------------------------------------------- what `plan` shows

@dataclass(frozen=True)
class NodeDevices:
    """The cards ``plan`` shows for one node, and why (``note`` is one line)."""

    host: str
    cards: tuple[int, ...]
    note: str


def pinned_hosts(full: Sequence[Host], candidates: Sequence[Host], want: int, devices: bool = False) -> set[str]:
    """Hosts whose cards the user chose: ``--devices``, or an ``--include``/``--exclude`` that
    leaves exactly ``want`` of the hostfile's slots (more left is a choice among them)."""
    slots = {h.name: h.slot_ids for h in full}
    return {h.name for h in candidates
            if len(h.slot_ids) == want and (devices or h.slot_ids != slots.get(h.name, h.slot_ids))}


def plan_devices(candidates: Sequence[Host], want: int, held: Mapping[str, Mapping[int, Holder] | str],
                 pinned: Iterable[str] = ()) -> list[NodeDevices]:
    """Per node, the cards ``submit`` would pick now (:func:`choose` on what the host told us),
    or, for a host not asked (``held[name]`` is the reason, a str), its first ``want``
    candidates. Busy cards do not fail the plan: the node shows its first candidates and
    says that submit would refuse (or queue with ``--wait``)."""
    pinned = set(pinned)
    out = []
    for h in candidates:
        first = tuple(h.slot_ids[:want])
        how = "pinned" if h.name in pinned else f"first {want}"
        look = held.get(h.name, "not asked")
        if isinstance(look, str):
            out.append(NodeDevices(h.name, first, f"{how} (host not asked: {look})"))
            continue
        try:
            cards = choose(h, want, look)
        except CardsBusy as exc:
            why = exc.message.split(": ", 1)[1]  # without the host name: the line names it
            out.append(NodeDevices(h.name, first, ("pinned, " if h.name in pinned else "")
                                   + f"busy now, submit would refuse or queue with --wait ({why})"))
            continue
        busy = describe_held(look, [c for c in h.slot_ids if c in look])
        out.append(NodeDevices(h.name, cards, ("pinned, free" if h.name in pinned else "free")
                               + (f"; {busy}" if busy else "")))
    return out


def render_devices(nodes: Sequence[NodeDevices]) -> str:
    """The ``# devices`` lines on top of ``plan``'s output (shell comments, so it still pastes)."""
    lines = ["# devices per node (what submit would pick now; it claims them on the host at launch):"]
    lines += [f"#   node {rank} ({n.host}): {','.join(map(str, n.cards))} - {n.note}" for rank, n in enumerate(nodes)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- what `top` shows

def holder_text(h: Holder | None) -> str:
    """One cell: 'alice job-x pid 812' for an alaunch job, 'not alaunch: pid 77 python' for a
    process npu-smi lists that no claim names, '' for a free card."""
    if h is None:
        return ""
    if h.job_id:
        return " ".join(p for p in (h.user, h.job_id, f"pid {h.pid}" if h.pid else None) if p)
    if h.pid is not None:
        return f"not alaunch: pid {h.pid} {h.process or '?'}" + (f" ({h.user})" if h.user else "")
    return h.describe() if h.hbm_mb is None else f"not alaunch: {h.hbm_mb} MiB HBM in use"


@dataclass(frozen=True)
class CardView:
    """One card in ``alaunch top``: npu-smi's values (None on a host without npu-smi) and who holds it."""

    card: int
    health: str | None = None
    aicore_pct: int | None = None
    hbm_used_mb: int | None = None
    hbm_total_mb: int | None = None
    power_w: float | None = None
    temp_c: int | None = None
    holder: Holder | None = None
    progress: str | None = None

    def to_json(self) -> dict[str, Any]:
        h = self.holder
        holder = None if h is None else {
            "kind": "alaunch" if h.job_id else "other", "user": h.user, "job_id": h.job_id, "pid": h.pid,
            "process": h.process, "hbm_mb": h.hbm_mb, "text": holder_text(h)}
        return {"card": self.card, "health": self.health, "aicore_pct": self.aicore_pct,
                "hbm_used_mb": self.hbm_used_mb, "hbm_total_mb": self.hbm_total_mb, "power_w": self.power_w,
                "temp_c": self.temp_c, "holder": holder, "progress": self.progress}


@dataclass(frozen=True)
class HostView:
    """One host in ``alaunch top``: its cards, or why it did not answer (``error``); ``note``
    says what it answered but could not read (npu-smi, the claims dir)."""

    host: str
    cards: tuple[CardView, ...] = ()
    error: str | None = None
    note: str | None = None
    claims_read: bool = True  # False: the host's claims dir could not be read (``note`` says why)
    scheduler: str | None = None  # a scheduler's node: its word on it (Slurm: state, jobs)

    @property
    def free(self) -> tuple[int, ...]:
        """Cards no one holds and not unhealthy (an Alarm card takes no job); none when the
        claims could not be read (who holds what is then unknown, not free)."""
        if not self.claims_read:
            return ()
        return tuple(c.card for c in self.cards if c.holder is None and c.health in (None, "OK"))

    def summary(self) -> str:
        if self.error:
            return f"{self.host}: unreachable ({self.error})"
        if self.scheduler is not None and not self.cards:
            return f"{self.host}: {self.scheduler}" + (f"; {self.note}" if self.note else "")
        free = self.free
        return (f"{self.host}: {len(free)}/{len(self.cards)} free" + (f" ({','.join(map(str, free))})" if free else "")
                + (f"; {self.scheduler}" if self.scheduler else "") + (f"; {self.note}" if self.note else ""))

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "reachable": self.error is None, "error": self.error, "note": self.note,
                "claims_read": self.claims_read, "free": list(self.free), "cards": [c.to_json() for c in self.cards],
                "scheduler": self.scheduler}


def host_view(host: Host, claims: Iterable[Mapping[str, Any]], smi_cards: Sequence[Any] | None,
              procs: Mapping[str, Mapping[str, Any]],
              progress: Mapping[str, str], note: str | None = None, claims_read: bool = True) -> HostView:
    """A host's answer (its live claims, every user's; its parsed ``npu-smi`` cards or None;
    owner/name/job marker of each process npu-smi lists; job -> progress) -> its view. The
    cards are npu-smi's, else the hostfile's slots. A card's holder: its claim (user, job,
    supervisor pid); else a listed process, an alaunch job's when its marker was readable
    ('not alaunch: pid N name' otherwise); else HBM in use."""
    held: dict[int, Holder] = {h.card: h for h in holders_from_claims(claims)}
    for card in smi_cards or ():
        if card.npu_id in held or not card.busy():
            continue
        if card.processes:
            p = card.processes[0]
            info = procs.get(str(p.pid)) or {}
            held[card.npu_id] = Holder(card.npu_id, job_id=info.get("job"), pid=p.pid,
                                       process=info.get("name") or p.name, hbm_mb=p.memory_mb, user=info.get("user"))
        else:
            held[card.npu_id] = Holder(card.npu_id, hbm_mb=card.hbm_used_mb)
    if smi_cards:
        rows = [CardView(c.npu_id, c.health, c.aicore_pct, c.hbm_used_mb, c.hbm_total_mb, c.power_w, c.temp_c,
                         held.get(c.npu_id)) for c in smi_cards]
    else:
        rows = [CardView(c, holder=held.get(c)) for c in sorted(set(range(host.slots)) | set(held))]
    rows = [replace(r, progress=progress.get(r.holder.job_id)) if r.holder and r.holder.job_id else r for r in rows]
    return HostView(host.name, tuple(rows), note=note, claims_read=claims_read)
