"""``alaunch prune``: on every host in parallel, SCAN, choose (pure, ``core/prune.py``), PRUNE.

Never a running or queued job: the host checks for live processes with the job's marker and
for an exit code of every started node, and the registry's running/queued jobs are passed
as protected. What was pruned is recorded as an event on each job the registry knows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from launcher.core.hostfile import Host
from launcher.core.prune import JobDir, dedupe_stores, select
from launcher.ops import registry as reg
from launcher.ops.fanout import run_parallel
from launcher.ops.stage import store_base
from launcher.runners import CommandRunner


@dataclass(frozen=True)
class PruneOptions:
    older_than: float = 7 * 86400
    keep_last: int = 0
    checkpoints: bool = False
    dry_run: bool = False
    grace: float = 3600.0  # store objects/trees/leftovers younger than this are kept (a submit may be staging)


@dataclass
class HostPrune:
    host: str
    jobs: list[dict] = field(default_factory=list)  # {"id", "bytes", "checkpoints_kept"}
    trees: list[dict] = field(default_factory=list)
    objects: dict = field(default_factory=dict)  # {"count", "bytes"}
    parts: dict = field(default_factory=dict)
    bytes: int = 0
    skipped: str = ""  # e.g. "same store as host0"


def prune_hosts(hosts: Sequence[Host], factory: Callable[[Host], CommandRunner], registry: reg.Registry,
                opts: PruneOptions, alive: Iterable[str] = ()) -> dict[str, HostPrune]:
    """SCAN every host, choose, PRUNE (or only report with ``dry_run``); record what went.
    ``alive``: job ids an engine knows are queued or running whatever the registry says (a
    scheduler's queue: their processes run on nodes the scan does not see). Each host's
    programs run with its runner's interpreter (``factory`` sets it)."""
    jobs = registry.list(limit=None)
    protect = {j.id for j in jobs if j.state in (reg.RUNNING, reg.QUEUED, reg.PENDING, reg.STAGING)} | set(alive)
    # a running pipeline's finished steps are inputs of its later ones: never prunable while it runs
    protect |= registry.jobs_in_use_by_pipelines()
    terminal = {j.id for j in jobs if j.terminal}
    runners = {h.name: factory(h) for h in hosts}
    try:
        scans = run_parallel(hosts, lambda h: runners[h.name].call("prune", {"op": "scan", "base": store_base(h)},
                                                                   timeout=600, what="prune scan"))
        scans.raise_on_failure()
        by_host = {h.name: s for h, s in scans.items()}
        todo = set(dedupe_stores([(h.name, by_host[h.name]) for h in hosts]))

        def one(h: Host) -> HostPrune:
            scan = by_host[h.name]
            if h.name not in todo:
                first = next(o.name for o in hosts if (by_host[o.name]["fsid"], by_host[o.name]["base"])
                             == (scan["fsid"], scan["base"]))
                return HostPrune(h.name, skipped=f"same store as {first}")
            remove = select([JobDir.from_scan(j) for j in scan["jobs"]], scan["now"], opts.older_than,
                            opts.keep_last, protect, terminal)
            data = runners[h.name].call("prune", {"op": "prune", "base": store_base(h), "claims_dir": h.claims_dir,
                                                  "remove": remove, "checkpoints": opts.checkpoints,
                                                  "grace": opts.grace, "dry_run": opts.dry_run},
                                        timeout=600, what="prune")
            return HostPrune(h.name, data["jobs"], data["trees"], data["objects"], data["parts"], data["bytes"])

        results = run_parallel(hosts, one).raise_on_failure()
    finally:
        for r in runners.values():
            r.close()
    out = {h.name: res for h, res in results.items()}
    if not opts.dry_run:
        known = {j.id for j in jobs}
        for res in out.values():
            for j in res.jobs:
                if j["id"] in known:
                    what = "checkpoints kept" if j["checkpoints_kept"] else "whole directory"
                    registry.add_event(j["id"], "pruned", f"job dir removed ({what}), {j['bytes']} bytes",
                                       host=res.host)
                    registry.update_meta(j["id"], {"pruned": {**registry.get(j["id"]).meta.get("pruned", {}),
                                                              res.host: j["bytes"]}})
    return out
