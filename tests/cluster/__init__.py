"""The real SSH test cluster (sshd in network + mount namespaces) and its pytest fixtures."""

from tests.cluster.cluster import Cluster, ClusterHost, ClusterUnavailable, HostSpec, unavailable_reason

__all__ = ["Cluster", "ClusterHost", "ClusterUnavailable", "HostSpec", "unavailable_reason"]
