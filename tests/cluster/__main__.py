"""`python -m tests.cluster up [-n N] | down | status`: the test cluster by hand.

`up` records its state under /var/tmp/alaunch-cluster/manual so `down` and `status`
find it again; `down` kills only the pids recorded there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tests.cluster.cluster import STATE_ROOT, Cluster, ClusterUnavailable

MANUAL = STATE_ROOT / "manual"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start N hosts")
    up.add_argument("-n", type=int, default=4)
    up.add_argument("--dir", type=Path, default=MANUAL)
    for name in ("down", "status"):
        sub.add_parser(name).add_argument("--dir", type=Path, default=MANUAL)
    args = parser.parse_args(argv)
    if args.cmd == "up":
        if (args.dir / "state.json").exists():
            print(f"a cluster is already up (state in {args.dir}); run `down` first", file=sys.stderr)
            return 1
        t0 = time.monotonic()
        try:
            cluster = Cluster(args.n, state_dir=args.dir).up()
        except ClusterUnavailable as exc:
            print(f"cannot start the cluster: {exc}", file=sys.stderr)
            return 1
        print(f"up in {time.monotonic() - t0:.1f} s")
        print(cluster.describe())
        return 0
    if not (args.dir / "state.json").exists():
        print(f"no cluster recorded in {args.dir}")
        return 0 if args.cmd == "down" else 1
    cluster = Cluster.load(args.dir)
    if args.cmd == "status":
        print(cluster.describe())
    else:
        cluster.down()
        print("cluster down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
