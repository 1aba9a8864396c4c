"""``--explain`` for the mount plans: a ``_native.Kernel`` that narrates
each mount, ``pivot_root`` and device node as it makes them (the plans
call the kernel only through such an object).  Used by the init when
narration is on (``kubirun.base.explain``)."""
from __future__ import annotations

import os

from kubirun._native import Kernel
from kubirun.base import explain
from kubirun.base.narration import mount_flags, path


class NarratingKernel(Kernel):
    """A ``_native.Kernel`` whose mounts, ``pivot_root`` and device
    nodes are narrated as they are made (the plan's steps call the
    kernel only through this object)."""

    def mount(self, source, target, fstype=None, flags=0, data=None) -> None:
        args = [repr(path(source)) if source else "NULL", repr(path(target)),
                repr(fstype) if fstype else "NULL", mount_flags(flags)]
        if data:
            args.append(repr(data))
        explain.say(f"mount({', '.join(args)})", _mount_why(flags, fstype), depth=2)
        super().mount(source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int = 0) -> None:
        explain.say(f"umount2({path(target)!r}, {'MNT_DETACH' if flags & 2 else flags})",
                    "detach what must leave the container's view", depth=2)
        super().umount2(target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        explain.say(f"pivot_root({new_root!r}, {put_old!r})  [cwd {path(os.getcwd())}]",
                    "the container's root becomes /; the host's old root is stacked on it,"
                    " then detached", depth=2)
        super().pivot_root(new_root, put_old)

    def mknodat(self, dirfd: int, name: str, mode: int, device: int) -> None:
        explain.say(f"mknodat({path(f'/proc/self/fd/{dirfd}')!r}, {name!r}, {oct(mode)},"
                    f" {os.major(device)}:{os.minor(device)})", "a device node of the spec", depth=2)
        super().mknodat(dirfd, name, mode, device)

    def symlinkat(self, target: str, dirfd: int, name: str) -> None:
        explain.say(f"symlinkat({target!r}, {path(f'/proc/self/fd/{dirfd}')!r}, {name!r})",
                    "a standard /dev link", depth=2)
        super().symlinkat(target, dirfd, name)



def _mount_why(flags: int, fstype: str | None) -> str:
    if flags & 0x20:
        return "remount: change the flags of a mount already there"
    if flags & (0x40000 | 0x80000 | 0x100000) and not flags & 0x1000:
        return "mount propagation: nothing mounted here reaches the host"
    if flags & 0x1000:
        return "bind: the same files seen at another place"
    return f"a new {fstype} file system" if fstype else "a new mount"
