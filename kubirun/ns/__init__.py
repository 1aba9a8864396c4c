"""Namespaces, mounts and the container's root filesystem."""
