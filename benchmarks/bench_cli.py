"""How long the CLI takes to start: ``alaunch --help`` and ``alaunch jobs`` against ``python -c pass``.

Each command is a fresh interpreter started exactly as the console script starts it
(``from launcher.cli.app import main; sys.exit(main())``), with this checkout first on the
path; ``jobs`` reads a registry of 20 jobs in a temporary state dir. Reported: the median
wall time of N runs, the median CPU (user+sys) of the child, and the ratio to the baseline
``python -c pass`` measured in the same run (the machine's own interpreter start-up).
``--importtime`` adds what the remaining time is spent importing (``python -X importtime``,
self time summed by top-level package).

Goal (issue 21): both under 0.15 s on the 2-core dev machine. Run:
``.venv/bin/python benchmarks/bench_cli.py [-n 11] [--importtime] [--python VENV/bin/python]``
(``--python``: an installed alaunch, as a user has it: no editable-install finder, no
PYTHONPATH).
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_S = 0.15
CONSOLE_SCRIPT = "import sys; from launcher.cli.app import main; sys.argv[0] = 'alaunch'; sys.exit(main())"


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one run; the command must succeed."""
    cpu0, t0 = child_cpu(), time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall, cpu = time.perf_counter() - t0, child_cpu() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"{argv[2:]} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return wall, cpu


def measure(cases: dict[str, list[str]], env: dict[str, str], n: int) -> dict[str, tuple[float, float, float]]:
    """Median wall, median cpu and fastest wall per case; the cases interleave so load spikes hit
    all of them alike."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for argv in cases.values():  # warm the page cache and the .pyc files
        time_once(argv, env)
    for _ in range(n):
        for name, argv in cases.items():
            samples[name].append(time_once(argv, env))
    return {name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s), min(w for w, _ in s))
            for name, s in samples.items()}


def importtime(argv: list[str], env: dict[str, str], top: int = 8) -> list[tuple[str, float]]:
    """Self import time (s) summed by top-level package, largest first."""
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    by_pkg: collections.Counter[str] = collections.Counter()
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            self_us = int(parts[0].split(":")[1])
        except ValueError:
            continue  # the header line
        name = parts[2].strip()
        package = name.split(".")[0]
        if package == "launcher":
            package = ".".join(name.split(".")[:2])
        by_pkg[package] += self_us
    total = sum(by_pkg.values())
    return [("(all)", total / 1e6)] + [(name, us / 1e6) for name, us in by_pkg.most_common(top)]


def seed_registry(state_dir: Path) -> None:
    from launcher.ops.registry import Registry

    with Registry.in_state_dir(state_dir) as registry:
        for i in range(20):
            rec = registry.create_job(f"job-{i}", "finetune", nodes=[("h1", "/x"), ("h2", "/x")])
            registry.set_state(rec.id, "running")
            registry.set_state(rec.id, "succeeded" if i % 2 else "failed", None if i % 2 else "node 0 exited 1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=11, help="runs per command (median)")
    parser.add_argument("--importtime", action="store_true", help="also show where the import time goes")
    parser.add_argument("--python", metavar="PY",
                        help="time the alaunch installed for this interpreter (e.g. a venv's bin/python made "
                             "with `pip install .`) instead of this checkout on PYTHONPATH")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, ALAUNCH_STATE_DIR=str(Path(tmp) / "state"), NO_COLOR="1")
        if args.python:
            env.pop("PYTHONPATH", None)
        else:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        seed_registry(Path(tmp) / "state")
        py = args.python or sys.executable
        cases = {
            "python -c pass": [py, "-c", "pass"],
            "alaunch --help": [py, "-c", CONSOLE_SCRIPT, "--help"],
            "alaunch jobs": [py, "-c", CONSOLE_SCRIPT, "jobs"],
        }
        results = measure(cases, env, args.n)
        base_wall = results["python -c pass"][0]
        where = f"installed for {py}" if args.python else f"{ROOT} on PYTHONPATH"
        print(f"CLI start-up ({where}), median of {args.n} (wall s, child cpu s, fastest wall s, "
              "wall / python -c pass):")
        failed = []
        for name, (wall, cpu, fastest) in results.items():
            goal = ""
            if name != "python -c pass":
                ok = wall < GOAL_S
                goal = f"  goal < {GOAL_S} s: {'ok' if ok else 'MISSED'}"
                if not ok:
                    failed.append(name)
            print(f"  {name:16s} {wall:6.3f}  {cpu:6.3f}  {fastest:6.3f}  x{wall / base_wall:5.1f}{goal}")
        if args.importtime:
            for name in ("alaunch --help", "alaunch jobs"):
                rows = importtime(cases[name], env)
                print(f"import self time of `{name}` by package (one run, s): "
                      + ", ".join(f"{pkg} {s:.3f}" for pkg, s in rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
