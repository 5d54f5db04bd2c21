"""Filesystem work inside the container: in-root path resolution, mounts, devices and the
console."""
