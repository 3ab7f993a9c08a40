"""Who a laptop process is (ops/proc.py) and where the registry may keep its journal."""

from __future__ import annotations

import subprocess
import sys

from launcher.ops import proc
from launcher.ops import registry as reg


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_dead_process_of_this_space_is_gone_one_of_another_container_is_not_judged():
    """Containers share a hostname but not their pids: a record made in another pid namespace
    (a registry on a shared home read from two containers) must never be judged dead here."""
    pid = _dead_pid()
    here = {**proc.me(), "pid": pid, "start": "1"}
    assert proc.gone(here)
    elsewhere = {**here, "space": here["space"] + "-other-namespace"}
    assert not proc.gone(elsewhere)
    assert not proc.gone({**here, "host": "another-laptop"})
    assert not proc.gone(proc.me())  # this process is alive


MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
nas:/export/home /home nfs4 rw,vers=4.2 0 0
/dev/sdb1 /home/local ext4 rw 0 0
"""


def test_the_registry_keeps_a_rollback_journal_on_a_network_filesystem(tmp_path, monkeypatch):
    """WAL does not work over a network filesystem (sqlite's documentation): a registry in a
    shared home uses the rollback journal."""
    assert reg.filesystem_type("/home/alice/.local/state/alaunch", MOUNTS) == "nfs4"
    assert reg.filesystem_type("/home/local/x", MOUNTS) == "ext4"  # the longest mount point wins
    assert reg.filesystem_type("/tmp/x", MOUNTS) == "ext4"
    assert reg.journal_mode("nfs4") == "DELETE" and reg.journal_mode("ext4") == "WAL"
    monkeypatch.setattr(reg, "filesystem_type", lambda path, mounts=None: "nfs")
    with reg.Registry(tmp_path / "state" / reg.DB_NAME) as r:
        assert r._conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        r.create_job("j", "finetune", nodes=["a"])
    monkeypatch.setattr(reg, "filesystem_type", lambda path, mounts=None: "ext4")
    with reg.Registry(tmp_path / "state" / reg.DB_NAME) as r:
        assert r._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal" and len(r.list()) == 1
