"""A job queued by ``submit --wait`` lives only while that ``submit`` waits for its cards.

Nothing on the hosts knows a queued job (it holds no claim, started nothing), so when the
waiting process dies (killed, laptop closed, a crash) the job would read ``queued`` forever.
The waiter records who it is when it queues (pid, the process's start time, this machine's
name), and ``jobs`` / ``status`` mark the job FAILED once that process is gone. The start time
is what tells a reused pid from the waiter: a pid alone is recycled within minutes on a busy
machine. A waiter on another machine (a registry on a shared home) is never judged from here.
"""

from __future__ import annotations

from launcher.ops import registry as reg
from launcher.ops.proc import gone, me, process_start

__all__ = ["check", "gone", "me", "process_start"]


def check(registry: reg.Registry, record: reg.JobRecord) -> reg.JobRecord:
    """A QUEUED job whose waiting submit is gone -> FAILED, saying which process; else as it was."""
    waiter = record.meta.get("waiter") or {}
    if record.state != reg.QUEUED or not gone(waiter):
        return record
    try:
        return registry.set_state(record.id, reg.FAILED, f"the waiting submit (pid {waiter['pid']} on this "
                                  f"machine) is gone")
    except reg.IllegalTransition:
        return registry.get(record.id)  # it started or was cancelled meanwhile
