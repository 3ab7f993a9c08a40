"""A step's output on one host, needed on another: copied there, through this machine.

A reference ``{from: STEP}`` resolves to a path on the producer's node 0. A consumer whose
nodes include other hosts (a 2-node eval after a 1-node training) needs the file at the
same path on each of them (a job file's ``remote:`` path means "on every host"). This module
puts it there: the producer's ``cat`` streams into the consumer's atomic upload
(``CommandRunner.upload_stream``: temp name, then rename) through an OS pipe on this
machine, in 1 MiB chunks, never whole in memory; sha256 is computed on both hosts before
and after and must agree. A host that already has the same bytes at that path (a shared
filesystem, or an earlier copy) is left alone.

Why through this machine and not host to host: the hosts need not reach each other by ssh
(an Ascend cluster's nodes usually share only the HCCL network), while this machine reaches
every host by construction. The price is the laptop's bandwidth, twice.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from launcher.errors import AlaunchError
from launcher.runners import CommandRunner

CHUNK = 1 << 20

@dataclass(frozen=True)
class Relayed:
    path: str
    source: str
    target: str
    sha256: str
    bytes: int  # 0: the target had the same bytes already


def file_facts(runner: CommandRunner, path: str) -> dict:
    """``{"kind": "file", "sha256", "size"}``, ``{"kind": "dir"}`` or ``{"kind": None}`` (absent):
    ``launcher/remote/files.py``'s FACTS."""
    return runner.call("files", {"op": "facts", "path": path}, timeout=3600, what=f"sha256 of {path}")


def relay(src: CommandRunner, dst: CommandRunner, path: str,
          dst_path: str | None = None, what: str = "") -> Relayed:
    """Copy the file ``path`` of ``src``'s host to ``dst_path`` (default: the same path) on
    ``dst``'s host, streamed through here, verified by sha256. A directory, or a missing
    file, is refused with a one-line error naming ``what``, the path and the two hosts."""
    dst_path = dst_path or path
    label = f"{what + ': ' if what else ''}{path} on {src.host.name}"
    have = file_facts(src, path)
    if have["kind"] != "file":
        raise AlaunchError(f"{label}: {'a directory' if have['kind'] == 'dir' else 'not found'}; only a file "
                           f"can be copied to {dst.host.name} (select: last picks one file)")
    there = file_facts(dst, dst_path)
    if there.get("sha256") == have["sha256"]:
        return Relayed(dst_path, src.host.name, dst.host.name, have["sha256"], 0)
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def pump() -> None:
        with os.fdopen(write_fd, "wb", buffering=CHUNK) as sink:
            try:
                src.download(path, sink)
            except BaseException as exc:  # noqa: BLE001 - reported after the upload ends
                failure.append(exc)

    def chunks(source: BinaryIO) -> Iterator[bytes]:
        while block := source.read(CHUNK):
            yield block

    reader = threading.Thread(target=pump, name="alaunch-relay", daemon=True)
    reader.start()
    with os.fdopen(read_fd, "rb") as source:
        sent = dst.upload_stream(chunks(source), dst_path, mode=0o444)
    reader.join()
    if failure:
        raise AlaunchError(f"{label}: reading it failed: {failure[0]}")
    got = file_facts(dst, dst_path)
    if got.get("sha256") != have["sha256"]:
        raise AlaunchError(f"{label}: the copy on {dst.host.name} has sha256 {str(got.get('sha256'))[:12]}, "
                           f"not {have['sha256'][:12]}; it was not used")
    return Relayed(dst_path, src.host.name, dst.host.name, have["sha256"], sent)
