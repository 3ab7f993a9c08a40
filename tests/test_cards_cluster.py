"""Sharing one 4-slot host (real sshd, real msrun on CPU: "cards" are slots).

Two jobs submitted at once get disjoint cards and both succeed; a third is refused naming
the holders; one queued with --wait can be cancelled; another queued with --wait starts
when a card pair frees; prune while that one runs removes exactly the orphans and the
finished job older than the limit, and the running job still succeeds. A card the npu-smi
emulator reports busy is skipped, and `hosts check` names its process.
"""

from __future__ import annotations

import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import yaml

from launcher.core.cards import CardsBusy
from launcher.core.layout import JobLayout
from launcher.errors import AlaunchError, ExitCode
from launcher.ops.prune import PruneOptions, prune_hosts
from launcher.ops.registry import Registry
from launcher.ops.service import JobService, SubmitOptions
from launcher.runners import ConnectOptions
from launcher.runners import make_runner as make_exec
from tests.cluster.cluster import HostSpec
from tests.test_e2e_local import write_job, write_toy_data

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.ms]

BIN = str(Path(sys.executable).parent)
DAY = 86400


def _job(tmp_path, toy, name, epochs):
    path = write_job(tmp_path, toy, epochs=epochs, name=name)
    job = yaml.safe_load(path.read_text())
    job.update(nodes=1, cards_per_node=2)
    path.write_text(yaml.safe_dump(job))
    return path


class Submitter:
    """One JobService with its own registry connection (as a separate `alaunch submit` has)."""

    def __init__(self, cluster, db, state):
        self.registry = Registry(db)
        self.lines: list[str] = []
        factory = partial(make_exec, options=ConnectOptions(known_hosts=cluster.known_hosts))
        self.service = JobService(self.registry, state, say=self.lines.append, exec_factory=factory)
        self.result = None

    def submit(self, job, hosts, **opts):
        try:
            self.result = self.service.submit(job, hosts, SubmitOptions(bin_dir=BIN, cluster_time_out=120, **opts))
        except AlaunchError as exc:
            self.result = exc
        return self.result

    def thread(self, job, hosts, **opts):
        t = threading.Thread(target=self.submit, args=(job, hosts), kwargs=opts)
        t.start()
        return t


def _cancel_unfinished(cluster, db, state) -> None:
    """Stop every job of this test still running or queued (the cluster is shared by the session)."""
    with Registry(db) as registry:
        service = JobService(registry, state, exec_factory=partial(make_exec, options=ConnectOptions(
            known_hosts=cluster.known_hosts)))
        for record in registry.list(limit=100):
            if not record.terminal:
                try:
                    service.cancel(record.id, grace=3)
                except AlaunchError:
                    pass


def _until(cond, timeout=120, what=""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_shared_host_cards_queue_and_prune(ssh_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    toy = write_toy_data(tmp_path / "toy")
    hosts = ssh_cluster.hosts_as_launcher_hosts(slots=4)[:1]
    db, state = tmp_path / "state" / "r.sqlite3", tmp_path / "state"
    a, b = Submitter(ssh_cluster, db, state), Submitter(ssh_cluster, db, state)
    try:
        ta, tb = a.thread(_job(tmp_path, toy, "ja", 2), hosts), b.thread(_job(tmp_path, toy, "jb", 2), hosts)
        ta.join(120)
        tb.join(120)
        assert not isinstance(a.result, BaseException) and not isinstance(b.result, BaseException), (a.result, b.result)
        devs = sorted([a.result.meta["devices"][hosts[0].name], b.result.meta["devices"][hosts[0].name]])
        assert devs == [[0, 1], [2, 3]]  # disjoint, although both chose before either claimed

        # a third job is refused in one line naming both holders
        c = Submitter(ssh_cluster, db, state)
        refused = c.submit(_job(tmp_path, toy, "jc", 1), hosts)
        assert isinstance(refused, CardsBusy) and refused.exit_code == ExitCode.CARDS_BUSY
        assert a.result.id in refused.message and b.result.id in refused.message and "\n" not in refused.message

        # queued with --wait, shown as queued, cancelled while queued
        d = Submitter(ssh_cluster, db, state)
        td = d.thread(_job(tmp_path, toy, "jd", 1), hosts, wait=True, poll=1.0)
        _until(lambda: d.registry.list(states=["queued"]), 60, "jd queued")
        queued = d.registry.list(states=["queued"])[0]
        assert queued.name == "jd" and a.result.id in queued.reason
        c.service.cancel(queued.id)
        td.join(30)
        assert isinstance(d.result, AlaunchError) and d.result.exit_code == ExitCode.JOB_CANCELLED
        assert c.registry.get(queued.id).state == "cancelled"
        assert any(line.startswith("queued (position 1)") for line in d.lines), d.lines

        # queued with --wait: starts when a pair frees
        e = Submitter(ssh_cluster, db, state)
        te = e.thread(_job(tmp_path, toy, "je", 1), hosts, wait=True, poll=1.0)
        _until(lambda: any(r.name == "je" for r in e.registry.list(states=["queued"])), 60, "je queued")
        te.join(600)
        assert not isinstance(e.result, BaseException), e.result
        e_devs = e.result.meta["devices"][hosts[0].name]
        ended = [r for r in (a.result, b.result) if c.service.refresh(r.id)[0].state == "succeeded"]
        assert ended and e_devs in [r.meta["devices"][hosts[0].name] for r in ended]

        # prune while je runs: the older finished job goes, the newer stays, orphans go, je lives
        for r in (a.result, b.result):
            c.service.wait(r.id, poll=2, timeout=600)
            assert c.registry.get(r.id).state == "succeeded", c.registry.get(r.id).reason
        h0 = ssh_cluster.hosts[0]
        old, new = a.result, b.result
        code = h0.path(JobLayout(old.nodes[0].job_dir).node_state(0) + "/exit_code")
        import os
        os.utime(code, (time.time() - 10 * DAY,) * 2)
        cas = h0.path("/root/alaunch/cas")
        orphan = cas / "ee" / ("ee" * 32)
        orphan.parent.mkdir(exist_ok=True)
        orphan.write_bytes(b"o" * 4096)
        part = cas / "tmp" / ("ab" * 32 + ".1.part")
        part.write_bytes(b"p" * 100)
        for p in (orphan, part):
            os.utime(p, (time.time() - 2 * DAY,) * 2)
        objects_before = {p for p in cas.glob("??/*")}
        factory = partial(make_exec, options=ConnectOptions(known_hosts=ssh_cluster.known_hosts))
        dry = prune_hosts(hosts, factory, c.registry, PruneOptions(older_than=7 * DAY, checkpoints=True, dry_run=True))[hosts[0].name]
        assert [j["id"] for j in dry.jobs] == [old.id] and dry.objects["count"] == 1 and dry.parts["count"] == 1
        assert h0.path(old.nodes[0].job_dir).exists()
        done = prune_hosts(hosts, factory, c.registry, PruneOptions(older_than=7 * DAY, checkpoints=True))[hosts[0].name]
        assert [j["id"] for j in done.jobs] == [old.id] and done.bytes == dry.bytes
        assert not h0.path(old.nodes[0].job_dir).exists() and not orphan.exists() and not part.exists()
        assert {p for p in cas.glob("??/*")} == objects_before - {orphan}  # the jobs still link every other one
        assert h0.path(new.nodes[0].job_dir).exists() and h0.path(e.result.nodes[0].job_dir).exists()
        assert any(ev.kind == "pruned" for ev in c.registry.events(old.id))
        final = c.service.wait(e.result.id, poll=2, timeout=600)
        assert final.state == "succeeded", final.reason

    finally:  # a failed step must not leave jobs holding the shared cluster's cards for later tests
        _cancel_unfinished(ssh_cluster, db, state)

def test_a_card_busy_in_npu_smi_is_skipped_and_named(ssh_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy").mkdir()
    toy = {"mindrecord": tmp_path / "toy" / "t.mindrecord", "tokenizer": tmp_path / "toy" / "tok.model"}
    for p in (*toy.values(), Path(str(toy["mindrecord"]) + ".db")):
        p.write_bytes(b"x")
    job = _job(tmp_path, toy, "busy", 1)
    ssh_cluster.write_npu_config(1, HostSpec(processes={"0": [[4242, "python3.9", 12000]]}))
    try:
        hosts = ssh_cluster.hosts_as_launcher_hosts(slots=4)[1:2]
        s = Submitter(ssh_cluster, tmp_path / "r.sqlite3", tmp_path)
        svc = s.service
        local = svc.hash(svc.local(job, hosts, SubmitOptions(bin_dir=BIN)))
        runners = {h.name: svc.exec_factory(h) for h in local.hosts}
        try:
            pre = svc.preflight(local, runners)
            chosen, busy = svc.allocate(local, pre)
        finally:
            for r in runners.values():
                r.close()
        assert busy is None and chosen.hosts[0].slot_ids == (1, 2)
        with pytest.raises(CardsBusy, match=r"0 held by pid 4242 \(python3\.9\)"):
            svc.allocate(svc.hash(svc.local(job, hosts, SubmitOptions(bin_dir=BIN, devices=(0, 1)))), pre)
        from launcher.ops.probe import CheckPolicy, check_host
        row = check_host(make_exec(hosts[0], options=ConnectOptions(known_hosts=ssh_cluster.known_hosts)),
                         CheckPolicy(), 10)
        assert "pid 4242 (python3.9)" in row.reason, row.reason
    finally:
        ssh_cluster.write_npu_config(1, HostSpec())
