"""One engine interface, one chooser (launcher/ops/engines.py).

- No module but the chooser looks at which kind a target or a job is: no import of an
  engine's own modules, no test of the record's engine key or an engine's name, no
  ``isinstance`` on an engine or a target class (the engine's own module may know its own).
  Planted kind tests in a copy are found, so the check can fail.
- The ``-H`` file is read once: ``-H <(grep ascend hostfile)`` (a pipe) works.
- A registry with jobs of both engines: each record gets its own engine.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import yaml

from launcher.ops import engines

ROOT = Path(__file__).resolve().parents[1]
CHOOSER = "launcher/ops/engines.py"
# an engine's own modules: they may name their kind and their classes
OWN = {"launcher/ops/slurm.py": {"SlurmService", "SlurmTarget"}, "launcher/core/slurm.py": {"SlurmTarget"},
       "launcher/ops/service.py": {"JobService", "HostTarget"}, "launcher/ops/engine.py": {"HostTarget"}}
CLASSES = {"SlurmService", "SlurmTarget", "JobService", "HostTarget", "Engine"}
WORDS = {engines.RECORD_KEY, "slurm:"} | {k for k in engines.ENGINES if k != engines.HOSTS}


def kind_tests(rel: str, text: str) -> list[str]:
    """Where ``text`` (the module at ``rel``) tests which engine a target or a job is."""
    found = []
    own = OWN.get(rel, set())
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in WORDS \
                and rel not in OWN:
            found.append(f"{rel}:{node.lineno}: names the engine kind {node.value!r}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance" \
                and len(node.args) == 2:
            names = {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node.args[1])
                     if isinstance(n, (ast.Name, ast.Attribute))}
            for cls in sorted((names & CLASSES) - own):
                found.append(f"{rel}:{node.lineno}: isinstance on {cls}")
    return found


def package_kind_tests(root: Path) -> list[str]:
    found = []
    for path in sorted((root / "launcher").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == CHOOSER or rel.startswith(("launcher/remote/", "launcher/entry/")):
            continue
        found += kind_tests(rel, path.read_text(encoding="utf-8"))
    return found


def test_no_module_but_the_chooser_tests_the_kind():
    assert package_kind_tests(ROOT) == []


def test_only_the_slurm_engine_imports_its_modules():
    """Every import statement (lazy ones too): the Slurm engine's modules are imported by the
    Slurm engine alone; the chooser names engines by import path."""
    graph = grimp.build_graph("launcher")
    assert graph.find_modules_that_directly_import("launcher.ops.slurm") == set()
    assert graph.find_modules_that_directly_import("launcher.core.slurm") == {"launcher.ops.slurm"}
    assert not graph.find_modules_that_directly_import("launcher.ops.service") & {
        m for m in graph.modules if m.startswith("launcher.ops.slurm")}


def test_a_planted_kind_test_is_found():
    planted = ('def job_targets(record):\n'
               '    if record.meta.get("backend") == "slurm":\n'
               '        return 1\n'
               '    return isinstance(record, SlurmTarget)\n')
    found = " | ".join(sorted(kind_tests("launcher/ops/collect.py", planted)))
    assert found == ("launcher/ops/collect.py:2: names the engine kind 'backend' | "
                     "launcher/ops/collect.py:2: names the engine kind 'slurm' | "
                     "launcher/ops/collect.py:4: isinstance on SlurmTarget")


def _job(tmp_path: Path) -> Path:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "tiny", "kind": "finetune", "template": "tiny_llama_cpu/finetune.yaml",
                                   "entry": {"script": "alaunch:run_cpu"}, "nodes": "all",
                                   "cards_per_node": "all"}))
    return job


def test_the_hostfile_is_read_once_so_a_pipe_works(tmp_path):
    """``-H <(grep ascend hostfiles/all)``: before, the kind was sniffed by reading the file
    and the hosts by reading it again, which found the pipe empty ('no hosts in hostfile')."""
    (tmp_path / "all").write_text("ascend-0 slots=4\ngpu-0 slots=8\nascend-1 slots=4\n")
    job = _job(tmp_path)
    cli = f"{sys.executable} -m launcher"
    res = subprocess.run(["bash", "-c", f"{cli} render {job} -H <(grep ascend {tmp_path}/all) --no-mindformers "
                          f"--summary && {cli} plan {job} -H <(grep ascend {tmp_path}/all) --offline"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "8 (2 node(s) x 4 card(s))" in res.stdout
    assert "ascend-0" in res.stdout and "ascend-1" in res.stdout and "gpu-0" not in res.stdout


def test_read_target_picks_by_content_and_refuses_filters_on_a_scheduler(tmp_path):
    import pytest

    from launcher.errors import InputError
    hf = tmp_path / "h"
    hf.write_text("# hosts\nh0 slots=2\nh1 slots=2\n")
    target = engines.read_target(hf, include="h1")
    assert [h.name for h in target.node_hosts()] == ["h1"] and [h.name for h in target.full] == ["h0", "h1"]
    t = tmp_path / "t"
    t.write_text("slurm:\n  login: login01\n  nodes: 2\n  cards_per_node: 4\n  workdir: /shared/w\n")
    target = engines.read_target(t)
    assert engines.engine_class(target.engine).name == "slurm"
    assert [h.name for h in target.stage_hosts()] == ["login01"] and len(target.node_hosts()) == 2
    with pytest.raises(InputError, match="--include filters a hostfile's hosts"):
        engines.read_target(t, include="n1")
    local = engines.read_target(None, slots=2)
    assert engines.engine_class(local.engine).name == "hosts" and local.node_hosts()[0].is_local


def test_each_record_gets_the_engine_that_ran_it(tmp_path):
    from launcher.core.hostfile import Host, format_hostfile
    from launcher.ops import registry as reg
    from launcher.ops.service import JobService
    from launcher.ops.slurm import SlurmService
    with reg.Registry(tmp_path / "r.sqlite3") as r:
        ssh = r.create_job("a", "finetune", hostfile_text=format_hostfile([Host("h0", 1)]), nodes=["h0"])
        slurm = r.create_job("b", "finetune", hostfile_text=format_hostfile([Host("login01", 1)]),
                             nodes=[("n1", "/s/b")], meta={**engines.record_meta(SlurmService(r, tmp_path)),
                                                           "root": "/s/b"})
        assert type(engines.engine_of(r.get(ssh.id), r, tmp_path)) is JobService
        assert type(engines.engine_of(r.get(slurm.id), r, tmp_path)) is SlurmService
        assert engines.log_view(r.get(ssh.id)) == r.get(ssh.id)
        assert [n.host for n in engines.log_view(r.get(slurm.id)).nodes] == ["login01"]
        odd = r.create_job("c", "finetune", nodes=["h0"], meta={engines.RECORD_KEY: "k8s"})
        import pytest

        from launcher.errors import InputError
        with pytest.raises(InputError, match="engine 'k8s'"):
            engines.engine_of(r.get(odd.id), r, tmp_path)
