# The README's two commands: `make demo` and `make test`. Both set up what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.alaunch-installed

.PHONY: setup demo test test-fast lint test-deps bench-deps bench cluster-up cluster-down slurm-up slurm-down clean

# The venv with the package, the `ms` extra (mindspore 2.9.0 + mindformers 1.9.0, which
# bring msrun), the `ui` extra (the dashboard's server) and the test tools. Re-run when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[ms,test,ui]' 2>&1 | grep -v '^WARNING: Location' || true
	@$(PY) -c 'import launcher, mindspore, mindformers, starlette, uvicorn' 2>/dev/null >/dev/null
	@touch $(STAMP)

setup: $(STAMP)

# openssh-server, rsync and iproute2 for the real SSH test cluster, slurm-wlm and munge for the
# real Slurm one, chromium + chromedriver for the dashboard's browser tests, installed when missing.
test-deps:
	@scripts/install-test-deps

# Lint, then the whole suite, slow end-to-end tests included (this is what CI runs). Two workers,
# a test file each at a time (--dist loadfile: a module's shared job or cluster stays in one
# worker; each worker brings up its own SSH and Slurm test clusters, on their own subnets). Most of
# an end-to-end test's wall time is waiting (sshd, slurmctld, msrun's cluster forming), so two
# overlap: 1,095 tests in 23 min where one worker took 40 min, both at a load of 10-18 from other
# sessions (one worker took 21 min on a quiet CI machine); 1,287 tests in 12.8 min at a low load.
test: $(STAMP) test-deps lint
	$(PY) -m pytest -n 2 --dist loadfile

# The layer a developer runs on every save: pure and local tests only, no cluster, no msrun, no
# browser (the markers are in pyproject.toml; tests/conftest.py marks every test that asks for a
# test cluster). Two workers: most of its wall time is tests waiting on subprocesses and timers,
# so 2 workers on 2 cores: 716 tests in 35 s where one worker took 55 s (load 2); 908 tests in 52 s
# under a load of 5 (42 CPU-s). Needs none of test-deps' packages.
FAST := not slow and not cluster and not slurm and not ms and not browser
test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m '$(FAST)'

# ruff (the rule sets and why: pyproject.toml) and mypy (strict on core/ and metrics/), plus one
# check ruff lacks: two comments run together on one line (a comment then sits on the wrong line).
# 10 s cold on 2 busy cores, 0.3 s warm (mypy's cache).
lint: $(STAMP)
	$(VENV)/bin/ruff check launcher tests benchmarks
	$(VENV)/bin/mypy
	$(PY) scripts/lint-comments launcher tests benchmarks

# The main job on this machine.
demo: $(STAMP)
	@scripts/demo

# pdsh (bench_scale.py's baseline) and tc: only the benchmarks need them.
bench-deps:
	@scripts/install-bench-deps

bench: $(STAMP) test-deps bench-deps
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

cluster-up: $(STAMP) test-deps
	$(PY) -m tests.cluster up

cluster-down:
	$(PY) -m tests.cluster down

# A real Slurm (munged, slurmctld, 2 slurmd in network namespaces) for trying `-H slurm.yaml` by hand.
slurm-up: $(STAMP) test-deps
	$(PY) -m tests.slurm up

slurm-down:
	$(PY) -m tests.slurm down

clean:
	rm -rf $(VENV) .demo runs output .pytest_cache
