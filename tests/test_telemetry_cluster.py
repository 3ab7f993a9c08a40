"""Telemetry per job over the SSH test cluster: a real 2-card job (real msrun on CPU) on one
host, followed with a 1 s sample period; the npu-smi emulator's cards follow its workers, and
``status --json`` (another process's view: it reads what the follower keeps) has both of the
job's cards, with their HBM and AI Core moving, and none of the host's other cards."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.test_cards_cluster import Submitter, _cancel_unfinished, _job
from tests.test_e2e_local import write_toy_data

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.ms]


class _Notes:
    """A follower's sink that keeps only its notes (the story's telemetry lines among them)."""

    def __init__(self):
        self.notes: list[str] = []

    def line(self, host, rank, text):
        pass

    def progress(self, view):
        pass

    def msrun(self, host, text):
        pass

    def nodes(self, views):
        pass

    def note(self, text):
        self.notes.append(text)


def test_a_running_jobs_status_json_has_its_cards_telemetry(ssh_cluster, tmp_path, monkeypatch, run_cli):
    cluster = ssh_cluster
    monkeypatch.chdir(tmp_path)
    toy = write_toy_data(tmp_path / "toy")
    state = tmp_path / "state"  # ALAUNCH_STATE_DIR (conftest): the CLI's status reads the same
    s = Submitter(cluster, state / "registry.sqlite3", state)
    host = cluster.hosts_as_launcher_hosts(slots=4)[2:3]
    follower = None
    try:
        job = s.submit(_job(tmp_path, toy, "telejob", 40), host)
        assert not isinstance(job, BaseException), job
        cards = job.meta["devices"][host[0].name]
        sink = _Notes()
        def follow():
            try:
                s.service.follow(job, s.service.exec_factory, sink, telemetry_every=1.0)
            except BaseException as exc:  # said in the assertion below
                sink.notes.append(f"follower: {exc!r}")
        follower = threading.Thread(target=follow, daemon=True)
        follower.start()

        rows, seen, end = {}, [], time.monotonic() + 240
        while time.monotonic() < end:  # until its workers have compiled (AI Core > 0 on both cards)
            code, out, err = run_cli("status", job.id, "--json", "--known-hosts", str(cluster.known_hosts))
            got = json.loads(out)
            assert code == 101, (err, got["state"], seen, sink.notes)  # ExitCode.JOB_RUNNING
            assert got["id"] == job.id and got["state"] == "running"
            rows = {(r["host"], r["card"]): r for r in got["telemetry"]}
            if rows:
                seen.append(tuple(r["aicore_pct"]["last"] for r in rows.values()))
            if len(rows) == 2 and all(r["aicore_pct"]["max"] for r in rows.values()):
                break
            time.sleep(2)
        assert sorted(rows) == [(host[0].name, c) for c in sorted(cards)], rows
        for r in rows.values():
            assert r["health"] == "OK" and r["hbm_total_mb"] == 65536 and r["samples"] >= 2, r
            assert r["hbm_used_mb"]["max"] > 3347 and r["aicore_pct"]["max"] > 0, r  # its worker's load
            assert r["power_w"]["min"] <= r["power_w"]["last"] <= r["power_w"]["max"], r
        assert len(set(seen)) > 1, seen  # the values change while it runs
        code, out, _ = run_cli("status", job.id, "--known-hosts", str(cluster.known_hosts))
        assert f"cards on {host[0].name}" in out and "AI Core %" in out, out
    finally:
        _cancel_unfinished(cluster, state / "registry.sqlite3", state)
        if follower is not None:
            follower.join(60)
