"""The Slurm test cluster itself: real daemons, one address per node, nothing left after down."""

from __future__ import annotations

import subprocess

import pytest

from tests.slurm.cluster import SlurmCluster, _alive, unavailable_reason

pytestmark = [pytest.mark.slurm]


def test_two_nodes_own_addresses_then_down_leaves_nothing(slurm_cluster):
    assert slurm_cluster.node_states() == {"n1": "idle", "n2": "idle"}
    res = subprocess.run(["srun", "-N2", "--ntasks-per-node=1", "sh", "-c",
                          'echo "$SLURM_NODEID $(hostname -I)"'], env=slurm_cluster.env(),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    seen = dict(line.split(maxsplit=1) for line in res.stdout.splitlines())
    # node 0's address is local to node 0 only: msrun starts one scheduler, on node 0
    assert {k: v.strip() for k, v in seen.items()} == {"0": slurm_cluster.nodes[0].address,
                                                        "1": slurm_cluster.nodes[1].address}


def test_down_stops_every_recorded_pid():
    if unavailable_reason():
        pytest.skip(unavailable_reason())
    c = SlurmCluster(1).up()
    pids = [c.munged_pid, c.ctld_pid, c.nodes[0].pid]
    netns, bridge = c.nodes[0].netns, c.bridge
    c.down()
    assert not any(_alive(p) for p in pids)
    assert netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0
