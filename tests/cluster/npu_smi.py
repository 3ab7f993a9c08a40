"""The `npu-smi` emulator: the project's only stand-in, because there are no NPUs here.

It prints the exact table of the real ``npu-smi info`` (npu-smi 23.0.7, 910B2; see
shared/fixtures/npu-smi/) for configured cards, through the launcher's own
``render_npu_smi_table`` (golden-tested against the real outputs, process rows included), so
the parser, ``hosts check``, card allocation and ``alaunch top`` meet the real format.
Configuration is a small JSON file per test host::

    {"cards": 8, "health": "OK" | ["OK", "Alarm", ...], "hbm_used_mb": 3347 | [...],
     "hbm_total_mb": 65536, "processes": {"0": [[pid, name, mem_mb], ...]}, "live": true}

Live values (``"live"``, default on): a card follows the job processes on it, as a real
card follows the processes that opened it. A process is an msrun worker (``MS_ROLE=MS_WORKER``)
whose card is ``ASCEND_RT_VISIBLE_DEVICES[DEVICE_ID]`` (msrun sets ``DEVICE_ID`` to the local
rank; alaunch sets the visible cards), found in ``/proc`` (only the processes whose environ
the caller may read: its own, or all as root — the real npu-smi reads the driver). While one
lives its card lists it in the process table and its values change with the process's age
(:func:`live_card`): HBM ramps up over ~10 s (weights, then the graph), AI Core stays 0 for
the first 5 s (graph compile) then moves between ~55 and 90 %, power and temperature follow
AI Core. When it ends the card is idle again.

Run as ``python -m tests.cluster.npu_smi --config FILE info``; other sub-commands exit 1
with a usage line, as the real tool does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, replace

from launcher.ops.npusmi import NpuCard, NpuProcess, make_910b_cards, render_npu_smi_table

COMPILE_S = 5.0  # AI Core reads 0 while the graph compiles
RAMP_S = 10.0  # HBM grows to the job's share over this many seconds


@dataclass(frozen=True)
class Worker:
    """One job process on one card, as the emulator sees it in /proc."""

    pid: int
    card: int
    name: str
    age_s: float  # seconds since the process started


def live_card(card: NpuCard, workers: list[Worker]) -> NpuCard:
    """The card with these processes on it (pure: the values are a function of the processes'
    pids and ages, so a test pins them with a fixed age)."""
    if not workers:
        return card
    procs, load, extra = [], 0, 0
    for w in sorted(workers, key=lambda w: w.pid):
        mem = int((26000 + (w.pid % 7) * 512) * min(w.age_s / RAMP_S, 1.0))
        procs.append(NpuProcess(card.npu_id, card.chip_id, w.pid, w.name[:24], mem))
        extra += mem
        if w.age_s >= COMPILE_S:
            load = max(load, int(55 + 35 * abs(math.sin(w.age_s / 3.0 + card.npu_id))))
    total = card.hbm_total_mb or 65536
    return replace(card, aicore_pct=load, hbm_used_mb=min((card.hbm_used_mb or 0) + extra, total),
                   power_w=round((card.power_w or 95.0) + 1.5 * load, 1),
                   temp_c=(card.temp_c or 35) + load // 5, processes=card.processes + tuple(procs))


def table_for(cfg: dict, workers: list[Worker] = ()) -> str:
    """Config dict (+ the job processes found) -> the ``npu-smi info`` text (pure)."""
    procs = {int(k): [tuple(p) for p in v] for k, v in cfg.get("processes", {}).items()}
    cards = make_910b_cards(int(cfg.get("cards", 8)), name=cfg.get("name", "910B2"),
                            health=cfg.get("health", "OK"),
                            hbm_used_mb=cfg.get("hbm_used_mb", 3347),
                            hbm_total_mb=int(cfg.get("hbm_total_mb", 65536)), processes=procs)
    cards = [live_card(c, [w for w in workers if w.card == c.npu_id]) for c in cards]
    return render_npu_smi_table(cards)


def _env(pid: str) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        pairs = (v.partition(b"=") for v in fh.read().split(b"\0") if b"=" in v)
        return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def find_workers(proc: str = "/proc") -> list[Worker]:
    """The msrun workers here whose environ we may read, one per card (the first started)."""
    tick = os.sysconf("SC_CLK_TCK")
    with open(f"{proc}/uptime") as fh:
        uptime = float(fh.read().split()[0])
    found: dict[int, Worker] = {}
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        try:
            env = _env(pid)
            if env.get("MS_ROLE") != "MS_WORKER" or "DEVICE_ID" not in env:
                continue
            with open(f"{proc}/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"{proc}/{pid}/comm") as fh:
                name = fh.read().strip()
        except (OSError, ValueError):
            continue
        if fields[0] in ("Z", "X"):
            continue
        local = int(env["DEVICE_ID"]) if env["DEVICE_ID"].isdigit() else 0
        visible = [int(c) for c in env.get("ASCEND_RT_VISIBLE_DEVICES", "").split(",") if c.strip().isdigit()]
        card = visible[local] if local < len(visible) else local
        w = Worker(int(pid), card, name, max(0.0, uptime - int(fields[19]) / tick))
        if card not in found or w.age_s > found[card].age_s:
            found[card] = w
    return list(found.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="npu-smi")
    parser.add_argument("--config", required=True)
    parser.add_argument("command", nargs="?")
    args, _rest = parser.parse_known_args(argv)
    if args.command != "info":
        sys.stderr.write("Usage: npu-smi info [-t TYPE] [-i ID]\n")
        return 1
    with open(args.config, encoding="utf-8") as fh:
        cfg = json.load(fh)
    sys.stdout.write(table_for(cfg, find_workers() if cfg.get("live", True) else []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
