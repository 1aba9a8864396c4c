"""One line of /proc/PID/mountinfo, parsed: shared by the cgroup layout
(kubirun.cgroups.mountinfo) and the root switch (kubirun.ns.rootfs), which
live in rooms that do not import each other.

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    id parent major:minor root mountpoint options [optional...] - fstype source superoptions

The optional fields vary in number, hence the search for the lone "-".
"""
from __future__ import annotations



class Mount:
    """One mount: ``root`` and ``mountpoint`` unescaped; ``fstype`` and
    ``superoptions`` empty for a line without the "-" separator.  (Not a
    NamedTuple: ``typing`` costs ~10 ms to import, on the start path.)"""

    __slots__ = ("fstype", "id", "mountpoint", "parent", "root", "superoptions")

    def __init__(self, id: str, parent: str, root: str, mountpoint: str, fstype: str,
                 superoptions: str) -> None:
        self.id = id
        self.parent = parent
        self.root = root
        self.mountpoint = mountpoint
        self.fstype = fstype
        self.superoptions = superoptions


def unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and all(d in "01234567" for d in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_line(line: str) -> Mount | None:
    """The line's mount, or None for a line too short to be one."""
    fields = line.split()
    if len(fields) < 5:
        return None
    try:
        sep = fields.index("-", 6)
    except ValueError:
        sep = -1
    if sep < 0 or len(fields) < sep + 3:
        return Mount(fields[0], fields[1], unescape(fields[3]), unescape(fields[4]), "", "")
    return Mount(fields[0], fields[1], unescape(fields[3]), unescape(fields[4]),
                 fields[sep + 1], fields[sep + 3])
