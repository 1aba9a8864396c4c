"""Entering the container's root filesystem: private propagation, the root
bind mount, and ``pivot_root`` with the old root detached.

Run these in the container's own mount namespace only: together they are
what keeps the host's mount table untouched.
"""
from __future__ import annotations

import os

from kubirun._native import MNT_DETACH, MS_BIND, MS_PRIVATE, MS_REC, MS_SLAVE, Kernel


def make_mounts_private(kernel: Kernel) -> None:
    """Stop mount events propagating between the container and the host, in
    both directions, before the container mounts anything."""
    kernel.mount(None, "/", None, MS_REC | MS_PRIVATE)


def bind_root(kernel: Kernel, rootfs: str) -> None:
    """Bind the root onto itself: ``pivot_root`` needs a mount point."""
    kernel.mount(rootfs, rootfs, None, MS_BIND | MS_REC)


def pivot_into(kernel: Kernel, rootfs: str) -> None:
    """Make ``rootfs`` the root and detach the old one.

    ``pivot_root(".", ".")`` stacks the old root on top of the new one at
    "/", so no directory for the old root is needed inside the image (the
    trick runc and crun use); unmounting "." then removes the old root.
    """
    old_root = kernel.open("/", os.O_DIRECTORY | os.O_RDONLY)
    new_root = kernel.open(rootfs, os.O_DIRECTORY | os.O_RDONLY)
    try:
        kernel.fchdir(new_root)
        kernel.pivot_root(".", ".")
        kernel.fchdir(old_root)
        # Slave first, so the unmount cannot propagate anywhere.
        kernel.mount(None, ".", None, MS_SLAVE | MS_REC)
        kernel.umount2(".", MNT_DETACH)
    finally:
        kernel.close(old_root)
        kernel.close(new_root)
    kernel.chdir("/")
