"""Scalars from TensorBoard event files (``events.out.tfevents.*``), without TensorFlow.

MindFormers (1.5+; 1.9 here) writes, when the config has ``tensorboard.tensorboard_dir``,
one tensorboardX ``SummaryWriter`` per rank into ``<tensorboard_dir>/rank_<N>/``, and its
``MFLossMonitor`` adds the scalar ``loss`` (and ``grad-norm``, ``batch-size``...) at each
logged global step. The file is a TFRecord stream: ``uint64 length, uint32 crc, bytes,
uint32 crc`` per record, each record an ``Event`` protobuf whose ``summary.value`` entries
carry ``tag`` (field 1) and ``simple_value`` (field 2, float). Those few fields are decoded
here by hand (about 40 lines) so that reading results on the laptop needs neither
TensorFlow nor tensorboardX nor protobuf.

    scalars(path, tag="loss") -> [(step, value)]       # one file, in file order
    losses_by_rank(run_dir) -> {rank: [(step, loss)]}  # every rank_N dir under run_dir
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from pathlib import Path

EVENTS_GLOB = "events.out.tfevents.*"


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one protobuf message; bytes for length-delimited."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"protobuf wire type {wire} not expected in an Event")
        yield number, wire, value


def records(data: bytes) -> Iterator[bytes]:
    """The TFRecord payloads; a truncated last record (a writer still running) is ignored."""
    i = 0
    while i + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, i)
        end = i + 12 + length + 4
        if end > len(data):
            return
        yield data[i + 12:i + 12 + length]
        i = end


def scalars(path: str | Path, tag: str = "loss") -> list[tuple[int, float]]:
    """``(global step, value)`` of every scalar ``tag`` in one event file."""
    out = []
    for record in records(Path(path).read_bytes()):
        step, summary = 0, None
        for number, _, value in _fields(record):
            if number == 2 and isinstance(value, int):  # Event.step (a varint)
                step = value if value < 1 << 63 else value - (1 << 64)
            elif number == 5 and isinstance(value, bytes):  # Event.summary (a message)
                summary = value
        if summary is None:
            continue
        for number, _, value in _fields(summary):
            if number != 1 or not isinstance(value, bytes):  # Summary.value (a message)
                continue
            name, simple = None, None
            for n, wire, v in _fields(value):
                if not isinstance(v, bytes):
                    continue
                if n == 1:
                    name = v.decode("utf-8", "replace")
                elif n == 2 and wire == 5:
                    (simple,) = struct.unpack("<f", v)
            if name == tag and simple is not None:
                out.append((int(step), float(simple)))
    return out


def losses_by_rank(run_dir: str | Path, tag: str = "loss") -> dict[int, list[tuple[int, float]]]:
    """Every ``rank_N/events.out.tfevents.*`` under ``run_dir``: rank -> (step, loss), by step
    (several files of one rank, e.g. a resumed run's, are merged; a later file wins a step)."""
    by_rank: dict[int, dict[int, float]] = {}
    for path in sorted(Path(run_dir).rglob(EVENTS_GLOB), key=lambda p: (p.stat().st_mtime, str(p))):
        m = re.search(r"rank_(\d+)$", path.parent.name)
        if not m:
            continue
        points = by_rank.setdefault(int(m.group(1)), {})
        points.update(scalars(path, tag))
    return {rank: sorted(points.items()) for rank, points in sorted(by_rank.items()) if points}
