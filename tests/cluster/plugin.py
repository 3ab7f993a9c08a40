"""pytest plugin: the session-scoped ``ssh_cluster`` fixture (3 real sshd hosts).

Loaded from tests/conftest.py (``pytest_plugins``). Cluster tests skip with the reason when
this machine cannot run it (not root, no sshd / ip netns); CI runs as root, so they run there.
"""

from __future__ import annotations

import pytest

from tests.cluster.cluster import Cluster, HostSpec, unavailable_reason

DEFAULT_HOSTS = 3


@pytest.fixture(scope="session")
def ssh_cluster():
    """Three hosts (host0..host2), 8 emulated 910B2 cards each; torn down at session end."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = Cluster(DEFAULT_HOSTS, specs=[HostSpec() for _ in range(DEFAULT_HOSTS)]).up()
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def real_cluster():
    """Two hosts shaped like a real cluster (tests/cluster/cluster.py, ``realistic``): a login
    user, a chatty shell, the CANN stub, /srv/shared as a shared workdir."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = Cluster(2, realistic=True).up()
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def cluster_sshd(ssh_cluster):
    """The cluster, with every sshd running again after the test (for tests that stop one)."""
    yield ssh_cluster
    for h in ssh_cluster.hosts:
        if h.sshd_pid is None:
            ssh_cluster.start_sshd(h.index)
            ssh_cluster.wait_listening(h.index)
