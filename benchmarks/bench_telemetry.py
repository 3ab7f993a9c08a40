"""What a job's NPU telemetry costs to keep (run on demand).

    .venv/bin/python benchmarks/bench_telemetry.py [--hours 1,10] [--every 5]

Feeds one card's samples (values from the real 8-card 910B3 table in tests/fixtures/npu-smi,
varied per sample so the series cannot collapse) at the job file's period into the store the
follower keeps (``metrics.telemetry.JobTelemetry``), and writes it as the follower does
(``ops.telemetry.save_telemetry``). Prints the file's bytes per card for each duration (the
store is bounded: a longer job must not grow it much) and the parse time of one real 8-card
table (``ops.telemetry.samples``, what the laptop does per sample), against the time to only
read the table's lines (the baseline in the same run).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from launcher.metrics.telemetry import CardSample, JobTelemetry  # noqa: E402
from launcher.ops.telemetry import samples, save_telemetry  # noqa: E402

TABLE = ROOT / "tests" / "fixtures" / "npu-smi" / "910B3-8cards-23.0.rc3.3-busy-python-procs.txt"


def bytes_per_card(hours: float, every: float, tmp: Path) -> int:
    rng = random.Random(7)
    data = JobTelemetry(every=every)
    for i in range(int(hours * 3600 / every)):
        data.add("host0", 0, CardSample(i * every, rng.uniform(0, 100), rng.uniform(2000, 60000), 65536,
                                        rng.uniform(80, 350), rng.uniform(40, 70), "OK"))
    path = tmp / f"t{hours}.json"
    save_telemetry(path, data)
    return path.stat().st_size


def parse_ms(text: str, rounds: int) -> tuple[float, float]:
    parse, read = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        found = samples(text, None, 0.0)
        parse.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        lines = text.splitlines()
        read.append(time.perf_counter() - t0)
    assert len(found) == 8 and lines, found
    return statistics.median(parse) * 1e3, statistics.median(read) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", default="1,10")
    ap.add_argument("--every", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for hours in (float(h) for h in args.hours.split(",")):
            print(f"{hours:g} h at {args.every:g} s: {bytes_per_card(hours, args.every, Path(tmp)):,} B per card")
    text = TABLE.read_text()
    parse, read = parse_ms(text, args.rounds)
    print(f"one 8-card table ({len(text):,} B): parsed in {parse:.2f} ms (median of {args.rounds}); "
          f"splitting its lines alone {read:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
