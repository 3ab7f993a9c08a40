"""Checkpoints on a host, through ``entry/merge_ckpt.py`` (shipped as program text, run with the
host's python by argv, never a shell line): what each file says of itself (``inspect``: the
global step from its own metadata, size, mtime, sha256) and the merge of chosen per-rank files.
Used by pipelines (the last checkpoint, merge, a step's outputs' digest) and ``resume``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from launcher.core import pipeline as pl
from launcher.errors import AlaunchError

MERGE_PROGRAM = Path(__file__).resolve().parents[1] / "entry" / "merge_ckpt.py"


def on_host(runner: Any, request: dict, what: str, program_file: Path = MERGE_PROGRAM) -> Any:
    """``entry/merge_ckpt.py`` with ``request`` through ``runner`` (with its interpreter: it
    needs the host's mindspore, so no ``-S``): its one JSON line, or an AlaunchError naming the
    host and the script's last words."""
    program = program_file.read_text(encoding="utf-8")
    res = runner.exec([runner.python, "-c", program, json.dumps(request)], timeout=3600)
    if not res.ok:
        tail = (res.stderr.decode(errors="replace").strip().splitlines() or [f"exit code {res.exit_code}"])[-1]
        raise AlaunchError(f"{what} on {runner.name} failed: {tail}")
    return json.loads(res.text().strip().splitlines()[-1])


def checkpoints_of(outputs: Mapping[str, Any]) -> list[pl.Checkpoint]:
    """A job step's checkpoints with what their host said of them (global step, mtime)."""
    files = outputs.get("files") or {}
    return [pl.Checkpoint.of(p, files.get(p) or {}) for p in (outputs.get("paths") or {}).get("checkpoints") or []]
