"""``submit``'s tail, shared by the hostfile and the Slurm branch (launcher.cli.live.finish_submit):
follow to the end, fetch, print the job id last — on a real finished job on ``localhost``."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from launcher.cli import environment
from launcher.cli.connect import runner_factory
from launcher.cli.live import finish_submit
from launcher.ops.registry import Registry
from launcher.ops.service import JobService

SPEC = "name: t\nkind: finetune\ntemplate: llama2_7b/finetune_lora.yaml\n"


@pytest.fixture
def finished(tmp_path):
    root = tmp_path / "host" / "alaunch" / "job"
    (root / "msrun_log").mkdir(parents=True)
    (root / "msrun_log" / "worker_0.log").write_text("".join(f"step {i} loss {2.0 - i / 10}\n" for i in range(5)))
    (root / "state" / "node-0").mkdir(parents=True)
    (root / "state" / "node-0" / "exit_code").write_text("0\n")  # what the supervisor leaves at the end
    (root / "config").mkdir()
    (root / "config" / "job.yaml").write_text("model: {}\n")
    registry = Registry(tmp_path / "state" / "registry.sqlite3")
    record = registry.create_job("t", "finetune", spec_text=SPEC, config_text="model: {}\n",
                                 hostfile_text="localhost slots=1\n", nodes=[("localhost", str(root))],
                                 meta={"pythons": {"localhost": sys.executable}}, state="succeeded")
    out, err = io.StringIO(), io.StringIO()
    environment.set_current(environment.Environment(stdout=Console(file=out, width=200),
                                                    stderr=Console(file=err, width=200),
                                                    state_dir=tmp_path / "state", raw=True))
    yield registry, record, root, out, err
    environment.set_current(None)
    registry.close()


def test_fetch_follows_then_fetches_then_prints_the_id_last(finished, tmp_path):
    registry, record, root, out, err = finished
    service = JobService(registry, tmp_path / "state")
    code = finish_submit(registry, record, service, runner_factory(None, None, False), follow=False, fetch=True,
                         fetch_dest=tmp_path / "runs", accept_new=False, verbose=True)
    assert code == 0
    here = tmp_path / "runs" / record.id / "localhost" / "msrun_log" / "worker_0.log"
    assert here.read_bytes() == (root / "msrun_log" / "worker_0.log").read_bytes()
    printed = out.getvalue().splitlines()
    assert printed[-1] == record.id  # the id last, after the followed lines
    assert any("step 4 loss 1.6" in line for line in printed[:-1])  # --fetch implies --follow
    assert f"fetched into {tmp_path / 'runs' / record.id}" in err.getvalue()
    assert f"{record.id}: succeeded" in err.getvalue()


def test_without_follow_or_fetch_only_the_id(finished, tmp_path):
    registry, record, root, out, err = finished
    code = finish_submit(registry, record, JobService(registry, tmp_path / "state"),
                         runner_factory(None, None, False), follow=False, fetch=False,
                         fetch_dest=tmp_path / "runs", accept_new=False)
    assert code == 0 and out.getvalue() == record.id + "\n"
    assert not (tmp_path / "runs").exists()
