"""The job registry: one sqlite file in the state dir that remembers every job and its nodes.

Why sqlite: ``submit``, ``status``, ``logs -f`` and ``cancel`` may run at the same time in
different terminals, and ``alaunch`` may be killed at any moment (Ctrl-C, SIGKILL, a laptop
lid). sqlite gives atomic transactions and a crash-safe journal for free. Every write here is
exactly one transaction, started with ``BEGIN IMMEDIATE`` so that a read-check-write (a state
transition, a meta merge) holds the write lock from the start: two processes never interleave
and never deadlock upgrading a read lock (``busy_timeout`` makes the second one wait).

The file is private (0600, directory 0700): it holds job specs, configs and hostfiles.
Schema changes are new entries in ``MIGRATIONS``; ``schema_version`` records how far a file is.
"""

from __future__ import annotations

import builtins
import datetime as dt
import functools
import hashlib
import json
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.core.layout import new_job_id
from launcher.errors import AlaunchError, InputError, RegistryCorrupt
from launcher.ops import proc

DB_NAME = "registry.sqlite3"
JOB_ID_IN_TEXT = re.compile(r"[a-z0-9-]+-\d{8}-\d{6}-[0-9a-f]{4}")  # core.layout's job id shape
BUSY_TIMEOUT_MS = 15_000

PENDING, STAGING, RUNNING = "pending", "staging", "running"
QUEUED = "queued"  # submitted to a scheduler (Slurm), waiting for its allocation
REFUSED = "refused"  # meta key: a FAILED job refused before launch (nothing sent or started)
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
JOB_STATES = (PENDING, STAGING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
NODE_STATES = JOB_STATES + ("unknown",)  # a node we could not reach is 'unknown', not failed

# Forward-only lifecycle; terminal states are left only with force=True (e.g. a resubmit).
TRANSITIONS: Mapping[str, frozenset[str]] = {
    PENDING: frozenset({STAGING, QUEUED, RUNNING, FAILED, CANCELLED}),
    STAGING: frozenset({QUEUED, RUNNING, FAILED, CANCELLED}),
    # a short job may start and end between two polls of the scheduler
    QUEUED: frozenset({RUNNING, SUCCEEDED, FAILED, CANCELLED}),
    RUNNING: frozenset({QUEUED, SUCCEEDED, FAILED, CANCELLED}),  # QUEUED: requeued by Slurm
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}

_STATE_LIST = ", ".join(f"'{s}'" for s in JOB_STATES)
_NODE_STATE_LIST = ", ".join(f"'{s}'" for s in NODE_STATES)
# Schema 1's CHECK lists, frozen: a migration must create what it created then.
_V1_STATE_LIST = "'pending', 'staging', 'running', 'succeeded', 'failed', 'cancelled'"
_V1_NODE_STATE_LIST = _V1_STATE_LIST + ", 'unknown'"

MIGRATIONS: tuple[str, ...] = (
    # 1: jobs, their nodes, and an append-only event history.
    f"""
    CREATE TABLE jobs (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        kind          TEXT NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ({_V1_STATE_LIST})),
        spec_text     TEXT NOT NULL DEFAULT '',
        config_text   TEXT NOT NULL DEFAULT '',
        config_sha256 TEXT NOT NULL DEFAULT '',
        hostfile_text TEXT NOT NULL DEFAULT '',
        created_at    TEXT NOT NULL,
        started_at    TEXT,
        ended_at      TEXT,
        reason        TEXT,
        meta          TEXT NOT NULL DEFAULT '{{}}'
    );
    CREATE INDEX jobs_by_name ON jobs (name, created_at);
    CREATE INDEX jobs_by_created ON jobs (created_at);
    CREATE TABLE nodes (
        job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        node_rank  INTEGER NOT NULL,
        host       TEXT NOT NULL,
        job_dir    TEXT NOT NULL DEFAULT '',
        pid        INTEGER,
        pgid       INTEGER,
        state      TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ({_V1_NODE_STATE_LIST})),
        exit_code  INTEGER,
        started_at TEXT,
        ended_at   TEXT,
        PRIMARY KEY (job_id, node_rank)
    );
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        time    TEXT NOT NULL,
        job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        host    TEXT,
        kind    TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_by_job ON events (job_id, id);
    """,
    # 2: the 'queued' state (a scheduler holds the job). sqlite cannot change a CHECK in place:
    # rename the old tables (foreign keys follow the rename), create the new ones, copy, drop.
    f"""
    ALTER TABLE events RENAME TO events_v1;
    ALTER TABLE nodes RENAME TO nodes_v1;
    ALTER TABLE jobs RENAME TO jobs_v1;
    CREATE TABLE jobs (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        kind          TEXT NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ({_STATE_LIST})),
        spec_text     TEXT NOT NULL DEFAULT '',
        config_text   TEXT NOT NULL DEFAULT '',
        config_sha256 TEXT NOT NULL DEFAULT '',
        hostfile_text TEXT NOT NULL DEFAULT '',
        created_at    TEXT NOT NULL,
        started_at    TEXT,
        ended_at      TEXT,
        reason        TEXT,
        meta          TEXT NOT NULL DEFAULT '{{}}'
    );
    CREATE TABLE nodes (
        job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        node_rank  INTEGER NOT NULL,
        host       TEXT NOT NULL,
        job_dir    TEXT NOT NULL DEFAULT '',
        pid        INTEGER,
        pgid       INTEGER,
        state      TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ({_NODE_STATE_LIST})),
        exit_code  INTEGER,
        started_at TEXT,
        ended_at   TEXT,
        PRIMARY KEY (job_id, node_rank)
    );
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        time    TEXT NOT NULL,
        job_id  TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        host    TEXT,
        kind    TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT ''
    );
    INSERT INTO jobs SELECT * FROM jobs_v1;
    INSERT INTO nodes SELECT * FROM nodes_v1;
    INSERT INTO events SELECT * FROM events_v1;
    DROP TABLE events_v1;
    DROP TABLE nodes_v1;
    DROP TABLE jobs_v1;
    CREATE INDEX jobs_by_name ON jobs (name, created_at);
    CREATE INDEX jobs_by_created ON jobs (created_at);
    CREATE INDEX events_by_job ON events (job_id, id);
    """,
    # 3: pipeline runs and their steps (plain rows: the dashboard reads them as they are).
    """
    CREATE TABLE pipelines (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        source     TEXT NOT NULL DEFAULT '',
        state      TEXT NOT NULL,
        created_at TEXT NOT NULL,
        ended_at   TEXT,
        reason     TEXT
    );
    CREATE INDEX pipelines_by_name ON pipelines (name, created_at);
    CREATE TABLE pipeline_steps (
        pipeline_id TEXT NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
        step        TEXT NOT NULL,
        position    INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        state       TEXT NOT NULL,
        identity    TEXT NOT NULL DEFAULT '',
        job_id      TEXT,
        attempts    INTEGER NOT NULL DEFAULT 0,
        outputs     TEXT NOT NULL DEFAULT '{}',
        reason      TEXT,
        started_at  TEXT,
        ended_at    TEXT,
        PRIMARY KEY (pipeline_id, step)
    );
    CREATE INDEX steps_by_identity ON pipeline_steps (step, identity);
    """,
    # 4: `jobs` and `status` at 10,000 jobs (benchmarks/bench_registry.py): the newest-first
    # order is (created_at, id) -- an index on created_at alone still sorted every row by id;
    # a state filter and a lookup by name walk their own index in the same order.
    """
    CREATE INDEX jobs_by_created_id ON jobs (created_at, id);
    CREATE INDEX jobs_by_state ON jobs (state, created_at, id);
    CREATE INDEX jobs_by_name_id ON jobs (name, created_at, id);
    DROP INDEX jobs_by_created;
    DROP INDEX jobs_by_name;
    """,
    # 5: each step's needs as recorded by the run (JSON list), so a pipeline's graph does not
    # depend on its file still existing unchanged; NULL for runs recorded before.
    """
    ALTER TABLE pipeline_steps ADD COLUMN needs TEXT;
    """,
    # 6: who runs a pipeline (the `alaunch run` process: pid, start time, machine, JSON), so a
    # run whose process died reads FAILED ("interrupted") instead of running forever.
    """
    ALTER TABLE pipelines ADD COLUMN runner TEXT;
    """,
    # 7: sweeps and their trials (`alaunch sweep`): one row per sweep name, one per trial
    # identity; a trial's run is a job or a pipeline run (run_id), its curve and result JSON.
    """
    CREATE TABLE sweeps (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL UNIQUE,
        source     TEXT NOT NULL DEFAULT '',
        state      TEXT NOT NULL,
        created_at TEXT NOT NULL,
        ended_at   TEXT,
        reason     TEXT,
        info       TEXT NOT NULL DEFAULT '{}',
        runner     TEXT
    );
    CREATE TABLE sweep_trials (
        sweep_id   TEXT NOT NULL REFERENCES sweeps (id) ON DELETE CASCADE,
        trial      TEXT NOT NULL,
        position   INTEGER NOT NULL,
        identity   TEXT NOT NULL,
        params     TEXT NOT NULL DEFAULT '{}',
        overrides  TEXT NOT NULL DEFAULT '{}',
        seed       INTEGER,
        state      TEXT NOT NULL,
        run_id     TEXT,
        reason     TEXT,
        result     TEXT NOT NULL DEFAULT '{}',
        curve      TEXT NOT NULL DEFAULT '[]',
        started_at TEXT,
        ended_at   TEXT,
        PRIMARY KEY (sweep_id, trial)
    );
    """,
)

# Pipeline step states: waiting to run, running, done, reused from an earlier run (identity
# unchanged, outputs present), failed, or not reached because a step it needs failed.
STEP_STATES = ("pending", "running", "succeeded", "skipped", "failed", "blocked", "cancelled")
_STEP_FIELDS = ("state", "identity", "job_id", "attempts", "outputs", "reason", "started_at", "ended_at")

_TRIAL_FIELDS = ("state", "run_id", "reason", "result", "curve", "started_at", "ended_at")
_NODE_FIELDS = ("host", "job_dir", "pid", "pgid", "state", "exit_code", "started_at", "ended_at")


class IllegalTransition(AlaunchError):
    """A state change the lifecycle does not allow (e.g. out of a terminal state)."""


def now_iso() -> str:
    """UTC, microseconds, sortable as text."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class NodeRecord:
    node_rank: int
    host: str
    job_dir: str = ""
    pid: int | None = None
    pgid: int | None = None
    state: str = PENDING
    exit_code: int | None = None
    started_at: str | None = None
    ended_at: str | None = None


@dataclass(frozen=True)
class JobRecord:
    id: str
    name: str
    kind: str
    state: str
    spec_text: str
    config_text: str
    config_sha256: str
    hostfile_text: str
    created_at: str
    started_at: str | None
    ended_at: str | None
    reason: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    nodes: tuple[NodeRecord, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


@dataclass(frozen=True)
class StepRecord:
    """One step of one pipeline run, as stored (``outputs`` decoded from JSON)."""

    pipeline_id: str
    step: str
    position: int
    kind: str
    state: str
    identity: str = ""
    job_id: str | None = None
    attempts: int = 0
    outputs: dict = field(default_factory=dict)
    reason: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    needs: list | None = None  # the steps it waited for, as the run recorded them (None: not recorded)


@dataclass(frozen=True)
class PipelineRecord:
    id: str
    name: str
    source: str
    state: str
    created_at: str
    ended_at: str | None = None
    reason: str | None = None
    steps: tuple[StepRecord, ...] = ()
    runner: dict = field(default_factory=dict)  # the `alaunch run` process (ops.proc.me), {} before migration 6


@dataclass(frozen=True)
class SweepRecord:
    """A sweep and its trials (each a plain dict of its row, JSON columns decoded)."""

    id: str
    name: str
    source: str
    state: str
    created_at: str
    ended_at: str | None = None
    reason: str | None = None
    info: dict = field(default_factory=dict)
    runner: dict = field(default_factory=dict)
    trials: tuple[dict, ...] = ()


@dataclass(frozen=True)
class Event:
    id: int
    time: str
    job_id: str
    host: str | None
    kind: str
    message: str


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _private_file(path: Path) -> None:
    """Create the db file 0600 before sqlite does (sqlite gives -wal/-shm the same mode).

    Never through a descriptor of the live file: closing ANY descriptor of a file drops every
    POSIX lock this process holds on it (sqlite's "How To Corrupt An SQLite Database File",
    2.2), so a Registry opened and closed while another connection of this process held its
    locks (the dashboard opens one per request, pipeline steps one per thread) corrupted the
    database within seconds (tests/test_registry_stress.py). A new file is made under another
    name and hard-linked into place, which also settles two creators racing; an existing file
    is only chmod-ed (a path operation)."""
    if not path.exists():
        fd, tmp = tempfile.mkstemp(prefix=".new-", dir=path.parent)  # mkstemp: 0600
        os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: theirs is as good
        except OSError:  # a filesystem without hard links
            try:
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    if path.stat().st_mode & 0o777 != 0o600:
        os.chmod(path, 0o600)


_CORRUPT_WORDS = ("malformed", "not a database", "disk i/o error", "corrupt")


def _corrupt(path: Path, what: str) -> RegistryCorrupt:
    return RegistryCorrupt(
        f"{path}: the job registry is damaged ({what}); keep a copy, then recover what sqlite "
        f"can: sqlite3 {path} .recover | sqlite3 {path}.recovered && mv {path}.recovered {path}")


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return any(word in text for word in _CORRUPT_WORDS)


def _reports_corruption(cls: type) -> type:
    """Every public method (and __init__) of ``cls`` turns sqlite's corruption errors into one
    :class:`RegistryCorrupt` line with what to do, never a traceback."""
    def wrap(fn):
        @functools.wraps(fn)
        def guarded(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except sqlite3.DatabaseError as exc:
                if _is_corruption(exc):
                    raise _corrupt(self.path, str(exc)) from exc
                raise
            except json.JSONDecodeError as exc:  # only stored text is decoded here
                raise _corrupt(self.path, f"a stored value is not JSON: {exc}") from exc
        return guarded
    for name, value in list(vars(cls).items()):
        if callable(value) and (name == "__init__" or not name.startswith("_")):
            setattr(cls, name, wrap(value))
    return cls


def _json(text: str | None, path: Path, where: str, default: str = "{}") -> Any:
    try:
        return json.loads(text or default)
    except ValueError as exc:
        raise _corrupt(path, f"{where} is not JSON: {exc}") from exc


# Filesystems where sqlite's WAL mode does not work: WAL needs shared memory between every
# process using the file, which a network filesystem cannot give (sqlite's own documentation,
# "WAL does not work over a network filesystem"). The rollback journal with POSIX locks does.
NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "lustre", "gpfs", "beegfs",
                        "ceph", "fuse.ceph", "glusterfs", "fuse.glusterfs", "9p", "afs", "ocfs2", "panfs"})


def filesystem_type(path: str | Path, mounts: str | None = None) -> str | None:
    """The type of the filesystem ``path`` lives on, from ``/proc/mounts`` (its longest mount
    point that contains the path); None where that cannot be read (not Linux)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def journal_mode(fstype: str | None) -> str:
    """WAL where it works (readers never wait for the writer), the rollback journal on a
    network filesystem (a registry in a shared home)."""
    return "DELETE" if fstype in NETWORK_FS else "WAL"


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    """``$ALAUNCH_STATE_DIR``, else ``$XDG_STATE_HOME/alaunch``, else ``~/.local/state/alaunch``."""
    env = os.environ if environ is None else environ
    if env.get("ALAUNCH_STATE_DIR"):
        return Path(env["ALAUNCH_STATE_DIR"]).expanduser()
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "state")
    return Path(base).expanduser() / "alaunch"


@_reports_corruption
class Registry:
    """The jobs of this user: create, look up, move through states, record nodes and events."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        _private_dir(self.path.parent)
        _private_file(self.path)
        self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                     isolation_level=None, check_same_thread=False)
        # One connection may serve several threads (a queued submit's wait loop and a viewer,
        # a pipeline's steps): a transaction holds this lock, so two never interleave on it
        # (sqlite: "cannot start a transaction within a transaction").
        self._tx = threading.RLock()
        self._conn.row_factory = sqlite3.Row
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.journal = journal_mode(filesystem_type(self.path.parent))
        self._set_journal()
        # WAL + NORMAL: safe against crashes; the rollback journal needs FULL for that
        self._conn.execute(f"PRAGMA synchronous = {'NORMAL' if self.journal == 'WAL' else 'FULL'}")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def _set_journal(self) -> None:
        """The journal mode, set only when it differs (WAL stays set in the file). Switching it
        takes a lock that sqlite does not wait for under ``busy_timeout``: a second connection
        opening a brand-new registry at the same moment (a test's helper thread beside the
        first ``submit``) got "database is locked" from the PRAGMA; it waits and tries again."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                if self._conn.execute("PRAGMA journal_mode").fetchone()[0].upper() != self.journal:
                    self._conn.execute(f"PRAGMA journal_mode = {self.journal}")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @classmethod
    def in_state_dir(cls, state_dir: str | Path | None = None) -> Registry:
        """The registry in ``state_dir`` (default: ``$ALAUNCH_STATE_DIR`` / XDG, see :func:`default_state_dir`)."""
        if state_dir is None:
            state_dir = default_state_dir()
        return cls(Path(state_dir) / DB_NAME)

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the write lock from its first statement."""
        with self._tx:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One snapshot for a multi-statement read (a job and its nodes agree)."""
        with self._tx:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as c:
            c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = c.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if row is None:
                c.execute("INSERT INTO schema_version (version) VALUES (0)")
            if version > len(MIGRATIONS):
                raise AlaunchError(f"{self.path}: registry schema {version} is newer than this "
                                   f"alaunch knows ({len(MIGRATIONS)}); upgrade alaunch")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    c.execute(statement)
                c.execute("UPDATE schema_version SET version = ?", (number,))

    @property
    def schema_version(self) -> int:
        return self._conn.execute("SELECT version FROM schema_version").fetchone()[0]

    # ------------------------------------------------------------------ writes

    def create_job(self, name: str, kind: str, *, spec_text: str = "", config_text: str = "",
                   hostfile_text: str = "", nodes: Sequence[tuple[str, str] | str] = (),
                   meta: Mapping[str, Any] | None = None, state: str = PENDING,
                   job_id: str | None = None) -> JobRecord:
        """Record a new job and its nodes (``(host, job_dir)`` or host, in node-rank order)."""
        if state not in JOB_STATES:
            raise InputError(f"unknown job state {state!r}; valid: {', '.join(JOB_STATES)}")
        created = now_iso()
        sha = hashlib.sha256(config_text.encode()).hexdigest() if config_text else ""
        meta_text = json.dumps(dict(meta or {}), sort_keys=True)
        for _ in range(8):
            jid = job_id or new_job_id(name)
            try:
                with self._write() as c:
                    c.execute(
                        "INSERT INTO jobs (id, name, kind, state, spec_text, config_text, "
                        "config_sha256, hostfile_text, created_at, meta) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (jid, name, kind, state, spec_text, config_text, sha, hostfile_text,
                         created, meta_text))
                    for rank, node in enumerate(nodes):
                        host, job_dir = (node, "") if isinstance(node, str) else node
                        c.execute("INSERT INTO nodes (job_id, node_rank, host, job_dir) "
                                  "VALUES (?,?,?,?)", (jid, rank, host, job_dir))
                    self._event(c, jid, "created", f"{kind} job {name!r} on {len(nodes)} node(s)")
                return self.get(jid)
            except sqlite3.IntegrityError:
                if job_id is not None:
                    raise InputError(f"job id {job_id!r} already exists") from None
        raise AlaunchError("could not allocate a unique job id")  # pragma: no cover

    def set_state(self, job_id: str, state: str, reason: str | None = None, *,
                  force: bool = False) -> JobRecord:
        """Move a job along its lifecycle; refuses going back (``force`` for explicit resets)."""
        if state not in JOB_STATES:
            raise InputError(f"unknown job state {state!r}; valid: {', '.join(JOB_STATES)}")
        with self._write() as c:
            self._move(c, job_id, self._state_of(c, job_id), state, reason, force)
        return self.get(job_id)

    def set_state_unless_ended(self, job_id: str, state: str, reason: str | None = None) -> bool:
        """Move the job to ``state`` unless it has already ended; return whether it was written.

        Why: ``cancel`` records CANCELLED *before* it stops the processes, while a ``submit``
        may be about to record FAILED or RUNNING and a ``status`` SUCCEEDED/FAILED for the same
        job. The first end recorded wins (a concurrent cancel's CANCELLED is never overwritten):
        the check and the write are one ``BEGIN IMMEDIATE`` transaction, so no other process can
        end the job between them. A refused move out of a live state still raises
        :class:`IllegalTransition` (that is a bug, not a race)."""
        if state not in JOB_STATES:
            raise InputError(f"unknown job state {state!r}; valid: {', '.join(JOB_STATES)}")
        with self._write() as c:
            old = self._state_of(c, job_id)
            if old in TERMINAL:
                return False
            self._move(c, job_id, old, state, reason, False)
        return True

    @staticmethod
    def _state_of(c: sqlite3.Connection, job_id: str) -> str:
        row = c.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise InputError(f"no job with id {job_id!r}")
        return row["state"]

    def _move(self, c: sqlite3.Connection, job_id: str, old: str, state: str, reason: str | None,
              force: bool) -> None:
        """Inside a write transaction: check the lifecycle and write the new state and its event.

        The reason describes the current state: a move to another state replaces it (with
        nothing when none is given), so a job queued for busy cards does not keep "cards busy:
        ... wait for them with --wait" once it runs or has succeeded (issue #33: a 28-line cell
        in `jobs`). The event history keeps every reason."""
        if old == state and reason is None:
            return
        if old != state and state not in TRANSITIONS[old] and not force:
            allowed = ", ".join(sorted(TRANSITIONS[old])) or "none (terminal)"
            raise IllegalTransition(f"job {job_id}: cannot go from {old} to {state}; "
                                    f"allowed from {old}: {allowed}")
        ts = now_iso()
        c.execute(
            "UPDATE jobs SET state = ?, reason = CASE WHEN ? THEN ? ELSE COALESCE(?, reason) END, "
            "started_at = CASE WHEN ? = 'running' AND started_at IS NULL THEN ? ELSE started_at END, "
            "ended_at = CASE WHEN ? IN ('succeeded','failed','cancelled') THEN ? "
            "ELSE (CASE WHEN ? THEN NULL ELSE ended_at END) END WHERE id = ?",
            (state, old != state, reason, reason, state, ts, state, ts, state not in TERMINAL, job_id))
        self._event(c, job_id, "state", f"{old} -> {state}" + (f": {reason}" if reason else ""))

    def set_node(self, job_id: str, node_rank: int, **fields: Any) -> NodeRecord:
        """Create or update one node's row (host, job_dir, pid, pgid, state, exit_code, times)."""
        unknown = set(fields) - set(_NODE_FIELDS)
        if unknown:
            raise InputError(f"unknown node field(s) {sorted(unknown)}; valid: {', '.join(_NODE_FIELDS)}")
        if "state" in fields and fields["state"] not in NODE_STATES:
            raise InputError(f"unknown node state {fields['state']!r}; valid: {', '.join(NODE_STATES)}")
        with self._write() as c:
            if c.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                raise InputError(f"no job with id {job_id!r}")
            exists = c.execute("SELECT 1 FROM nodes WHERE job_id = ? AND node_rank = ?",
                               (job_id, node_rank)).fetchone()
            if exists is None:
                if "host" not in fields:
                    raise InputError(f"job {job_id}: node {node_rank} is new; give its host")
                c.execute("INSERT INTO nodes (job_id, node_rank, host) VALUES (?,?,?)",
                          (job_id, node_rank, fields["host"]))
            if fields:
                cols = ", ".join(f"{k} = ?" for k in fields)  # keys checked against _NODE_FIELDS
                c.execute(f"UPDATE nodes SET {cols} WHERE job_id = ? AND node_rank = ?",
                          (*fields.values(), job_id, node_rank))
            if "state" in fields or "exit_code" in fields:
                host = c.execute("SELECT host FROM nodes WHERE job_id = ? AND node_rank = ?",
                                 (job_id, node_rank)).fetchone()[0]
                desc = ", ".join(f"{k}={fields[k]}" for k in ("state", "exit_code") if k in fields)
                self._event(c, job_id, "node", f"node {node_rank}: {desc}", host=host)
            row = c.execute("SELECT * FROM nodes WHERE job_id = ? AND node_rank = ?",
                            (job_id, node_rank)).fetchone()
        return _node(row)

    def update_meta(self, job_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Merge keys into the job's meta JSON (atomically: concurrent merges are not lost)."""
        with self._write() as c:
            row = c.execute("SELECT meta FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise InputError(f"no job with id {job_id!r}")
            meta = {**_json(row[0], self.path, f"job {job_id}'s meta"), **values}
            c.execute("UPDATE jobs SET meta = ? WHERE id = ?", (json.dumps(meta, sort_keys=True), job_id))
        return meta

    def add_event(self, job_id: str, kind: str, message: str = "", host: str | None = None) -> None:
        with self._write() as c:
            self._event(c, job_id, kind, message, host=host)

    @staticmethod
    def _event(c: sqlite3.Connection, job_id: str, kind: str, message: str,
               host: str | None = None) -> None:
        c.execute("INSERT INTO events (time, job_id, host, kind, message) VALUES (?,?,?,?,?)",
                  (now_iso(), job_id, host, kind, message))

    # ------------------------------------------------------------------ reads

    def get(self, ref: str) -> JobRecord:
        """A job by id, by name (the newest of that name), or by a unique id prefix."""
        with self._read() as c:
            return self._find(c, ref)

    def _find(self, c: sqlite3.Connection, ref: str) -> JobRecord:
        if c.execute("SELECT 1 FROM jobs WHERE id = ?", (ref,)).fetchone():
            return self._load(ref)
        row = c.execute("SELECT id FROM jobs WHERE name = ? ORDER BY created_at DESC, id DESC LIMIT 1",
                        (ref,)).fetchone()
        if row:
            return self._load(row[0])
        if ref:  # a prefix: a range on the primary key (LIKE ... ESCAPE scans every row)
            ids = [r[0] for r in c.execute(
                "SELECT id FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT 11",
                (ref, ref + "\U0010ffff"))]
            if len(ids) == 1:
                return self._load(ids[0])
            if ids:
                shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
                raise InputError(f"job {ref!r} is ambiguous: it matches {shown}; give more of the id")
        raise InputError(f"no job {ref!r} (not an id, a unique id prefix or a job name); "
                         "see `alaunch jobs`")

    def list(self, limit: int | None = 20, states: Iterable[str] | None = None,
             offset: int = 0, refused: bool = True) -> list[JobRecord]:
        """Newest first, optionally only in the given states; ``offset`` skips that many (paging);
        ``refused=False`` leaves out jobs refused before launch (``meta.refused``)."""
        sql, args = "SELECT id FROM jobs", builtins.list[Any]()
        where = [] if refused else [f"json_extract(meta, '$.{REFUSED}') IS NULL"]
        if states is not None:
            states = list(states)
            bad = [s for s in states if s not in JOB_STATES]
            if bad:
                raise InputError(f"unknown job state(s) {bad}; valid: {', '.join(JOB_STATES)}")
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            args += [-1 if limit is None else limit, max(0, offset)]
        with self._read() as c:
            return [self._load(r[0]) for r in c.execute(sql, args).fetchall()]

    def page(self, limit: int = 50, offset: int = 0, states: Iterable[str] | None = None,
             text: str | None = None) -> tuple[builtins.list[JobRecord], int]:
        """One page of jobs, newest first, and how many match in all: in ``states`` (if given)
        and whose name or id contains ``text`` (case-insensitive). Why: the dashboard read the
        newest 200 and filtered them itself, so among 10,000 jobs the older ones could not be
        found; here the filter and the count are SQL (the indexes of migration 4 order them)."""
        where, args = [], builtins.list[Any]()
        if states is not None:
            states = list(states)
            bad = [s for s in states if s not in JOB_STATES]
            if bad:
                raise InputError(f"unknown job state(s) {bad}; valid: {', '.join(JOB_STATES)}")
            where.append(f"state IN ({','.join('?' * len(states))})")
            args += states
        needle = (text or "").strip().lower()
        if needle:
            where.append("(instr(lower(name), ?) > 0 OR instr(lower(id), ?) > 0)")
            args += [needle, needle]
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self._read() as c:
            total = c.execute("SELECT COUNT(*) FROM jobs" + clause, args).fetchone()[0]
            rows = c.execute("SELECT id FROM jobs" + clause + " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                             [*args, max(0, limit), max(0, offset)]).fetchall()
            return [self._load(r[0]) for r in rows], total

    def ids_and_names(self) -> tuple[builtins.list[str], builtins.list[str]]:
        """Every job id and name (tables shorten ids to a prefix unique among them)."""
        with self._read() as c:
            rows = c.execute("SELECT id, name FROM jobs").fetchall()
        return [r[0] for r in rows], [r[1] for r in rows]

    # ------------------------------------------------------------------ pipelines

    def create_pipeline(self, name: str, source: str, steps: Sequence[tuple],
                        runner: Mapping[str, Any] | None = None) -> PipelineRecord:
        """A new pipeline run with its steps ``(name, kind)`` or ``(name, kind, needs)`` in order,
        all pending; ``runner``: the process that runs it (``ops.proc.me()``)."""
        created = now_iso()
        for _ in range(8):
            pid = new_job_id(name)
            try:
                with self._write() as c:
                    c.execute("INSERT INTO pipelines (id, name, source, state, created_at, runner) "
                              "VALUES (?,?,?,?,?,?)", (pid, name, source, RUNNING, created,
                                                       json.dumps(dict(runner)) if runner else None))
                    for position, (step, kind, *rest) in enumerate(steps):
                        needs = json.dumps(list(rest[0])) if rest and rest[0] is not None else None
                        c.execute("INSERT INTO pipeline_steps (pipeline_id, step, position, kind, state, needs) "
                                  "VALUES (?,?,?,?,?,?)", (pid, step, position, kind, "pending", needs))
                return self.pipeline(pid)
            except sqlite3.IntegrityError:
                continue
        raise AlaunchError("could not allocate a unique pipeline id")  # pragma: no cover

    def set_step(self, pipeline_id: str, step: str, **fields: Any) -> StepRecord:
        unknown = set(fields) - set(_STEP_FIELDS)
        if unknown:
            raise InputError(f"unknown step field(s) {sorted(unknown)}; valid: {', '.join(_STEP_FIELDS)}")
        if "state" in fields and fields["state"] not in STEP_STATES:
            raise InputError(f"unknown step state {fields['state']!r}; valid: {', '.join(STEP_STATES)}")
        if "outputs" in fields:
            fields["outputs"] = json.dumps(fields["outputs"], sort_keys=True)
        with self._write() as c:
            cols = ", ".join(f"{k} = ?" for k in fields)  # keys checked against _STEP_FIELDS
            c.execute(f"UPDATE pipeline_steps SET {cols} WHERE pipeline_id = ? AND step = ?",
                      (*fields.values(), pipeline_id, step))
            row = c.execute("SELECT * FROM pipeline_steps WHERE pipeline_id = ? AND step = ?",
                            (pipeline_id, step)).fetchone()
        if row is None:
            raise InputError(f"pipeline {pipeline_id} has no step {step!r}")
        return _step(row)

    def end_pipeline(self, pipeline_id: str, state: str, reason: str | None = None) -> PipelineRecord:
        with self._write() as c:
            c.execute("UPDATE pipelines SET state = ?, reason = ?, ended_at = ? WHERE id = ?",
                      (state, reason, now_iso(), pipeline_id))
        return self.pipeline(pipeline_id)

    def pipeline(self, ref: str) -> PipelineRecord:
        """A pipeline run by id, or the newest run of a pipeline name."""
        c = self._conn
        row = c.execute("SELECT * FROM pipelines WHERE id = ?", (ref,)).fetchone() or c.execute(
            "SELECT * FROM pipelines WHERE name = ? ORDER BY created_at DESC, id DESC LIMIT 1", (ref,)).fetchone()
        if row is None:
            raise InputError(f"no pipeline run {ref!r} (not a run id or a pipeline name); see `alaunch jobs`")
        fields = dict(row)
        runner = json.loads(fields.pop("runner") or "{}")
        if fields["state"] == RUNNING and proc.gone(runner) and self._interrupt(fields["id"], runner):
            return self.pipeline(fields["id"])
        steps = c.execute("SELECT * FROM pipeline_steps WHERE pipeline_id = ? ORDER BY position", (fields["id"],))
        return PipelineRecord(**fields, steps=tuple(_step(s) for s in steps), runner=runner)

    def _interrupt(self, pipeline_id: str, runner: Mapping[str, Any]) -> bool:
        """A running pipeline whose ``alaunch run`` process is gone (killed, laptop closed) ends
        FAILED, and so do its running steps (their jobs, detached on the hosts, keep their own
        state in the jobs list); ``alaunch run`` again resumes, reusing the finished steps.
        Conditional on still RUNNING, so two readers write it once. Returns whether it wrote."""
        why = (f"interrupted: the `alaunch run` process (pid {runner.get('pid')} on this machine) is gone; "
               "run it again to resume (finished steps are reused, running jobs re-attached)")
        with self._write() as c:
            done = c.execute("UPDATE pipelines SET state = ?, reason = ?, ended_at = ? WHERE id = ? AND state = ?",
                             (FAILED, why, now_iso(), pipeline_id, RUNNING)).rowcount
            if done:
                c.execute("UPDATE pipeline_steps SET state = 'failed', reason = ?, ended_at = ? "
                          "WHERE pipeline_id = ? AND state = 'running'", (why, now_iso(), pipeline_id))
        return bool(done)

    def pipelines(self, limit: int = 5) -> builtins.list[PipelineRecord]:  # (list: the method above)
        ids = [r[0] for r in self._conn.execute(
            "SELECT id FROM pipelines ORDER BY created_at DESC, id DESC LIMIT ?", (limit,))]
        return [self.pipeline(i) for i in ids]

    def jobs_in_use_by_pipelines(self) -> set[str]:
        """Job ids a live pipeline run still needs: its steps' jobs (run or reused) and every job
        whose directory its steps' recorded outputs point into (a later step's inputs). A run
        whose ``alaunch run`` is gone is judged (and ended) first, as :meth:`pipeline` does."""
        live = [r[0] for r in self._conn.execute("SELECT id FROM pipelines WHERE state = ?", (RUNNING,))]
        used: set[str] = set()
        for pid in live:
            run = self.pipeline(pid)
            if run.state != RUNNING:
                continue
            for s in run.steps:
                if s.job_id:
                    used.add(s.job_id)
                used.update(JOB_ID_IN_TEXT.findall(json.dumps(s.outputs)))
        return used

    def reusable_steps(self, name: str, step: str, identity: str | None = None) -> builtins.list[StepRecord]:
        """Finished steps of earlier runs of pipeline ``name`` (newest first), of this identity
        if given: the candidates a re-run may reuse instead of running again."""
        sql = ("SELECT s.* FROM pipeline_steps s JOIN pipelines p ON p.id = s.pipeline_id "
               "WHERE p.name = ? AND s.step = ? AND s.state IN ('succeeded', 'skipped')")
        args: list[Any] = [name, step]
        if identity is not None:
            sql += " AND s.identity = ?"
            args.append(identity)
        sql += " ORDER BY COALESCE(s.ended_at, p.created_at) DESC"
        return [_step(r) for r in self._conn.execute(sql, args)]

    def step_jobs(self, name: str, step: str, identity: str) -> builtins.list[StepRecord]:
        """Steps of earlier runs of pipeline ``name`` of this identity, in any state (newest
        first): a killed ``alaunch run``'s step whose job runs on, or succeeded after it, is
        found here and re-attached or reused, never submitted twice (its job id may be missing
        when the driver died between the submit and recording it: :meth:`step_job` finds it)."""
        sql = ("SELECT s.* FROM pipeline_steps s JOIN pipelines p ON p.id = s.pipeline_id "
               "WHERE p.name = ? AND s.step = ? AND s.identity = ? "
               "ORDER BY COALESCE(s.started_at, p.created_at) DESC, p.id DESC")
        return [_step(r) for r in self._conn.execute(sql, (name, step, identity))]

    def step_job(self, pipeline_id: str, step: str) -> str | None:
        """The newest job a pipeline run's step submitted, by the job's own meta (``pipeline``,
        ``pipeline_step``: written with the job, before the step records its id)."""
        with self._read() as c:
            row = c.execute("SELECT id FROM jobs WHERE json_extract(meta, '$.pipeline') = ? AND "
                            "json_extract(meta, '$.pipeline_step') = ? ORDER BY created_at DESC, id DESC LIMIT 1",
                            (pipeline_id, step)).fetchone()
        return row[0] if row else None

    def move_if(self, job_id: str, from_states: Iterable[str], state: str, reason: str | None = None) -> bool:
        """Move the job to ``state`` only if it is in one of ``from_states`` now, in one write
        transaction (a compare-and-set: of two ``resume``s at once exactly one wins); returns
        whether it moved."""
        with self._write() as c:
            old = self._state_of(c, job_id)
            if old not in set(from_states):
                return False
            self._move(c, job_id, old, state, reason, True)
        return True

    # ------------------------------------------------------------------ sweeps

    def open_sweep(self, name: str, source: str, info: Mapping[str, Any],
                   runner: Mapping[str, Any] | None = None) -> SweepRecord:
        """The sweep of this name (one per name: a re-run of the file carries on with its
        trials), running again under ``runner``; created if new."""
        for _ in range(8):
            try:
                with self._write() as c:
                    row = c.execute("SELECT id FROM sweeps WHERE name = ?", (name,)).fetchone()
                    sid = row[0] if row else new_job_id(name)
                    values = (source, RUNNING, json.dumps(dict(info), sort_keys=True),
                              json.dumps(dict(runner)) if runner else None)
                    if row:
                        c.execute("UPDATE sweeps SET source = ?, state = ?, info = ?, runner = ?, ended_at = NULL, "
                                  "reason = NULL WHERE id = ?", (*values, sid))
                    else:
                        c.execute("INSERT INTO sweeps (id, name, source, state, info, runner, created_at) "
                                  "VALUES (?,?,?,?,?,?,?)", (sid, name, *values, now_iso()))
                return self.sweep(sid)
            except sqlite3.IntegrityError:
                continue
        raise AlaunchError("could not allocate a unique sweep id")  # pragma: no cover

    def add_trial(self, sweep_id: str, trial: str, position: int, identity: str, params: Mapping[str, Any],
                  overrides: Mapping[str, Any], seed: int | None) -> None:
        """Record a trial (pending) unless this sweep has it already (a re-run keeps its state)."""
        with self._write() as c:
            c.execute("INSERT OR IGNORE INTO sweep_trials (sweep_id, trial, position, identity, params, overrides, "
                      "seed, state) VALUES (?,?,?,?,?,?,?,?)",
                      (sweep_id, trial, position, identity, json.dumps(dict(params), sort_keys=True, default=str),
                       json.dumps(dict(overrides), sort_keys=True, default=str), seed, "pending"))

    def set_trial(self, sweep_id: str, trial: str, **fields: Any) -> None:
        unknown = set(fields) - set(_TRIAL_FIELDS)
        if unknown:
            raise InputError(f"unknown trial field(s) {sorted(unknown)}; valid: {', '.join(_TRIAL_FIELDS)}")
        for key in ("result", "curve"):
            if key in fields:
                fields[key] = json.dumps(fields[key], sort_keys=True)
        with self._write() as c:
            cols = ", ".join(f"{k} = ?" for k in fields)  # keys checked against _TRIAL_FIELDS
            c.execute(f"UPDATE sweep_trials SET {cols} WHERE sweep_id = ? AND trial = ?",
                      (*fields.values(), sweep_id, trial))

    def end_sweep(self, sweep_id: str, state: str, reason: str | None = None) -> None:
        with self._write() as c:
            c.execute("UPDATE sweeps SET state = ?, reason = ?, ended_at = ? WHERE id = ?",
                      (state, reason, now_iso(), sweep_id))

    def sweep(self, ref: str) -> SweepRecord:
        """A sweep by id or name, with its trials in order."""
        with self._read() as c:
            row = c.execute("SELECT * FROM sweeps WHERE id = ? OR name = ?", (ref, ref)).fetchone()
            if row is None:
                raise InputError(f"no sweep {ref!r} (not a sweep id or name); `alaunch sweep FILE` starts one")
            data = dict(row)
            trials = [dict(t) for t in c.execute("SELECT * FROM sweep_trials WHERE sweep_id = ? ORDER BY position",
                                                 (data["id"],))]
        for t in trials:
            for key in ("params", "overrides", "result", "curve"):
                t[key] = json.loads(t[key] or ("[]" if key == "curve" else "{}"))
        data["info"] = json.loads(data["info"] or "{}")
        data["runner"] = json.loads(data["runner"] or "{}")
        if data["state"] == RUNNING and proc.gone(data["runner"]):
            # its `alaunch sweep` died (the trials run on, detached): said, as for a pipeline run
            why = (f"interrupted: the `alaunch sweep` process (pid {data['runner'].get('pid')}) is gone; "
                   "run the sweep again to re-attach (finished trials are kept)")
            with self._write() as c:
                c.execute("UPDATE sweeps SET state = ?, reason = ?, ended_at = ? WHERE id = ? AND state = ?",
                          (FAILED, why, now_iso(), data["id"], RUNNING))
            data.update(state=FAILED, reason=why)
        return SweepRecord(**data, trials=tuple(trials))

    def sweeps(self, limit: int = 50) -> builtins.list[SweepRecord]:
        """The newest sweeps first, each as :meth:`sweep` reads it (its trials; a running one whose
        driver is gone reads failed, interrupted)."""
        ids = [r[0] for r in self._conn.execute(
            "SELECT id FROM sweeps ORDER BY created_at DESC, id DESC LIMIT ?", (limit,))]
        return [self.sweep(i) for i in ids]

    def sweep_trial_job(self, sweep_id: str, trial: str) -> str | None:
        """The newest job a sweep's trial submitted, by the job's own meta (written with the job,
        before the driver records its id: a driver killed in between loses nothing)."""
        with self._read() as c:
            row = c.execute("SELECT id FROM jobs WHERE json_extract(meta, '$.sweep') = ? AND "
                            "json_extract(meta, '$.sweep_trial') = ? ORDER BY created_at DESC, id DESC LIMIT 1",
                            (sweep_id, trial)).fetchone()
        return row[0] if row else None

    def events(self, job_id: str) -> builtins.list[Event]:
        rows = self._conn.execute("SELECT * FROM events WHERE job_id = ? ORDER BY id", (job_id,))
        return [Event(**dict(r)) for r in rows]

    def _load(self, job_id: str) -> JobRecord:
        c = self._conn
        row = c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        nodes = c.execute("SELECT * FROM nodes WHERE job_id = ? ORDER BY node_rank", (job_id,))
        data = dict(row)
        data["meta"] = _json(data["meta"], self.path, f"job {job_id}'s meta")
        return JobRecord(**data, nodes=tuple(_node(n) for n in nodes))


def _node(row: sqlite3.Row) -> NodeRecord:
    data = dict(row)
    data.pop("job_id")
    return NodeRecord(**data)


def _step(row: sqlite3.Row) -> StepRecord:
    data = dict(row)
    data["outputs"] = json.loads(data["outputs"] or "{}")
    data["needs"] = json.loads(data["needs"]) if data.get("needs") is not None else None
    return StepRecord(**data)
