"""Two people, one host (real sshd, real msrun on CPU; the realistic cluster's login users).

Each user has their own workdir (their home), so the per-workdir claims of the release before
never met: both 2-card jobs got cards 0,1. With the host-wide claims dir they get disjoint
cards; a third user is refused in one line naming both holders and their users, and its
`plan` shows them; `top --json`
over the hosts names every card's holder; a job killed with SIGKILL frees its cards at once
(its supervisor's pid + start time were noted in its claim).
"""

from __future__ import annotations

import json
import threading

import pytest

from launcher.core.cards import CardsBusy
from launcher.errors import ExitCode
from tests.cluster.cluster import OTHER_USERS, USER
from tests.test_cards_cluster import BIN, Submitter, _cancel_unfinished, _job
from tests.test_e2e_local import write_toy_data

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.ms]

KILL = """
import os, signal, sys
want = ("ALAUNCH_JOB_ID=" + sys.argv[1]).encode()
for pid in os.listdir("/proc"):
    try:
        env = open("/proc/%s/environ" % pid, "rb").read().split(b"\\0")
    except OSError:
        continue
    if pid.isdigit() and want in env:
        os.kill(int(pid), signal.SIGKILL)
"""


def _hostfile(cluster, tmp_path, user: str):
    h = cluster.hosts[0]
    path = tmp_path / f"hosts-{user}"
    path.write_text(f"{h.address} slots=4 user={user} identity={cluster.client_key}\n")
    return path, cluster.hosts_as_launcher_hosts(slots=4, user=user)[:1]


def test_two_users_get_disjoint_cards_a_third_is_refused_top_names_all_a_killed_job_frees(
        real_cluster, tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    toy = write_toy_data(tmp_path / "toy")
    (second, _), (third, _) = OTHER_USERS
    db, state = tmp_path / "state" / "r.sqlite3", tmp_path / "state"
    a, b = Submitter(real_cluster, db, state), Submitter(real_cluster, db, state)
    hosts = {u: _hostfile(real_cluster, tmp_path, u) for u in (USER, second, third)}
    try:
        ta = threading.Thread(target=a.submit, args=(_job(tmp_path, toy, "ua", 40), hosts[USER][1]))
        tb = threading.Thread(target=b.submit, args=(_job(tmp_path, toy, "ub", 40), hosts[second][1]))
        ta.start(), tb.start()
        ta.join(180), tb.join(180)
        assert not isinstance(a.result, BaseException) and not isinstance(b.result, BaseException), (a.result, b.result)
        name = hosts[USER][1][0].name
        devs = sorted([a.result.meta["devices"][name], b.result.meta["devices"][name]])
        assert devs == [[0, 1], [2, 3]]  # disjoint, although each user has their own workdir

        c = Submitter(real_cluster, db, state)
        refused = c.submit(_job(tmp_path, toy, "uc", 1), hosts[third][1])
        assert isinstance(refused, CardsBusy) and refused.exit_code == ExitCode.CARDS_BUSY
        assert f"job {a.result.id} (user {USER})" in refused.message, refused.message
        assert f"job {b.result.id} (user {second})" in refused.message and "\n" not in refused.message

        # top as the third user: every card of the host, each holder with its user and job
        code, out, err = run_cli("top", "-H", str(hosts[third][0]), "--json",
                                 "--known-hosts", str(real_cluster.known_hosts), "--bin-dir", BIN)
        assert code == 0, err
        [view] = json.loads(out)["hosts"]
        held = {c["card"]: (c["holder"] or {}) for c in view["cards"]}
        assert len(held) == 8 and view["free"] == [4, 5, 6, 7], view
        want = {card: (r.result.id, user) for r, user in ((a, USER), (b, second))
                for card in r.result.meta["devices"][name]}  # who won 0,1 is the race's
        for card, (job, user) in want.items():
            assert (held[card]["job_id"], held[card]["user"]) == (job, user) and held[card]["pid"], held[card]
        freed = a.result.meta["devices"][name]

        # the third user's plan shows who holds what, any user's
        code, out, err = run_cli("plan", str(_job(tmp_path, toy, "up", 1)), "-H", str(hosts[third][0]),
                                 "--known-hosts", str(real_cluster.known_hosts), "--bin-dir", BIN)
        assert code == 0, err
        devices = next(line for line in out.splitlines() if line.startswith("#   node 0"))
        assert "busy now" in devices and f"(user {USER})" in devices and f"(user {second})" in devices, devices

        # the first user's job is killed outright (no cancel, no exit code): its cards are free now
        res = real_cluster.exec_on(0, ["python3", "-c", KILL, a.result.id])
        assert res.returncode == 0, res.stderr
        d = Submitter(real_cluster, db, state)
        got = d.submit(_job(tmp_path, toy, "ud", 1), hosts[third][1])
        assert not isinstance(got, BaseException), got
        assert got.meta["devices"][name] == freed
    finally:
        _cancel_unfinished(real_cluster, db, state)
