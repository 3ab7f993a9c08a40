"""Who a long-lived laptop process is, and whether it still runs: what a queued job's waiting
``submit`` and a pipeline's ``alaunch run`` record, so readers can tell a live one from a dead
one. The start time is what tells a reused pid from the recorded process: a pid alone is
recycled within minutes on a busy machine. A process on another machine (a registry on a
shared home) is never judged from here.
"""

from __future__ import annotations

import os
import socket
import subprocess


def process_start(pid: int) -> str | None:
    """An id of when process ``pid`` started (None: no such process). Linux: the start time in
    clock ticks since boot (/proc/PID/stat field 22); elsewhere (a macOS laptop): ``ps -o lstart``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:].split()[19].decode()  # fields after "(comm)": 3.. -> 22 is [19]
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None  # a Linux /proc without that pid: gone
    except (OSError, IndexError, ValueError):
        pass
    try:
        out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def me() -> dict:
    """What a queuing submit records in the job's meta (``waiter``)."""
    pid = os.getpid()
    return {"pid": pid, "start": process_start(pid), "host": socket.gethostname()}


def gone(waiter: dict) -> bool:
    """True when the recorded waiter is certainly not running (same machine, pid gone or reused)."""
    if not waiter or waiter.get("host") != socket.gethostname() or not isinstance(waiter.get("pid"), int):
        return False
    start = process_start(waiter["pid"])
    return start is None or (waiter.get("start") is not None and start != waiter["start"])
