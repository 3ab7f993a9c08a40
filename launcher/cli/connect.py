"""How the verbs reach hosts: one factory of runners from the SSH options, and the job service.

The SSH files a job was submitted with are kept in its registry record, so ``status``,
``cancel``, ``logs`` and ``fetch`` reach its hosts the same way unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from launcher.ops import registry as reg

if TYPE_CHECKING:
    from launcher.cli.environment import Environment
    from launcher.core.hostfile import Host
    from launcher.ops.engine import Engine
    from launcher.runners import CommandRunner

DEFAULT_CONTROL_PERSIST = 60.0


def control_persist() -> float:
    """Seconds an idle ssh master outlives the command (``$ALAUNCH_CONTROL_PERSIST``, default 60;
    0: each command closes its own). Why: ``status`` or ``cancel`` right after ``submit`` then
    costs one round trip per host instead of a handshake (benchmarks/bench_scale.py, warm)."""
    import os

    from launcher.errors import InputError
    raw = os.environ.get("ALAUNCH_CONTROL_PERSIST", "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_CONTROL_PERSIST
    except ValueError:
        raise InputError(f"ALAUNCH_CONTROL_PERSIST={raw!r} is not a number of seconds (0 turns it off)",
                         key="ALAUNCH_CONTROL_PERSIST") from None
    return max(0.0, value)


def runner_factory(known_hosts: Path | None, ssh_config: Path | None,
                   accept_new: bool) -> Callable[[Host], CommandRunner]:
    """Host -> runner, with the transport's ConnectOptions shared by every host."""
    from launcher.runners import ConnectOptions, make_runner
    options = ConnectOptions(known_hosts=known_hosts, ssh_config=ssh_config, accept_new_host_keys=accept_new,
                             control_persist=control_persist())
    return partial(make_runner, options=options)


def saved_ssh(record: reg.JobRecord, known_hosts: Path | None,
              ssh_config: Path | None) -> tuple[Path | None, Path | None]:
    """The SSH files given now, else those the job's submit used."""
    saved = record.meta.get("ssh") or {}
    return (known_hosts or (Path(saved["known_hosts"]) if "known_hosts" in saved else None),
            ssh_config or (Path(saved["ssh_config"]) if "ssh_config" in saved else None))


def job_service(env: Environment, known_hosts: Path | None, ssh_config: Path | None, accept_new: bool,
                job: str) -> tuple[reg.Registry, Engine]:
    """The registry and the engine that ran one job; SSH files default to those its submit used."""
    from launcher.ops.engines import engine_of
    registry = reg.Registry.in_state_dir(env.state_dir)
    record = registry.get(job)
    known_hosts, ssh_config = saved_ssh(record, known_hosts, ssh_config)
    return registry, engine_of(record, registry, env.state_dir,
                               exec_factory=runner_factory(known_hosts, ssh_config, accept_new))
