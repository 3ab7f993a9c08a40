"""pytest plugin: the session-scoped ``slurm_cluster`` fixture (a real slurmctld + 2 slurmd).

Loaded from tests/conftest.py. Tests skip with the reason when this machine cannot run it
(not root, slurm-wlm/munge missing: scripts/install-test-deps installs them).
"""

from __future__ import annotations

import pytest

from tests.slurm.cluster import SlurmCluster, unavailable_reason


@pytest.fixture(scope="session")
def slurm_cluster():
    """Two compute nodes (n1, n2), 1 CPU each, partition ``npu``, no accounting; torn down by pid."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(2).up()
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def slurm_env(slurm_cluster, monkeypatch):
    """The cluster, with SLURM_CONF set for this process (the login node is localhost)."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    yield slurm_cluster
    slurm_cluster.wait_idle(120)  # the next test starts on idle nodes
