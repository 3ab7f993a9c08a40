"""``scores.json`` in a run directory: what ``score ... --save RUN_DIR`` wrote, what
``results`` reads. One small JSON object with a section per scorer ("squad", "math"),
replaced atomically so a reader never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from launcher.errors import InputError

SCORES_NAME = "scores.json"


def load(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SCORES_NAME
    if not path.exists():
        return {}
    return load_json_object(path)


def load_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding one object; InputError naming the file (and line) otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", source=str(path), line=exc.lineno) from exc
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", source=str(path))
    return data


def save(run_dir: Path, section: str, values: dict[str, Any]) -> Path:
    """Merge ``values`` under ``section`` into RUN_DIR/scores.json (created if needed)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError("--save needs a run directory, this is a file", source=str(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    data = load(run_dir)
    data[section] = values
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".scores.", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, run_dir / SCORES_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return run_dir / SCORES_NAME
