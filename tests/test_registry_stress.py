"""The registry under the load a normal session puts on it: the dashboard opening a Registry per
request, pipeline steps one per thread, ``alaunch run`` and ``status`` in other processes.

Opening a Registry must never touch the live database file through a descriptor of its own:
closing any descriptor of a file drops every POSIX lock the process holds on it (sqlite's
"How To Corrupt An SQLite Database File", 2.2), so a long-lived connection's locks vanished
under it and the file ended "database disk image is malformed" within seconds.

``ALAUNCH_REGISTRY_STRESS_S`` sets the length (default 15 s; the full drill is 60 s).
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from launcher.errors import AlaunchError
from launcher.ops.registry import DB_NAME, Registry, RegistryCorrupt

SECONDS = float(os.environ.get("ALAUNCH_REGISTRY_STRESS_S", "15"))


def _writer(path: str, until: float, errors) -> None:
    """A long-lived Registry writing jobs, states, meta and events (a pipeline's driver)."""
    try:
        reg = Registry(path)
        n = 0
        while time.time() < until:
            job = reg.create_job(f"stress-{os.getpid()}-{n}", "finetune", spec_text="x: 1\n",
                                 nodes=["a", "b"], meta={"n": n})
            reg.set_state(job.id, "staging")
            reg.update_meta(job.id, {"step": n})
            reg.add_event(job.id, "note", "hello")
            reg.set_state(job.id, "running")
            reg.set_state(job.id, "succeeded")
            n += 1
        reg.close()
    except Exception as exc:  # noqa: BLE001 - reported to the parent as the failure
        errors.append(f"writer: {type(exc).__name__}: {exc}")


def _opener(path: str, until: float, errors) -> None:
    """A Registry per request, read and closed (the dashboard, `status`)."""
    try:
        while time.time() < until:
            with Registry(path) as reg:
                for job in reg.list(limit=5):
                    reg.get(job.id)
    except Exception as exc:  # noqa: BLE001
        errors.append(f"opener: {type(exc).__name__}: {exc}")


def _process(path: str, until: float, queue) -> None:
    errors: list[str] = []
    threads = [threading.Thread(target=_writer, args=(path, until, errors)),
               threading.Thread(target=_writer, args=(path, until, errors)),
               threading.Thread(target=_opener, args=(path, until, errors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put(errors)


def _plain_sqlite(path: str, until: float, queue) -> None:
    """Another program writing through plain sqlite3 (an older alaunch's events)."""
    errors: list[str] = []
    try:
        conn = sqlite3.connect(path, timeout=15, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 15000")
        while time.time() < until:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO events (time, job_id, host, kind, message) "
                         "SELECT '2026-01-01T00:00:00Z', id, NULL, 'plain', 'x' FROM jobs "
                         "ORDER BY created_at DESC LIMIT 1")
            conn.execute("COMMIT")
        conn.close()
    except Exception as exc:  # noqa: BLE001
        errors.append(f"plain: {type(exc).__name__}: {exc}")
    queue.put(errors)


@pytest.mark.slow
def test_registry_survives_processes_and_threads_opening_and_closing_it(tmp_path):
    path = str(tmp_path / "state" / DB_NAME)
    Registry(path).close()
    until = time.time() + SECONDS
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process, args=(path, until, queue)) for _ in range(2)]
    procs.append(ctx.Process(target=_plain_sqlite, args=(path, until, queue)))
    for p in procs:
        p.start()
    errors = [e for _ in procs for e in queue.get(timeout=SECONDS + 120)]
    for p in procs:
        p.join(timeout=30)
    conn = sqlite3.connect(path)
    integrity = conn.execute("PRAGMA integrity_check").fetchall()
    jobs = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    conn.close()
    assert integrity == [("ok",)], (integrity[:5], errors[:5])
    assert not errors, errors[:5]
    assert jobs > 20  # the load was real: every writer got through many jobs


def test_opening_never_opens_the_live_file_in_this_process(tmp_path, monkeypatch):
    """The mechanism itself: a second Registry on a live file makes no os.open of it."""
    path = tmp_path / "state" / DB_NAME
    first = Registry(path)
    opened: list[str] = []
    real_open = os.open

    def spy(file, *args, **kwargs):
        opened.append(os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    second = Registry(path)
    second.close()
    first.close()
    assert str(path) not in opened
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_a_new_registry_file_is_private_from_its_first_byte(tmp_path):
    path = tmp_path / "fresh" / DB_NAME
    with Registry(path):
        pass
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    assert oct(path.parent.stat().st_mode & 0o777) == oct(0o700)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".new-")]


def _corrupt(path: Path) -> None:
    """Overwrite the middle of the file (the b-tree pages), as a lost lock's torn write did."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(size // 2)
        fh.write(b"\x00" * (size // 2))


def test_a_corrupt_registry_is_one_line_saying_what_to_do(tmp_path):
    path = tmp_path / "state" / DB_NAME
    with Registry(path) as reg:
        for n in range(300):
            reg.create_job(f"j{n}", "finetune", spec_text="x" * 200, nodes=["a"], meta={"n": n})
        reg._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _corrupt(path)
    with pytest.raises(AlaunchError) as info:
        with Registry(path) as reg:
            [reg.get(j.id) for j in reg.list(limit=None)]
    assert isinstance(info.value, RegistryCorrupt)
    message = info.value.message
    assert "\n" not in message and str(path) in message
    assert ".recover" in message  # what to do


def test_a_job_row_with_bad_meta_is_reported_not_a_traceback(tmp_path):
    path = tmp_path / "state" / DB_NAME
    with Registry(path) as reg:
        job = reg.create_job("bad", "finetune", nodes=["a"], meta={"n": 1})
        reg._conn.execute("UPDATE jobs SET meta = ? WHERE id = ?", ("\x00\x00", job.id))
        with pytest.raises(RegistryCorrupt) as info:
            reg.get(job.id)
    assert job.id in info.value.message and "meta" in info.value.message


def test_registries_opening_one_brand_new_file_at_once_all_succeed(tmp_path):
    """Switching a new file to WAL takes a lock that sqlite does not wait for under
    busy_timeout: a Registry opened at the moment another one was creating the file (a test's
    helper thread beside the first submit) got "database is locked". Now the mode is set only
    when it differs, and a locked attempt waits and tries again."""
    errors: list[str] = []
    for n in range(60):
        path = tmp_path / f"s{n}" / DB_NAME
        start = threading.Barrier(4)

        def opener(start=start, path=path):
            start.wait()
            try:
                with Registry(path) as reg:
                    reg.list(limit=1)
            except Exception as exc:  # noqa: BLE001 - the failure reported below
                errors.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=opener) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors, errors[:3]
