"""Shared fixtures. The real SSH cluster fixture lives in tests/cluster/."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.cluster.plugin", "tests.slurm.plugin"]

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path, monkeypatch):
    """Every test gets its own registry/state dir and its own host-wide card claims dir (for
    jobs on this machine; the cluster hosts keep the default): nothing touches the user's, and
    suites running at once do not see each other's claims."""
    monkeypatch.setenv("ALAUNCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ALAUNCH_CARDS_DIR", str(tmp_path / "cards"))
    yield


@pytest.fixture
def run_cli(capsys):
    """Run `alaunch ARGS...` in-process; returns (exit_code, stdout, stderr)."""
    from launcher.cli.app import main

    def _run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run
