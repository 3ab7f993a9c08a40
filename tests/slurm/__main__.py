"""`python -m tests.slurm up [-n N] | down | status`: the Slurm test cluster by hand.

`up` records its state under /var/tmp/alaunch-slurm/manual; `down` stops only the pids
recorded there. Point Slurm's clients at it with the printed `export SLURM_CONF=...`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.slurm.cluster import STATE_ROOT, SlurmCluster, SlurmUnavailable

MANUAL = STATE_ROOT / "manual"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.slurm")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start slurmctld and N slurmd")
    up.add_argument("-n", type=int, default=2)
    up.add_argument("--cpus", type=int, default=1)
    up.add_argument("--dir", type=Path, default=MANUAL)
    for name in ("down", "status"):
        sub.add_parser(name).add_argument("--dir", type=Path, default=MANUAL)
    args = parser.parse_args(argv)
    if args.cmd == "up":
        if (args.dir / "state.json").exists():
            print(f"a Slurm cluster is already up (state in {args.dir}); run `down` first", file=sys.stderr)
            return 1
        try:
            cluster = SlurmCluster(args.n, cpus=args.cpus, state_dir=args.dir).up()
        except SlurmUnavailable as exc:
            print(f"cannot start the Slurm cluster: {exc}", file=sys.stderr)
            return 1
        print(cluster.describe())
        return 0
    if not (args.dir / "state.json").exists():
        print(f"no Slurm cluster recorded in {args.dir}")
        return 0 if args.cmd == "down" else 1
    cluster = SlurmCluster.load(args.dir)
    if args.cmd == "status":
        print(cluster.describe())
    else:
        cluster.down()
        print("Slurm cluster down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
