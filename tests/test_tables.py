"""Tables that degrade by priority (issue #33): `jobs`, `status`, `hosts check` and pipeline steps
at 80 and 120 columns print one line per row, never cut or split a host name, and show an id either
whole or as a prefix the registry resolves to that job."""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest
from rich.console import Console

from launcher.cli import tables as t
from launcher.ops import registry as reg
from launcher.ops.engine import CheckReport
from launcher.ops.launch import NodeStatus
from launcher.ops.probe import COLUMNS

NOW = dt.datetime(2026, 12, 6, 1, 0, tzinfo=dt.timezone.utc)
QUEUE_REASON = ("cards busy: 10.213.0.10: 0 held by job other-20261206-004000-1a2b (user bob, pid 4242) | "
                "10.213.0.11: 0 held by job other-20261206-004000-1a2b (user bob, pid 4243); wait for them "
                "with --wait, or pick others with --devices / --include")
HOSTS = ("10.213.0.10", "10.213.0.11")


def _render(table, width: int) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(table)
    return out.getvalue().splitlines()


def _body(lines: list[str]) -> list[str]:
    """The data rows (between the header rule and the bottom rule)."""
    start = next(i for i, line in enumerate(lines) if line.startswith("┡"))
    return [line for line in lines[start + 1:] if line.startswith("│")]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("│").split("│")]


def _record(name: str, state: str, minutes: int, reason: str | None = None, kind: str = "finetune",
            token: str = "ab12") -> reg.JobRecord:
    created = NOW - dt.timedelta(minutes=minutes)
    jid = f"{name}-{created:%Y%m%d-%H%M%S}-{token}"
    return reg.JobRecord(id=jid, name=name, kind=kind, state=state, spec_text="", config_text="",
                         config_sha256="", hostfile_text="", created_at=created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                         started_at=None, ended_at=None, reason=reason,
                         nodes=tuple(reg.NodeRecord(i, h) for i, h in enumerate(HOSTS)))


RECORDS = [_record("llama3-8b-lora-squad", "queued", 2, QUEUE_REASON),
           _record("llama3-8b-lora-squad", "succeeded", 40, token="cd34"),
           _record("qwen2-7b-eval", "failed", 300, "node 1 (10.213.0.11) exited with code 1: " + "Traceback " * 20,
                   kind="eval"),
           _record("tiny", "cancelled", 3000, "cancelled by the user")]


@pytest.mark.parametrize("width", [80, 120])
def test_jobs_one_line_per_job_with_ids_that_resolve(width):
    from launcher.cli.commands.jobs import jobs_table

    ids = [r.id for r in RECORDS]
    lines = _render(jobs_table(RECORDS, width, ids=(ids, [r.name for r in RECORDS]), now=NOW), width)
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    rows = _body(lines)
    assert len(rows) == len(RECORDS), "\n".join(lines)  # before: 255 lines for four jobs at 80
    for record, row in zip(RECORDS, rows, strict=False):
        cells = _cells(row)
        shown = cells[0]
        assert [i for i in ids if i.startswith(shown)] == [record.id], (shown, "\n".join(lines))
        assert record.state in cells and "10.213.0.10" in row, row  # state and the host whole
    header = _cells(next(line for line in lines if line.startswith("┃")).replace("┃", "│"))
    ages = [_cells(r)[header.index("age")] for r in rows]
    assert ages == ["2m", "40m", "5h", "2d"], "\n".join(lines)


def test_jobs_ids_whole_when_there_is_room_and_wide_keeps_everything():
    from launcher.cli.commands.jobs import jobs_table

    lines = _render(jobs_table(RECORDS, 160, now=NOW), 160)
    assert all(r.id in "\n".join(lines) for r in RECORDS), "\n".join(lines)
    table = jobs_table(RECORDS, 80, wide=True, now=NOW)
    text = "\n".join(_render(table, 400))
    assert QUEUE_REASON in text and all(r.id in text for r in RECORDS) and "10.213.0.10, 10.213.0.11" in text


@pytest.mark.parametrize("width", [80, 120])
def test_status_one_line_per_node(width):
    from launcher.cli.commands.jobs import status_table

    statuses = [NodeStatus(0, "worker-a.cluster.example.org", "failed", 1, 0, "rank 0: " + "Traceback " * 30),
                NodeStatus(1, "worker-b.cluster.example.org", "succeeded", 0, 0, "")]
    lines = _render(status_table(RECORDS[2], statuses, width), width)
    rows = _body(lines)
    assert len(rows) == 2 and all(len(line) <= width for line in lines), "\n".join(lines)
    assert "worker-a.cluster.example.org" in rows[0] and _cells(rows[0])[3] == "1", rows[0]


@pytest.mark.parametrize("width", [80, 120])
def test_hosts_check_never_splits_a_host(width):
    """At 120 columns `hosts check` split ``10.213.0.10`` into ``10.213.0.1`` / ``0``."""
    from launcher.cli.commands.hosts import _table

    rows = [(h, "yes 0.4 ms", "Debian 12 x86_64", "3.11.2", "2.9.0", "1.9.0", "yes", "8 x 910B (0 busy)",
             "812.4 GiB (/home/alaunch/alaunch)",
             "PASS: ready" if h.endswith("10") else "FAIL: mindformers not importable: No module named "
                                                    "'mindformers.models.llama.llama_tokenizer_fast'")
            for h in HOSTS + ("10.213.0.100",)]
    report = CheckReport("hosts check", COLUMNS, rows, {1})
    lines = _render(_table(report, width), width)
    body = _body(lines)
    assert len(body) == 3 and all(len(line) <= width for line in lines), "\n".join(lines)
    for host, row in zip(HOSTS + ("10.213.0.100",), body, strict=False):
        assert _cells(row)[0] == host, "\n".join(lines)
        assert re.search(r"(PASS|FAIL)", row), row  # the verdict is the last column to go
    verdicts = [r[-1] for r in rows]
    assert t.cut_rows(_table(report, width), "verdict", verdicts) == [1, 2]  # the long FAILs: printed whole below


def test_a_few_hosts_cut_verdicts_are_printed_whole_under_the_table():
    """``hosts check --local`` at 80 columns read "PASS: ok (CPU only: no npu-smi; alaunch u…":
    with few hosts a passed host's cut verdict is printed whole below too; with many, only the
    failed ones' (the table is the overview)."""
    from launcher.cli.commands.hosts import FEW_HOSTS, _table, verdicts_below

    note = ("PASS: ok (CPU only: no npu-smi; alaunch uses 0.14 GiB in its store, 0.59 GiB in 123 job "
            "dir(s); `alaunch prune` frees finished ones)")
    row = ("localhost", "yes 0.0 ms", "Debian 12 x86_64", "3.11.7", "2.9.0", "1.9.0", "yes", "no NPUs (CPU only)",
           "47.6 GiB (/root)", note)
    one = CheckReport("hosts check", COLUMNS, [row], set())
    assert verdicts_below(one, _table(one, 80)) == [f"localhost: {note}"]
    assert verdicts_below(one, _table(one, 400)) == []  # whole in the table: not twice
    many = CheckReport("hosts check", COLUMNS, [(f"h{i}", *row[1:]) for i in range(FEW_HOSTS + 1)], {2})
    assert verdicts_below(many, _table(many, 80)) == [f"h2: {note}"]


@pytest.mark.parametrize("width", [80, 120])
def test_pipeline_steps_one_line_and_copyable_job_ids(width):
    from launcher.cli.pipelineview import steps_table

    jobs = [r.id for r in RECORDS[:3]]
    steps = tuple(reg.StepRecord("p1", name, i, kind, state, job_id=job, attempts=1, reason=reason)
                  for i, (name, kind, state, job, reason) in enumerate([
                      ("train", "job", "succeeded", jobs[0], None),
                      ("eval", "job", "running", jobs[1], None),
                      ("predict", "job", "queued", jobs[2], "waiting for the cards of eval (" + "x " * 60 + ")"),
                      ("score", "score", "blocked", None, "needs predict")]))
    run = reg.PipelineRecord("llama3-8b-math-20261206-005800-9f9f", "llama3-8b-math", "p.yaml", "running",
                             "2026-12-06T00:58:00Z", steps=steps)
    lines = _render(steps_table(run, width, ids=(jobs, [])), width)
    body = _body(lines)
    assert len(body) == 4 and all(len(line) <= width for line in lines), "\n".join(lines)
    for job, row in zip(jobs, body, strict=False):
        shown = _cells(row)[3]
        assert "…" not in shown and [j for j in jobs if j.startswith(shown)] == [job], "\n".join(lines)


def test_unique_prefixes_are_unique_and_never_a_job_name():
    ids = ["tiny-20261206-010000-aaaa", "tiny-20261206-010000-aaab", "tiny-20261206-020000-aaaa", "other-1"]
    got = t.unique_prefixes(ids, ids, names=["other-1"[:8]])
    for ident, prefix in got.items():
        assert [i for i in ids if i.startswith(prefix)] == [ident]
    assert got["tiny-20261206-010000-aaaa"] == "tiny-20261206-010000-aaaa"
    assert got["tiny-20261206-020000-aaaa"] == "tiny-20261206-02"
    assert t.cut_middle("abcdefghij", 7) == "abc…hij"


@pytest.mark.parametrize("width", [80, 120])
def test_plan_lines_are_never_broken_by_the_width(run_cli, tmp_path, monkeypatch, width):
    """plan prints the exact lines: rich must not wrap them at the terminal's width (a host or a
    flag split over two lines could not be pasted)."""
    from pathlib import Path

    monkeypatch.setenv("COLUMNS", str(width))
    root = Path(__file__).resolve().parent.parent
    hf = tmp_path / "hosts"
    hf.write_text("worker-a.cluster.example.org slots=2\nworker-b.cluster.example.org slots=2\n")
    code, out, err = run_cli("plan", str(root / "jobs" / "tiny_lora_cpu.yaml"), "-H", str(hf), "--offline",
                             "--set", "nodes=all", "--job-id", "a-very-long-job-id-20261206-010000-abcd")
    assert code == 0, err
    assert "#   node 1 (worker-b.cluster.example.org): 0,1 - first 2 (host not asked: --offline)" in out.splitlines()
    assert any(line.strip().startswith("--master_addr=worker-a.cluster.example.org") or
               " --master_addr=worker-a.cluster.example.org " in line for line in out.splitlines()), out
