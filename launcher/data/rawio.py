"""Reading a raw math set (JSON lines of {"problem", "solution"}) into its unique rows.

Exact dedup happens while reading, because it is also what makes reading fast: a line
whose bytes were seen before is counted and skipped without decoding or parsing, so a
set that is a third duplicates parses only two thirds of its lines. Lines that differ
in bytes but hold the same (problem, solution) are caught by a second map on the pair.
Every malformed line becomes one :class:`InputError` naming file:line, or, with
``skip_bad``, a counted entry in the report.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from launcher.data.bulk import gc_paused
from launcher.errors import InputError

FIELDS = ("problem", "solution")
_SHAPE = 'each line must be one JSON object like {"problem": "...", "solution": "..."}'
MAX_BAD_EXAMPLES = 20


@dataclass
class RawSet:
    """Unique (problem, solution) rows in first-occurrence order, with their raw counts."""

    source: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    raw_rows: int = 0  # well-formed rows read, duplicates included
    blank_lines: int = 0
    bad_rows: int = 0
    bad_examples: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.raw_rows - len(self.rows)


def parse_line(raw: bytes, source: str, lineno: int) -> tuple[str, str]:
    """One raw line -> (problem, solution); raises InputError naming ``source:lineno``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}); "
                         "save the file as UTF-8", source=source, line=lineno) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at column {exc.colno}); {_SHAPE}",
                         source=source, line=lineno) from None
    if not isinstance(obj, dict):
        raise InputError(f"expected a JSON object, got a JSON {type(obj).__name__}; {_SHAPE}",
                         source=source, line=lineno)
    values = []
    for name in FIELDS:
        if name not in obj:
            raise InputError(f"missing; {_SHAPE}", source=source, line=lineno, key=name)
        value = obj[name]
        if not isinstance(value, str):
            raise InputError(f"must be a string, got {type(value).__name__}", source=source,
                             line=lineno, key=name)
        values.append(value)
    return values[0], values[1]


def read_raw(path: Path, *, skip_bad: bool = False) -> RawSet:
    """Read ``path``, keeping each distinct (problem, solution) at its first line.

    Fast path: count identical lines with a C-level ``Counter``, then split the distinct
    lines of the canonical shape at their quotes (see :func:`_split_canonical`); other
    well-formed files go through one ``json.loads`` of all distinct lines. Anything unusual (bad
    UTF-8, bad JSON, a non-object, a missing or non-string field) sends the whole file down the
    line-by-line path, which names the offending line.
    """
    with gc_paused():
        return _read_raw(path, skip_bad=skip_bad)


def _read_raw(path: Path, *, skip_bad: bool) -> RawSet:
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=source) from None
    plain = _is_plain(data)
    lines = data.split(b"\n")
    del data
    if lines and not lines[-1]:
        lines.pop()
    line_counts = Counter(lines)
    del lines
    out = RawSet(source=source)
    out.blank_lines = line_counts.pop(b"", 0)
    canonical = _split_canonical(list(line_counts)) if plain else None
    if canonical is not None:
        out.rows, out.counts = canonical, list(line_counts.values())
        out.raw_rows = sum(out.counts)
        return out
    fast = _fast_parse(line_counts)
    if fast is None:
        return _slow_read(path, skip_bad=skip_bad)
    pairs, blank = fast
    out.blank_lines += blank
    counts = [c for line, c in line_counts.items() if line.strip()]
    out.raw_rows = sum(counts)
    if len(set(pairs)) == len(pairs):
        out.rows, out.counts = pairs, counts
        return out
    merged: dict[tuple[str, str], int] = {}
    for pair, c in zip(pairs, counts, strict=True):
        merged[pair] = merged.get(pair, 0) + c
    out.rows, out.counts = list(merged), list(merged.values())
    return out


# Bytes that can make JSON text mean something else than it shows: escapes and control
# characters. ``_is_plain`` deletes every other byte value and looks at what is left.
_NOT_SPECIAL = bytes(b for b in range(256) if b >= 0x20 and b != 0x5C)
# Between the quotes of one canonical line: { problem : P , solution : S } and the next line.
_SHAPE_PIECES = ("problem", ": ", None, ", ", "solution", ": ", None)


def _is_plain(data: bytes) -> bool:
    """No backslash and no control character other than the line breaks (a C-speed scan)."""
    rest = data.translate(None, _NOT_SPECIAL)
    return rest.count(b"\n") == len(rest)


def _split_canonical(lines: list[bytes]) -> list[tuple[str, str]] | None:
    """(problem, solution) of lines that are exactly ``{"problem": "P", "solution": "S"}``.

    That is what json.dumps(..., ensure_ascii=False) writes. For such text without
    backslashes or control characters (checked by the caller), splitting at the double
    quotes IS a JSON parser: the joined text splits into 8 pieces per line, and checking
    the structural pieces with C-level slices and sets proves every line has that
    shape (so no quote inside P or S). Anything else (other key order or spacing,
    escapes, bad UTF-8) returns None and the caller parses with json. The same pair is
    then always the same line, so the line counts are the pair counts.
    """
    if not lines:
        return []
    try:
        pieces = b"\n".join(lines).decode("utf-8").split('"')
    except UnicodeDecodeError:
        return None
    n = len(lines)
    if len(pieces) != 8 * n + 1 or pieces[0] != "{" or pieces[-1] != "}":
        return None
    for k, expected in enumerate(_SHAPE_PIECES, start=1):
        if expected is not None and set(pieces[k::8]) != {expected}:
            return None
    if n > 1 and set(pieces[8:-1:8]) != {"}\n{"}:
        return None
    return list(zip(pieces[3::8], pieces[7::8], strict=False))


def _fast_parse(line_counts: Counter[bytes]) -> tuple[list[tuple[str, str]], int] | None:
    """All distinct lines parsed in one call, or None when any line needs a closer look."""
    keep = [line for line in line_counts if line.strip()]
    blank = sum(c for line, c in line_counts.items() if not line.strip())
    try:
        objs = json.loads(b"[" + b",".join(keep) + b"]")
    except (ValueError, UnicodeDecodeError):
        return None
    if len(objs) != len(keep):
        return None
    try:
        pairs = [(o["problem"], o["solution"]) for o in objs]
    except (KeyError, TypeError):
        return None
    for p, s in pairs:
        if type(p) is not str or type(s) is not str:
            return None
    return pairs, blank


def _slow_read(path: Path, *, skip_bad: bool) -> RawSet:
    """Line by line: the path that names bad lines (or counts them with ``skip_bad``)."""
    source = str(path)
    out = RawSet(source=source)
    rows, counts = out.rows, out.counts
    by_bytes: dict[bytes, int] = {}  # raw line -> row index, -1 for a bad line
    by_pair: dict[tuple[str, str], int] = {}
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            raw = raw.rstrip(b"\n")
            idx = by_bytes.get(raw)
            if idx is not None:
                if idx >= 0:
                    counts[idx] += 1
                    out.raw_rows += 1
                else:
                    out.bad_rows += 1
                continue
            if not raw.strip():
                out.blank_lines += 1
                continue
            try:
                pair = parse_line(raw, source, lineno)
            except InputError as exc:
                if not skip_bad:
                    raise
                by_bytes[raw] = -1
                out.bad_rows += 1
                if len(out.bad_examples) < MAX_BAD_EXAMPLES:
                    out.bad_examples.append(exc.message)
                continue
            out.raw_rows += 1
            idx = by_pair.get(pair)
            if idx is None:
                idx = len(rows)
                by_pair[pair] = idx
                rows.append(pair)
                counts.append(1)
            else:
                counts[idx] += 1
            by_bytes[raw] = idx
    return out
