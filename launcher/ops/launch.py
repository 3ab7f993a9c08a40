"""Start a plan on every node at once — all or nothing — and look at or stop what was started.

:meth:`Launcher.start_request` builds what to run with no side effects (so a test is two lines)
and :meth:`Launcher.start` runs it: a detached supervisor through the node's
:class:`~launcher.runners.CommandRunner` (one class: a remote host and this machine differ
only in their runner).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from launcher.core.plan import NodePlan, Plan
from launcher.errors import AlaunchError, RemoteError
from launcher.ops.fanout import run_parallel
from launcher.remote import wire
from launcher.runners import CommandRunner

CANCEL_GRACE = 10.0


@dataclass(frozen=True)
class Started:
    node_rank: int
    host: str
    pid: int  # msrun; its process group id too (own session)
    supervisor: int  # waits for msrun and writes the exit code


@dataclass(frozen=True)
class NodeStatus:
    node_rank: int
    host: str
    state: str  # running | succeeded | failed | unknown
    exit_code: int | None
    processes: int
    detail: str = ""
    tails: dict | None = field(default=None, compare=False, repr=False)  # rank -> last log lines (running)


class LaunchFailed(AlaunchError):
    """Some node did not start; the ones that did were stopped."""


class Launcher:
    """Start, inspect and stop one job's node on its host: a detached supervisor (own session,
    stdio to a file, so it outlives the SSH connection or ``alaunch``) through the node's
    runner, with the runner's interpreter — a remote host and this machine alike."""

    def __init__(self, node: CommandRunner, job_id: str):
        self.node = node
        self.job_id = job_id

    def start_request(self, plan: NodePlan) -> dict:
        """The DETACH request that starts this node (``launcher/remote/launch.py``): pure, no side effects."""
        env = {**plan.env_values(), wire.JOB_MARKER: self.job_id,
               "ALAUNCH_NODE_RANK": str(plan.node_rank)}
        return {"op": "detach", "argv": plan.launch_argv(), "env": env, "cwd": plan.layout.root,
                "state_dir": plan.state_dir, "claims_dir": plan.host.claims_dir}

    def start(self, plan: NodePlan) -> Started:
        data = self.call(self.start_request(plan), 60, "start")
        return Started(plan.node_rank, plan.host.name, int(data["pid"]), int(data["supervisor"]))

    def call(self, request: dict, timeout: float, what: str) -> dict:
        return self.node.call("launch", request, timeout=timeout, what=what)

    def status(self, plan_state_dir: str, node_rank: int, job_root: str | None = None) -> NodeStatus:
        """The node's state from its processes and the supervisor's record; with ``job_root``,
        a running node's detail is its progress ('step 12/234, loss 1.29') read from its logs
        in the same round trip (``log_tails`` on the host)."""
        request = {"op": "status", "state_dir": plan_state_dir, "job_id": self.job_id}
        if job_root:
            request["tail"] = job_root
        data = self.call(request, 30, "status")
        host, procs = self.node.host.name, len(data["processes"])
        if data.get("tails"):
            from launcher.metrics.logparse import tails_progress
            return NodeStatus(node_rank, host, "running", None, procs, tails_progress(host, data["tails"]),
                              data["tails"])
        if data["exit_code"] is not None:
            code = data["exit_code"]
            return NodeStatus(node_rank, host, "succeeded" if code == 0 else "failed", code, procs)
        if data["pid"] is None:
            return NodeStatus(node_rank, host, "unknown", None, procs, "not started")
        if data["supervisor_alive"] or procs:
            return NodeStatus(node_rank, host, "running", None, procs)
        return NodeStatus(node_rank, host, "failed", None, 0, "supervisor gone without an exit code")

    def cancel(self, msrun_pid: int | None, grace: float = CANCEL_GRACE, state_dir: str | None = None) -> dict:
        """Stop every process of this job on the host and verify none is left; with the node's
        ``state_dir``, also msrun's exit code as its supervisor recorded it (``exit_code``)."""
        return self.call({"op": "cancel", "job_id": self.job_id, "msrun_pid": msrun_pid, "grace": grace,
                          "state_dir": state_dir}, grace + 60, "cancel")


def launch_all(plan: Plan, launchers: Mapping[int, Launcher]) -> dict[int, Started]:
    """Start every node in parallel; if any fails, stop the started ones and raise LaunchFailed."""
    results = run_parallel(plan.nodes, lambda n: launchers[n.node_rank].start(n))
    started: dict[int, Started] = {n.node_rank: s for n, s in results.succeeded.items()}
    errors: dict[int, str] = {}
    for n, exc in results.failed.items():
        if not isinstance(exc, (AlaunchError, OSError, ValueError)):
            raise exc
        errors[n.node_rank] = getattr(exc, "message", str(exc))
    if not errors:
        return started
    stopped = []
    for rank, s in started.items():
        try:
            launchers[rank].cancel(s.pid, grace=3.0)
            stopped.append(f"{s.host} (node {rank})")
        except AlaunchError as exc:
            stopped.append(f"{s.host} (node {rank}: stop failed: {exc.message})")
    reason = "; ".join(f"node {r}: {m}" for r, m in sorted(errors.items()))
    if stopped:
        reason += f"; stopped the started node(s): {', '.join(stopped)}"
    raise LaunchFailed(f"launch failed, nothing left running: {reason}")


REACH_TIMEOUT = 8.0  # seconds a node gets to connect to node 0 (msrun would wait cluster_time_out)


class Unreachable(AlaunchError):
    """A node could not open a TCP connection to node 0's master address and port."""


def reach_check(plan: Plan, launchers: Mapping[int, Launcher], timeout: float = REACH_TIMEOUT) -> dict[int, float]:
    """Before launch: node 0 listens on the master port; every other node connects to
    ``plan.master_addr:master_port`` at once. A wrong ``addr=`` (or a firewall) fails here in
    seconds, naming the node, instead of after msrun's cluster timeout (600 s by default).
    Returns node rank -> seconds its connection took."""
    others = [n for n in plan.nodes if n.node_rank != 0]
    if not others:
        return {}

    def one(n: NodePlan) -> dict:
        la = launchers[n.node_rank]
        if n.node_rank == 0:
            return la.call({"op": "listen", "port": plan.master_port, "expect": len(others),
                               "timeout": timeout + 2}, timeout + 30, "listen")
        return la.call({"op": "reach", "addr": plan.master_addr, "port": plan.master_port,
                           "timeout": timeout}, timeout + 30, "reach")

    results = run_parallel(plan.nodes, one)
    problems = []
    for n, r in results.items():
        if isinstance(r, BaseException):
            problems.append(f"node {n.node_rank} ({n.host.name}): {getattr(r, 'message', r)}")
        elif n.node_rank == 0 and not r["bound"]:
            problems.append(f"node 0 ({n.host.name}) cannot listen on master port {plan.master_port}: {r['error']}")
        elif n.node_rank != 0 and not r["ok"]:
            problems.append(f"node {n.node_rank} ({n.host.name}) cannot reach node 0 at "
                            f"{plan.master_addr}:{plan.master_port}: {r['error']} after {r['ms'] / 1000:.1f} s "
                            f"(set addr= on node 0's hostfile line to an address the other nodes reach)")
    if problems:
        raise Unreachable("; ".join(problems))
    return {n.node_rank: r["ms"] / 1000 for n, r in results.items() if n.node_rank != 0}


def master_port(host: str, found: int | None, requested: int | None) -> int:
    """The port node 0's preflight found free (``found``), or the one-line refusal when the
    user pinned ``requested`` and it is taken there."""
    if found is None:
        raise RemoteError(host, f"master port {requested} is in use; pick another with "
                                "--master-port or leave it out to choose a free one")
    return found