"""One long log line without a newline (a ``\\r`` progress bar, a dump) against the follower.

Two sides, each at 8, 16, 32 and 64 MiB:

- ``host script``: the real FOLLOW script (``launcher/remote/follow.py``, run locally as on a
  host) follows a ``worker_0.log`` that is one line of that size, no newline yet. Measured
  (``/proc/<pid>/stat``): its CPU seconds from its start until it idles (start-up ~0.02 s, the
  scans, the line); its share of a core while the line grows by 1 KiB every 50 ms for 5 s (a
  progress bar: the old script re-joined the whole pending line at every poll); the longest gap
  between two messages it sent (a heartbeat is due every second; the follower calls a node
  unreachable after 10 s of silence); once the newline and the node's end are written, the
  time until the (cut) line arrives here, and its size.
- ``follower``: the laptop's splitter (``remote/_prelude.Lines`` with the follower's cap) fed
  that many bytes in 64 KiB reads (the pipe's size), against the old split
  ``(pending + data).split(b"\\n")`` (up to 32 MiB: it is quadratic).

Linear means the seconds double with the size. Run: ``.venv/bin/python benchmarks/bench_follow_lines.py``.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher.ops.follow_transport import MESSAGE_CAP, follow_argv  # noqa: E402
from launcher.remote._prelude import Lines  # noqa: E402

SIZES_MIB = (8, 16, 32, 64)
READ = 1 << 16


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_side(size: int) -> tuple[float, float, float, float, int]:
    """(host CPU s reading the line, its share of a core while the line grows, longest gap
    between messages s, s until the line arrived after its newline, bytes of that line as received)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "state").mkdir()
        (root / "msrun_log").mkdir()
        (root / "state" / "pid").write_text(f"1 {os.getpid()}\n")
        log = root / "msrun_log" / "worker_0.log"
        proc = subprocess.Popen(follow_argv(sys.executable, str(root)), stdout=subprocess.PIPE)
        os.set_blocking(proc.stdout.fileno(), False)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        lines, last, gap = Lines(MESSAGE_CAP), time.monotonic(), 0.0
        got: list[bytes] = []

        def pump(seconds: float) -> None:
            nonlocal last, gap
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for _ in sel.select(0.05):
                    data = os.read(proc.stdout.fileno(), READ)
                    now = time.monotonic()
                    gap, last = max(gap, now - last), now
                    got.extend(text for text, _ in lines.feed(data))

        with log.open("wb") as fh:
            chunk = b"\rx" * (1 << 19)
            for _ in range(size // len(chunk)):
                fh.write(chunk)
        pump(2.0)
        for _ in range(40):  # until the script has read it all and idles
            before = cpu_seconds(proc.pid)
            pump(0.5)
            if cpu_seconds(proc.pid) - before < 0.05:
                break
        cpu = cpu_seconds(proc.pid)  # since it started: its start-up, the scans and the line
        before, start = cpu_seconds(proc.pid), time.monotonic()
        with log.open("ab") as fh:  # the bar goes on: 1 KiB every 50 ms, for 5 s
            for _ in range(100):
                fh.write(b"\rx" * 512)
                fh.flush()
                pump(0.05)
        growing = (cpu_seconds(proc.pid) - before) / (time.monotonic() - start)
        with log.open("ab") as fh:
            fh.write(b"\n")
        start = time.monotonic()
        (root / "state" / "exit_code").write_text("0\n")
        while not any(t.startswith(b"X") for t in got) and time.monotonic() - start < 60:
            pump(0.1)
        arrived = time.monotonic() - start
        proc.wait(10)
        long_line = max((t for t in got if t.startswith(b"L")), key=len, default=b"")
        return cpu, growing, gap, arrived, len(long_line)


def follower_side(size: int, old: bool) -> float:
    data = b"\rx" * (READ // 2)
    start = time.process_time()
    if old:
        pending = b""
        for _ in range(size // READ):
            *_complete, pending = (pending + data).split(b"\n")
    else:
        lines = Lines(MESSAGE_CAP)
        for _ in range(size // READ):
            lines.feed(data)
    return time.process_time() - start


def main() -> None:
    print(f"{'MiB':>4}  {'host CPU s':>10}  {'growing':>7}  {'max gap s':>9}  {'line after s':>12}  "
          f"{'line bytes':>10}  {'follower s':>10}  {'old split s':>11}")
    for mib in SIZES_MIB:
        size = mib << 20
        cpu, growing, gap, arrived, got = host_side(size)
        new = follower_side(size, old=False)
        old = follower_side(size, old=True) if mib <= 32 else float("nan")
        print(f"{mib:>4}  {cpu:>10.2f}  {growing:>7.0%}  {gap:>9.2f}  {arrived:>12.2f}  {got:>10}  "
              f"{new:>10.3f}  {old:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
