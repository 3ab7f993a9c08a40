"""The dashboard at scale, without a browser: the jobs list paged, searched and counted in SQL
(every job findable among thousands), pushed without ages (the browser counts them) and
without following finished jobs; a job's stream encoded once for every viewer and its
progress pushed in it; curves downsampled on the server, full resolution in a zoomed range."""

from __future__ import annotations

import json

from launcher.ops import registry as reg
from launcher.ui import data
from tests.test_ui import CONFIG_A, Served, served  # noqa: F401 - the fixture server

N_JOBS = 260  # more than the 200 the list used to read


def _many(state_dir, n: int = N_JOBS) -> list[str]:
    ids = []
    with reg.Registry.in_state_dir(state_dir) as r:
        for i in range(n):
            rec = r.create_job(f"job{i:04d}", "finetune", config_text=CONFIG_A, hostfile_text="localhost slots=1\n",
                               nodes=["localhost"], state=reg.PENDING)
            r.set_state(rec.id, reg.CANCELLED if i % 2 else reg.FAILED, None)
            ids.append(rec.id)
    return ids


def test_registry_pages_searches_and_counts_in_sql(tmp_path):
    ids = _many(tmp_path, 30)
    with reg.Registry.in_state_dir(tmp_path) as r:
        page, total = r.page(10, 0)
        assert total == 30 and [x.id for x in page] == ids[::-1][:10]
        page, total = r.page(10, 25)
        assert [x.id for x in page] == ids[::-1][25:]
        page, total = r.page(10, 0, [reg.FAILED], "JOB001")  # case-insensitive, name or id
        assert total == 5 and {x.name for x in page} == {f"job00{i}" for i in (10, 12, 14, 16, 18)}
        assert r.page(5, 0, None, ids[3])[0][0].id == ids[3]


def test_the_oldest_of_many_jobs_is_found_and_the_list_is_paged(served, tmp_path):  # noqa: F811
    ids = _many(tmp_path / "state")
    code, headers, body = served.request("/api/jobs?q=job0000")
    assert code == 200 and [r["id"] for r in json.loads(body)] == [ids[0]] and {k.lower(): v for k, v in headers.items()}["x-total-count"] == "1"
    code, headers, body = served.request("/api/jobs?state=failed&offset=100&limit=50")
    rows = json.loads(body)
    assert {k.lower(): v for k, v in headers.items()}["x-total-count"] == str(N_JOBS // 2) and len(rows) == 30
    assert all(r["state"] == "failed" for r in rows) and rows[-1]["id"] == ids[0]
    assert "age_s" not in rows[0] and rows[0]["created_at"]  # the browser counts ages
    assert served.request("/api/jobs?state=nope")[0] == 400
    assert served.hub._watches == {}  # finished jobs are not followed to be listed


def test_a_pushed_page_says_the_total_and_the_servers_clock(served, tmp_path):  # noqa: F811
    import urllib.request
    _many(tmp_path / "state", 5)
    req = urllib.request.Request(f"{served.base}/api/jobs/stream?q=job000&limit=2&token={served.token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        for raw in r:
            if raw.startswith(b"data: "):
                m = json.loads(raw[6:])
                break
    assert m["type"] == "jobs" and m["total"] == 5 and len(m["jobs"]) == 2 and m["now"] > 0


def test_list_query_refuses_bad_input_in_one_line():
    assert data.list_query({"state": "active"}, 100)[0] == [s for s in reg.JOB_STATES if s not in reg.TERMINAL]
    assert data.list_query({"limit": "100000"}, 100)[3] == 200
    for bad in ({"state": "bogus"}, {"offset": "x"}):
        try:
            data.list_query(bad, 100)
        except Exception as exc:  # noqa: BLE001 - the one error the page shows
            assert "\n" not in str(exc)
        else:
            raise AssertionError(bad)
