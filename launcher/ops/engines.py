"""The one place that picks an engine (torchx's scheduler registry): a ``-H`` file, ``--local``
or a registry record -> its engine. Nothing else in the package looks at which kind a target
or a job is (``tests/test_engines.py`` fails if a module does).

Adding an engine is one module with an :class:`~launcher.ops.engine.Engine` subclass and its
target type, plus one line in :data:`ENGINES` (and, if its target file has a mark of its own,
one line in :func:`kind_of_text`). The engines are named by import path, imported when first
asked for: ``jobs`` and ``--help`` import no engine they do not need (tests/test_cli_startup.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.errors import InputError

if TYPE_CHECKING:
    from launcher.ops import registry as reg
    from launcher.ops.engine import Engine

HOSTS = "hosts"
DEFAULT = HOSTS  # a record without a word on it: submitted to hosts (every record before engines)

# name -> (module, engine class, its target parser `parse(text, source) -> target`, list refresh)
# list refresh: `jobs` asks this engine about every live listed job (one question for all)
ENGINES: dict[str, tuple[str, str, str | None, bool]] = {
    HOSTS: ("launcher.ops.service", "JobService", None, False),
    "slurm": ("launcher.ops.slurm", "SlurmService", "parse_target", True),
}
RECORD_KEY = "backend"  # the registry meta key naming a job's engine (absent: DEFAULT)


def kind_of_text(text: str) -> str:
    """The engine a ``-H`` file's text is for: a file whose first meaningful line is a
    top-level mapping key naming an engine (``slurm:``) is that engine's target; anything
    else is a hostfile."""
    for line in text.splitlines():
        body = line.split("#", 1)[0].strip()
        if body:
            name = body[:-1] if body.endswith(":") else ""
            return name if name in ENGINES and name != HOSTS else HOSTS
    return HOSTS


def kind_of(record: reg.JobRecord) -> str:
    """The engine a registry record belongs to."""
    kind = record.meta.get(RECORD_KEY) or DEFAULT
    if kind not in ENGINES:
        raise InputError(f"job {record.id} was run by engine {kind!r}, which this alaunch does not have "
                         f"(it has: {', '.join(ENGINES)})")
    return kind


def record_meta(engine: Engine) -> dict:
    """The meta a new record of ``engine`` carries so :func:`kind_of` finds its engine again."""
    return {} if engine.name == DEFAULT else {RECORD_KEY: engine.name}


def engine_class(kind: str) -> type[Engine]:
    module, cls, _, _ = ENGINES[kind]
    return getattr(importlib.import_module(module), cls)


def read_target(hostfile: Path | str | None, *, local: bool = False, slots: int = 1,
                include: str | None = None, exclude: str | None = None, keys: bool = True) -> Any:
    """``-H FILE`` or ``--local`` (the default without -H) -> the target. The file is read
    ONCE: ``-H <(grep ascend hostfiles/all)`` is a pipe. ``keys``: refuse a chosen host whose
    ``identity=`` file does not exist (ssh then said "authentication failed", issue #33);
    ``render`` connects to nothing and passes False."""
    from launcher.core.hostfile import apply_filters, local_hosts, parse_hostfile, read_text
    from launcher.ops.engine import HostTarget
    if hostfile is not None and local:
        raise InputError("give either -H HOSTFILE or --local, not both", key="--local")
    if hostfile is None:
        hosts = local_hosts(slots)
        return HostTarget(tuple(apply_filters(hosts, include, exclude)), tuple(hosts), "--local")
    text = read_text(hostfile)
    kind = kind_of_text(text)
    if kind == HOSTS:
        hosts = parse_hostfile(text, str(hostfile))
        chosen = tuple(apply_filters(hosts, include, exclude))
        if keys:
            check_identities(chosen)
        return HostTarget(chosen, tuple(hosts), str(hostfile))
    for value, option in ((include, "--include"), (exclude, "--exclude")):
        if value:
            raise InputError(f"{option} filters a hostfile's hosts; {hostfile} is a {kind} target "
                             f"(its nodes are the scheduler's to choose)", key=option)
    module, _, parse, _ = ENGINES[kind]
    assert parse is not None  # every engine but the hosts' (handled above) parses its target
    return getattr(importlib.import_module(module), parse)(text, str(hostfile))


def check_identities(hosts) -> None:
    """Each host's ``identity=`` key file exists: "no such file: PATH (hostfile X line N)"."""
    import os
    for h in hosts:
        if h.identity and not os.path.exists(os.path.expanduser(h.identity)):
            where = f"hostfile {h.source} line {h.line}" if h.source else f"host {h.name}"
            raise InputError(f"no such file: {h.identity} ({where}: identity= of {h.name})")


def engine_for(target: Any, registry: reg.Registry | None, state_dir: Path, **kw) -> Engine:
    """The engine that runs ``target`` (``kw``: say, progress, exec_factory)."""
    # no registry: an engine asked only to render (plan_text), which records nothing
    return engine_class(target.engine)(registry, state_dir, **kw)  # type: ignore[arg-type]


def engine_of(record: reg.JobRecord, registry: reg.Registry, state_dir: Path, **kw) -> Engine:
    """The engine that ran ``record``."""
    return engine_class(kind_of(record))(registry, state_dir, **kw)


def log_view(record: reg.JobRecord) -> reg.JobRecord:
    """The record as the follower and fetch read it (its engine's :meth:`Engine.log_view`)."""
    return engine_class(kind_of(record)).log_view(record)


def refresh_listed(registry: reg.Registry, state_dir: Path, records: Sequence[reg.JobRecord],
                   exec_factory: Callable[[], Callable]) -> dict[str, str]:
    """``jobs``: each engine that answers for many jobs at once brings its live listed jobs up
    to date (``exec_factory()`` is called only then). Returns where -> why it could not ask."""
    failed: dict[str, str] = {}
    for kind, (_, _, _, listed) in ENGINES.items():
        # a record of an engine this alaunch lacks keeps its last state (`status` names the engine)
        mine = [r for r in records if listed and not r.terminal and (r.meta.get(RECORD_KEY) or DEFAULT) == kind]
        if mine:
            failed.update(engine_class(kind)(registry, state_dir, exec_factory=exec_factory()).refresh_many(mine))
    return failed
