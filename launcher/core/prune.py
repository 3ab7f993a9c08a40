"""Which finished job directories ``alaunch prune`` removes on a host: pure.

A user's home fills up after a few dozen checkpoints, because nothing removed job dirs,
staged trees, store objects or ``.part`` leftovers. The host tells what it has
(``launcher/remote/prune.py`` SCAN); this picks; the host removes (PRUNE), with the
orphaned trees, objects and leftovers it computes itself (they need inode counts).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from launcher.errors import InputError

_AGE_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str, option: str = "--older-than") -> float:
    """'7d' -> 604800.0; units s, m, h, d, w (none: seconds)."""
    m = _AGE_RE.fullmatch(text.strip())
    if not m:
        raise InputError(f"malformed age {text!r}; expected a number with a unit s/m/h/d/w, e.g. 7d or 12h",
                         key=option)
    return float(m.group(1)) * _UNIT[m.group(2)]


@dataclass(frozen=True)
class JobDir:
    """One job directory on a host, as SCAN saw it."""

    id: str
    running: bool
    started: bool
    finished: bool
    ended: float | None
    mtime: float

    @classmethod
    def from_scan(cls, d: Mapping[str, Any]) -> JobDir:
        return cls(d["id"], bool(d["running"]), bool(d["started"]), bool(d["finished"]), d.get("ended"),
                   float(d["mtime"]))


def select(jobs: Iterable[JobDir], now: float, older_than: float, keep_last: int = 0,
           protect: Iterable[str] = (), terminal: Iterable[str] = ()) -> list[str]:
    """The job dirs to remove: finished (an exit code for every started node, or a job the
    registry knows ended), no process alive, not running or queued in the registry
    (``protect``), ended at least ``older_than`` seconds ago, and not among the
    ``keep_last`` most recently ended."""
    protect, terminal = set(protect), set(terminal)
    done = [j for j in jobs if not j.running and j.id not in protect and (j.finished or j.id in terminal)]
    done.sort(key=lambda j: (j.ended or j.mtime, j.id), reverse=True)
    return sorted(j.id for j in done[keep_last:] if now - (j.ended or j.mtime) >= older_than)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def dedupe_stores(scans: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Hosts sharing one workdir (same store id and path) are pruned once: the first of them."""
    seen, out = set(), []
    for host, scan in scans:
        key = (scan.get("fsid"), scan.get("base"))
        if scan.get("fsid") is None or key not in seen:
            out.append(host)
        seen.add(key)
    return out
