"""The registry at 10,000 jobs: `alaunch jobs`, `jobs --state`, paging, and the lookups `status`
and `cancel` start with, against the same operations on a 100-job registry (same run).

Goal: every operation at 10,000 jobs within 1.5x of its time at 100 jobs (indexes and
paging make them independent of the registry's size). Jobs look like real ones: a 2 KB job
file, a 6 KB rendered config, a hostfile, 8 nodes and 6 events each.

    python benchmarks/bench_registry.py [--jobs 10000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launcher.ops import registry as reg  # noqa: E402

SPEC = "name: tiny\n" + "x: 1\n" * 400
CONFIG = "model:\n" + "  key: value\n" * 500
STATES = (reg.SUCCEEDED, reg.FAILED, reg.CANCELLED, reg.RUNNING)


def fill(path: Path, n: int) -> list[str]:
    ids = []
    with reg.Registry(path) as r:
        for i in range(n):
            rec = r.create_job(f"job{i % 50}", "finetune", spec_text=SPEC, config_text=CONFIG,
                               hostfile_text="".join(f"10.0.0.{k} slots=8\n" for k in range(8)),
                               nodes=[(f"10.0.0.{k}", f"/root/alaunch/j{i}") for k in range(8)],
                               state=reg.RUNNING)
            for k in range(4):
                r.add_event(rec.id, "staged", f"node {k}")
            final = STATES[i % 4] if i < n - 20 else reg.RUNNING
            if final != reg.RUNNING:
                r.set_state(rec.id, final, "done")
            ids.append(rec.id)
    return ids


def cli_jobs(state_dir: Path, *args: str) -> None:
    from launcher.cli.app import main
    os.environ["ALAUNCH_STATE_DIR"] = str(state_dir)
    out, err = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = io.StringIO()
    try:
        code = main(["jobs", *args])
    finally:
        sys.stdout, sys.stderr = out, err
    if code not in (0, None):
        raise SystemExit(f"alaunch jobs {' '.join(args)} exited {code}")


def ops(state_dir: Path, ids: list[str]) -> dict:
    path = state_dir / reg.DB_NAME
    mid = ids[len(ids) // 2]
    prefix = next(mid[:k] for k in range(len(mid) - 4, len(mid) + 1)
                  if sum(i.startswith(mid[:k]) for i in ids) == 1)  # a unique proper prefix

    def with_registry(fn):
        def run():
            with reg.Registry(path) as r:
                fn(r)
        return run

    return {
        "jobs (newest 20)": with_registry(lambda r: r.list(limit=20)),
        "jobs --state running": with_registry(lambda r: r.list(limit=20, states=[reg.RUNNING])),
        "jobs page 3 (offset 40)": with_registry(lambda r: r.list(limit=20, offset=40)
                                                 if "offset" in r.list.__code__.co_varnames else r.list(limit=60)),
        "status lookup by id": with_registry(lambda r: r.get(mid)),
        "status lookup by name": with_registry(lambda r: r.get("job7")),
        "status lookup by id prefix": with_registry(lambda r: r.get(prefix)),
        "events of a job": with_registry(lambda r: r.events(mid)),
        "`alaunch jobs` (CLI, table)": lambda: cli_jobs(state_dir),
        "`alaunch jobs --json -n 50`": lambda: cli_jobs(state_dir, "--json", "-n", "50"),
    }


def timed(fn, rounds: int) -> float:
    fn()  # warm: page cache, imports
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)  # the machine is shared: the least disturbed run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "small", Path(tmp) / "big"
        small.mkdir()
        big.mkdir()
        t = time.perf_counter()
        small_ids = fill(small / reg.DB_NAME, 100)
        big_ids = fill(big / reg.DB_NAME, args.jobs)
        size = (big / reg.DB_NAME).stat().st_size
        print(f"filled 100 and {args.jobs:,} jobs in {time.perf_counter() - t:.1f} s "
              f"(registry {size / 2**20:.0f} MiB); load {os.getloadavg()[0]:.1f}")
        a, b = ops(small, small_ids), ops(big, big_ids)
        worst = 0.0
        print(f"{'operation':<32} {'100 jobs':>10} {args.jobs:>8,} jobs {'ratio':>7}")
        for name in a:
            ts, tb = timed(a[name], args.rounds), timed(b[name], args.rounds)
            worst = max(worst, tb / ts)
            print(f"{name:<32} {ts * 1e3:8.2f} ms {tb * 1e3:10.2f} ms {tb / ts:6.2f}x")
        print(f"registry {args.jobs} jobs: worst ratio {worst:.2f}x of 100 jobs (goal <= 1.5x); "
              f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
