"""Staging through the real remote scripts (run locally by subprocess; over SSH in test_e2e_*)."""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from launcher.core.hostfile import Host
from launcher.core.plan import StageItem
from launcher.errors import RemoteError
from launcher.ops.stage import HashCache, IgnoreRules, Stager, collect, tar_stream
from launcher.remote import wire
from launcher.runners import LocalRunner as LocalExec

PY = sys.executable


def _tree(root: Path) -> Path:
    code = root / "src"
    (code / "pkg" / "__pycache__").mkdir(parents=True)
    (code / ".git").mkdir()
    (code / ".git" / "HEAD").write_text("ref")
    (code / "pkg" / "__pycache__" / "m.pyc").write_bytes(b"pyc")
    (code / "pkg" / "m.py").write_text("print('m')\n")
    (code / "run.sh").write_text("#!/bin/sh\n")
    (code / "run.sh").chmod(0o755)
    (code / "big.bin").write_bytes(os.urandom(3 << 20))
    (code / "logs").mkdir()
    (code / "logs" / "a.log").write_text("x")
    (code / "logs" / "keep.log").write_text("k")
    (code / ".alaunchignore").write_text("# comment\nlogs/*.log\n!logs/keep.log\n/big.bin\n")
    (root / "data.bin").write_bytes(b"d" * 1000)
    return code


def _items(root: Path, config: str = "a: 1\n") -> list[StageItem]:
    return [StageItem("code", local=str(root / "src")), StageItem("data/x/data.bin", local=str(root / "data.bin")),
            StageItem("config/job.yaml", text=config)]


def test_ignore_rules():
    rules = IgnoreRules.parse([".git", "*.ckpt", "/top.txt", "build/", "!keep.ckpt", "a/**/z"])
    assert rules.ignored(".git", True) and rules.ignored("sub/.git", True)
    assert rules.ignored("x/y.ckpt", False) and not rules.ignored("x/keep.ckpt", False)
    assert rules.ignored("top.txt", False) and not rules.ignored("sub/top.txt", False)
    assert rules.ignored("build", True) and not rules.ignored("build", False)
    assert rules.ignored("a/b/c/z", False) and rules.ignored("a/z", False)


def test_stage_then_restage_sends_nothing(tmp_path):
    _tree(tmp_path)
    host = Host("localhost", 1, workdir=str(tmp_path / "wd"))
    cache = HashCache(tmp_path / "cache.json")
    local = collect(_items(tmp_path), cache)
    dests = {f.dest for f in local.files}
    assert dests == {"code/pkg/m.py", "code/run.sh", "code/logs/keep.log", "code/.alaunchignore",
                     "data/x/data.bin"}
    stager = Stager({"localhost": LocalExec(host)})
    first = stager.stage(local, {"localhost": str(tmp_path / "wd/alaunch/job1")})
    assert first.bytes_sent == sum(f.size for f in local.files) and first.reports["localhost"].objects_sent == 5
    job1 = tmp_path / "wd/alaunch/job1"
    assert (job1 / "code/pkg/m.py").read_text() == "print('m')\n"
    assert (job1 / "config/job.yaml").read_text() == "a: 1\n"
    assert os.access(job1 / "code/run.sh", os.X_OK)
    assert (job1 / "msrun_log").is_dir() and (job1 / "state").is_dir()
    cache.save()

    cache2 = HashCache(tmp_path / "cache.json")
    again = collect(_items(tmp_path, "a: 2\n"), cache2)
    assert cache2.hashed == 0  # nothing re-read
    second = stager.stage(again, {"localhost": str(tmp_path / "wd/alaunch/job2")})
    assert second.bytes_sent == 0 and second.reports["localhost"].linked == 5
    job2 = tmp_path / "wd/alaunch/job2"
    assert (job2 / "code/pkg/m.py").stat().st_ino == (job1 / "code/pkg/m.py").stat().st_ino
    assert (job2 / "config/job.yaml").read_text() == "a: 2\n"

    (tmp_path / "src/pkg/m.py").write_text("print('changed')\n")
    third = stager.stage(collect(_items(tmp_path), cache2), {"localhost": str(tmp_path / "wd/alaunch/job3")})
    assert third.reports["localhost"].objects_sent == 1 and third.bytes_sent == len("print('changed')\n")


def test_shared_filesystem_staged_once(tmp_path):
    _tree(tmp_path)
    wd = str(tmp_path / "shared")
    a, b = Host("localhost", 1, workdir=wd), Host("127.0.0.1", 1, workdir=wd)
    stager = Stager({"localhost": LocalExec(a), "127.0.0.1": LocalExec(b)})
    root = f"{wd}/alaunch/j"
    result = stager.stage(collect(_items(tmp_path), HashCache(None)), {"localhost": root, "127.0.0.1": root})
    shared = [r for r in result.reports.values() if r.shared_with]
    assert len(shared) == 1 and result.bytes_sent > 0
    assert len({i.fsid for i in result.inventories.values()}) == 1


def test_corrupted_object_is_refused_and_not_stored(tmp_path):
    _tree(tmp_path)
    local = collect(_items(tmp_path), HashCache(None))
    bad = replace(local.files[0], sha256="0" * 64)
    node = LocalExec(Host("localhost", 1))
    cas = tmp_path / "cas"
    stream = tar_stream([bad], {"root": str(tmp_path / "j"), "links": {}, "texts": {}, "dirs": []}, lambda n: None)
    request = wire.request({"op": "receive", "cas": str(cas)})
    result = node.exec([PY, "-c", wire.program("stage", "receive")], [request, *stream])
    assert result.exit_code != 0 and b"sha256 mismatch" in result.stderr
    assert not (cas / "00" / ("0" * 64)).exists() and list((cas / "tmp").iterdir()) == []


def test_one_corrupted_byte_in_a_big_object_is_refused(tmp_path):
    """An object big enough to be hashed by RECEIVE's second thread (>= 8 MiB): one byte
    changed in the stream, in a later 1 MiB buffer of the ring, and nothing is stored."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom((9 << 20) + 7))
    local = collect([StageItem("data/big.bin", local=str(big))], HashCache(None))
    wire_bytes = bytearray(b"".join(tar_stream(list(local.files), {"root": str(tmp_path / "j"), "links": {},
                                                                    "texts": {}, "dirs": []}, lambda n: None)))
    at = wire_bytes.find(big.read_bytes()[:64]) + (6 << 20) + 3
    wire_bytes[at] ^= 0x01
    cas = tmp_path / "cas"
    request = wire.request({"op": "receive", "cas": str(cas)})
    result = LocalExec(Host("localhost", 1)).exec([PY, "-c", wire.program("stage", "receive")],
                                                  [request, bytes(wire_bytes)])
    sha = local.files[0].sha256
    assert result.exit_code != 0 and f"sha256 mismatch for {sha}".encode() in result.stderr
    assert not (cas / sha[:2] / sha).exists() and list((cas / "tmp").iterdir()) == []


def test_not_enough_disk_names_host_and_bytes(tmp_path):
    _tree(tmp_path)
    host = Host("localhost", 1, workdir=str(tmp_path / "wd"))
    stager = Stager({"localhost": LocalExec(host)})
    local = collect(_items(tmp_path), HashCache(None))
    inv = stager.survey(local)
    tight = {"localhost": replace(inv["localhost"], free=10)}
    with pytest.raises(RemoteError, match=r"localhost: not enough disk space .* need [\d,]+ bytes"):
        stager.stage(local, {"localhost": str(tmp_path / "wd/alaunch/j")}, tight)
    assert not (tmp_path / "wd/alaunch/j").exists()


def test_big_file_streams_without_loading(tmp_path):
    """A file much larger than the chunk is staged intact (sha verified on the far side)."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(24):
            f.write(os.urandom(1 << 20))
    host = Host("localhost", 1, workdir=str(tmp_path / "wd"))
    local = collect([StageItem("ckpt/big.bin", local=str(big))], HashCache(None))
    stream = tar_stream(list(local.files), {"root": str(tmp_path / "j"), "links": {}, "texts": {}, "dirs": []},
                        lambda n: None)
    assert max(len(c) for c in stream) < 3 << 20
    result = Stager({"localhost": LocalExec(host)}).stage(local, {"localhost": str(tmp_path / "wd/j")})
    assert result.bytes_sent == 24 << 20 and (tmp_path / "wd/j/ckpt/big.bin").read_bytes() == big.read_bytes()


def test_first_staging_sends_unnamed_files_and_the_host_names_them(tmp_path):
    """Into an empty store the laptop sends what its cache does not name without hashing it
    first; the host names each object by the sha256 of what arrived, the laptop gets the names
    back (the real sha256s, cached) and the next staging of the same tree sends nothing."""
    import hashlib

    from launcher.ops.stage import manifest_for
    code = _tree(tmp_path)
    (code / "pkg" / "big.bin").write_bytes(os.urandom((9 << 20) + 5))  # hashed by RECEIVE's second thread
    (code / "pkg" / "twin.py").write_text("print('m')\n")  # m.py's content: two new members, one object
    host = Host("localhost", 1, workdir=str(tmp_path / "wd"))
    node = CountingExec(host)
    cache = HashCache(tmp_path / "cache.json")
    local = collect(_items(tmp_path), cache, hash_new=False)
    assert cache.hashed == 0 and len(local.unnamed) == len(local.files) == 7 and local.objects == {}
    result = Stager({"localhost": node}).stage(local, {"localhost": str(tmp_path / "wd/alaunch/j1")})
    assert node.calls == ["inventory", "receive"] and cache.hashed == 0
    named = result.files
    assert named is not None and named.unnamed == ()
    for f in named.files:
        assert f.sha256 == hashlib.sha256(Path(f.path).read_bytes()).hexdigest()
        assert (tmp_path / "wd/alaunch/cas" / f.sha256[:2] / f.sha256).is_file()
    j1 = tmp_path / "wd/alaunch/j1"
    assert (j1 / "code/pkg/big.bin").read_bytes() == (code / "pkg/big.bin").read_bytes()
    assert (j1 / "data/x/data.bin").read_bytes() == b"d" * 1000 and os.access(j1 / "code/run.sh", os.X_OK)
    assert (j1 / "code/pkg/twin.py").stat().st_ino == (j1 / "code/pkg/m.py").stat().st_ino
    # the host computed the tree's id as the laptop does from the names: a later LINK finds it
    tree_id = manifest_for(named, str(j1))["trees"]["code"]["id"]
    assert os.readlink(j1 / "code") == str(tmp_path / "wd/alaunch/cas/trees" / tree_id)
    assert list((tmp_path / "wd/alaunch/cas/tmp").iterdir()) == []

    again = collect(_items(tmp_path), HashCache(tmp_path / "cache.json"), hash_new=False)
    assert again.unnamed == ()  # every name came back from the host and was cached
    node.calls.clear()
    second = Stager({"localhost": node}).stage(again, {"localhost": str(tmp_path / "wd/alaunch/j2")})
    assert second.bytes_sent == 0 and node.calls == ["inventory", "receive"]

    # a changed file and a store that is no longer empty: hashed here first, sent named
    (code / "pkg" / "m.py").write_text("print('v2')\n")
    cache3 = HashCache(tmp_path / "cache.json")
    third = collect(_items(tmp_path), cache3, hash_new=False)
    assert len(third.unnamed) == 1
    done = Stager({"localhost": node}).stage(third, {"localhost": str(tmp_path / "wd/alaunch/j3")})
    assert cache3.hashed == 1 and done.reports["localhost"].objects_sent == 1
    assert (tmp_path / "wd/alaunch/j3/code/pkg/m.py").read_text() == "print('v2')\n"


def _new_stream(tmp_path: Path, size: int, check: str = "crc32x1m") -> tuple[Path, bytearray]:
    """One unnamed file's RECEIVE stream (``new/0``, its transfer check in the manifest)."""
    from launcher.ops.stage import manifest_for
    data = tmp_path / "new.bin"
    data.write_bytes(os.urandom(size))
    local = collect([StageItem("data/new.bin", local=str(data))], HashCache(None), hash_new=False)
    manifest = manifest_for(local, str(tmp_path / "j"))
    return data, bytearray(b"".join(tar_stream([], manifest, lambda n: None, local.unnamed, check=check)))


@pytest.mark.parametrize("check", ["crc32x1m", "xxh3_128"])
@pytest.mark.parametrize("size", [100_000, (9 << 20) + 7], ids=["inline", "hash thread"])
def test_one_corrupted_byte_of_an_unnamed_file_is_refused(tmp_path, size, check):
    """The host names an unnamed file by its own sha256, so a byte changed on the way would be
    stored under a true name for the wrong content: the laptop's transfer check refuses it
    (either fetch check), and nothing enters the store or the job dir."""
    data, wire_bytes = _new_stream(tmp_path, size, check)
    at = wire_bytes.find(data.read_bytes()[:64]) + size // 2
    wire_bytes[at] ^= 0x01
    cas = tmp_path / "cas"
    request = wire.request({"op": "receive", "cas": str(cas), "check": check})
    result = LocalExec(Host("localhost", 1)).exec([PY, "-c", wire.program("stage", "receive")],
                                                  [request, bytes(wire_bytes)])
    assert result.exit_code != 0 and b"transfer check mismatch for new file #0" in result.stderr
    assert [p.name for p in cas.iterdir()] == ["tmp"]  # no object dir
    assert list((cas / "tmp").iterdir()) == [] and not (tmp_path / "j").exists()


def _two_new(tmp_path: Path) -> tuple[list[bytes], bytes]:
    """Two unnamed files' RECEIVE stream: new/0, sum/0, new/1, sum/1, the manifest."""
    from launcher.ops.stage import manifest_for
    for name in ("a.bin", "b.bin"):
        (tmp_path / name).write_bytes(os.urandom(300_000))
    items = [StageItem(f"data/{n}", local=str(tmp_path / n)) for n in ("a.bin", "b.bin")]
    local = collect(items, HashCache(None), hash_new=False)
    stream = b"".join(tar_stream([], manifest_for(local, str(tmp_path / "j")), lambda n: None, local.unnamed))
    return [(tmp_path / n).read_bytes() for n in ("a.bin", "b.bin")], stream


def _receive(cas: Path, stream: bytes):
    request = wire.request({"op": "receive", "cas": str(cas)})
    return LocalExec(Host("localhost", 1)).exec([PY, "-c", wire.program("stage", "receive")], [request, stream])


def _stored(cas: Path) -> list[str]:
    return sorted(p.name for d in cas.iterdir() if d.name not in ("tmp", "trees") for p in d.iterdir())


def test_a_stream_cut_among_unnamed_files_keeps_the_checked_ones_and_no_part(tmp_path):
    """Each unnamed file is stored once its transfer check (``sum/<i>``, right after it)
    matched: a stream that ends early (connection lost) inside the second file keeps the
    first under its sha256 (a retry does not send it again) and takes the part being
    written with it; no job dir."""
    (a, b), stream = _two_new(tmp_path)
    cut = stream[:stream.find(b[:64]) + 1000]  # inside new/1
    cas = tmp_path / "cas"
    result = _receive(cas, cut)
    assert result.exit_code != 0 and b"stream ended early" in result.stderr
    assert list((cas / "tmp").iterdir()) == [] and _stored(cas) == [hashlib.sha256(a).hexdigest()]
    assert (cas / hashlib.sha256(a).hexdigest()[:2] / hashlib.sha256(a).hexdigest()).read_bytes() == a
    assert not (tmp_path / "j").exists()


def test_a_rerun_after_a_cut_first_staging_sends_only_what_the_store_lacks(tmp_path):
    """The rerun of a first staging cut inside its second file: the store is no longer empty,
    so the laptop names its files first and sends only the one the cut lost."""
    (a, b), stream = _two_new(tmp_path)
    wd = tmp_path / "wd"
    assert _receive(wd / "alaunch" / "cas", stream[:stream.find(b[:64]) + 1000]).exit_code != 0
    items = [StageItem(f"data/{n}", local=str(tmp_path / n)) for n in ("a.bin", "b.bin")]
    host = Host("localhost", 1, workdir=str(wd))
    result = Stager({"localhost": LocalExec(host)}).stage(collect(items, HashCache(None), hash_new=False),
                                                         {"localhost": str(wd / "alaunch" / "j")})
    report = result.reports["localhost"]
    assert (report.objects_sent, report.bytes_sent) == (1, len(b)), report
    assert [(wd / "alaunch" / "j" / "data" / n).read_bytes() for n in ("a.bin", "b.bin")] == [a, b]


def test_a_corrupted_second_unnamed_file_is_refused_and_the_first_kept(tmp_path):
    """A byte flipped in the second file: its ``sum/1`` refuses it (nothing stored for it, no
    job dir); the first, checked before it, is in the store under its true name."""
    (a, b), stream = _two_new(tmp_path)
    wire_bytes = bytearray(stream)
    wire_bytes[wire_bytes.find(b[:64]) + 150_000] ^= 0x01
    cas = tmp_path / "cas"
    result = _receive(cas, bytes(wire_bytes))
    assert result.exit_code != 0 and b"transfer check mismatch for new file #1" in result.stderr
    assert list((cas / "tmp").iterdir()) == [] and _stored(cas) == [hashlib.sha256(a).hexdigest()]
    assert not (tmp_path / "j").exists()


def test_an_unnamed_file_without_its_check_is_not_stored(tmp_path):
    """A stream whose ``sum/<i>`` members were dropped (the manifest still lists the sums):
    the host stores nothing it did not check as the file came, and says which one."""
    (a, b), stream = _two_new(tmp_path)
    cut = bytearray()
    at = 0
    while at < len(stream):  # the members, without sum/<i>
        name = stream[at:at + 100].split(b"\0", 1)[0]
        size = int(stream[at + 124:at + 136].strip(b"\0 ") or b"0", 8)
        end = at + 512 + size + (-size % 512)
        if not name.startswith(b"sum/"):
            cut += stream[at:end] if name else stream[at:]
        if not name:
            break
        at = end
    cas = tmp_path / "cas"
    result = _receive(cas, bytes(cut))
    assert result.exit_code != 0 and b"new file #0 came without its transfer check" in result.stderr
    assert list((cas / "tmp").iterdir()) == [] and _stored(cas) == [] and not (tmp_path / "j").exists()


def test_a_file_changed_while_it_was_read_is_not_cached(tmp_path):
    """The host's name is cached for a file only when its size and mtime after the read are
    the walked ones: here the file is touched while its blocks go out, so the job gets what
    was read (named by the host), and the cache does not claim the file is that object."""
    from launcher.ops.stage import Progress
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))

    class Toucher(Progress):
        def advance(self, host: str, n: int) -> None:
            os.utime(big, ns=(1, 1))  # a writer at work: the mtime moves under the read

    cache = HashCache(tmp_path / "cache.json")
    local = collect([StageItem("data/big.bin", local=str(big))], cache, hash_new=False)
    host = Host("localhost", 1, workdir=str(tmp_path / "wd"))
    result = Stager({"localhost": LocalExec(host)}, progress=Toucher()).stage(
        local, {"localhost": str(tmp_path / "wd/alaunch/j")})
    assert (tmp_path / "wd/alaunch/j/data/big.bin").read_bytes() == big.read_bytes()
    assert result.files is not None and result.files.unnamed == ()  # the host's name is used for this job
    assert str(big) not in HashCache(tmp_path / "cache.json")._data and cache.hashed == 0


class CountingExec(LocalExec):
    """The real local exec, counting round trips (what the no-op fast path must keep at one)."""

    def __init__(self, host):
        super().__init__(host)
        self.calls: list[str] = []

    def exec(self, argv, stdin=(), *, stdout=None, timeout=None):
        chunks = iter(stdin)
        first = next(chunks, b"")
        stage = {wire.program("stage", op) for op in wire.ops("stage")}
        self.calls.append(wire.decode(first)["op"] if argv[-1] in stage else "other")
        return super().exec(argv, itertools.chain([first], chunks), stdout=stdout, timeout=timeout)


def test_noop_restage_is_one_round_trip_with_the_inventory_cache(tmp_path):
    from launcher.ops.stage import InventoryCache
    _tree(tmp_path)
    host = Host("localhost", 1, workdir=str(tmp_path / "wd"))
    node = CountingExec(host)
    local = collect(_items(tmp_path), HashCache(None))
    first = Stager({"localhost": node}, known=InventoryCache(tmp_path / "inv.json"))
    first.stage(local, {"localhost": str(tmp_path / "wd/alaunch/j1")})
    assert node.calls == ["inventory", "receive"]

    node.calls.clear()  # a new process: the cache comes from the file
    again = Stager({"localhost": node}, known=InventoryCache(tmp_path / "inv.json"))
    result = again.stage(collect(_items(tmp_path, "b: 2\n"), HashCache(None)),
                         {"localhost": str(tmp_path / "wd/alaunch/j2")})
    assert node.calls == ["link"]
    assert result.bytes_sent == 0 and result.reports["localhost"].linked == 5
    j1, j2 = tmp_path / "wd/alaunch/j1", tmp_path / "wd/alaunch/j2"
    assert (j2 / "code/pkg/m.py").stat().st_ino == (j1 / "code/pkg/m.py").stat().st_ino
    assert (j2 / "config/job.yaml").read_text() == "b: 2\n" and (j2 / "state").is_dir()
    # the code tree is built once on the host and symlinked: O(1) entries per re-stage
    assert (j2 / "code").is_symlink() and os.readlink(j2 / "code") == os.readlink(j1 / "code")
    assert os.readlink(j1 / "code").startswith(str(tmp_path / "wd/alaunch/cas/trees/"))

    # a changed file: the cache lacks its object, so survey + send (only that object)
    (tmp_path / "src/pkg/m.py").write_text("print('v3')\n")
    node.calls.clear()
    third = again.stage(collect(_items(tmp_path), HashCache(None)), {"localhost": str(tmp_path / "wd/alaunch/j3")})
    assert node.calls == ["inventory", "receive"] and third.reports["localhost"].objects_sent == 1


def _staged_with_cache(tmp_path):
    """One staging with an inventory cache, as a first submit does; the node records calls."""
    from launcher.ops.stage import InventoryCache
    _tree(tmp_path)
    node = CountingExec(Host("localhost", 1, workdir=str(tmp_path / "wd")))
    local = collect(_items(tmp_path), HashCache(None))
    known = InventoryCache(tmp_path / "inv.json")
    Stager({"localhost": node}, known=known).stage(local, {"localhost": str(tmp_path / "wd/alaunch/j1")})
    node.calls.clear()
    return node, local, known


def test_stale_inventory_cache_falls_back_and_resends(tmp_path):
    import shutil
    node, local, known = _staged_with_cache(tmp_path)
    shutil.rmtree(tmp_path / "wd/alaunch/cas")  # the host's store was wiped (new fsid too)
    result = Stager({"localhost": node}, known=known).stage(
        local, {"localhost": str(tmp_path / "wd/alaunch/j2")})
    assert node.calls == ["link", "inventory", "receive"]
    assert result.reports["localhost"].objects_sent == 5
    assert (tmp_path / "wd/alaunch/j2/code/pkg/m.py").read_text() == "print('m')\n"


def test_link_refuses_when_the_cached_tree_is_gone(tmp_path):
    """LINK names trees by id only; a host whose tree was removed (objects kept) must not get a
    dangling code symlink: LINK answers not-ok and the survey path rebuilds the tree."""
    import shutil
    node, local, known = _staged_with_cache(tmp_path)
    shutil.rmtree(tmp_path / "wd/alaunch/cas/trees")
    result = Stager({"localhost": node}, known=known).stage(
        local, {"localhost": str(tmp_path / "wd/alaunch/j2")})
    assert node.calls == ["link", "inventory", "receive"]
    assert result.reports["localhost"].objects_sent == 0  # every object was still there
    assert (tmp_path / "wd/alaunch/j2/code/pkg/m.py").read_text() == "print('m')\n"


def test_hash_cache_saves_from_many_threads_at_once(tmp_path):
    """Two submits in one process (a pipeline's concurrent steps) save the cache together:
    each writes its own temp file, the last rename wins, none fails."""
    import threading
    errors = []

    def save(i):
        try:
            for _ in range(50):
                cache = HashCache(tmp_path / "state" / "cache.json")
                cache._data[f"/f{i}"] = [1, 2, "x"]
                cache.save()
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and (tmp_path / "state" / "cache.json").is_file()
    assert not list((tmp_path / "state").glob("*.tmp"))


def test_many_hosts_report_as_one_group_line_after_the_last(tmp_path):
    """Past MANY_HOSTS, staging says one line for the group when every host is done (a
    64-node submit printed a line per host); the shared filesystem is counted, not repeated."""
    from launcher.cli.progress import GroupProgress
    _tree(tmp_path)
    wd = str(tmp_path / "shared")
    a, b = Host("localhost", 1, workdir=wd), Host("127.0.0.1", 1, workdir=wd)
    lines: list[str] = []
    progress = GroupProgress(2, lines.append)
    stager = Stager({"localhost": LocalExec(a), "127.0.0.1": LocalExec(b)}, progress=progress)
    root = f"{wd}/alaunch/j"
    result = stager.stage(collect(_items(tmp_path), HashCache(None)), {"localhost": root, "127.0.0.1": root})
    files = sum(r.objects_sent for r in result.reports.values())
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"staged to 2 hosts: {files} file(s), ")
    assert "1 on a shared filesystem (staged once)" in lines[0] and "slowest " in lines[0]


def test_a_reused_tree_is_touched_and_prune_spares_a_tree_reused_after_its_scan(tmp_path, monkeypatch):
    """prune plans (scan) long before it removes; a re-submit reusing a tree older than the grace
    in between found its `code` link dangling. Reuse touches the tree; prune moves a tree aside,
    looks at its mtime again and puts it back when it was touched."""
    import importlib
    import time

    from launcher.ops.stage import InventoryCache
    node, local, known = _staged_with_cache(tmp_path)
    (tree,) = (tmp_path / "wd/alaunch/cas/trees").iterdir()
    old = time.time() - 2 * 86400
    os.utime(tree, (old, old))
    Stager({"localhost": node}, known=InventoryCache(tmp_path / "inv.json")).stage(
        local, {"localhost": str(tmp_path / "wd/alaunch/j2")})
    assert time.time() - tree.stat().st_mtime < 600  # reused: touched
    monkeypatch.syspath_prepend(str(Path(launcher_remote_dir())))
    prune = importlib.import_module("prune")
    cas = str(tmp_path / "wd/alaunch/cas")
    prune.remove_tree(cas, str(tree), grace=3600)  # planned dead before the reuse: kept
    assert tree.is_dir() and (tmp_path / "wd/alaunch/j2/code/pkg/m.py").read_text() == "print('m')\n"
    os.utime(tree, (old, old))
    prune.remove_tree(cas, str(tree), grace=3600)  # nobody touched it: it goes
    assert not tree.exists() and not list((tmp_path / "wd/alaunch/cas/tmp").glob("dead-tree.*"))


def launcher_remote_dir() -> str:
    import launcher.remote
    return str(Path(launcher.remote.__file__).parent)
