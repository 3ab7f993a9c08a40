"""Scripts that run on the hosts (stdlib only; never import launcher)."""
