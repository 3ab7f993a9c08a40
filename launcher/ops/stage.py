"""Incremental, verified staging of a plan's files to every node.

Each host keeps a content-addressed store ``<workdir>/alaunch/cas/<sha[:2]>/<sha256>``;
a job directory is hard links into it. So a second submit of the same job — new job id,
new directory — sends only objects the host does not have yet (usually none), and a
16 GB checkpoint already there costs one ``link()``.

Per host, two round trips: INVENTORY (which objects are there, free bytes, filesystem id,
``$HOME``) and RECEIVE (one tar stream of the missing objects, each verified by sha256 and
renamed into place, then the manifest that materialises the job dir). Hosts reporting the
same filesystem id for the same store are staged once. Locally, a hash cache (size, mtime,
sha256 per file) avoids re-hashing unchanged files.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import stat
import tarfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from launcher.core import route as routes
from launcher.core.hostfile import Host
from launcher.core.plan import StageItem
from launcher.errors import AlaunchError, InputError, RemoteError
from launcher.ops import fanout
from launcher.ops import stage_relay as relays
from launcher.remote._prelude import STDLIB_CHECK, check_hex, fetch_checks, new_check
from launcher.runners import CommandRunner

CHUNK = 1 << 20  # read/write block for hashing and the tar stream

DEFAULT_IGNORES = (".git", ".venv", "__pycache__")
IGNORE_FILE = ".alaunchignore"
WARN_CODE_BYTES = 200 << 20
CACHE_NAME = "stage-hash-cache.json"
STORE_DIRNAME = "alaunch"


# ----------------------------------------------------------------------------- ignore rules

def _glob_regex(pattern: str) -> str:
    """A gitignore glob (``*``, ``?``, ``**``, ``[...]``) as a regex over a relative path."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append({"*": "[^/]*", "?": "[^/]"}.get(c) or (c if c == "[" or c == "]" else re.escape(c)))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class IgnoreRules:
    """gitignore-style rules: last match wins, ``!`` re-includes, ``/`` anchors, ``dir/`` dirs only."""

    rules: tuple[tuple[re.Pattern, bool, bool], ...]  # (regex, negated, dirs only)

    @classmethod
    def parse(cls, lines: Iterable[str]) -> IgnoreRules:
        rules = []
        for raw in lines:
            line = raw.rstrip("\n").rstrip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            line = line[1:] if negated else line
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            anchored = "/" in line
            body = _glob_regex(line.lstrip("/"))
            regex = re.compile(("" if anchored else "(?:.*/)?") + body + "$")
            rules.append((regex, negated, dir_only))
        return cls(tuple(rules))

    def ignored(self, rel: str, is_dir: bool) -> bool:
        result = False
        for regex, negated, dir_only in self.rules:
            if dir_only and not is_dir:
                continue
            if regex.match(rel):
                result = not negated
        return result


def code_rules(root: Path, extra: Sequence[str] = ()) -> IgnoreRules:
    lines = list(DEFAULT_IGNORES) + list(extra)
    ignore_file = root / IGNORE_FILE
    if ignore_file.is_file():
        lines += ignore_file.read_text(encoding="utf-8").splitlines()
    return IgnoreRules.parse(lines)


def walk_tree(root: Path, rules: IgnoreRules) -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative POSIX path, path, stat) of every file under ``root`` the rules keep, sorted.

    One ``scandir`` per directory and one ``stat`` per kept file (the entry's type comes
    from the directory listing): a re-stage of an unchanged 2,000-file tree is a few
    milliseconds of walking, not a stat storm. Symlinks are checked (inside the tree, not
    dangling); a symlinked directory is not descended into, as with ``os.walk``.
    """
    real_root = os.path.realpath(root)

    def walk(path: str, rel_dir: str) -> Iterator[tuple[str, str, os.stat_result]]:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for e in entries:
            rel = posixpath.join(rel_dir, e.name)
            is_dir = e.is_dir()
            if rules.ignored(rel, is_dir):
                continue
            if e.is_symlink():
                _check_link(root, real_root, Path(e.path))
            if is_dir:
                if not e.is_symlink():
                    subdirs.append((e.path, rel))
                continue
            if e.is_file():
                yield rel, e.path, e.stat()
        for sub, rel in subdirs:
            yield from walk(sub, rel)

    yield from walk(os.fspath(root), "")


def _check_link(root: Path, real_root: str, link: Path) -> None:
    """A symlink in a staged tree must point at something inside the tree (never ~/.ssh/id_*...)."""
    target = os.path.realpath(link)
    if not os.path.exists(target):
        raise InputError(f"dangling symlink {link} -> {os.readlink(link)}; remove it or add it to {IGNORE_FILE}",
                         source=str(root))
    if os.path.commonpath([real_root, target]) != real_root:
        raise InputError(f"symlink {link} points outside the staged tree (to {target}); refusing to stage it: "
                         f"copy the file into the tree or add the link to {IGNORE_FILE}", source=str(root))


# ----------------------------------------------------------------------------- local side

@dataclass(frozen=True)
class LocalFile:
    dest: str  # relative to the job root
    path: str  # the local file (a str: 2,000 Path objects cost more than the walk)
    size: int
    sha256: str  # "" until named (see LocalSet)
    mode: int
    mtime_ns: int = 0  # as walked: a name the host gives is cached only if the read saw this


def load_state(path: Path | None) -> dict:
    """A cache file of the state dir; a missing or damaged one is an empty cache (it is a hint)."""
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(path: Path | None, data: dict) -> None:
    """Write a cache file atomically (a temp name per process AND thread, then rename: two
    submits in one process — a pipeline's concurrent steps, the dashboard — save at once)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class HashCache:
    """(size, mtime_ns) -> sha256 per absolute path, in the state dir, so unchanged files are not re-read."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._data = load_state(path)
        self.hashed = 0  # files actually read this run (for tests and the benchmark)

    def lookup(self, path: str | Path, st: os.stat_result) -> str | None:
        """The cached digest if the file is unchanged (size and mtime), else None."""
        with self._lock:
            hit = self._data.get(str(path))
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        return None

    def sha256(self, path: str | Path, st: os.stat_result) -> str:
        key = str(path)
        cached = self.lookup(path, st)
        if cached is not None:
            return cached
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
        digest = h.hexdigest()
        with self._lock:
            self._data[key] = [st.st_size, st.st_mtime_ns, digest]
            self.hashed += 1
        return digest

    def learn(self, path: str, size: int, mtime_ns: int, digest: str) -> None:
        """A digest found elsewhere (the host named what this side read and sent)."""
        with self._lock:
            self._data[str(path)] = [size, mtime_ns, digest]

    def save(self) -> None:
        with self._lock:
            save_state(self.path, self._data)


@dataclass(frozen=True)
class LocalSet:
    """Everything to stage: files by content, and generated texts.

    A file whose ``sha256`` is ``""`` is not named yet (``collect(..., hash_new=False)``): a
    first staging into an empty store sends it as it reads it and the host names it
    (:meth:`Stager.stage`); anywhere else it is hashed first (:meth:`named`)."""

    files: tuple[LocalFile, ...]
    texts: Mapping[str, str]
    warnings: tuple[str, ...] = ()
    cache: HashCache | None = field(default=None, compare=False, repr=False)  # where names are kept

    @property
    def objects(self) -> dict[str, LocalFile]:
        """The named files by sha256."""
        return {f.sha256: f for f in self.files if f.sha256}

    @property
    def unnamed(self) -> tuple[LocalFile, ...]:
        return tuple(f for f in self.files if not f.sha256)

    def named(self) -> LocalSet:
        """Every file hashed (through the cache), as ``collect`` does by default."""
        todo = self.unnamed
        if not todo:
            return self
        cache = self.cache or HashCache(None)
        with ThreadPoolExecutor(max_workers=4) as pool:
            digests = dict(zip((f.path for f in todo), pool.map(lambda f: cache.sha256(f.path, os.stat(f.path)),
                                                                todo), strict=True))
        cache.save()
        return self.with_names(digests)

    def with_names(self, digests: Mapping[str, str]) -> LocalSet:
        """The unnamed files whose path ``digests`` names, named."""
        return replace(self, files=tuple(replace(f, sha256=digests.get(f.path, "")) if not f.sha256 else f
                                         for f in self.files))

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.objects.values())


def collect(items: Sequence[StageItem], cache: HashCache, workers: int = 4, *, hash_new: bool = True) -> LocalSet:
    """Expand items to files (code trees filtered), hash them (cached), in parallel.

    ``hash_new=False``: files the cache does not name stay unnamed (``sha256 == ""``), for the
    Stager to send unhashed to a host whose store is empty (the host names them) or to hash
    when it must. Measured (``bench_stage.py --first-only``): hashing 562 MiB here before a
    first staging was 0.28 CPU-s of sha256 and 0.37-0.47 s of wall before the first byte left."""
    found: list[tuple[str, str, os.stat_result]] = []
    texts: dict[str, str] = {}
    warnings: list[str] = []
    for item in items:
        if item.text is not None:
            texts[item.dest] = item.text
            continue
        assert item.local is not None  # a StageItem is a text or a local path
        path = Path(item.local)
        if path.is_dir():
            rules = code_rules(path, item.ignore) if item.dest == "code" or item.ignore else IgnoreRules(())
            tree = [(posixpath.join(item.dest, rel), p, st) for rel, p, st in walk_tree(path, rules)]
            size = sum(st.st_size for _, _, st in tree)
            if item.dest == "code" and size > WARN_CODE_BYTES:
                warnings.append(f"code tree {path} is {size / 2**20:.0f} MiB after {IGNORE_FILE}; "
                                f"add large files to {path / IGNORE_FILE}")
            found += tree
        elif path.is_file():
            found.append((item.dest, str(path), path.stat()))
        else:
            raise InputError(f"{path} does not exist (needed at {item.dest} on the hosts)", key=item.dest)

    digests = [cache.lookup(p, st) for _, p, st in found]  # hits inline: a pool costs more than a dict
    misses = [i for i, d in enumerate(digests) if d is None]
    if misses and not hash_new:
        for i in misses:
            digests[i] = ""
    elif misses:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i, digest in zip(misses, pool.map(lambda i: cache.sha256(found[i][1], found[i][2]), misses),
                                 strict=True):
                digests[i] = digest
    files = tuple(LocalFile(dest, p, st.st_size, d, stat.S_IMODE(st.st_mode), st.st_mtime_ns)
                  for (dest, p, st), d in zip(found, cast(list[str], digests), strict=True))  # every miss hashed
    return LocalSet(files, texts, tuple(warnings), cache)


# ----------------------------------------------------------------------------- the stream

def _member(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    return info.tobuf(tarfile.PAX_FORMAT)  # PAX: sizes beyond 8 GiB are fine


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


@dataclass
class FreshReads:
    """What :func:`tar_stream` saw of the unnamed files it sent, by index: the transfer check
    (``<name>:<hex>``) of the bytes it read and sent, and whether the file's size and mtime
    were still the walked ones after the read (only then may the host's name for it be cached)."""

    digests: list[str] = field(default_factory=list)
    unchanged: list[bool] = field(default_factory=list)


def tar_stream(objects: Sequence[LocalFile], manifest: dict | None,
               on_bytes: Callable[[int], None], fresh: Sequence[LocalFile] = (),
               seen: FreshReads | None = None, check: str = STDLIB_CHECK) -> Iterator[bytes]:
    """The RECEIVE stream: objects read from disk 1 MiB at a time, then the manifest (none
    for RELAY, whose stream is only objects).

    Written by hand (header, data, padding) so a 16 GB file is never held in memory; the
    host parses it by hand after the request frame (``launcher/remote/stage.py``, not ``tarfile``)
    with 1 MiB reads. ``fresh``: unnamed files, sent as ``new/<i>`` after the named objects,
    each read once: its transfer check ``check`` taken on the blocks sent (a fetch check,
    :func:`launcher.remote._prelude.new_check`: xxh3-128 ~20 GB/s, a CRC-32 per MiB 7 GB/s,
    sha256 2 GB/s here) follows it as ``sum/<i>`` (``[size, digest]``), on which the host
    names and stores it, and goes in the manifest's ``"new"`` too (every file was checked;
    ``seen`` gets the digests and whether each file held still).
    """
    seen = seen if seen is not None else FreshReads()
    pending = bytearray()  # headers and small files gathered into ~1 MiB writes
    for i, obj in enumerate([*objects, *fresh]):
        unnamed = i >= len(objects)
        pending += _member(f"new/{i - len(objects)}" if unnamed else f"objects/{obj.sha256}", obj.size)
        sent = 0
        h: Any = new_check(check) if unnamed else None
        with open(obj.path, "rb", buffering=0) as f:
            while block := f.read(CHUNK):
                sent += len(block)
                if h is not None:
                    h.update(block)
                if len(block) >= CHUNK:  # big files: pass the block on, no copy
                    if pending:
                        yield bytes(pending)
                        pending.clear()
                    yield block
                else:
                    pending += block
                    if len(pending) >= CHUNK:
                        yield bytes(pending)
                        pending.clear()
                on_bytes(len(block))
            after = os.fstat(f.fileno()) if unnamed else None
        if sent != obj.size:
            raise AlaunchError(f"{obj.path} changed size while staging ({obj.size} -> {sent} bytes); retry")
        pending += _padding(obj.size)
        if after is not None:
            seen.digests.append(check_hex(check, h))
            seen.unchanged.append(after.st_size == obj.size and after.st_mtime_ns == obj.mtime_ns)
            body = json.dumps([obj.size, seen.digests[-1]]).encode()  # the host stores it on this
            pending += _member(f"sum/{i - len(objects)}", len(body)) + body + _padding(len(body))
    if manifest is not None:
        if fresh:
            manifest = {**manifest, "new": [[f.size, d] for f, d in zip(fresh, seen.digests, strict=True)]}
        body = json.dumps(manifest).encode()
        pending += _member("manifest.json", len(body)) + body + _padding(len(body))
    pending += b"\0" * (2 * tarfile.BLOCKSIZE)
    yield bytes(pending)


# ----------------------------------------------------------------------------- per host

@dataclass(frozen=True)
class Inventory:
    host: str
    home: str
    base: str
    fsid: str
    free: int
    have: frozenset[str]
    port: int | None = None  # a free TCP port, when one was asked for (node 0)
    versions: dict | None = None  # mindspore, mindformers, cann, driver (None each where absent)
    env_error: str | None = None  # the launch wrapper's report when an env script failed
    msrun_flags: list | None = None  # the flags the host's msrun takes (None: not asked or not found)
    claims: tuple = ()  # live card claims of alaunch jobs there ({"job_id", "cards"}), when asked
    npu_smi: dict | None = None  # `npu-smi info` there ({"code", "out", "err"}; None: no npu-smi)
    empty: bool = False  # the store holds no object (unnamed files may be sent, the host names them)
    checks: tuple[str, ...] = ()  # the transfer checks its Python computes, best first (when empty)


@dataclass
class HostReport:
    host: str
    objects_sent: int = 0
    bytes_sent: int = 0
    linked: int = 0
    copied: int = 0
    seconds: float = 0.0
    shared_with: str | None = None  # staged through this host (same filesystem)
    via: str | None = None  # relay staging: who fed this host ("laptop" for a root)
    relayed_objects: int = 0  # objects (and bytes) this host stored from the relay stream
    relayed_bytes: int = 0


class InventoryCache:
    """What each host's store held after our last staging, keyed by host and store, in the state dir.

    Lets a re-stage of unchanged files skip the INVENTORY round trip: one LINK round trip
    checks the store id and every object on the host and makes the job dir. The cache is a
    hint, never trusted: a wiped or replaced store makes LINK answer "not ok" and the normal
    survey-and-send path runs.
    """

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._data = load_state(path)

    @staticmethod
    def key(host: Host) -> str:
        return f"{host.user or ''}@{host.name}:{host.port or ''}:{store_base(host)}"

    def get(self, host: Host) -> Inventory | None:
        with self._lock:
            e = self._data.get(self.key(host))
        if not e:
            return None
        return Inventory(host.name, e["home"], e["base"], e["fsid"], 0, frozenset(e["have"]))

    def record(self, host: Host, inv: Inventory, objects: Iterable[str]) -> None:
        """After a successful stage: the host now has ``objects`` too."""
        with self._lock:
            self._data[self.key(host)] = {"home": inv.home, "base": inv.base, "fsid": inv.fsid,
                                          "have": sorted(set(inv.have) | set(objects))}

    def forget(self, host: Host) -> None:
        with self._lock:
            self._data.pop(self.key(host), None)

    def save(self) -> None:
        with self._lock:
            save_state(self.path, self._data)


def store_base(host: Host) -> str:
    return posixpath.join(host.remote_workdir.rstrip("/") or "/", STORE_DIRNAME)


def inventory(node: CommandRunner, objects: Iterable[str],
              port: int | None | bool = False, pinned: bool = False, *, port_range: tuple[int, int] | None = None,
              versions: bool = False, wrapper: str | None = None, env: Mapping[str, str] | None = None,
              msrun_flags: bool = False, cards: bool = False) -> Inventory:
    """One round trip: which objects the host has, its free bytes, filesystem id and $HOME;
    with ``port`` (None: any; an int: that one, or another unless ``pinned``) also a free
    TCP port there (node 0's msrun master port, from ``port_range`` when given), so submit's
    preflight is one round trip. ``versions``: also MindSpore/MindFormers/CANN/driver versions
    (files only, no import); ``wrapper`` + ``env``: run the launch wrapper with ``true`` there,
    so a failing env script is reported now (``env_error``)."""
    req: dict[str, Any] = {"op": "inventory", "base": store_base(node.host), "objects": sorted(objects)}
    if port is not False:
        req.update(port=port, pinned=pinned, port_range=list(port_range) if port_range else None)
    if versions:
        req["versions"] = True
    if msrun_flags:
        req["msrun_flags"] = True
    if wrapper:
        req.update(wrapper=wrapper, env=dict(env or {}))
    if cards:  # card allocation: the host's claims and npu-smi, in the same round trip
        req.update(cards=True, claims_dir=node.host.claims_dir)
    data = node.call("stage", req, timeout=120, what="inventory")
    return Inventory(node.host.name, data["home"], data["base"], data["fsid"], int(data["free"]),
                     frozenset(data["have"]), data.get("port"), data.get("versions"), data.get("env_error"),
                     data.get("msrun_flags"), tuple(data.get("claims") or ()), data.get("npu_smi"),
                     bool(data.get("empty")), tuple(data.get("checks") or ()))


def verify_store(node: CommandRunner, remove: bool = True) -> dict:
    """Re-hash every object of the host's store (``remote/stage.py``'s VERIFY); with
    ``remove`` delete bad ones and the trees linking them (the next staging resends them).
    -> ``{"objects", "bytes", "bad", "trees_removed"}``."""
    return node.call("stage", {"op": "verify", "base": store_base(node.host), "remove": remove}, timeout=3600,
                     what="verify-store")


def resolve_home(path: str, home: str) -> str:
    if path == "~":
        return home
    return posixpath.join(home, path[2:]) if path.startswith("~/") else path


TREE_MIN_FILES = 2


def manifest_for(local: LocalSet, root: str, texts: Mapping[str, str] | None = None, *,
                 tree_links: bool = True) -> dict:
    """What RECEIVE / LINK make of the job dir (pure).

    A top-level directory with many files (``code``) becomes a *tree*: built once per host
    under ``cas/trees/<id>`` (hard links, id = hash of its (path, sha256, mode) list) and
    symlinked into the job dir, so a re-stage of the same tree costs one symlink, not one
    link per file. Directories holding a generated text stay plain (texts differ per job).
    ``tree_links=False`` (LINK, the no-op re-stage): trees by id and file count only.
    An unnamed file is ``"#<i>"`` (its index in ``local.unnamed``, the stream's ``new/<i>``),
    and a tree holding one has no id yet: RECEIVE puts in the names and computes the id
    the same way (``remote/stage.py`` ``name_new``).
    """
    texts = dict(local.texts if texts is None else texts)
    text_tops = {t.split("/", 1)[0] for t in texts}
    refs = {f.path: f"#{i}" for i, f in enumerate(local.unnamed)}
    by_top: dict[str, dict[str, list]] = {}
    for f in local.files:
        top, _, rest = f.dest.partition("/")
        if rest:
            by_top.setdefault(top, {})[rest] = [f.sha256 or refs[f.path], f.mode]
    trees: dict[str, dict] = {}
    links = {}
    for top, files in by_top.items():
        if len(files) >= TREE_MIN_FILES and top not in text_tops:
            known = all(not sha.startswith("#") for sha, _ in files.values())
            tree_id = hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest() if known else None
            trees[top] = {"id": tree_id, "count": len(files)}
            if tree_links:
                trees[top]["links"] = files
    for f in local.files:
        if f.dest.partition("/")[0] not in trees:
            links[f.dest] = [f.sha256 or refs[f.path], f.mode]
    return {"root": root, "links": links, "trees": trees, "texts": texts,
            "dirs": sorted({"output", "msrun_log", "state"})}


class Progress:
    """Byte progress per host; the CLI gives a rich one, tests and pipes get plain lines."""

    def start(self, host: str, total: int, files: int) -> None: ...
    def advance(self, host: str, n: int) -> None: ...
    def done(self, host: str, report: HostReport) -> None: ...

    def finish(self) -> None:
        """Every host is staged (a group's summary goes here)."""


class PlainProgress(Progress):
    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def done(self, host: str, report: HostReport) -> None:
        if report.shared_with:
            self.say(f"{host}: shares its filesystem with {report.shared_with}; staged once")
            return
        if report.via:
            self.say(f"{host}: relayed from {report.via}: {report.relayed_objects} file(s), "
                     f"{report.relayed_bytes / 2**20:.1f} MiB; then {report.bytes_sent / 2**20:.1f} MiB direct; "
                     f"linked {report.linked + report.copied}")
            return
        if not report.objects_sent:  # a re-submit: said as such, not "sent 0 file(s), 0.0 MiB (0.0 MiB/s)"
            self.say(f"{host}: nothing to send (all already there); linked {report.linked + report.copied}")
            return
        speed = report.bytes_sent / 2**20 / report.seconds if report.seconds else 0.0
        self.say(f"{host}: sent {report.objects_sent} file(s), {report.bytes_sent / 2**20:.1f} MiB in "
                 f"{report.seconds:.1f} s ({speed:.1f} MiB/s); linked {report.linked + report.copied}")


@dataclass
class StageResult:
    reports: dict[str, HostReport] = field(default_factory=dict)
    inventories: dict[str, Inventory] = field(default_factory=dict)
    relay: relays.RelayOutcome | None = None  # the route taken and who fell back, when relayed
    files: LocalSet | None = None  # what was staged, named (the hosts named the unnamed files)

    @property
    def bytes_sent(self) -> int:
        """Object bytes that left the laptop (direct sends, plus the relay stream per root)."""
        return sum(r.bytes_sent for r in self.reports.values()) + (self.relay.laptop_bytes if self.relay else 0)


class Stager:
    """Stage one LocalSet to many hosts: inventory all, send per filesystem, materialise."""

    def __init__(self, nodes: Mapping[str, CommandRunner], progress: Progress | None = None,
                 known: InventoryCache | None = None,
                 relay: str | None = None, degree: int | None = None,
                 addresses: Mapping[str, str] | None = None):
        self.nodes = nodes  # each with its host's interpreter (CommandRunner.python)
        self.progress = progress or Progress()
        self.known = known  # cached inventories: the no-op re-stage in one round trip per host
        # relay staging (launcher/core/route.py): $ALAUNCH_RELAY auto|on|off, $ALAUNCH_RELAY_DEGREE
        self.relay_mode = routes.parse_mode(os.environ.get("ALAUNCH_RELAY") if relay is None else relay)
        self.degree = degree or int(os.environ.get("ALAUNCH_RELAY_DEGREE") or routes.DEFAULT_DEGREE)
        self.addresses = addresses  # how the hosts reach each other, when not by their hostfile names

    def survey(self, local: LocalSet) -> dict[str, Inventory]:
        """INVENTORY on every host in parallel; any failure names its host (all of them)."""
        return run_parallel(self.nodes, lambda n: inventory(n, local.objects))

    def stage(self, local: LocalSet, roots: Mapping[str, str],
              inventories: Mapping[str, Inventory] | None = None,
              texts_by_host: Mapping[str, Mapping[str, str]] | None = None) -> StageResult:
        """Send what each filesystem lacks, then materialise every job dir (texts may differ per host).

        Without ``inventories`` and with a cache (``known``), hosts whose cached store holds
        every object are linked in one round trip; only the others are surveyed.
        """
        result = self._stage(local, roots, inventories, texts_by_host)
        self.progress.finish()
        return result

    def _stage(self, local: LocalSet, roots: Mapping[str, str], inventories: Mapping[str, Inventory] | None,
               texts_by_host: Mapping[str, Mapping[str, str]] | None) -> StageResult:
        fast: dict[str, HostReport] = {}
        if local.unnamed and self.known is not None and any(self.known.get(n.host) for n in self.nodes.values()):
            local = local.named()  # staged there before: its store is no first staging's
        if inventories is None and self.known is not None:
            fast = self._link_known(local, roots, texts_by_host)
        rest = {n: node for n, node in self.nodes.items() if n not in fast}
        if not rest:
            known = self.known
            assert known is not None  # fast came from it
            return StageResult(fast, {n: i for n in fast if (i := known.get(self.nodes[n].host)) is not None})
        if inventories is None:
            inventories = run_parallel(rest, lambda n: inventory(n, local.objects))
        result = self._send(local, roots, {n: inventories[n] for n in rest}, texts_by_host)
        result.reports.update(fast)
        if self.known is not None:
            for name, i in result.inventories.items():
                self.known.record(self.nodes[name].host, i, (result.files or local).objects)
            self.known.save()
        return result

    def _link_known(self, local: LocalSet, roots: Mapping[str, str],
                    texts_by_host: Mapping[str, Mapping[str, str]] | None) -> dict[str, HostReport]:
        """LINK on every host the cache says is complete (one per shared filesystem); the
        hosts that really were complete, with their reports."""
        need = set(local.objects)
        known = self.known
        assert known is not None  # called only with a cache
        cached = {n: known.get(node.host) for n, node in self.nodes.items()}
        ready = {n: i for n, i in cached.items() if i is not None and need <= i.have}
        groups: dict[tuple[str, str, str], list[str]] = {}
        for name, i in ready.items():
            groups.setdefault((i.fsid, i.base, resolve_home(roots[name], i.home)), []).append(name)
        leaders = {members[0]: members for members in groups.values()}

        def link(node: CommandRunner) -> HostReport | None:
            name = node.host.name
            i = ready[name]
            start = time.monotonic()
            texts = texts_by_host.get(name) if texts_by_host else None
            manifest = manifest_for(local, resolve_home(roots[name], i.home), texts, tree_links=False)
            request = {"op": "link", "cas": posixpath.join(i.base, "cas"), "fsid": i.fsid, "manifest": manifest}
            data = node.call("stage", request, timeout=120, what="staging")
            if not data["ok"]:
                known.forget(node.host)
                return None
            report = HostReport(name, 0, 0, data["linked"], data["copied"], time.monotonic() - start)
            self.progress.start(name, 0, 0)
            self.progress.done(name, report)
            return report

        done = {n: r for n, r in run_parallel({n: self.nodes[n] for n in leaders}, link).items() if r}
        for leader in list(done):
            for other in leaders[leader][1:]:
                done[other] = HostReport(other, shared_with=leader)
                self.progress.done(other, done[other])
        return done

    def _send(self, local: LocalSet, roots: Mapping[str, str], inv: dict[str, Inventory],
              texts_by_host: Mapping[str, Mapping[str, str]] | None) -> StageResult:
        groups: dict[tuple[str, str, str], list[str]] = {}
        for name, i in inv.items():
            groups.setdefault((i.fsid, i.base, resolve_home(roots[name], i.home)), []).append(name)
        leaders = {members[0]: members for members in groups.values()}
        surveyed = local.objects
        local = self._name_unless_first(local, leaders, inv)
        objects, fresh = local.objects, local.unnamed
        if len(objects) > len(surveyed):
            inv = self._survey_named(leaders, inv, [s for s in objects if s not in surveyed])
        for leader in leaders:
            missing = [objects[s] for s in sorted(objects) if s not in inv[leader].have]
            need = sum(o.size for o in missing) + sum(f.size for f in fresh)
            if need > inv[leader].free:
                raise RemoteError(leader, f"not enough disk space under {inv[leader].base}: need "
                                          f"{need:,} bytes ({need / 2**30:.2f} GiB) for this job, "
                                          f"{inv[leader].free:,} free")

        outcome, inv = self._relay(local, list(leaders), inv)
        check = next((c for c in fetch_checks() if all(c in inv[n].checks for n in leaders)), STDLIB_CHECK)
        named: dict[str, tuple[list[str], FreshReads]] = {}  # leader -> the names its host gave, what was read

        def send(node: CommandRunner) -> HostReport:
            name = node.host.name
            i = inv[name]
            missing = [objects[s] for s in sorted(objects) if s not in i.have]
            if missing or fresh or not (outcome and name in outcome.route.roots):
                self.progress.start(name, sum(o.size for o in missing) + sum(f.size for f in fresh),
                                    len(missing) + len(fresh))
            start = time.monotonic()
            root = resolve_home(roots[name], i.home)
            manifest = manifest_for(local, root, texts_by_host.get(name) if texts_by_host else None)
            seen = FreshReads()
            stream = tar_stream(missing, manifest, lambda n: self.progress.advance(name, n), fresh, seen, check)
            request = {"op": "receive", "cas": posixpath.join(i.base, "cas")} | ({"check": check} if fresh else {})
            data = node.call("stage", request, stdin=stream, what="staging")
            if fresh:
                if len(data.get("names") or ()) != len(fresh):
                    raise RemoteError(name, f"named {len(data.get('names') or ())} of the {len(fresh)} new files")
                named[name] = (list(data["names"]), seen)
            report = HostReport(name, data["objects"], data["bytes"], data["linked"], data["copied"],
                                time.monotonic() - start)
            if outcome and name in outcome.received:
                report.via = outcome.via.get(name)
                report.relayed_objects, report.relayed_bytes = outcome.received[name]
            self.progress.done(name, report)
            return report

        reports = run_parallel({n: self.nodes[n] for n in leaders}, send)
        for leader, members in leaders.items():
            for other in members[1:]:
                reports[other] = HostReport(other, shared_with=leader)
                self.progress.done(other, reports[other])
        return StageResult(reports, inv, outcome, learn_names(local, named) if fresh else local)

    def _name_unless_first(self, local: LocalSet, leaders: Mapping[str, list[str]],
                           inv: Mapping[str, Inventory]) -> LocalSet:
        """``local`` as it is when its unnamed files may go unhashed (every store to send to is
        empty, and no relay: its stream is named objects only), else with every file hashed."""
        if not local.unnamed:
            return local
        remote = [n for n in leaders if not self.nodes[n].local]
        size = sum(f.size for f in local.files)
        if all(inv[n].empty for n in leaders) and not routes.should_relay(self.relay_mode, len(remote), size):
            return local
        return local.named()

    def _survey_named(self, leaders: Mapping[str, list[str]], inv: dict[str, Inventory],
                      named: list[str]) -> dict[str, Inventory]:
        """``inv`` with what each leader's store holds of the objects named after it was surveyed
        (files the hash cache did not know, hashed because a store was not empty): one more
        INVENTORY round trip, so the store's copy is not sent again. Measured: the rerun of a
        first staging cut by a lost link sent every file again, the ones stored before the cut too."""
        again = run_parallel({n: self.nodes[n] for n in leaders}, lambda n: inventory(n, named))
        return {n: replace(i, have=i.have | again[n].have) if n in again else i for n, i in inv.items()}

    def _relay(self, local: LocalSet, leaders: Sequence[str],
               inv: dict[str, Inventory]) -> tuple[relays.RelayOutcome | None, dict[str, Inventory]]:
        """Relay staging (when the mode and the sizes call for it): the objects any filesystem
        lacks go once from the laptop along the route through the hosts. Hosts that got them
        are marked as holding them; hosts that did not are surveyed again, so the direct send
        that follows sends only what they still lack (the relay resumes per object)."""
        objects = local.objects
        remote = [n for n in leaders if not self.nodes[n].local]
        union = sorted({s for n in remote for s in objects if s not in inv[n].have})
        size = sum(objects[s].size for s in union)
        if not routes.should_relay(self.relay_mode, len(remote), size):
            return None, inv
        route = routes.plan_route(remote, self.degree)
        send = [objects[s] for s in union]
        for root in route.roots:
            self.progress.start(root, size, len(send))
        outcome = relays.relay(
            route, {n: self.nodes[n] for n in remote},
            lambda root: tar_stream(send, None, lambda k: self.progress.advance(root, k)), size,
            cas={n: posixpath.join(inv[n].base, "cas") for n in remote},
            addresses=self.addresses)
        inv = dict(inv)
        for name in outcome.received:
            inv[name] = replace(inv[name], have=inv[name].have | set(union))
        if outcome.failed:
            inv.update(run_parallel({n: self.nodes[n] for n in outcome.failed},
                                    lambda n: inventory(n, objects)))
        return outcome, inv



def learn_names(local: LocalSet, named: Mapping[str, tuple[list[str], FreshReads]]) -> LocalSet:
    """``local`` with the names the hosts gave its unnamed files (where every host that got
    one agrees); each goes into the hash cache only when every read of the file saw the
    walked size and mtime (a file changed during the read may not be what the name says)."""
    fresh = local.unnamed
    digests: dict[str, str] = {}
    for i, f in enumerate(fresh):
        names = {names[i] for names, _ in named.values()}
        if len(names) != 1:
            continue
        digests[f.path] = names.pop()
        if local.cache is not None and all(seen.unchanged[i] for _, seen in named.values()):
            local.cache.learn(f.path, f.size, f.mtime_ns, digests[f.path])
    if local.cache is not None:
        local.cache.save()
    return local.with_names(digests)


def run_parallel(nodes: Mapping[str, CommandRunner], fn: Callable[[CommandRunner], object]) -> dict:
    """``fn`` on every node at once through the one fan-out; host name -> result, or one
    error naming every host that failed."""
    done = fanout.run_parallel(nodes.values(), fn).raise_on_failure()
    return {node.host.name: r for node, r in done.items()}
