"""What `alaunch` imports to start: a verb loads its own stack only when it runs.

The time goal itself (< 0.15 s for `--help` and `jobs`) is measured by
benchmarks/bench_cli.py; these tests pin the cause, which does not depend on the machine's
load: the modules a fresh interpreter has imported after a command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.cli.app import _verb_modules, _verb_of

ROOT = Path(__file__).resolve().parent.parent

# The stacks of other verbs, and what `jobs` and `--help` never need.
HEAVY = ("paramiko", "fabric", "invoke", "numpy", "mindspore", "mindformers", "yaml",
         "launcher.ops.service", "launcher.ops.collect", "launcher.ops.stage", "launcher.runners",
         "launcher.core.spec", "launcher.core.render", "launcher.data.pipeline")


def imported_after(*argv: str, tmp_path: Path) -> set[str]:
    code = ("import sys\nfrom launcher.cli.app import main\ncode = main(sys.argv[1:])\n"
            "import json; print(json.dumps(sorted(sys.modules)), file=sys.__stderr__); sys.exit(code)")
    env = dict(os.environ, PYTHONPATH=str(ROOT), ALAUNCH_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stderr.strip().splitlines()[-1]))


def loaded(modules: set[str], names) -> list[str]:
    return [n for n in names if n in modules or any(m.startswith(n + ".") for m in modules)]


def test_jobs_loads_only_its_own_stack(tmp_path):
    modules = imported_after("jobs", tmp_path=tmp_path)
    assert "launcher.cli.commands.jobs" in modules and "launcher.ops.registry" in modules
    assert loaded(modules, HEAVY) == []
    # other verbs' modules are not even imported
    assert loaded(modules, ["launcher.cli.commands.logs", "launcher.cli.commands.score",
                            "launcher.cli.commands.render"]) == []


def test_help_lists_every_verb_without_their_stacks(tmp_path):
    modules = imported_after("--help", tmp_path=tmp_path)
    verbs = [m for m in modules if m.startswith("launcher.cli.commands.")]
    assert len(verbs) == len(_verb_modules(None)) >= 10
    assert loaded(modules, HEAVY + ("launcher.ops", "pydantic", "sqlite3", "rich.table", "launcher.metrics.mathacc",
                                    "launcher.metrics.logparse", "launcher.data.families")) == []


@pytest.mark.parametrize("argv, verb", [
    (["jobs", "-n", "3"], "jobs"),
    (["--state-dir", "/tmp/x", "status", "j1"], "status"),
    (["--version"], None),
    ([], None),
    (["-h"], None),
])
def test_the_verb_is_the_first_word_after_root_options(argv, verb):
    assert _verb_of(argv) == verb


def test_a_verb_named_like_its_module_loads_that_module_alone_else_all():
    everything = _verb_modules(None)
    assert "jobs" in everything and "score" in everything
    assert _verb_modules("jobs") == ["jobs"]
    assert _verb_modules("status") == everything  # registered by jobs.py: load all, click finds it
    assert _verb_modules("nope") == everything  # click's "No such command ... Did you mean" needs all
    assert _verb_modules("__init__") == everything


def test_a_verb_from_another_module_still_runs(run_cli):
    code, _, err = run_cli("status", "no-such-job")
    assert code == 2 and "no job 'no-such-job'" in err
