"""CPU-seconds spent by a benchmark and everything it starts, whatever else runs on the machine.

The benchmark process moves itself into a fresh cgroup before it starts the test cluster, so
the cluster's sshds, the ssh clients, rsync and the host scripts are all counted in it, and
nothing of the other sessions sharing the machine is. On a busy machine wall times swing
by 3x from round to round (the other sessions' load); the CPU-seconds each tool needs for the
same transfer do not, so they are printed beside the times. Needs root (the benchmarks do);
cgroup v1 (``cpuacct``) or v2. ``seconds()`` is None where neither can be used.
"""

from __future__ import annotations

import os
from pathlib import Path

V1 = Path("/sys/fs/cgroup/cpuacct")
V2 = Path("/sys/fs/cgroup")


class CgroupCPU:
    def __init__(self) -> None:
        self.dir: Path | None = None
        self.v2 = (V2 / "cgroup.controllers").exists()
        base = V2 if self.v2 else V1
        path = base / f"alaunch-bench-{os.getpid()}"
        try:
            path.mkdir(exist_ok=True)
            (path / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            return
        self.dir, self.base = path, base

    def seconds(self) -> float | None:
        """CPU-seconds so far of every process of the cgroup (also the ones that ended)."""
        if self.dir is None:
            return None
        if self.v2:
            for line in (self.dir / "cpu.stat").read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
            return None
        return int((self.dir / "cpuacct.usage").read_text()) / 1e9

    def close(self) -> None:
        if self.dir is None:
            return
        try:
            (self.base / "cgroup.procs").write_text(str(os.getpid()))
            self.dir.rmdir()
        except OSError:
            pass
