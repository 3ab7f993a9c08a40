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


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def where() -> str:
    """Which process space this is: the boot id and the pid namespace (Linux), else the
    hostname. Containers share a hostname but not their pids: a pid recorded in one must not be
    judged from another (a registry on a shared home is read from both)."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = None
    if boot:
        return f"{socket.gethostname()}|{boot}|{ns or ''}"
    return socket.gethostname()


def me() -> dict:
    """What a queuing submit records in the job's meta (``waiter``)."""
    pid = os.getpid()
    return {"pid": pid, "start": process_start(pid), "host": socket.gethostname(), "space": where()}


def gone(waiter: dict) -> bool:
    """True when the recorded waiter is certainly not running (same machine and pid namespace,
    pid gone or reused). A record from another machine, or another container of the same
    hostname, is never judged from here."""
    if not waiter or waiter.get("host") != socket.gethostname() or not isinstance(waiter.get("pid"), int):
        return False
    if waiter.get("space", where()) != where():  # records older than "space": the hostname decides
        return False
    start = process_start(waiter["pid"])
    return start is None or (waiter.get("start") is not None and start != waiter["start"])
