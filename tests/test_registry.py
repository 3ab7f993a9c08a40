"""The job registry: round trip, lookup, lifecycle, concurrency and crash safety on real sqlite."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import sqlite3
import stat
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from launcher.cli.environment import Environment
from launcher.core.layout import job_id, new_job_id, slug
from launcher.errors import InputError
from launcher.ops.registry import (
    DB_NAME,
    MIGRATIONS,
    IllegalTransition,
    Registry,
)

CONFIG = "model:\n  arch: llama\nlora: {rank: 8}\n"


@pytest.fixture
def reg(tmp_path):
    r = Registry(tmp_path / "state" / DB_NAME)
    yield r
    r.close()


def _job(reg: Registry, name: str = "lora-math", **kw):
    return reg.create_job(name, "finetune", spec_text="name: x\n", config_text=CONFIG,
                          hostfile_text="a slots=1\nb slots=1\n",
                          nodes=[("a", "/w/a"), ("b", "/w/b")], meta={"seed": 1}, **kw)


def test_round_trip(reg, tmp_path):
    job = _job(reg)
    again = Registry(reg.path).get(job.id)  # a second connection sees the same thing
    assert again == job
    assert (job.name, job.kind, job.state, job.spec_text) == ("lora-math", "finetune", "pending", "name: x\n")
    assert job.config_sha256 == hashlib.sha256(CONFIG.encode()).hexdigest()
    assert job.hostfile_text == "a slots=1\nb slots=1\n" and job.meta == {"seed": 1}
    assert [(n.node_rank, n.host, n.job_dir, n.state) for n in job.nodes] == \
        [(0, "a", "/w/a", "pending"), (1, "b", "/w/b", "pending")]
    assert job.created_at.endswith("Z") and job.started_at is None
    assert reg.schema_version == len(MIGRATIONS)


def test_lifecycle_nodes_and_events(reg):
    job = _job(reg)
    reg.set_state(job.id, "staging")
    running = reg.set_state(job.id, "running")
    assert running.started_at is not None and running.ended_at is None
    reg.set_node(job.id, 0, pid=4242, pgid=4242, state="running", started_at="t0")
    reg.set_node(job.id, 1, pid=77, pgid=77, state="running")
    node = reg.set_node(job.id, 1, state="failed", exit_code=137, ended_at="t1")
    assert (node.pid, node.state, node.exit_code, node.ended_at) == (77, "failed", 137, "t1")
    done = reg.set_state(job.id, "failed", reason="b: rank 1 exited 137")
    assert done.terminal and done.ended_at is not None and done.reason == "b: rank 1 exited 137"
    assert [n.pgid for n in done.nodes] == [4242, 77]
    kinds = [(e.kind, e.host, e.message) for e in reg.events(job.id)]
    assert kinds[0][0] == "created"
    assert ("state", None, "pending -> staging") in kinds
    assert ("node", "b", "node 1: state=failed, exit_code=137") in kinds
    assert kinds[-1] == ("state", None, "running -> failed: b: rank 1 exited 137")
    assert reg.update_meta(job.id, {"port": 8118}) == {"seed": 1, "port": 8118}
    assert reg.get(job.id).meta == {"seed": 1, "port": 8118}


def test_node_added_later_and_bad_fields(reg):
    job = reg.create_job("x", "eval")
    assert reg.set_node(job.id, 0, host="h0", job_dir="/d").host == "h0"
    with pytest.raises(InputError, match="node 1 is new; give its host"):
        reg.set_node(job.id, 1, pid=1)
    with pytest.raises(InputError, match=r"unknown node field\(s\) \['pidd'\]"):
        reg.set_node(job.id, 0, pidd=1)
    with pytest.raises(InputError, match="unknown node state 'done'"):
        reg.set_node(job.id, 0, state="done")
    with pytest.raises(InputError, match="no job with id 'nope'"):
        reg.set_node("nope", 0, host="h")


@pytest.mark.parametrize("path,bad", [
    (["staging", "running", "succeeded"], "running"),
    (["failed"], "pending"),
    (["cancelled"], "succeeded"),
    (["staging", "running"], "staging"),
    (["staging"], "succeeded"),
    ([], "succeeded"),
])
def test_illegal_transitions_refused(reg, path, bad):
    job = _job(reg)
    for state in path:
        reg.set_state(job.id, state)
    before, events = reg.get(job.id), reg.events(job.id)
    with pytest.raises(IllegalTransition, match=rf"cannot go from {before.state} to {bad}; allowed from"):
        reg.set_state(job.id, bad)
    assert reg.get(job.id) == before  # nothing written, not even an event
    assert reg.events(job.id) == events


def test_terminal_is_final_unless_forced(reg):
    job = _job(reg)
    reg.set_state(job.id, "cancelled", reason="user")
    with pytest.raises(IllegalTransition, match="allowed from cancelled: none \\(terminal\\)"):
        reg.set_state(job.id, "running")
    again = reg.set_state(job.id, "pending", reason="resubmitted", force=True)
    assert (again.state, again.ended_at, again.reason) == ("pending", None, "resubmitted")
    with pytest.raises(InputError, match="unknown job state 'done'"):
        reg.set_state(job.id, "done")


def test_lookup_by_id_name_and_prefix(reg):
    a = reg.create_job("alpha", "finetune", job_id="alpha-20250101-000000-aaaa")
    b = reg.create_job("alpha", "finetune", job_id="alpha-20250101-000001-bbbb")
    c = reg.create_job("beta", "eval", job_id="beta-20250101-000000-cccc")
    assert reg.get(a.id) == a
    assert reg.get("alpha").id == b.id  # a name means its newest job
    assert reg.get("beta-2025").id == c.id  # unique prefix
    assert reg.get("alpha-20250101-000000").id == a.id
    with pytest.raises(InputError) as info:
        reg.get("alpha-2025")
    msg = str(info.value)
    assert msg == ("job 'alpha-2025' is ambiguous: it matches alpha-20250101-000000-aaaa, "
                   "alpha-20250101-000001-bbbb; give more of the id")
    with pytest.raises(InputError, match=r"no job 'gamma' \(not an id, a unique id prefix or a job name\)"):
        reg.get("gamma")
    with pytest.raises(InputError, match="no job '%'"):
        reg.get("%")  # LIKE wildcards are literal
    with pytest.raises(InputError, match="already exists"):
        reg.create_job("alpha", "finetune", job_id=a.id)


def test_list_newest_first_with_states(reg):
    ids = [reg.create_job(f"j{i}", "predict").id for i in range(5)]
    reg.set_state(ids[1], "running")
    reg.set_state(ids[3], "failed")
    assert [j.id for j in reg.list()] == ids[::-1]
    assert [j.id for j in reg.list(limit=2)] == ids[:-3:-1]
    assert [j.id for j in reg.list(states=["running", "failed"])] == [ids[3], ids[1]]
    with pytest.raises(InputError, match=r"unknown job state\(s\) \['done'\]"):
        reg.list(states=["done"])
    assert [j.id for j in reg.list(limit=2, offset=2)] == [ids[2], ids[1]]  # page 2
    assert [j.id for j in reg.list(limit=None, offset=4)] == [ids[0]]
    assert [j.id for j in reg.list(states=["pending"], limit=1, offset=1)] == [ids[2]]


def test_listing_and_lookups_walk_indexes_not_the_table(reg):
    """What keeps `jobs` and `status` fast at 10,000 jobs (benchmarks/bench_registry.py)."""
    def plan(sql, args):
        return " ".join(r[3] for r in reg._conn.execute("EXPLAIN QUERY PLAN " + sql, args))
    assert "COVERING INDEX jobs_by_created_id" in plan(
        "SELECT id FROM jobs ORDER BY created_at DESC, id DESC LIMIT 20 OFFSET 40", ())
    assert "INDEX jobs_by_state" in plan(
        "SELECT id FROM jobs WHERE state IN (?) ORDER BY created_at DESC, id DESC LIMIT 20", ("running",))
    by_name = plan("SELECT id FROM jobs WHERE name = ? ORDER BY created_at DESC, id DESC LIMIT 1", ("x",))
    assert "INDEX jobs_by_name_id" in by_name and "TEMP B-TREE" not in by_name
    assert "(id>? AND id<?)" in plan("SELECT id FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT 11", ("a", "b"))


def test_an_old_registry_gains_the_indexes(tmp_path):
    path = tmp_path / DB_NAME
    con = sqlite3.connect(path)
    con.executescript("CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);"
                      + MIGRATIONS[0])
    con.execute("INSERT INTO jobs (id, name, kind, state, created_at) VALUES ('old-1', 'old', 'finetune', "
                "'running', '2025-01-01T00:00:00.000000Z')")
    con.commit()
    con.close()
    with Registry(path) as r:
        assert r.schema_version == len(MIGRATIONS) and r.get("old").id == "old-1"
        names = {row[0] for row in r._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"jobs_by_created_id", "jobs_by_state", "jobs_by_name_id"} <= names
        assert not {"jobs_by_created", "jobs_by_name"} & names


def test_job_ids_short_sortable_unique():
    # 4 random hex digits per second: 50 draws in one second collide with ~2 % chance, so
    # demand randomness (>= 45 distinct), not uniqueness; the registry retries a taken id.
    ids = {new_job_id("LoRA Math / v2!") for _ in range(50)}
    assert len(ids) >= 45
    one = next(iter(ids))
    assert one.startswith("lora-math-v2-") and len(one) == len("lora-math-v2-") + 15 + 5
    assert slug("$(rm -rf ~)") == "rm-rf" and slug("---") == "job"


def test_file_and_dir_modes(tmp_path):
    old = os.umask(0o022)
    try:
        reg = Registry(tmp_path / "new" / "state" / DB_NAME)
        _job(reg)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new" / "state").stat().st_mode) == 0o700
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(reg.path) + suffix)
        assert p.exists(), p
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    reg.close()


def test_job_id_is_a_pure_value_of_name_time_and_token():
    when = datetime(2026, 11, 30, 4, 5, 6, tzinfo=timezone.utc)
    assert job_id("LoRA Math / v2!", when, "0a1f") == "lora-math-v2-20261130-040506-0a1f"
    with pytest.raises(ValueError):
        job_id("x", when, "not-hex")


def test_default_location_is_the_state_dir(tmp_path, monkeypatch):
    """The state dir is passed in (the CLI's Environment has it); without one, the registry
    lives where $ALAUNCH_STATE_DIR / $XDG_STATE_HOME say, as the Environment's default does."""
    with Registry.in_state_dir(Environment(state_dir=tmp_path / "given").state_dir) as reg:
        assert reg.path == tmp_path / "given" / DB_NAME
    monkeypatch.delenv("ALAUNCH_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    with Registry.in_state_dir() as reg:
        assert reg.path == tmp_path / "xdg" / "alaunch" / DB_NAME
    assert Environment().state_dir == tmp_path / "xdg" / "alaunch"


def test_schema_newer_than_code_is_refused(tmp_path):
    path = tmp_path / DB_NAME
    Registry(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(Exception, match="registry schema 99 is newer than this alaunch knows"):
        Registry(path)


# --------------------------------------------------------------------------- two processes

def _hammer(path: str, job_id: str, tag: str, n: int, start) -> None:
    start.wait()
    reg = Registry(path)
    for i in range(n):
        reg.update_meta(job_id, {f"{tag}-{i}": i})  # read-modify-write: the lost-update trap
        reg.set_node(job_id, 0 if tag == "p0" else 1, pid=i)
        reg.add_event(job_id, "tick", f"{tag} {i}")
    reg.close()


def test_two_processes_lose_nothing(reg):
    job = reg.create_job("race", "finetune", nodes=["h0", "h1"])
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_hammer, args=(str(reg.path), job.id, f"p{k}", 200, start))
             for k in range(2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    final = reg.get(job.id)
    assert len(final.meta) == 400
    assert all(final.meta[f"p{k}-{i}"] == i for k in range(2) for i in range(200))
    assert [n.pid for n in final.nodes] == [199, 199]
    ticks = [e.message for e in reg.events(job.id) if e.kind == "tick"]
    assert sorted(ticks) == sorted(f"p{k} {i}" for k in range(2) for i in range(200))


# --------------------------------------------------------------------------- SIGKILL mid-write

def _create_and_hang(path: str, marker: str, hang_on: str) -> None:
    """Create a job, but stop forever right before the statement ``hang_on`` runs."""
    reg = Registry(path)

    def trace(sql: str) -> None:
        if sql.lstrip().upper().startswith(hang_on):
            Path(marker).write_text("inside the transaction")
            time.sleep(3600)

    reg._conn.set_trace_callback(trace)
    reg.create_job("victim", "finetune", config_text=CONFIG, nodes=["a", "b", "c"],
                   job_id="victim-20250101-000000-dead")


@pytest.mark.parametrize("hang_on", [
    "INSERT INTO EVENTS",  # jobs and nodes rows written, not committed
    "INSERT INTO NODES",   # the job row written, its nodes not yet
])
def test_sigkill_mid_transaction_leaves_db_consistent(reg, tmp_path, hang_on):
    keep = _job(reg)
    marker = tmp_path / "marker"
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_create_and_hang, args=(str(reg.path), str(marker), hang_on))
    p.start()
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and p.is_alive(), "child never reached the write"
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    assert p.exitcode == -signal.SIGKILL

    fresh = Registry(reg.path)  # a new alaunch process after the crash
    assert fresh._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with pytest.raises(InputError, match="no job 'victim-20250101-000000-dead'"):
        fresh.get("victim-20250101-000000-dead")
    orphans = fresh._conn.execute(
        "SELECT count(*) FROM nodes WHERE job_id NOT IN (SELECT id FROM jobs)").fetchone()[0]
    assert orphans == 0
    assert fresh.get(keep.id) == keep
    # The killed writer's lock is gone: the same job can now be written whole.
    again = fresh.create_job("victim", "finetune", nodes=["a", "b", "c"],
                             job_id="victim-20250101-000000-dead")
    assert [n.host for n in again.nodes] == ["a", "b", "c"]
    fresh.close()


def test_sigkill_after_commit_keeps_the_whole_job(reg, tmp_path):
    # The child commits create_job, then hangs inside its next write (an event).
    marker = tmp_path / "marker"
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=_create_then_hang, args=(str(reg.path), str(marker)))
    p.start()
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and p.is_alive()
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    job = Registry(reg.path).get("victim")
    assert [n.host for n in job.nodes] == ["a", "b", "c"]
    assert [e.kind for e in Registry(reg.path).events(job.id)] == ["created"]


def _create_then_hang(path: str, marker: str) -> None:
    reg = Registry(path)
    job = reg.create_job("victim", "finetune", nodes=["a", "b", "c"])

    def trace(sql: str) -> None:
        if sql.lstrip().upper().startswith("INSERT INTO EVENTS"):
            Path(marker).write_text("after commit, inside the next write")
            time.sleep(3600)

    reg._conn.set_trace_callback(trace)
    reg.add_event(job.id, "tick", "never committed")


def test_one_registry_object_serves_many_threads(tmp_path):
    """A queued submit's wait loop and a viewer share one Registry (one sqlite connection):
    their transactions must not interleave ("cannot start a transaction within a transaction")."""
    import threading
    reg = Registry(tmp_path / DB_NAME)
    errors = []

    def work(i):
        try:
            for _ in range(30):
                job = reg.create_job(f"t{i}", "finetune", spec_text="x", nodes=["h"])
                reg.set_state(job.id, "staging")
                reg.list(limit=5)
        except Exception as exc:  # noqa: BLE001 - any error is the failure
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reg.close()
    assert errors == [] and len(Registry(tmp_path / DB_NAME).list(limit=None)) == 120


# --------------------------------------------------------------------------- set_state_unless_ended

@pytest.mark.parametrize("end", ["cancelled", "failed", "succeeded"])
def test_unless_ended_writes_nothing_over_an_end(reg, end):
    job = _job(reg)
    reg.set_state(job.id, "staging")
    reg.set_state(job.id, "running")
    reg.set_state(job.id, end, reason="first word")
    before, events = reg.get(job.id), reg.events(job.id)
    for state in ("running", "failed", "succeeded", "cancelled"):
        assert reg.set_state_unless_ended(job.id, state, "late word") is False
    assert reg.get(job.id) == before  # state, reason and ended_at as the first end wrote them
    assert reg.events(job.id) == events


def test_unless_ended_moves_a_live_job(reg):
    job = _job(reg)
    assert reg.set_state_unless_ended(job.id, "staging") is True
    assert reg.set_state_unless_ended(job.id, "running") is True
    assert reg.set_state_unless_ended(job.id, "failed", "rank 1 died") is True
    after = reg.get(job.id)
    assert (after.state, after.reason) == ("failed", "rank 1 died") and after.ended_at
    assert [e.message for e in reg.events(job.id) if e.kind == "state"][-1] == "running -> failed: rank 1 died"


def test_unless_ended_still_refuses_a_wrong_move_and_bad_input(reg):
    job = _job(reg)
    reg.set_state(job.id, "staging")
    with pytest.raises(IllegalTransition, match="cannot go from staging to succeeded"):
        reg.set_state_unless_ended(job.id, "succeeded")  # a bug, not a race: say so
    with pytest.raises(InputError, match="unknown job state 'done'"):
        reg.set_state_unless_ended(job.id, "done")
    with pytest.raises(InputError, match="no job with id 'nope'"):
        reg.set_state_unless_ended("nope", "failed")
    assert reg.get(job.id).state == "staging"


def test_unless_ended_check_and_write_are_one_transaction(reg):
    """A cancel from another process cannot land between the look at the state and the write:
    it waits for the write lock (here: gives up after 100 ms), then finds the job ended."""
    job = _job(reg)
    reg.set_state(job.id, "running")
    other = Registry(reg.path)
    other._conn.execute("PRAGMA busy_timeout = 100")
    seen: list[str] = []

    def cancel_in_between(sql: str) -> None:
        if sql.lstrip().upper().startswith("SELECT") and not seen:
            try:  # the state is being read, the new one not yet written
                other.set_state(job.id, "cancelled", "user")
                seen.append("cancel written")
            except sqlite3.OperationalError as exc:
                seen.append(str(exc))

    reg._conn.set_trace_callback(cancel_in_between)
    try:
        assert reg.set_state_unless_ended(job.id, "failed", "rank 0 died") is True
    finally:
        reg._conn.set_trace_callback(None)
    assert seen == ["database is locked"]
    assert other.set_state_unless_ended(job.id, "cancelled", "user") is False  # the end stands
    assert (reg.get(job.id).state, reg.get(job.id).reason) == ("failed", "rank 0 died")
    other.close()
