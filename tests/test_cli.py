from launcher import __version__
from launcher.errors import ExitCode, InputError


def test_version(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0
    assert out.strip() == f"alaunch {__version__}"


def test_help_lists_verbs_with_one_line_help(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0
    assert "Usage: alaunch" in out
    assert "--state-dir" in out


def test_unknown_verb_is_a_usage_error(run_cli):
    code, out, err = run_cli("no-such-verb")
    assert code == ExitCode.USAGE
    assert "no-such-verb" in err


def test_input_error_names_file_line_and_key():
    err = InputError("slots must be >= 1, got 0", source="hostfiles/x", line=3)
    assert str(err) == "hostfiles/x:3: slots must be >= 1, got 0"
    assert err.exit_code == ExitCode.USAGE
    err = InputError("unknown key", source="jobs/a.yaml", key="overrides.model")
    assert str(err) == "jobs/a.yaml: overrides.model: unknown key"


def test_status_table_keeps_node_host_state_at_80_columns():
    """`status` piped (80 columns) used to collapse host/node/state to nothing (┏┳┳┳┳┳━━━ detail);
    now each node is one line and a cut detail is printed whole below the table."""
    import io

    from rich.console import Console

    from launcher.cli.commands.jobs import status_table
    from launcher.ops.launch import NodeStatus
    from launcher.ops.registry import JobRecord

    record = JobRecord(id="fail1-20261130-040000-abcd", name="fail1", kind="finetune", state="running",
                       spec_text="", config_text="", config_sha256="", hostfile_text="",
                       created_at="", started_at=None, ended_at=None, reason=None)
    statuses = [NodeStatus(0, "10.213.0.10", "running", None, 3, "rank 0: step 12/400, loss 1.29; " * 4),
                NodeStatus(1, "10.213.0.11", "unknown", None, 0, "unreachable since 10:02:03 (connect timed out "
                           "after 10 s: no route to host 10.213.0.11 port 22)")]
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(status_table(record, statuses))
    text = out.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    for value in ("10.213.0.10", "10.213.0.11", "running", "unknown"):
        assert value in text, text
    assert "unreachable" in text and "10:02:03" in text  # the detail's start
    assert len(text.splitlines()) == 7, text  # title, top rule, header, rule, 2 rows, bottom: one line each
    from launcher.cli.commands.jobs import cut_details
    assert cut_details(statuses, status_table(record, statuses))[1] == "node 1 (10.213.0.11): " + statuses[1].detail


def test_status_names_a_straggler_from_the_running_hosts_tails(run_cli, monkeypatch):
    """`status` reads each running host's log tails in its one round trip: a rank 50 % slower than
    the others is named under the table; an even job names none."""
    import contextlib

    from launcher.cli import connect
    from launcher.ops.launch import NodeStatus
    from launcher.ops.registry import JobRecord

    def tails(ms: int) -> list[str]:
        return [f"2025-03-02 10:00:00,000 - mindformers[callback.py:1] - INFO - {{ Epoch:[  1/  1], "
                f"step:[{s:5d}/  200], loss: 2.0, per_step_time: {ms}ms, lr: 1e-05" for s in range(1, 30)]

    record = JobRecord(id="slow-20261130-040000-abcd", name="slow", kind="finetune", state="running",
                       spec_text="", config_text="", config_sha256="", hostfile_text="",
                       created_at="", started_at=None, ended_at=None, reason=None)
    for slow_ms, named in ((1500, True), (1000, False)):
        statuses = [NodeStatus(0, "n0", "running", None, 3, "", {"0": tails(1000)}),
                    NodeStatus(1, "n1", "running", None, 3, "", {"1": tails(slow_ms)})]
        service = type("S", (), {"refresh": lambda self, ref, st=statuses: (record, st)})()
        monkeypatch.setattr(connect, "job_service",
                            lambda *a, service=service, **k: (contextlib.nullcontext(), service))
        code, out, _ = run_cli("status", "slow")
        assert ("straggler: rank 1 on n1 is 50 % slower than the median for 28 steps" in out) is named, out
