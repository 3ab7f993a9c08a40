"""The byte path of ``fetch``: all of a node's files in ONE stream, split, verified, renamed.

The host runs SEND of ``launcher/remote/collect.py`` (one process, one ssh channel) which
writes each requested range followed by a 32-byte trailer, the file's digest in the fetch
check both ends agreed on (:func:`~launcher.remote._prelude.new_check`: xxh3_128, else a CRC-32
per 1 MiB block). :class:`Receiver` knows every length, so it cuts the stream into the files'
``.part`` files, computes the same check over what it writes (after the ``.part``'s existing
prefix, for a resumed file) and, as soon as a file's trailer arrives, renames the ``.part`` to
its final name if the two agree — so an interruption keeps every finished file and the
``.part`` of the current one (resumed next time), and a final name never holds a wrong byte.

Why one stream and not a command per file: a job's logs are dozens of small files; one
stream costs one round trip per node, not one per file. Why the remote checks while it
sends: reading a 16 GB checkpoint before sending it would serialise two full reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from launcher.errors import AlaunchError, RemoteError
from launcher.remote import wire
from launcher.remote._prelude import STDLIB_CHECK, check_hex, check_trailer, new_check
from launcher.runners import CommandRunner

TRAILER = 32
ZERO = b"\0" * TRAILER
CHUNK = 1 << 20
# What one write() to a fetched file carries. A 1 MiB write takes a 1 MiB page-cache folio;
# on a VM that hands free memory back to its hypervisor, the first touch of such high-order
# memory cost 2-5 ms/MiB (alternating writers of 256 MiB: 0.57-1.53 s of system time with
# 1 MiB writes, 0.05-0.07 s with 128 KiB; rsync writes small pieces). 4,096 writes per 512 MiB.
WRITE = 1 << 17


@dataclass(frozen=True)
class Entry:
    """One file to receive: its listed facts, where it goes, and where to start."""

    path: str  # relative, for messages
    src: str
    size: int
    digest: str | None  # from the listing ("<check>:<hex>"); None: the sender computes it
    offset: int
    final: Path
    group: str = ""  # the output group, for the per-group byte counts

    @property
    def part(self) -> Path:
        return self.final.with_name(self.final.name + ".part")

    def request(self) -> dict:
        return {"src": self.src, "offset": self.offset, "length": self.size - self.offset,
                "hash": self.digest is None}


def file_check(path: Path, check: str, length: int | None = None) -> Any:
    """The fetch check ``check`` fed the first ``length`` bytes of ``path`` (all of it: None)."""
    h: Any = new_check(check)
    with open(path, "rb") as fh:
        left = os.fstat(fh.fileno()).st_size if length is None else length
        while left > 0 and (block := fh.read(min(CHUNK, left))):
            h.update(block)
            left -= len(block)
    return h


class Receiver:
    """A write-only file object: splits the SEND stream into verified files.

    The caller's thread (the pump of ssh's stdout) writes each chunk to its ``.part`` and feeds
    the same bytes to the file's check (``check``, from the listing); when a file's trailer has
    come it compares and renames. One thread: a 1 MiB chunk's xxh3 takes ~0.01 ms, its CRC-32
    ~0.14 ms, less than handing the chunk to a second thread did (a sha256 thread beside the
    writes paid off while the check was sha256, 0.24 CPU-s per 512 MiB on each end).
    """

    def __init__(self, entries: Sequence[Entry], on_bytes: Callable[[int], None], host: str = "host",
                 check: str = STDLIB_CHECK):
        self.entries = list(entries)
        self.check_name = check
        self.host = host
        self.on_bytes = on_bytes
        self.i = -1
        self.fh: BinaryIO | None = None
        self.check: Any = None  # the current file's hasher
        self.left = 0  # payload bytes still due for the current entry
        self.trailer = b""
        self.payload = 0  # file bytes received (what "transferred" means)
        self.moved = [0] * len(self.entries)  # the same, per entry
        self.verified: list[tuple[Entry, str]] = []  # (entry, its digest), renamed into place
        self.mismatched: list[Entry] = []
        self.error: BaseException | None = None
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
            self.check = file_check(e.part, self.check_name, e.offset)
            self.fh = open(e.part, "r+b")
            self.fh.seek(e.offset)
            self.fh.truncate()
        else:
            self.check = new_check(self.check_name)
            self.fh = open(e.part, "wb")
        self.left, self.trailer = e.size - e.offset, b""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Never raises: the stream's pump thread must keep draining (a stalled pipe would
        hang the sender); the first failure is kept in ``error`` and the rest discarded."""
        if self.error is None:
            try:
                self._write(memoryview(data))
            except Exception as exc:  # noqa: BLE001  # kept, not raised: the pump must drain (see above)
                self.error = exc
        return len(data)

    def _write(self, view: memoryview) -> None:
        while len(view):
            if self.complete:
                raise RemoteError(self.host, "sent more bytes than requested; refusing the rest")
            if self.left:
                assert self.fh is not None and self.check is not None  # opened by _next()
                n = min(self.left, len(view))
                chunk = view[:n]
                for i in range(0, n, WRITE):
                    self.fh.write(chunk[i:i + WRITE])
                self.check.update(chunk)
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
                assert self.fh is not None and self.check is not None  # opened by _next()
                self.fh.close()
                self.fh = None
                self._finish(self.entries[self.i], self.check, self.trailer)
                self._next()

    def flush(self) -> None:
        if self.fh is not None:
            self.fh.flush()

    def _finish(self, e: Entry, check: Any, trailer: bytes) -> None:
        digest = check_hex(self.check_name, check)
        if e.digest is not None:
            ok = digest == e.digest
        else:
            ok = trailer != ZERO and check_trailer(check) == trailer
        if ok:
            os.replace(e.part, e.final)
            self.verified.append((e, digest))
        else:
            self.mismatched.append(e)

    def close(self) -> None:
        """Stream over (finished or not): the current .part keeps what arrived; every file
        whose trailer came has been checked (and renamed)."""
        if self.fh is not None:
            self.fh.close()
            self.fh = None

    def current(self) -> Entry | None:
        return None if self.complete else self.entries[self.i]


class ListingFirst:
    """A write-only file object for LISTSEND's output: the listing's answer line first (after a
    login shell's chatter), handed to ``on_listing``, which returns the :class:`Receiver` for
    the stream that follows (None: nothing follows, e.g. a glob was refused). Never raises (the
    pump must drain); ``on_listing``'s exception is kept in ``error``."""

    def __init__(self, on_listing: Callable[[Any], Receiver | None]):
        self.on_listing = on_listing
        self.head = b""
        self.listed = False
        self.receiver: Receiver | None = None
        self.then: wire.AfterMark | None = None
        self.error: BaseException | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.listed:
            if self.then is not None:
                self.then.write(data)  # type: ignore[arg-type]  # the receiver takes any bytes-like
            return len(data)
        self.head += bytes(data)
        mark = wire.ANSWER_MARK.encode()
        at = self.head.find(mark)
        end = self.head.find(b"\n", at) if at >= 0 else -1
        if end < 0:
            if at < 0:
                self.head = self.head[-(1 << 20):]  # no mark yet: keep only a bounded tail
            return len(data)
        line, rest = self.head[:end + 1], self.head[end + 1:]
        self.head, self.listed = b"", True
        try:
            self.receiver = self.on_listing(wire.answer(line))
        except Exception as exc:  # noqa: BLE001  # kept, not raised: the pump must drain
            self.error = exc
        if self.receiver is not None:
            self.then = wire.AfterMark(self.receiver)
            if rest:
                self.then.write(rest)
        return len(data)

    def flush(self) -> None:
        pass


def stream(runner: CommandRunner, entries: Sequence[Entry], receiver: Receiver,
           cache: str | None = None, zero_copy_min: int | None = None) -> None:
    """Run SEND on the host for ``entries``, feeding ``receiver``; raise if it did not finish.
    ``cache``: the host's digest cache file (absolute), where SEND records what it checked;
    ``zero_copy_min``: from how many bytes a range goes by sendfile + mmap (SEND's default)."""
    req: dict[str, Any] = {"op": "send", "files": [e.request() for e in entries], "cache": cache,
                           "check": receiver.check_name}
    if zero_copy_min is not None:
        req["zero_copy_min"] = zero_copy_min
    _run(runner, req, wire.AfterMark(receiver), lambda: receiver)


def list_and_stream(runner: CommandRunner, request: Mapping[str, Any], on_listing: Callable[[Any], Receiver | None],
                    what: str) -> None:
    """Run LISTSEND (LIST's ``request``): ``on_listing`` gets the listing and returns the
    :class:`Receiver` of what follows; raise if the host gave no listing (``<what> failed: ...``,
    as a LIST call says it) or the stream did not finish."""
    sink = ListingFirst(on_listing)
    res = _run(runner, {**request, "op": "listsend"}, sink, lambda: sink.receiver)
    if sink.error is not None:
        raise sink.error
    if not sink.listed:
        raise RemoteError(runner.name, f"{what} failed: {res.error_line() if res else 'no answer'}")


def _run(runner: CommandRunner, req: dict[str, Any], sink: Any, receiver_of: Callable[[], Receiver | None]) -> Any:
    """Run collect's ``req["op"]`` with stdout into ``sink``; check the receiver it fed."""
    argv = runner.program_argv("collect", req["op"])
    code, err, res = None, b"", None
    try:
        res = runner.exec(argv, [wire.request(req)], stdout=cast(BinaryIO, sink))  # a writer
        code, err = res.exit_code, res.stderr
    finally:
        if (rx := receiver_of()) is not None:
            rx.close()
    receiver = receiver_of()
    if receiver is None:
        return res
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
    return res
