"""Where a follower keeps each file's byte offset between runs (the job's state dir), so a
later ``logs -f`` of the same job reads only what is new: one JSON file, written atomically."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path


def load_offsets(path: Path | None) -> dict[str, dict[str, list[int]]]:
    """host -> {file: [inode, offset]} saved by an earlier follower of the same job."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_offsets(path: Path | None, offsets: dict[str, dict[str, list[int]]]) -> None:
    """Atomically (a killed follower leaves the old file or the new one, never half)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.{threading.get_ident()}.tmp")  # per thread too
    tmp.write_text(json.dumps(offsets, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
