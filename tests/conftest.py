"""Shared fixtures. The real SSH cluster fixture lives in tests/cluster/."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.cluster.plugin", "tests.slurm.plugin"]

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# A test that asks for a test cluster carries its marker, whether or not its module says so: the
# fast layer (`make test-fast`, -m 'not cluster and not slurm ...') then never starts a cluster.
CLUSTER_FIXTURES = {"ssh_cluster": "cluster", "real_cluster": "cluster", "cluster_sshd": "cluster",
                    "slurm_cluster": "slurm", "slurm_env": "slurm"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture in CLUSTER_FIXTURES.keys() & set(getattr(item, "fixturenames", ())):
            item.add_marker(CLUSTER_FIXTURES[fixture])


def write_exit_code(state_dir: Path, code: int) -> None:
    """End a node as its supervisor does (remote/launch.py): ``exit_code`` written under a temp
    name and renamed, so a follower polling the directory never reads it empty. A plain
    ``write_text`` races it: under load the follower read "" and the node ended with no code."""
    tmp = Path(state_dir) / "exit_code.tmp"
    tmp.write_text(f"{code}\n")
    tmp.replace(Path(state_dir) / "exit_code")


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path, monkeypatch):
    """Every test gets its own registry/state dir and its own host-wide card claims dir (for
    jobs on this machine; the cluster hosts keep the default): nothing touches the user's, and
    suites running at once do not see each other's claims."""
    monkeypatch.setenv("ALAUNCH_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ALAUNCH_CARDS_DIR", str(tmp_path / "cards"))
    yield


@pytest.fixture
def tiny_job(tmp_path) -> Path:
    """jobs/tiny_lora_cpu.yaml with its local inputs made in tmp_path (stand-in bytes): render and
    plan hash the inputs, and build/demo/ exists only after `make demo`, so a test that read the
    shipped file passed or failed by the order the suite ran in."""
    data = tmp_path / "demo-data"
    data.mkdir()
    (data / "train.mindrecord").write_bytes(b"stand-in mindrecord")
    (data / "tokenizer.model").write_bytes(b"stand-in tokenizer")
    job = tmp_path / "tiny_lora_cpu.yaml"
    job.write_text((ROOT / "jobs" / "tiny_lora_cpu.yaml").read_text().replace("../build/demo/", f"{data}/"))
    return job


@pytest.fixture
def run_cli(capsys):
    """Run `alaunch ARGS...` in-process; returns (exit_code, stdout, stderr)."""
    from launcher.cli.app import main

    def _run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return _run
