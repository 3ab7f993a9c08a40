"""The byte path of ``fetch``: all of a node's files in ONE stream, split, verified, renamed.

The host runs SEND of ``launcher/remote/collect.py`` (one process, one ssh channel) which
writes each requested range followed by a 32-byte sha256 trailer. :class:`Receiver` knows
every length, so it cuts the stream into the files' ``.part`` files, hashes what it writes
(after the ``.part``'s existing prefix, for a resumed file) and, as soon as a file's trailer
arrives, renames the ``.part`` to its final name if the sha256 matches — so an interruption
keeps every finished file and the ``.part`` of the current one (resumed next time), and a
final name never holds a wrong byte.

Why one stream and not a command per file: a job's logs are dozens of small files; one
stream costs one round trip per node, not one per file. Why the remote hashes while it
sends: hashing a 16 GB checkpoint before sending it would serialise two full reads.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from launcher.errors import AlaunchError, RemoteError
from launcher.remote import wire
from launcher.runners import CommandRunner

TRAILER = 32
ZERO = b"\0" * TRAILER
CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One file to receive: its listed facts, where it goes, and where to start."""

    path: str  # relative, for messages
    src: str
    size: int
    sha256: str | None  # from the listing; None: the sender hashes it
    offset: int
    final: Path
    group: str = ""  # the output group, for the per-group byte counts

    @property
    def part(self) -> Path:
        return self.final.with_name(self.final.name + ".part")

    def request(self) -> dict:
        return {"src": self.src, "offset": self.offset, "length": self.size - self.offset,
                "hash": self.sha256 is None}


def prefix_sha256(path: Path, length: int):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        left = length
        while left > 0 and (block := fh.read(min(CHUNK, left))):
            h.update(block)
            left -= len(block)
    return h


class Receiver:
    """A write-only file object: splits the SEND stream into verified files.

    Two threads: the caller's (the pump of ssh's stdout) writes each chunk to its ``.part``
    and hands the same immutable chunk to a hashing thread, which also does the check and the
    rename when a file's trailer has come. The receiver was the longest stage of the pipeline
    (host script -> sshd -> ssh -> receiver: 0.45 CPU-s per 512 MiB, two thirds of it the
    sha256); split in two, writing and hashing overlap and no stage is longer than ssh's.
    hashlib releases the GIL for buffers over 2 KiB, so the two threads run at once. The queue
    holds at most ``DEPTH`` chunks (<= 1 MiB each), so memory stays bounded.
    """

    DEPTH = 16

    def __init__(self, entries: Sequence[Entry], on_bytes: Callable[[int], None], host: str = "host"):
        self.entries = list(entries)
        self.host = host
        self.on_bytes = on_bytes
        self.i = -1
        self.fh: BinaryIO | None = None
        self.hasher: hashlib._Hash | None = None
        self.left = 0  # payload bytes still due for the current entry
        self.trailer = b""
        self.payload = 0  # file bytes received (what "transferred" means)
        self.moved = [0] * len(self.entries)  # the same, per entry
        self.verified: list[tuple[Entry, str]] = []  # (entry, its sha256), renamed into place
        self.mismatched: list[Entry] = []
        self.error: BaseException | None = None
        self._work: queue.Queue = queue.Queue(self.DEPTH)
        self._hashing = threading.Thread(target=self._hash_loop, name=f"sha256-{host}", daemon=True)
        self._hashing.start()
        self._next()

    @property
    def complete(self) -> bool:
        return self.i >= len(self.entries)

    def _next(self) -> None:
        self.i += 1
        if self.complete:
            return
        e = self.entries[self.i]
        e.final.parent.mkdir(parents=True, exist_ok=True)
        if e.offset:
            self.hasher = prefix_sha256(e.part, e.offset)
            self.fh = open(e.part, "r+b")
            self.fh.seek(e.offset)
            self.fh.truncate()
        else:
            self.hasher = hashlib.sha256()
            self.fh = open(e.part, "wb")
        self.left, self.trailer = e.size - e.offset, b""

    def write(self, data) -> int:
        """Never raises: the stream's pump thread must keep draining (a stalled pipe would
        hang the sender); the first failure is kept in ``error`` and the rest discarded."""
        if self.error is None:
            try:
                self._write(data if isinstance(data, bytes) else bytes(data))  # the hasher keeps it
            except (OSError, RemoteError) as exc:
                self.error = exc
        return len(data)

    def _hash_loop(self) -> None:
        """The hashing thread: ``(hasher, chunk)`` to hash, ``(entry index, trailer)`` to check
        and rename, ``None`` to stop. After a failure it only drains, so the writer never blocks."""
        while (item := self._work.get()) is not None:
            if self.error is not None:
                continue
            try:
                if isinstance(item[0], int):
                    self._finish(*item)
                else:
                    item[0].update(item[1])
            except Exception as exc:  # noqa: BLE001  # kept, not raised: a dead hasher would block the writer
                self.error = exc

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view):
            if self.complete:
                raise RemoteError(self.host, "sent more bytes than requested; refusing the rest")
            if self.left:
                assert self.fh is not None and self.hasher is not None  # opened by _next()
                n = min(self.left, len(view))
                chunk = view[:n]
                self.fh.write(chunk)
                self._work.put((self.hasher, chunk))
                self.left -= n
                self.payload += n
                self.moved[self.i] += n
                self.on_bytes(n)
                view = view[n:]
                continue
            n = min(TRAILER - len(self.trailer), len(view))
            self.trailer += bytes(view[:n])
            view = view[n:]
            if len(self.trailer) == TRAILER:
                assert self.fh is not None  # opened by _next()
                self.fh.close()
                self.fh = None
                self._work.put((self.i, self.hasher, self.trailer))
                self._next()

    def flush(self) -> None:
        if self.fh is not None:
            self.fh.flush()

    def _finish(self, i: int, hasher, trailer: bytes) -> None:
        e = self.entries[i]
        expected = e.sha256 or (trailer.hex() if trailer != ZERO else None)
        digest = hasher.hexdigest()
        if expected is not None and digest == expected:
            os.replace(e.part, e.final)
            self.verified.append((e, digest))
        else:
            self.mismatched.append(e)

    def close(self) -> None:
        """Stream over (finished or not): the current .part keeps what arrived; every file
        whose trailer came is checked (and renamed) before this returns."""
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        if self._hashing.is_alive():
            self._work.put(None)
            self._hashing.join()

    def current(self) -> Entry | None:
        return None if self.complete else self.entries[self.i]


def stream(runner: CommandRunner, entries: Sequence[Entry], receiver: Receiver,
           cache: str | None = None, zero_copy_min: int | None = None) -> None:
    """Run SEND on the host for ``entries``, feeding ``receiver``; raise if it did not finish.
    ``cache``: the host's hash cache file (absolute), where SEND records what it hashed;
    ``zero_copy_min``: from how many bytes a range goes by sendfile + mmap (SEND's default)."""
    req: dict[str, Any] = {"op": "send", "files": [e.request() for e in entries], "cache": cache}
    if zero_copy_min is not None:
        req["zero_copy_min"] = zero_copy_min
    request = wire.request(req)
    argv = runner.program_argv("collect", "send")
    code, err = None, b""
    try:
        res = runner.exec(argv, [request], stdout=cast(BinaryIO, wire.AfterMark(receiver)))  # a writer
        code, err = res.exit_code, res.stderr
    finally:
        receiver.close()
    if isinstance(receiver.error, RemoteError):
        raise receiver.error
    if receiver.error is not None:
        where = receiver.current()
        raise AlaunchError(f"cannot write {where.part if where else 'a fetched file'}: "
                           f"{getattr(receiver.error, 'strerror', None) or receiver.error}")
    if code != 0 or not receiver.complete:
        where = receiver.current()
        what = f"transfer of {where.path}" if where else "transfer"
        tail = err.decode(errors="replace").strip()[-200:]
        raise RemoteError(runner.name, f"{what} stopped (exit {code})" + (f": {tail}" if tail else "")
                          + "; rerun fetch to continue where it stopped")

