"""JobService against a cancel landing at the worst moment (real sqlite, a second connection
standing for the ``alaunch cancel`` process)."""

from __future__ import annotations

from launcher.ops import registry as reg
from launcher.ops.service import JobService
from launcher.runners import CommandRunner


def test_fail_leaves_a_cancel_that_lands_between_its_look_and_its_write(tmp_path):
    registry = reg.Registry(tmp_path / "state" / reg.DB_NAME)
    job = registry.create_job("race", "finetune", nodes=[("h0", "/w/h0"), ("h1", "/w/h1")])
    registry.set_state(job.id, reg.RUNNING)
    other = reg.Registry(registry.path)  # the cancel's process
    armed = []

    def cancel_before_the_write(sql: str) -> None:
        if sql.startswith("BEGIN IMMEDIATE") and not armed:  # fail() looked: RUNNING
            armed.append(sql)
            other.set_state(job.id, reg.CANCELLED, "cancelled by the user")

    registry._conn.set_trace_callback(cancel_before_the_write)
    after = JobService(registry, tmp_path / "state").fail(job.id, "rank 0 on h0 failed")
    registry._conn.set_trace_callback(None)
    assert armed, "the cancel never ran"
    assert (after.state, after.reason) == (reg.CANCELLED, "cancelled by the user")  # its word stands
    kinds = [e.kind for e in registry.events(job.id)]
    assert "gang-stop" not in kinds  # the cancel stops the nodes, not the gang rule
    assert [e.message for e in registry.events(job.id) if e.kind == "state"][-1] == \
        "running -> cancelled: cancelled by the user"
    other.close()
    registry.close()


def test_a_refresh_between_the_pids_and_running_judges_nothing(tmp_path):
    """submit records the pids, then RUNNING; a status from another process in between sees a
    node that already ended (a short job) but must not move STAGING to an end (no such move)."""
    import sys

    from launcher.core.layout import JobLayout
    registry = reg.Registry(tmp_path / "state" / reg.DB_NAME)
    root = tmp_path / "w"
    job = registry.create_job("short", "finetune", hostfile_text="localhost slots=1\n",
                              nodes=[("localhost", str(root))], meta={"pythons": {"localhost": sys.executable}})
    registry.set_state(job.id, reg.STAGING)
    state = root / JobLayout(str(root)).node_state(0).removeprefix(str(root) + "/")
    state.mkdir(parents=True)
    (state / "pid").write_text("999999 999999\n")
    (state / "exit_code").write_text("0\n")
    registry.set_node(job.id, 0, pid=999999)
    record, statuses = JobService(registry, tmp_path / "state").refresh(job.id)
    assert [s.state for s in statuses] == ["succeeded"] and record.state == reg.STAGING
    registry.set_state(job.id, reg.RUNNING)  # what the submit writes next
    record, _ = JobService(registry, tmp_path / "state").refresh(job.id)
    assert record.state == reg.SUCCEEDED
    registry.close()


def test_cancel_of_a_job_that_ended_unseen_keeps_its_result(tmp_path):
    """Both nodes exited 0 after the last look (nobody followed): the registry still says
    RUNNING. A cancel then must find the end and keep it, not record `cancelled` (status 102)."""
    import sys

    from launcher.core.layout import JobLayout
    registry = reg.Registry(tmp_path / "state" / reg.DB_NAME)
    root = tmp_path / "w"
    job = registry.create_job("done", "finetune", hostfile_text="localhost slots=2\n",
                              nodes=[("localhost", str(root)), ("localhost", str(root))],
                              meta={"pythons": {"localhost": sys.executable}})
    for rank in (0, 1):
        state = root / JobLayout(str(root)).node_state(rank).removeprefix(str(root) + "/")
        state.mkdir(parents=True)
        (state / "pid").write_text("999999 999999\n")
        (state / "exit_code").write_text("0\n")
        registry.set_node(job.id, rank, pid=999999)
    registry.set_state(job.id, reg.RUNNING)
    record, outcome = JobService(registry, tmp_path / "state").cancel(job.id, grace=0.5)
    assert record.state == reg.SUCCEEDED, (record.state, record.reason)
    assert all(n.state == reg.SUCCEEDED and n.exit_code == 0 for n in record.nodes)
    assert set(outcome.values()) == {"nothing was running"}
    registry.close()


class _Unreachable(CommandRunner):
    """A host whose sshd never answers again (every command fails as ssh would)."""

    def exec(self, *args, **kwargs):
        from launcher.errors import RemoteError
        raise RemoteError(self.host.name, "ssh: connect to host 10.0.0.9 port 22: No route to host")

    def ping(self):
        return self.exec()


def test_a_node_that_never_comes_back_ends_the_job_lost_not_running_forever(tmp_path, monkeypatch):
    import time

    from launcher.ops import service as service_mod
    registry = reg.Registry(tmp_path / "state" / reg.DB_NAME)
    job = registry.create_job("gone", "finetune", hostfile_text="nodeA slots=1\n", nodes=[("nodeA", "/w/a")])
    registry.set_node(job.id, 0, pid=4242)
    registry.set_state(job.id, reg.RUNNING)
    service = JobService(registry, tmp_path / "state", exec_factory=_Unreachable)
    record, statuses = service.refresh(job.id)
    assert record.state == reg.RUNNING and statuses[0].detail.startswith("unreachable since")  # not yet
    registry.update_meta(job.id, {"unreachable_at": {"nodeA": time.time() - service_mod.LOST_AFTER_S - 60}})
    record, _ = service.refresh(job.id)
    assert record.state == reg.FAILED and "node 0 (nodeA) lost: unreachable for 61 min" in record.reason
    registry.close()
