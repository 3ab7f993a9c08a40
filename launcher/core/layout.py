"""Where a job's files live on a host: ``<workdir>/alaunch/<job-id>/`` and its parts.

One place for these paths so render (which rewrites config paths), stage (which puts files
there), launch (which runs from there) and collect (which fetches from there) agree. All
values are POSIX strings; nothing here touches a filesystem.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import secrets
from dataclasses import dataclass

CONFIG_NAME = "job.yaml"


def slug(name: str) -> str:
    """A job name as it may appear in a job id (and so in remote paths): [a-z0-9-], <= 32."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32].strip("-")
    return s or "job"


def job_id(name: str, when: dt.datetime, token: str) -> str:
    """``<name>-<yyyymmdd-hhmmss>-<token>``: a pure value of the job's name, the time and a
    random token (given by the caller), short, readable, sorted by time within a name."""
    if not re.fullmatch(r"[0-9a-f]{4}", token):
        raise ValueError(f"job id token must be 4 hex digits, not {token!r}")
    return f"{slug(name)}-{when.strftime('%Y%m%d-%H%M%S')}-{token}"


def new_job_id(name: str, when: dt.datetime | None = None) -> str:
    """:func:`job_id` now (UTC) with a fresh random token: the one impure edge of naming."""
    return job_id(name, when or dt.datetime.now(dt.timezone.utc), secrets.token_hex(2))


@dataclass(frozen=True)
class JobLayout:
    """The remote job directory ``root`` (e.g. ``~/alaunch/<job-id>``) and its parts.

    ``root`` may start with ``~`` (expanded by the remote shell); callers that build argv
    lists must resolve it first (``with_root``) if the remote program does not expand ``~``.
    """

    root: str

    @classmethod
    def for_job(cls, workdir: str, job_id: str) -> JobLayout:
        """``<workdir>/alaunch/<job-id>``: every job in its own directory under the host's workdir."""
        return cls(posixpath.join(workdir.rstrip("/") or "/", "alaunch", job_id))

    def with_root(self, root: str) -> JobLayout:
        return JobLayout(root)

    def _join(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    @property
    def code(self) -> str:
        """Staged code: a MindFormers tree, research scripts, and the CPU entry."""
        return self._join("code")

    @property
    def data(self) -> str:
        """Staged inputs, one entry per named input."""
        return self._join("data")

    def data_path(self, input_name: str, basename: str) -> str:
        """Where a local input (file or directory ``basename``) lands: ``data/<name>/<basename>``."""
        return self._join("data", input_name, basename)

    @property
    def config_dir(self) -> str:
        return self._join("config")

    @property
    def config(self) -> str:
        """The rendered MindFormers YAML the entry is started with."""
        return self._join("config", CONFIG_NAME)

    @property
    def output(self) -> str:
        """MindFormers ``output_dir``: log/, checkpoint/, strategy/ under it."""
        return self._join("output")

    @property
    def logs(self) -> str:
        """MindFormers' own logs (``output/log/rank_N/info.log``)."""
        return self._join("output", "log")

    @property
    def ckpt(self) -> str:
        """Checkpoints written by the CheckpointMonitor (``output/checkpoint/rank_N``)."""
        return self._join("output", "checkpoint")

    @property
    def msrun_log(self) -> str:
        """msrun ``--log_dir``: ``worker_N.log`` and ``scheduler.log``."""
        return self._join("msrun_log")

    @property
    def checkpoint_in(self) -> str:
        """Where a local checkpoint to load is staged."""
        return self._join("ckpt")

    @property
    def tokenizer(self) -> str:
        """Where a local tokenizer file is staged."""
        return self._join("tokenizer")

    @property
    def predictions(self) -> str:
        """Predictions written by the entry (``output/predictions.jsonl``)."""
        return self._join("output", "predictions.jsonl")

    @property
    def state(self) -> str:
        """Launcher bookkeeping on the host: one :meth:`node_state` per node under it."""
        return self._join("state")

    def node_state(self, node_rank: int) -> str:
        """``state/node-<rank>``: one node's pid, exit code and msrun output (``launcher.log``).

        Per node because the job dir may be ONE directory on every node (an NFS/SFS workdir):
        with one ``state/`` the nodes shared pid, exit code and log, and node 1 refused to start
        ("already started") or overwrote node 0's. The one place this path is spelled."""
        return self._join("state", f"node-{int(node_rank)}")
