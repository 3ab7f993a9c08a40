"""The package works when installed, not only from the source tree.

Builds the wheel the way ``pip install ./alaunch`` does (from a copy of exactly what the
build needs: pyproject.toml, README.md, launcher/, configs/), checks its file list for the
package data (templates, the CPU entry, the host scripts), installs it into a fresh venv
WITHOUT the ``ms`` extra, and runs the README's first commands there, from a directory that
is not the repository and with no PYTHONPATH: ``alaunch render ... --summary`` and
``alaunch plan ...`` on the reference job. The installed output must equal the source
tree's, byte for byte.

Measured here (2 cores, shared; quiet / under a load of 6): wheel build 3–5 / 12 s (pip's
isolated build env from the local wheel cache), venv 0.2 s (no ensurepip: this pip installs
into it with ``--python``), the wheel and its dependencies 11–16 / 35 s (pip's cache and the
configured find-links; nothing is compiled), the commands < 2 s; the whole file 30–70 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_JOB = "jobs/llama3_8b_lora_math.yaml"
HOSTFILE = "hostfiles/one-card"


def _run(argv, cwd, env, timeout=600):
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _clean_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(COLUMNS="100", NO_COLOR="1", **extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel path, venv dir, phase timings): the wheel built and installed into a fresh venv."""
    base = tmp_path_factory.mktemp("install")
    src = base / "alaunch"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "launcher", src / "launcher", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "configs", src / "configs", ignore=ignore)
    env = _clean_env()
    times = {}

    t = time.monotonic()
    dist = base / "dist"
    proc = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)], base, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    times["wheel"] = time.monotonic() - t
    (wheel,) = dist.glob("alaunch-*.whl")

    t = time.monotonic()
    venv_dir = base / "venv"
    venv.EnvBuilder(with_pip=False, clear=True).create(venv_dir)  # ensurepip would add ~4 s
    times["venv"] = time.monotonic() - t

    t = time.monotonic()
    py = venv_dir / "bin" / "python"
    proc = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", str(wheel)], base, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    times["install"] = time.monotonic() - t
    print("\ninstall test phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()))
    return wheel, venv_dir


@pytest.fixture
def workdir(tmp_path):
    """A user's directory outside the repository: the job files and hostfiles, nothing else."""
    shutil.copytree(ROOT / "jobs", tmp_path / "jobs")
    shutil.copytree(ROOT / "hostfiles", tmp_path / "hostfiles")
    return tmp_path


def test_wheel_ships_templates_entry_and_host_scripts(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = sorted(p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml"))
    assert templates, "no templates under configs/"
    missing = [t for t in templates if f"launcher/configs/{t}" not in names]
    assert not missing, f"templates not in the wheel: {missing}"
    for rel in ("entry/run_cpu.py", "entry/cpu_patches.py"):
        assert f"launcher/{rel}" in names
    remote = sorted(p.relative_to(ROOT / "launcher").as_posix() for p in (ROOT / "launcher" / "remote").rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    assert remote and not [r for r in remote if f"launcher/{r}" not in names]


def test_installed_venv_renders_and_plans_the_reference_job(installed, workdir, tmp_path):
    _, venv_dir = installed
    env = _clean_env(ALAUNCH_STATE_DIR=str(tmp_path / "state"))
    py, alaunch = str(venv_dir / "bin" / "python"), str(venv_dir / "bin" / "alaunch")

    # a laptop install: no mindspore, no mindformers, and the package is the installed copy
    probe = _run([py, "-c", "import importlib.util as u, launcher; "
                  "print(u.find_spec('mindspore'), u.find_spec('mindformers'), launcher.__file__)"], workdir, env)
    assert probe.returncode == 0, probe.stderr
    ms, mf, location = probe.stdout.split()
    assert (ms, mf) == ("None", "None")
    assert Path(location).is_relative_to(venv_dir), location

    summary = _run([alaunch, "render", REFERENCE_JOB, "-H", HOSTFILE, "--summary", "--validate"], workdir, env)
    assert summary.returncode == 0, summary.stderr
    assert "llama3-8b-lora-math (finetune) <- llama3_8b/finetune_lora.yaml" in summary.stdout
    assert "mindformers is not installed" in summary.stderr  # the ms layer is skipped, not failed

    plan_args = ["plan", REFERENCE_JOB, "-H", HOSTFILE, "--job-id", "ref-1", "--offline"]
    plan = _run([alaunch, *plan_args], workdir, env)
    assert plan.returncode == 0, plan.stderr
    assert "# node 0: ascend-0" in plan.stdout and "--config" in plan.stdout

    rendered = _run([alaunch, "render", REFERENCE_JOB, "-H", HOSTFILE, "--no-mindformers"], workdir, env)
    assert rendered.returncode == 0, rendered.stderr

    # the same commands from the source tree print the same bytes
    src_env = _clean_env(ALAUNCH_STATE_DIR=str(tmp_path / "state-src"), PYTHONPATH=str(ROOT))
    src = [sys.executable, "-m", "launcher"]
    for installed_out, args in ((summary.stdout, ["render", REFERENCE_JOB, "-H", HOSTFILE, "--summary",
                                                  "--no-mindformers"]),
                                (plan.stdout, plan_args),
                                (rendered.stdout, ["render", REFERENCE_JOB, "-H", HOSTFILE, "--no-mindformers"])):
        ref = _run([*src, *args], workdir, src_env)
        assert ref.returncode == 0, ref.stderr
        assert installed_out == ref.stdout, args


def test_installed_entry_files_are_staged_from_the_venv(installed, workdir, tmp_path):
    """The built-in CPU entry is staged from the installed package; templates are listed."""
    _, venv_dir = installed
    env = _clean_env(ALAUNCH_STATE_DIR=str(tmp_path / "state"))
    code = ("import os; from launcher.core.plan import ENTRY_DIR, BUILTIN_ENTRY_FILES; "
            "from launcher.core.spec import shipped_templates; "
            "print(ENTRY_DIR); print(all(os.path.isfile(os.path.join(ENTRY_DIR, n)) for n in BUILTIN_ENTRY_FILES)); "
            "print(','.join(shipped_templates()))")
    proc = _run([str(venv_dir / "bin" / "python"), "-c", code], workdir, env)
    assert proc.returncode == 0, proc.stderr
    entry_dir, ok, templates = proc.stdout.split("\n")[:3]
    assert Path(entry_dir).is_relative_to(venv_dir) and ok == "True"
    assert "llama3_8b/finetune_lora.yaml" in templates.split(",")
