"""Bring a job's results home: verified, incremental, resumable fetch from every node at once.

Local layout (``--dest``, default ``runs/``)::

    runs/<job-id>/
        job.json                      id, name, kind, state, template, lora {rank, alpha, targets},
                                      nodes, and what this fetch brought (read by `alaunch results`)
        job.yaml                      the rendered MindFormers config as recorded at submit (node 0's)
        <host>/<path in the job dir>  e.g. runs/J/ascend-0/msrun_log/worker_0.log,
                                      runs/J/ascend-0/output/checkpoint/rank_0/x.ckpt,
                                      runs/J/ascend-0/config/job.yaml (that host's config as it ran)

``<host>`` is the node's hostfile name (``<host>-node<rank>`` if one host runs two nodes).

Per node: ONE round trip lists the files the job's ``outputs`` globs match, each with size
and, when the host knows it or a same-size copy is here to compare, its digest (the fetch
check, :class:`~launcher.remote._prelude.BlockCRC`: the CRC-32 of each 1 MiB block; computed
on the host by ``launcher/remote/collect.py``, which also refuses any glob or symlink leaving
the job dir). Then, per file: already here with that digest -> skipped; a ``<name>.part``
from an interrupted fetch -> continued from its size; else sent whole. Bytes arrive through
the OpenSSH client when there is one (C speed, one process per host; see
:mod:`launcher.runners.openssh`), checked as they are written; the ``.part`` is renamed to
its final name only when the digest of the whole file matches the host's. A resumed file
whose digest does not match (the prefix changed) is fetched again from zero. So a final name
never holds a truncated or corrupt file.

``--what lora`` (:func:`lora_request`): the same round trip also extracts, on the host, the
tensors a LoRA fine-tune trained (named from the rendered config: :func:`launcher.core.lora.trainable_parameters`)
out of every checkpoint the ``checkpoints`` globs match, into ``<job dir>/lora/<its path>``
(a valid checkpoint of the same format, its tensors the original bytes), and only those small
files travel: ``runs/<job-id>/<host>/lora/output/checkpoint/rank_0/x.ckpt``. What each one
holds is checked against the config's count (:func:`check_delta`) before anything moves.
Every node's report says, per group, the bytes moved and the bytes on the host
(:class:`GroupBytes`; for ``lora`` the host's bytes are the full checkpoints').

Planning (:func:`plan_node`, :func:`host_dirs`, :func:`globs_for`, :func:`check_delta`) is
pure; listing, hashing and transfers are at the edges.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from launcher.core import lora, yamlio
from launcher.core.hostfile import Host, parse_hostfile
from launcher.core.spec import OutputsSpec
from launcher.errors import AlaunchError, InputError, RemoteError
from launcher.ops import registry as reg
from launcher.ops.collect_stream import Entry, Receiver, file_check, list_and_stream, stream
from launcher.ops.fanout import run_parallel
from launcher.ops.stage import HashCache
from launcher.remote._prelude import STDLIB_CHECK, check_hex, fetch_checks
from launcher.runners import CommandRunner, ConnectOptions, make_runner

GROUPS = ("logs", "checkpoints", "predictions", "tensorboard")
LORA = "lora"  # not part of "all": the LoRA tensors of the checkpoints, extracted on the host
LORA_DIR = "lora"  # under the job dir, on the host and here
LORA_DEFAULT_GLOBS = ("output/checkpoint/**/*.ckpt", "output/checkpoint/**/*.safetensors")
DTYPE_SIZE = {"Float64": 8, "Float32": 4, "Float16": 2, "BFloat16": 2, "Int64": 8, "Int32": 4, "Int16": 2,
              "Int8": 1, "UInt8": 1, "Bool": 1, "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4,
              "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
ALWAYS = {"config": ("config/job.yaml",)}  # every host's rendered config comes along
REMOTE_HASH_CACHE = "state/fetch-digest.marshal"  # the host's digests (a sha256 cache before: not read)
LOCAL_HASH_CACHE = "fetch-digest-cache.json"  # here: fetched file -> [size, mtime_ns, digest]
PART = ".part"


# ----------------------------------------------------------------------------- pure planning

def parse_what(what: str | Sequence[str]) -> tuple[str, ...]:
    """``logs,checkpoints`` / ``all`` -> the output groups, in a fixed order."""
    items = [w.strip() for w in (what.split(",") if isinstance(what, str) else what) if w.strip()]
    valid = ", ".join(GROUPS + (LORA,))
    if not items:
        raise InputError(f"nothing to fetch; valid: {valid}, all", key="--what")
    bad = [w for w in items if w not in GROUPS + (LORA, "all")]
    if bad:
        raise InputError(f"unknown output group {bad[0]!r}; valid: {valid}, all", key="--what")
    chosen = GROUPS if "all" in items else tuple(g for g in GROUPS if g in items)
    return chosen + ((LORA,) if LORA in items else ())


def check_glob(group: str, pattern: str) -> None:
    """A glob may not leave the job directory: no absolute paths, no ``..``."""
    if pattern.startswith("/") or ".." in pattern.split("/") or pattern.startswith("~"):
        raise InputError(f"glob {pattern!r} leaves the job directory; give a path relative to "
                         f"it without '..' (e.g. output/checkpoint/**/*.ckpt)", key=f"outputs.{group}")


def globs_for(outputs: OutputsSpec, groups: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The globs to list on each host for these groups (checked), plus the config."""
    chosen = {g: tuple(getattr(outputs, g)) for g in groups if g != LORA}
    for group, patterns in chosen.items():
        for p in patterns:
            check_glob(group, p)
    return {**chosen, **ALWAYS}


def host_dirs(nodes: Sequence[reg.NodeRecord]) -> dict[int, str]:
    """node rank -> local directory name: the host name, made unique and path-safe."""
    names: dict[int, str] = {}
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n.host] = counts.get(n.host, 0) + 1
    for n in nodes:
        safe = "".join(c if c.isalnum() or c in "._-@" else "_" for c in n.host).lstrip(".") or "host"
        names[n.node_rank] = f"{safe}-node{n.node_rank}" if counts[n.host] > 1 else safe
    return names


def safe_relpath(rel: str, host: str) -> str:
    """A path a host listed, checked before it names a local file (a host cannot write elsewhere)."""
    norm = posixpath.normpath(rel)
    if not rel or rel.startswith("/") or norm.startswith("..") or norm != rel.rstrip("/") or "\\" in rel:
        raise RemoteError(host, f"listed a path {rel!r} that is not inside the job directory; refusing")
    return norm


@dataclass(frozen=True)
class RemoteFile:
    group: str
    path: str  # relative to the job dir (and to the host's local dir)
    src: str  # absolute real path on the host
    size: int
    digest: str | None  # "<check>:<hex>" (the fetch check); None: not read at listing time (no copy here)
    sha256: str | None = None  # a LoRA delta's (the host wrote it; a pipeline relays it by that)


@dataclass(frozen=True)
class Delta:
    """One small LoRA checkpoint the host wrote: from which checkpoint, what it holds
    (name -> [element count, dtype, bytes])."""

    path: str
    source: str
    source_size: int
    found: Mapping[str, Sequence]


@dataclass(frozen=True)
class Listing:
    root: str
    files: tuple[RemoteFile, ...]
    refused: tuple[dict, ...] = ()
    deltas: tuple[Delta, ...] = ()
    check: str = STDLIB_CHECK  # the fetch check the host and this machine agreed on


@dataclass(frozen=True)
class LocalState:
    """What is already here for one listed file: the final file's digest (when its size
    matches, else None) and the size of a ``.part`` left by an interrupted fetch."""

    final_digest: str | None = None
    part_size: int | None = None


SKIP, RESUME, FETCH = "skip", "resume", "fetch"


@dataclass(frozen=True)
class Action:
    file: RemoteFile
    kind: str  # skip | resume | fetch
    offset: int = 0  # bytes already here (resume)


def plan_node(listing: Listing, local: Mapping[str, LocalState]) -> list[Action]:
    """Per listed file: skip it (same digest here), resume its .part, or fetch it whole."""
    actions = []
    for f in listing.files:
        state = local.get(f.path, LocalState())
        if f.digest is not None and state.final_digest == f.digest:
            actions.append(Action(f, SKIP))
        elif state.part_size and 0 < state.part_size <= f.size:
            actions.append(Action(f, RESUME, state.part_size))
        else:
            actions.append(Action(f, FETCH))
    return actions


def refusal_message(host: str, refused: Sequence[dict]) -> str:
    r = refused[0]
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    return (f"outputs.{r['group']} glob {r['glob']!r} matches {r['path']!r}: {r['why']}; "
            f"refusing to fetch from {host}{more}")


def lora_request(config_text: str, outputs: OutputsSpec) -> dict[str, Any]:
    """What LIST needs to extract the LoRA tensors: the checkpoints' globs (the job's
    ``outputs.checkpoints``, else MindFormers' ``output/checkpoint/**``), the trainable
    parameters' names and element counts (their sum is what ``render`` shows as trainable:
    checked here), and whether each rank holds the whole model (no model or pipeline
    parallelism: every delta must then hold every name)."""
    try:
        config = yaml.safe_load(config_text) if config_text else None
    except yaml.YAMLError:
        config = None
    config = config if isinstance(config, dict) else {}
    pet, _ = lora.pet_config_of(config)
    family = lora.family_for(config)
    model_config = ((config.get("model") or {}).get("model_config") or {})
    if str(pet.get("pet_type", "")).lower() != "lora" or family is None:
        raise InputError("the job's rendered config has no LoRA (model.model_config.pet_config.pet_type: lora)"
                         + ("" if family else " or its model family is not one alaunch knows")
                         + "; fetch --what checkpoints brings the whole checkpoints", key="--what")
    try:
        names = lora.trainable_parameters(model_config, pet, family)
        expected = lora.count(model_config, pet, family).trainable
    except (lora.UnknownShape, ValueError) as exc:
        raise InputError(f"cannot name the LoRA parameters of this config: {exc}", key="--what") from None
    if sum(names.values()) != expected:  # the names must be exactly what render counts
        raise AlaunchError(f"internal: {len(names)} LoRA parameter names hold {sum(names.values()):,} elements, "
                           f"render counts {expected:,} trainable")
    parallel = config.get("parallel_config") or {}
    whole = not config.get("use_parallel") or (int(parallel.get("model_parallel") or 1) == 1
                                               and int(parallel.get("pipeline_stage") or 1) == 1)
    globs = tuple(outputs.checkpoints) or LORA_DEFAULT_GLOBS
    for p in globs:
        check_glob("checkpoints", p)
    return {"globs": list(globs), "names": names, "dir": LORA_DIR, "whole": whole, "trainable": expected}


def check_delta(delta: Delta, names: Mapping[str, int], whole: bool) -> str | None:
    """What is wrong with one delta, or None: a name missing (when each rank holds the whole
    model), an element count that differs from the config's, bytes that do not fit the dtype."""
    if whole and len(delta.found) != len(names):
        missing = [n for n in names if n not in delta.found]
        return (f"{delta.source} holds {len(delta.found)} of the {len(names)} LoRA parameters the config trains "
                f"(first missing: {missing[0]}); was it saved by this job's config?")
    for name, (numel, dtype, size) in delta.found.items():
        if whole and numel != names[name]:
            return f"{delta.source}: {name} has {numel:,} elements, the config says {names[name]:,}"
        if dtype in DTYPE_SIZE and size != numel * DTYPE_SIZE[dtype]:
            return f"{delta.source}: {name} holds {size:,} bytes, {numel:,} x {dtype} is {numel * DTYPE_SIZE[dtype]:,}"
    if not delta.found:
        return f"{delta.source} holds none of the {len(names)} LoRA parameters the config trains"
    return None


def record_base(record: reg.JobRecord) -> str | None:
    """The checkpoint the job started from (its config's ``load_checkpoint``, a path on the
    host), which the LoRA delta completes; None when it started from nothing."""
    try:
        config = yaml.safe_load(record.config_text) if record.config_text else None
    except yaml.YAMLError:
        return None
    base = config.get("load_checkpoint") if isinstance(config, dict) else None
    return base if isinstance(base, str) and base else None


def lora_meta(config_text: str) -> dict[str, Any]:
    """``{rank, alpha, targets}`` from a rendered config's pet_config ({} when there is none)."""
    try:
        config = yaml.safe_load(config_text) if config_text else None
    except yaml.YAMLError:
        return {}
    pet = (((config or {}).get("model") or {}).get("model_config") or {}).get("pet_config") \
        if isinstance(config, dict) else None
    if not isinstance(pet, dict):
        return {}
    return {"rank": pet.get("lora_rank"), "alpha": pet.get("lora_alpha"), "targets": pet.get("target_modules")}


# ----------------------------------------------------------------------------- reports / progress

@dataclass
class GroupBytes:
    """One group of one node: files listed, bytes on the host, bytes that came over the wire.
    For ``lora`` the host's bytes are the full checkpoints the deltas were cut from."""

    files: int = 0
    on_host: int = 0
    moved: int = 0


@dataclass
class NodeFetch:
    """What one node's fetch did."""

    host: str
    local_dir: str
    files: int = 0
    fetched: int = 0
    resumed: int = 0
    skipped: int = 0
    restarted: int = 0  # resumed files whose digest did not match, fetched again from zero
    bytes_total: int = 0  # of the listed files
    bytes_transferred: int = 0  # what actually came over the wire this run
    seconds: float = 0.0
    error: str | None = None
    groups: dict[str, GroupBytes] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.bytes_transferred / self.seconds if self.seconds > 0 else 0.0


@dataclass
class FetchReport:
    job_id: str
    run_dir: Path
    nodes: list[NodeFetch] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bytes_transferred(self) -> int:
        return sum(n.bytes_transferred for n in self.nodes)

    @property
    def failed(self) -> list[NodeFetch]:
        return [n for n in self.nodes if n.error]

    def groups(self) -> dict[str, GroupBytes]:
        """Per group, summed over the nodes (in the order first seen)."""
        out: dict[str, GroupBytes] = {}
        for n in self.nodes:
            for name, g in n.groups.items():
                s = out.setdefault(name, GroupBytes())
                s.files, s.on_host, s.moved = s.files + g.files, s.on_host + g.on_host, s.moved + g.moved
        return out


class FetchError(AlaunchError):
    """Some nodes could not be fetched; ``report`` still says what the others brought."""

    def __init__(self, report: FetchReport):
        lines = [f"fetch of {report.job_id}: {len(report.failed)} node(s) failed:"]
        lines += [f"  {n.error}" for n in report.failed]
        super().__init__("\n".join(lines))
        self.report = report


class FetchProgress(Protocol):
    def start(self, host: str, files: int, total_bytes: int) -> None: ...
    def advance(self, host: str, n: int) -> None: ...
    def done(self, host: str, node: NodeFetch) -> None: ...


class QuietProgress:
    def start(self, host: str, files: int, total_bytes: int) -> None:
        pass

    def advance(self, host: str, n: int) -> None:
        pass

    def done(self, host: str, node: NodeFetch) -> None:
        pass


# ----------------------------------------------------------------------------- I/O: listing

def list_request(root: str, globs: Mapping[str, Sequence[str]], here: Mapping[str, int] | None = None,
                 lora_spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """LIST's request (see ``launcher/remote/collect.py``)."""
    req: dict[str, Any] = {"op": "list", "root": root, "globs": {k: list(v) for k, v in globs.items()},
                           "cache": REMOTE_HASH_CACHE, "local": dict(here or {}), "checks": fetch_checks()}
    if lora_spec:
        req["lora"] = {k: lora_spec[k] for k in ("globs", "names", "dir")}
    return req


def listing_of(data: Mapping[str, Any], host: str) -> Listing:
    """A LIST answer, every path checked (:func:`safe_relpath`)."""
    files = tuple(RemoteFile(f["group"], safe_relpath(f["path"], host), f["src"], int(f["size"]),
                             f["digest"], f.get("sha256")) for f in data["files"])
    deltas = tuple(Delta(f["path"], f["source"], int(f["source_size"]), f["found"])
                   for f in data["files"] if f["group"] == LORA)
    return Listing(data["root"], files, tuple(data.get("refused") or ()), deltas, data.get("check") or STDLIB_CHECK)


def list_node(runner: CommandRunner, root: str, globs: Mapping[str, Sequence[str]],
              here: Mapping[str, int] | None = None, lora_spec: Mapping[str, Any] | None = None) -> Listing:
    """ONE round trip: the files the globs match on the host, with size and digest (known
    there when cached or read when ``here`` — path -> size of what is already fetched — has a
    same-size copy that might be skipped); with ``lora_spec`` (:func:`lora_request`) the LoRA
    deltas extracted there too."""
    req = list_request(root, globs, here, lora_spec)
    data = runner.call("collect", req, timeout=3600, what=f"listing {root}")  # through the master transfers reuse
    return listing_of(data, runner.name)


def fetched_sizes(local_dir: Path) -> dict[str, int]:
    """path (relative, POSIX) -> size of every finished file already in a node's local dir."""
    if not local_dir.is_dir():
        return {}
    return {p.relative_to(local_dir).as_posix(): p.stat().st_size for p in local_dir.rglob("*")
            if p.is_file() and not p.name.endswith(PART)}


class FetchedHashes(HashCache):
    """The local digest cache of fetched files (``<check>:<hex>``, by size and mtime), told
    the digest of a file we just verified, so it is not read again next time."""

    def remember(self, path: Path, digest: str) -> None:
        st = path.stat()
        with self._lock:
            self._data[str(path)] = [st.st_size, st.st_mtime_ns, digest]

    def digest(self, path: Path, st: os.stat_result, check: str) -> str:
        cached = self.lookup(path, st)
        if cached is not None and cached.startswith(check + ":"):
            return cached
        digest = check_hex(check, file_check(path, check))
        with self._lock:
            self._data[str(path)] = [st.st_size, st.st_mtime_ns, digest]
            self.hashed += 1
        return digest


def local_states(listing: Listing, local_dir: Path, cache: FetchedHashes) -> dict[str, LocalState]:
    """What is already in ``local_dir`` for each listed file (reading only size matches)."""
    out = {}
    for f in listing.files:
        final = local_dir / f.path
        part = final.with_name(final.name + PART)
        sha = None
        if final.is_file():
            st = final.stat()
            if st.st_size == f.size:
                sha = cache.digest(final, st, listing.check)
        out[f.path] = LocalState(sha, part.stat().st_size if part.is_file() else None)
    return out


# ----------------------------------------------------------------------------- one node, all nodes

@dataclass(frozen=True)
class NodeTarget:
    rank: int
    host: Host
    job_dir: str
    python: str | None  # the interpreter the job recorded for this host (None: the runner's default)
    local_dir: Path


def fetch_node(target: NodeTarget, runner: CommandRunner, globs: Mapping[str, Sequence[str]],
               cache: FetchedHashes, progress: FetchProgress,
               lora_spec: Mapping[str, Any] | None = None) -> tuple[NodeFetch, Listing]:
    """List, refuse unsafe matches, check LoRA deltas, plan, and transfer one node's files.
    A node with nothing here yet (no file, no ``.part``) and no LoRA cut to check first is
    listed and sent in ONE round trip (:func:`fetch_fresh`)."""
    name = target.host.name
    node = NodeFetch(name, str(target.local_dir))
    start = time.monotonic()
    if not lora_spec and not _anything_in(target.local_dir):
        listing = fetch_fresh(target, runner, globs, cache, progress, node)
        node.seconds = time.monotonic() - start
        return node, listing
    listing = list_node(runner, target.job_dir, globs, fetched_sizes(target.local_dir), lora_spec)
    if listing.refused:
        raise RemoteError(name, refusal_message(name, listing.refused))
    if lora_spec:
        if not listing.deltas:
            raise RemoteError(name, f"no checkpoint matches {', '.join(lora_spec['globs'])} in {listing.root}; "
                                    f"nothing to take the LoRA tensors from")
        for delta in listing.deltas:
            wrong = check_delta(delta, lora_spec["names"], lora_spec["whole"])
            if wrong:
                raise RemoteError(name, wrong)
    actions = plan_node(listing, local_states(listing, target.local_dir, cache))
    entries = _entries(node, listing, actions, target, progress)
    receive(runner, entries, node, cache, lambda n: progress.advance(name, n),
            posixpath.join(listing.root, REMOTE_HASH_CACHE), listing.check)
    node.seconds = time.monotonic() - start
    return node, listing


def _anything_in(local_dir: Path) -> bool:
    return local_dir.is_dir() and any(p.is_file() for p in local_dir.rglob("*"))


def _entries(node: NodeFetch, listing: Listing, actions: Sequence[Action], target: NodeTarget,
             progress: FetchProgress) -> list[Entry]:
    """Count the node's plan (files, bytes per group, skips), start its progress, and return
    what is to be received."""
    node.files = len(actions)
    node.bytes_total = sum(a.file.size for a in actions)
    sources = {d.path: d.source_size for d in listing.deltas}
    for a in actions:
        g = node.groups.setdefault(a.file.group, GroupBytes())
        g.files += 1
        g.on_host += sources.get(a.file.path, a.file.size)
    todo = [a for a in actions if a.kind != SKIP]
    node.skipped = len(actions) - len(todo)
    progress.start(node.host, len(todo), sum(a.file.size - a.offset for a in todo))
    return [Entry(a.file.path, a.file.src, a.file.size, a.file.digest, a.offset, target.local_dir / a.file.path,
                  a.file.group) for a in todo]


def fetch_fresh(target: NodeTarget, runner: CommandRunner, globs: Mapping[str, Sequence[str]],
                cache: FetchedHashes, progress: FetchProgress, node: NodeFetch) -> Listing:
    """A node's first fetch: LISTSEND lists and sends every file in one round trip and one
    host process (measured: the LIST round trip alone is ~32 ms and 0.025 CPU-s through a warm
    ssh master, 5 % of a 512 MiB fetch here). The listing is checked (refusals, paths) before
    a byte is written; a refused glob means the host sends nothing."""
    name = target.host.name
    got: dict[str, Any] = {}

    def on_listing(data: Any) -> Receiver | None:
        listing = got["listing"] = listing_of(data, runner.name)
        if listing.refused:
            return None
        entries = got["entries"] = _entries(node, listing, plan_node(listing, {}), target, progress)
        got["rx"] = Receiver(entries, lambda n: progress.advance(name, n), runner.name, listing.check)
        return got["rx"]

    try:
        list_and_stream(runner, list_request(target.job_dir, globs), on_listing, f"listing {target.job_dir}")
    finally:
        if "rx" in got:
            _settle(got["rx"], got["entries"], node, cache)
    listing = got["listing"]
    if listing.refused:
        raise RemoteError(name, refusal_message(name, listing.refused))
    _refuse_mismatched(runner.name, got["rx"], listing.check)
    return listing


def _settle(rx: Receiver, entries: Sequence[Entry], node: NodeFetch, cache: FetchedHashes) -> None:
    """Count what ``rx`` received and remember the digests of the files it verified."""
    node.bytes_transferred += rx.payload
    for e, n in zip(entries, rx.moved, strict=False):  # moved: only the entries reached
        node.groups.setdefault(e.group, GroupBytes()).moved += n
    for e, digest in rx.verified:
        cache.remember(e.final, digest)
        node.resumed += e.offset > 0
        node.fetched += e.offset == 0


def _refuse_mismatched(host: str, rx: Receiver, check: str) -> None:
    """Files sent whole whose check did not match: their ``.part`` goes, and fetch stops."""
    wrong = [e for e in rx.mismatched if e.offset == 0]
    for e in wrong:
        e.part.unlink(missing_ok=True)
    if wrong:
        raise RemoteError(host, f"{wrong[0].path}: the {check} check of the bytes received "
                          f"does not match the host's (did it change during the fetch?); rerun fetch"
                          + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""))


def receive(runner: CommandRunner, entries: list[Entry], node: NodeFetch,
            cache: FetchedHashes, on_bytes: Callable[[int], None], remote_cache: str | None = None,
            check: str = STDLIB_CHECK) -> None:
    """Stream the entries; a resumed file whose digest does not match goes again from zero."""
    for _attempt in range(2):
        if not entries:
            return
        rx = Receiver(entries, on_bytes, runner.name, check)
        try:
            stream(runner, entries, rx, remote_cache)
        finally:
            _settle(rx, entries, node, cache)
        _refuse_mismatched(runner.name, rx, check)
        node.restarted += len(rx.mismatched)  # the .part's prefix was not this file's
        entries = [replace(e, offset=0) for e in rx.mismatched]


def job_targets(record: reg.JobRecord, run_dir: Path) -> list[NodeTarget]:
    """Every node of the job: its Host (from the recorded hostfile), job dir, python, local dir;
    a node whose job dir is an earlier node's (a shared workdir, meta ``shared_with``) is
    left out, so each file is fetched once, into the first node's local dir."""
    from launcher.ops.engines import log_view
    record = log_view(record)  # the job dirs as the engine's nodes wrote them (Slurm: one, shared)
    hosts = {h.name: h for h in parse_hostfile(record.hostfile_text, f"registry:{record.id}")}
    pythons = dict(record.meta.get("pythons") or {})
    dirs = host_dirs(record.nodes)
    shared = {int(k) for k in (record.meta.get("shared_with") or {})}  # same job dir as an earlier node
    out = []
    for n in record.nodes:
        if n.node_rank in shared:
            continue  # its files are the earlier node's files: fetched once, there
        if not n.job_dir:
            raise AlaunchError(f"job {record.id}: node {n.node_rank} ({n.host}) has no job directory "
                               f"recorded (it never started); nothing to fetch")
        host = hosts.get(n.host) or Host(n.host, 1)
        out.append(NodeTarget(n.node_rank, host, n.job_dir, pythons.get(n.host),
                              run_dir / dirs[n.node_rank]))
    return out


def job_outputs(record: reg.JobRecord) -> tuple[OutputsSpec, str | None]:
    """The job's ``outputs`` globs and template, from the job file recorded at submit."""
    if not record.spec_text.strip():
        return OutputsSpec(), None
    source = f"registry:{record.id}"
    data = yamlio.loads(record.spec_text, source)
    data = data if isinstance(data, dict) else {}
    try:
        outputs = OutputsSpec.model_validate(data.get("outputs") or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(["outputs", *(str(p) for p in first["loc"])])
        raise InputError(first["msg"], source=source, key=key) from None
    template = data.get("template")
    return outputs, template if isinstance(template, str) else None


def job_meta(record: reg.JobRecord, template: str | None, groups: Sequence[str],
             report: FetchReport) -> dict[str, Any]:
    """What ``runs/<job-id>/job.json`` says (``alaunch results`` reads id, template, lora)."""
    return {
        "id": record.id, "name": record.name, "kind": record.kind, "state": record.state,
        "template": template, "lora": lora_meta(record.config_text),
        "created_at": record.created_at, "started_at": record.started_at, "ended_at": record.ended_at,
        "reason": record.reason, "config_sha256": record.config_sha256,
        "nodes": [{"rank": n.node_rank, "host": n.host, "job_dir": n.job_dir, "state": n.state,
                   "exit_code": n.exit_code} for n in record.nodes],
        "fetch": {"what": list(groups), "at": reg.now_iso(),
                  "nodes": [{"host": n.host, "dir": Path(n.local_dir).name, "files": n.files,
                             "skipped": n.skipped, "bytes": n.bytes_total, "error": n.error}
                            for n in report.nodes]},
        **({"lora_delta": {"dir": LORA_DIR, "base": record_base(record)}} if LORA in groups else {}),
    }


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + PART)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def default_options(record: reg.JobRecord) -> ConnectOptions:
    """The SSH files the job's submit used (known_hosts, ssh_config)."""
    saved = record.meta.get("ssh") or {}
    return ConnectOptions(known_hosts=Path(saved["known_hosts"]) if "known_hosts" in saved else None,
                          ssh_config=Path(saved["ssh_config"]) if "ssh_config" in saved else None)


def fetch_job(registry: reg.Registry, job_id: str, what: str | Sequence[str] = "all",
              dest: str | Path = "runs", state_dir: str | Path | None = None, *, progress: FetchProgress | None = None,
              options: ConnectOptions | None = None,
              runner_factory: Callable[[Host], CommandRunner] | None = None) -> FetchReport:
    """Fetch a job's outputs from all its nodes in parallel into ``dest/<job-id>/``.

    Raises :class:`FetchError` (carrying the report) if any node failed, after every other
    node finished and job.json was written. ``state_dir`` holds the local hash cache
    (default: the registry's own directory).
    """
    state_dir = Path(state_dir) if state_dir is not None else registry.path.parent
    groups = parse_what(what)
    record = registry.get(job_id)
    outputs, template = job_outputs(record)
    globs = globs_for(outputs, groups)
    lora_spec = lora_request(record.config_text, outputs) if LORA in groups else None
    run_dir = Path(dest) / record.id
    targets = job_targets(record, run_dir)
    options = options or default_options(record)
    factory = runner_factory or (lambda h: make_runner(h, options))
    cache = FetchedHashes(state_dir / LOCAL_HASH_CACHE)
    progress = progress or QuietProgress()
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()

    def one(t: NodeTarget) -> NodeFetch:
        runner = factory(t.host).using(t.python)
        try:
            node, _ = fetch_node(t, runner, globs, cache, progress, lora_spec)
        finally:
            runner.close()
        progress.done(t.host.name, node)
        return node

    results = run_parallel(targets, one)
    report = FetchReport(record.id, run_dir, seconds=0.0)
    for t in targets:
        r = results[t]
        if isinstance(r, BaseException):
            msg = getattr(r, "message", None) or f"{t.host.name}: {type(r).__name__}: {r}"
            r = NodeFetch(t.host.name, str(t.local_dir), error=msg)
            progress.done(t.host.name, r)
        report.nodes.append(r)
    report.seconds = time.monotonic() - start
    cache.save()
    if record.config_text:
        _write_atomic(run_dir / "job.yaml", record.config_text)
    _write_atomic(run_dir / "job.json", json.dumps(job_meta(record, template, groups, report), indent=2) + "\n")
    if report.failed:
        raise FetchError(report)
    return report
