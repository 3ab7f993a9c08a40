"""The 'queued' state (a scheduler holds the job) and the schema migration that adds it."""

from __future__ import annotations

import sqlite3

import pytest

from launcher.ops import registry as reg


def _v1_registry(path):
    """A registry file as schema 1 left it, with one running job, its node and events."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    con.execute("INSERT INTO schema_version (version) VALUES (1)")
    for statement in filter(str.strip, reg.MIGRATIONS[0].split(";")):
        con.execute(statement)
    con.execute("INSERT INTO jobs (id, name, kind, state, created_at, meta) VALUES "
                "('old-1', 'old', 'finetune', 'running', '2025-01-01T00:00:00Z', '{\"a\": 1}')")
    con.execute("INSERT INTO nodes (job_id, node_rank, host, state) VALUES ('old-1', 0, 'h0', 'running')")
    con.execute("INSERT INTO events (time, job_id, kind, message) VALUES ('t', 'old-1', 'created', 'x')")
    with pytest.raises(sqlite3.IntegrityError):  # schema 1 refuses the new state
        con.execute("UPDATE jobs SET state = 'queued'")
    con.close()


def test_schema_1_file_migrates_keeping_jobs_nodes_events(tmp_path):
    path = tmp_path / reg.DB_NAME
    _v1_registry(path)
    with reg.Registry(path) as r:
        assert r.schema_version == len(reg.MIGRATIONS) >= 2
        job = r.get("old-1")
        assert (job.state, job.meta, job.nodes[0].host) == ("running", {"a": 1}, "h0")
        assert [e.kind for e in r.events("old-1")] == ["created"]
        r.add_event("old-1", "later")  # the id sequence continues after the copied rows
        assert [e.kind for e in r.events("old-1")] == ["created", "later"]
        assert r.set_state("old-1", reg.QUEUED, "requeued").state == reg.QUEUED
        r.set_node("old-1", 0, state=reg.QUEUED)


def test_queued_lifecycle(tmp_path):
    with reg.Registry(tmp_path / reg.DB_NAME) as r:
        job = r.create_job("j", "finetune", nodes=["n1", "n2"])
        r.set_state(job.id, reg.STAGING)
        assert r.set_state(job.id, reg.QUEUED, "Resources").reason == "Resources"
        assert r.list(states=[reg.QUEUED])[0].id == job.id
        assert not r.get(job.id).terminal
        done = r.set_state(job.id, reg.SUCCEEDED)  # started and ended between two polls
        assert done.terminal and done.started_at is None
        with pytest.raises(reg.IllegalTransition):
            r.set_state(job.id, reg.QUEUED)
