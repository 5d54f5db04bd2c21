"""The processes that become the container: the parent/child protocol, the forked init,
and process attributes (identity, capabilities, limits)."""
