"""A finished job's big log read through the follower: CPU seconds and the queue's peak, for the
code ``alaunch logs -f --from-start`` and the dashboard's watch both run (run on demand).

    .venv/bin/python benchmarks/bench_follow_big.py [--lines 1000000] [--old-lines 20000]

A synthetic ``msrun_log/worker_0.log`` of N lines (one MindFormers loss line in 4, the rest
INFO noise) in a finished job directory; :class:`launcher.ops.follow.Follower` (``follow=False``,
the local runner: the real host script, no SSH) reads it into a sink that keeps nothing (the
CLI's printing is not what is measured) or into the dashboard's :class:`launcher.ui.hub.JobWatch`.
CPU = this process's user+sys plus its children's (the host script), from ``resource``.
Beside it, in the same run, the old per-line cost (the trend rebuilt over every loss for each
line: ``progress.build_view`` as it was) on ``--old-lines`` lines, which is quadratic; the
queue's largest size is sampled every 50 ms.

Goal (issue 33): a 1M-line log read in < 30 s of CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher.core.hostfile import Host  # noqa: E402
from launcher.metrics import progress  # noqa: E402
from launcher.ops import follow  # noqa: E402
from launcher.ops import registry as reg  # noqa: E402
from launcher.runners import LocalRunner  # noqa: E402


def loss_line(step: int, total: int) -> str:
    return (f"2025-01-01 10:{step // 60 % 60:02d}:{step % 60:02d},000 - mindformers - INFO - {{ Epoch:[  1/  1], "
            f"step:[{step:7d}/{total:7d}], loss: {5.0 / (1 + step / 1000):.6f}, per_step_time: 100ms, "
            "lr: 1e-05, overflow cond: False, loss_scale: 1.0, global_norm: [1.0], train_throughput_per_npu: 10T\n")


def make_job(root: Path, lines: int) -> None:
    (root / "state").mkdir(parents=True)
    (root / "msrun_log").mkdir()
    (root / "state" / "exit_code").write_text("0\n")
    total = lines // 4
    with open(root / "msrun_log" / "worker_0.log", "w") as fh:
        for i in range(lines):
            fh.write(loss_line(i // 4 + 1, total) if i % 4 == 3 else
                     f"2025-01-01 10:00:00,000 - mindformers - INFO - .........dataset batch {i} of the run\n")


class NullSink:
    def line(self, host, rank, text): pass
    def progress(self, view): pass
    def note(self, text): pass
    def msrun(self, host, text): pass
    def nodes(self, views): pass


def cpu() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def read(root: Path, sink) -> tuple[float, float, int, int]:
    """(CPU s, wall s, largest queue, lines seen) of one Follower over the job."""
    record = reg.JobRecord("bench", "bench", "train", reg.SUCCEEDED, "", "", "", "", "", None, None, None,
                           nodes=(reg.NodeRecord(0, "localhost", str(root)),))
    f = follow.Follower(record, LocalRunner, {"localhost": Host("localhost", 1)}, sink, follow=False)
    if hasattr(sink, "follower"):
        sink.follower = f
    peak, done = [0], threading.Event()

    def sample():
        while not done.wait(0.05):
            peak[0] = max(peak[0], f.queue.qsize())
    threading.Thread(target=sample, daemon=True).start()
    c0, t0 = cpu(), time.monotonic()
    result = f.run()
    c1, t1 = cpu(), time.monotonic()
    done.set()
    return c1 - c0, t1 - t0, peak[0], sum(s.lines for s in result.job.states.values())


@contextlib.contextmanager
def old_trend():
    """The follower's view as it was: rebuilt for every line, its trend over every loss so far."""
    new = follow.Follower._view

    def view(self, at):
        lead = progress.lead_state(self.job)
        done = lead.progress() if lead is not None else None
        if done is not None:
            self.clock.note(done[0], at)
        if lead is not None and lead.losses:
            progress.loss_trend([p.loss for p in lead.losses])
        return progress.build_view(self.job, self.clock)
    follow.Follower._view = view  # type: ignore[method-assign]
    try:
        yield
    finally:
        follow.Follower._view = new  # type: ignore[method-assign]


def make_sink(kind: str):
    if kind == "watch":
        from launcher.ui.hub import JobWatch
        return JobWatch("bench")
    if kind == "story":
        from rich.console import Console

        from launcher.cli import environment
        from launcher.cli.live import StorySink
        from launcher.cli.logview import LinePrinter
        quiet = Console(file=open(os.devnull, "w"), no_color=True)  # noqa: SIM115 - lives as long as the run
        environment.set_current(environment.Environment(stdout=quiet, stderr=quiet))
        return StorySink(LinePrinter(tagged=False, raw=False), live=False)
    return NullSink()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--old-lines", type=int, default=20_000)
    ap.add_argument("--sink", choices=("null", "watch", "story"), default="null",
                    help="null: keeps nothing; watch: the dashboard's JobWatch; story: logs -f's StorySink "
                         "printing to /dev/null (not a terminal: no live bar)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sizes = [n for n in (args.old_lines, args.lines) if n]
        for n in sizes:
            make_job(Path(tmp) / f"j{n}", n)
        print(f"{'path':<28} {'lines':>9} {'CPU s':>7} {'wall s':>7} {'CPU µs/line':>11} {'queue peak':>10}")
        runs = [("old trend (per line: all)", args.old_lines, True)] if args.old_lines else []
        runs += [("now", n, False) for n in sizes]
        for name, n, old in runs:
            sink = make_sink(args.sink)
            with old_trend() if old else contextlib.nullcontext():
                c, w, peak, seen = read(Path(tmp) / f"j{n}", sink)
            print(f"{name:<28} {seen:>9,} {c:>7.1f} {w:>7.1f} {1e6 * c / max(1, seen):>11.1f} {peak:>10,}")
        print(f"peak RSS {rss_mb():.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
