"""The `npu-smi` emulator: the project's only stand-in, because there are no NPUs here.

It prints the exact table of the real ``npu-smi info`` (npu-smi 23.0.7, 910B2; see
shared/fixtures/npu-smi/) for configured cards, through the launcher's own
``render_npu_smi_table`` (golden-tested against the real output), so the parser and
``hosts check`` meet the real format. Configuration is a small JSON file per test host::

    {"cards": 8, "health": "OK" | ["OK", "Alarm", ...], "hbm_used_mb": 3347 | [...],
     "hbm_total_mb": 65536, "processes": {"0": [[pid, name, mem_mb], ...]}}

Run as ``python -m tests.cluster.npu_smi --config FILE info``; other sub-commands exit 1
with a usage line, as the real tool does.
"""

from __future__ import annotations

import argparse
import json
import sys

from launcher.ops.npusmi import make_910b_cards, render_npu_smi_table


def table_for(cfg: dict) -> str:
    """Config dict -> the ``npu-smi info`` text (pure)."""
    procs = {int(k): [tuple(p) for p in v] for k, v in cfg.get("processes", {}).items()}
    cards = make_910b_cards(int(cfg.get("cards", 8)), name=cfg.get("name", "910B2"),
                            health=cfg.get("health", "OK"),
                            hbm_used_mb=cfg.get("hbm_used_mb", 3347),
                            hbm_total_mb=int(cfg.get("hbm_total_mb", 65536)), processes=procs)
    return render_npu_smi_table(cards)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="npu-smi")
    parser.add_argument("--config", required=True)
    parser.add_argument("command", nargs="?")
    args, _rest = parser.parse_known_args(argv)
    if args.command != "info":
        sys.stderr.write("Usage: npu-smi info [-t TYPE] [-i ID]\n")
        return 1
    with open(args.config, encoding="utf-8") as fh:
        sys.stdout.write(table_for(json.load(fh)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
