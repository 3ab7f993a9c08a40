"""A job's NPU telemetry at its edge: the follower's ``npu-smi info`` tables parsed into the
job's cards (:mod:`launcher.metrics.telemetry` keeps them), and the one file per job it is
kept in (``<state dir>/telemetry/<job id>.json``, written atomically).

Why the laptop's state dir and not the registry: the follower writes it every few seconds
while ``status``, the dashboard and a second follower read it; a JSON file replaced whole is
read by any of them without a lock, and it is bounded (~4 KB per card,
:data:`launcher.metrics.telemetry.MAX_POINTS`), where a registry row per sample would grow
with the job. Why parse on the laptop: the parser (:mod:`launcher.ops.npusmi`, tested on 50
real tables) stays one; the host scripts stay stdlib-only and send the table as text (~3 KB
for 8 cards every 5 s on the follower's channel, which carries log lines anyway).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from launcher.core.hostfile import Host
from launcher.metrics.telemetry import CardSample, JobTelemetry
from launcher.ops.npusmi import NpuCard, NpuSmiParseError, parse_npu_smi

DEFAULT_EVERY = 5.0  # s between two samples of a node (the job file's telemetry_every)


def samples(text: str, cards: Sequence[int] | None, at: float) -> dict[int, CardSample]:
    """The job's cards (all when ``cards`` is None) of one ``npu-smi info`` table; an unreadable
    table gives none (a sample less; ``hosts check`` is where a broken npu-smi is reported)."""
    try:
        found = parse_npu_smi(text)
    except NpuSmiParseError:
        return {}
    return {c.npu_id: sample_of(c, at) for c in found if cards is None or c.npu_id in cards}


def sample_of(card: NpuCard, at: float) -> CardSample:
    return CardSample(at, card.aicore_pct, card.hbm_used_mb, card.hbm_total_mb, card.power_w, card.temp_c,
                      card.health)


def card_ranks(hosts: Mapping[str, Host], node_ranks: Mapping[str, int | None],
               ranks: Mapping[str, Sequence[int]]) -> dict[tuple[str, int], int]:
    """(host, card) -> the global rank on it: a node's i-th local rank runs on its i-th card
    (alaunch sets ``ASCEND_RT_VISIBLE_DEVICES`` to the host's cards in order, msrun ``DEVICE_ID``
    to the local rank)."""
    out: dict[tuple[str, int], int] = {}
    for name, host in hosts.items():
        node = node_ranks.get(name)
        for card, rank in zip(host.slot_ids, ranks.get(str(node), ()), strict=False):
            out[(name, card)] = int(rank)
    return out


@dataclass(frozen=True)
class NodeSample:
    """One line of a Slurm node's sample file (``remote/follow.py`` SAMPLE): the node, its
    ``npu-smi info`` table (or ``!exit ...``), when it was taken (the node's clock) and the
    job's cards there with their global ranks."""

    node: str
    table: str
    t: float
    ranks: dict[int, int | None]  # card -> global rank (node rank x cards per node + its index)


def node_sample(line: str, cards_per_node: int) -> NodeSample | None:
    """The sample line -> :class:`NodeSample`; a line that is not one (cut by the line cap,
    damaged) is None: one sample less. The job's cards are the ones Slurm gave it
    (``ASCEND_RT_VISIBLE_DEVICES`` on the node); none known: every card of the table."""
    try:
        got = json.loads(line)
        node, table, t = str(got["node"]), str(got["table"]), float(got["t"])
        devices = str(got.get("devices") or "")
        node_rank = str(got.get("node_rank") or "")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    cards = [int(c) for c in devices.split(",") if c.strip().isdigit()]
    base = int(node_rank) * cards_per_node if node_rank.isdigit() else None
    return NodeSample(node, table, t, {c: None if base is None else base + i for i, c in enumerate(cards)})


def telemetry_path(state_dir: Path, job_id: str) -> Path:
    return state_dir / "telemetry" / f"{job_id}.json"


def load_telemetry(path: Path) -> JobTelemetry | None:
    """What a follower kept of the job (None: nothing sampled, or the file is unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return JobTelemetry.from_json(data) if isinstance(data, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_telemetry(path: Path, data: JobTelemetry) -> None:
    """Atomically (a reader sees the old file or the new one, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data.to_json(), separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)
