"""`alaunch top` over the SSH test cluster: a real 2-card job (real msrun on CPU) on one host;
the npu-smi emulator's cards follow its workers, and top names the job as their holder with
changing load; a host that does not answer (a closed port) reads unreachable, the others
still answer in the same refresh."""

from __future__ import annotations

import json
import time

import pytest

from tests.test_cards_cluster import BIN, Submitter, _cancel_unfinished, _job
from tests.test_e2e_local import write_toy_data

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.ms]


def test_top_follows_a_running_job_and_names_an_unreachable_host(ssh_cluster, tmp_path, monkeypatch, run_cli):
    cluster = ssh_cluster
    monkeypatch.chdir(tmp_path)
    toy = write_toy_data(tmp_path / "toy")
    hf = tmp_path / "hosts"
    hf.write_text(cluster.hostfile_text(slots=4) + f"{cluster.gateway} port=1 slots=4 user=root\n")
    db, state = tmp_path / "state" / "r.sqlite3", tmp_path / "state"
    s = Submitter(cluster, db, state)
    host = cluster.hosts_as_launcher_hosts(slots=4)[1:2]
    try:
        job = s.submit(_job(tmp_path, toy, "topjob", 40), host)
        assert not isinstance(job, BaseException), job
        cards = job.meta["devices"][host[0].name]

        def look():
            code, out, err = run_cli("top", "-H", str(hf), "--json", "--known-hosts", str(cluster.known_hosts),
                                     "--bin-dir", BIN, "--timeout", "20")
            assert code == 0, err
            return {h["host"]: h for h in json.loads(out)["hosts"]}

        seen, end = [], time.monotonic() + 240
        while time.monotonic() < end:  # until its workers have compiled (AI Core > 0 on both cards)
            view = look()[host[0].name]
            rows = {c["card"]: c for c in view["cards"]}
            seen.append([rows[c]["aicore_pct"] for c in cards])
            if all(rows[c]["aicore_pct"] for c in cards) and len(seen) > 2:
                break
            time.sleep(2)
        assert all(rows[c]["holder"]["job_id"] == job.id and rows[c]["holder"]["user"] == "root" for c in cards), rows
        assert all(rows[c]["hbm_used_mb"] > 3347 for c in cards), rows  # its workers' HBM
        others = [c for c in rows if c not in cards]
        assert all(rows[c]["holder"] is None and rows[c]["aicore_pct"] == 0 for c in others), rows
        assert len({tuple(x) for x in seen}) > 1, seen  # the values change while it runs

        views = look()
        assert not views[cluster.gateway]["reachable"] and views[cluster.gateway]["error"], views[cluster.gateway]
        assert all(views[h.address]["reachable"] for h in cluster.hosts) and views[cluster.hosts[0].address]["free"]
    finally:
        _cancel_unfinished(cluster, db, state)
