"""The package's layering (docs/architecture.md), checked on the real import graph.

- import-linter's contracts in pyproject.toml: cli > ops > (runners | metrics | remote) >
  (core | data) > errors; host-side code imports nothing else of launcher; nothing below the
  views (cli, ui) imports rich; no verb imports another verb. One test shows the contracts catch a violation planted in a copy.
- No import cycles between modules (grimp's graph, every import statement, lazy ones too).
- Only ``cli`` prints: no ``print()``, ``console.print``, ``sys.stdout.write`` or ``Console()``
  elsewhere, except the code that runs on the hosts (``remote``, ``entry``), whose output
  is its answer.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"]


def lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(LINT + ["--config", str(cwd / "pyproject.toml"), "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_import_contracts_are_kept():
    res = lint(ROOT)
    assert res.returncode == 0 and "0 broken" in res.stdout, res.stdout + res.stderr


def test_contracts_catch_a_core_module_importing_ops(tmp_path):
    shutil.copytree(ROOT / "launcher", tmp_path / "launcher", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    plan = tmp_path / "launcher" / "core" / "plan.py"
    plan.write_text(plan.read_text() + "\nfrom launcher.ops import registry  # planted\n")
    verb = tmp_path / "launcher" / "cli" / "commands" / "jobs.py"
    verb.write_text(verb.read_text() + "\nfrom launcher.cli.commands import submit  # planted\n")
    follow = tmp_path / "launcher" / "ops" / "follow.py"
    follow.write_text(follow.read_text() + "\nfrom rich.text import Text  # planted\n")
    res = lint(tmp_path)
    assert res.returncode != 0
    assert "launcher.core.plan -> launcher.ops.registry" in res.stdout
    assert "launcher.cli.commands.jobs -> launcher.cli.commands.submit" in res.stdout
    assert "launcher.ops.follow -> rich" in res.stdout
    assert "3 broken" in res.stdout, res.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_import_cycles_between_modules():
    graph = grimp.build_graph("launcher")
    assert len(graph.modules) > 50
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_planted_cycle():
    graph = grimp.ImportGraph()
    for m in ("p.a", "p.b", "p.c"):
        graph.add_module(m)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [["p.a", "p.b", "p.c"]]


PRINTING = {"print", "sys.stdout.write", "sys.stderr.write", "Console"}


def printing_calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name in PRINTING or name.endswith("console.print"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    return found


def test_only_cli_prints():
    found = []
    for path in sorted((ROOT / "launcher").rglob("*.py")):
        if path.relative_to(ROOT / "launcher").parts[0] in ("cli", "remote", "entry"):
            continue
        found += printing_calls(path)
    assert found == []
    assert printing_calls(ROOT / "launcher" / "cli" / "logview.py")  # the check sees a real print


PROCESS_STATE = ("os.chdir(", "os.dup2(", "os.putenv(", "os.environ[", "os.environ.setdefault(", "os.environ.update(",
                 "os.environ.pop(", "os.unsetenv(", "sys.stdout =", "sys.stderr =")


def test_core_leaves_the_process_alone():
    """core/ is pure: nothing there changes the process's cwd, fds or environment (pipeline
    steps run in threads of one process; MindFormers' validation once did all three)."""
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for path in sorted((ROOT / "launcher" / "core").rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if any(call in line for call in PROCESS_STATE)]
    assert not found, found
