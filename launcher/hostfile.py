"""Hostfiles: DeepSpeed's ``hostname slots=N`` format plus ``user= port= identity= workdir=``.

Reading a file is split from parsing its text; filters are pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
DEFAULT_WORKDIR = "~/alaunch"


@dataclass(frozen=True)
class Host:
    """One node: where to reach it and which device slots a job may use there."""

    name: str  # hostname, address or ~/.ssh/config alias, as written in the hostfile
    slots: int  # number of device slots (NPUs) on this host
    user: str | None = None
    port: int | None = None
    identity: str | None = None  # private key file
    workdir: str | None = None  # remote base directory for jobs (default DEFAULT_WORKDIR)
    source: str | None = None  # hostfile path this came from (for error messages)
    line: int | None = None  # line in that file
    # The device ids a job uses on this host, after --include/--exclude (default: all slots).
    slot_ids: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.slot_ids:
            object.__setattr__(self, "slot_ids", tuple(range(self.slots)))

    @property
    def is_local(self) -> bool:
        """``localhost`` runs on this machine without SSH (through the same plan)."""
        return self.name in LOCAL_NAMES and self.port is None and self.user is None

    @property
    def remote_workdir(self) -> str:
        return self.workdir or DEFAULT_WORKDIR
