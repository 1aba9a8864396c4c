"""The cgroup manager against a fake cgroupfs in tmp_path: mountinfo
layouts, conversions, stats parsing and exactly what apply() writes, for
v1, v2 and hybrid (the v2 formats in particular: this host cannot reach
them). No root and no real cgroup needed."""
from __future__ import annotations

import errno
import json
import os

import pytest

from kubirun import cgroups
from kubirun.cgroups import (
    CgroupError,
    convert,
    devices,
    fs,
    mountinfo,
    open_cgroup,
    stats,
)
from kubirun.cgroups.mountinfo import Layout

# --- mountinfo: the three layouts ----------------------------------------

# This host: systemd-style hybrid, cpu and cpuacct mounted separately.
HYBRID_SEPARATE = """\
23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

# Debian 10 / Ubuntu 18.04 style: comounted cpu,cpuacct and net_cls,net_prio,
# optional fields, xattr and release_agent among the super options; no cgroup2.
V1_COMOUNTED = """\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,net_cls,net_prio
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpuset,clone_children
33 25 0:30 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,freezer
34 25 0:31 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,devices
35 25 0:32 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,pids
"""

# Pure v2 (systemd default since 2021), with nsdelegate; a bind mount of a
# sub-cgroup elsewhere must not win over the real root.
V2_PURE = """\
22 1 0:20 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
26 23 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
90 22 0:23 /system.slice /run/some\\040place rw,relatime - cgroup2 cgroup2 rw
"""


def test_mountinfo_hybrid_with_separate_cpu_and_cpuacct():
    layout = mountinfo.layout_from_mounts(mountinfo.parse_mountinfo(HYBRID_SEPARATE))
    assert layout.kind == "hybrid"
    assert layout.unified == "/sys/fs/cgroup/unified"
    assert layout.v1["cpu"] == "/sys/fs/cgroup/cpu"
    assert layout.v1["cpuacct"] == "/sys/fs/cgroup/cpuacct"
    assert layout.v1["name=systemd"] == "/sys/fs/cgroup/systemd"
    assert len(layout.hierarchies()) == 9


def test_mountinfo_v1_comounted():
    layout = mountinfo.layout_from_mounts(mountinfo.parse_mountinfo(V1_COMOUNTED))
    assert layout.kind == "v1"
    assert layout.unified is None
    assert layout.v1["cpu"] == layout.v1["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert layout.v1["net_prio"] == "/sys/fs/cgroup/net_cls,net_prio"
    # options that are not controllers are not taken for ones
    assert not {"xattr", "clone_children", "rw"} & set(layout.v1)
    assert layout.hierarchies().count("/sys/fs/cgroup/cpu,cpuacct") == 1
    cg = open_cgroup("box", layout=layout)
    assert cg.kind == "v1"
    assert cg.dirs().count("/sys/fs/cgroup/cpu,cpuacct/kubirun/box") == 1
    assert cg.dir_of("cpuacct") == cg.dir_of("cpu")


def test_mountinfo_pure_v2_and_escapes():
    mounts = mountinfo.parse_mountinfo(V2_PURE)
    assert [m.mountpoint for m in mounts] == ["/sys/fs/cgroup", "/run/some place"]
    assert mounts[1].root == "/system.slice"
    layout = mountinfo.layout_from_mounts(mounts)
    assert layout.kind == "v2"
    assert layout.unified == "/sys/fs/cgroup"
    assert layout.v1 == {}
    # the root mount wins even when a bind of a sub-cgroup comes first
    reordered = mountinfo.layout_from_mounts(list(reversed(mounts)))
    assert reordered.unified == "/sys/fs/cgroup"


def test_a_cgroup2_mount_covered_by_a_tmpfs_makes_a_hybrid_host_v1():
    covered = HYBRID_SEPARATE + "197 41 0:81 / /sys/fs/cgroup/unified rw,relatime - tmpfs none rw\n"
    layout = mountinfo.layout_from_mounts(mountinfo.parse_mountinfo(covered))
    assert layout.kind == "v1"
    assert layout.unified is None


def test_a_covered_v1_hierarchy_is_not_mounted():
    covered = HYBRID_SEPARATE + "197 39 0:81 / /sys/fs/cgroup/pids rw,relatime - tmpfs none rw\n"
    layout = mountinfo.layout_from_mounts(mountinfo.parse_mountinfo(covered))
    assert "pids" not in layout.v1
    assert layout.v1["memory"] == "/sys/fs/cgroup/memory"


def test_a_mount_above_the_cgroup_mounts_hides_them_and_later_ones_count():
    # /sys/fs/cgroup covered by a new tmpfs, with cgroup2 mounted on it
    # again: only the new mount is reachable.
    text = HYBRID_SEPARATE + (
        "200 31 0:90 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw\n"
        "201 200 0:38 /sub /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
    mounts = mountinfo.parse_mountinfo(text)
    assert [(m.mountpoint, m.root) for m in mounts] == [("/sys/fs/cgroup/unified", "/sub")]
    assert mountinfo.layout_from_mounts(mounts).kind == "v2"


def test_a_cgroup_mount_on_a_covered_parent_is_hidden():
    # A tmpfs over /sys hides /sys/fs/cgroup and everything under it.
    text = HYBRID_SEPARATE + "300 23 0:91 / /sys rw,relatime - tmpfs tmpfs rw\n"
    assert mountinfo.parse_mountinfo(text) == []


def test_of_two_mounts_at_one_path_on_one_parent_the_later_is_on_top():
    text = ("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
            "40 31 0:37 / /sys/fs/cgroup/unified rw - tmpfs tmpfs rw\n"
            "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")
    assert [m.mountpoint for m in mountinfo.parse_mountinfo(text)] == ["/sys/fs/cgroup/unified"]


def test_mountinfo_without_cgroups(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text("22 1 0:20 / /proc rw - proc proc rw\n")
    with pytest.raises(CgroupError, match="cannot find the cgroup filesystems"):
        cgroups.detect_layout(str(path))


def test_open_cgroup_picks_the_driver():
    from kubirun.cgroups.hybrid import HybridCgroup
    from kubirun.cgroups.v1 import V1Cgroup
    from kubirun.cgroups.v2 import V2Cgroup

    for text, cls in ((HYBRID_SEPARATE, HybridCgroup), (V1_COMOUNTED, V1Cgroup), (V2_PURE, V2Cgroup)):
        layout = mountinfo.layout_from_mounts(mountinfo.parse_mountinfo(text))
        assert type(open_cgroup("/a/b", layout=layout)) is cls


def test_this_hosts_layout_is_detected():
    layout = cgroups.detect_layout()
    assert layout.kind in ("v1", "v2", "hybrid")


def test_import_is_cheap():
    import subprocess
    import sys

    code = "import sys, kubirun.cgroups; print(sorted(m for m in sys.modules if m.startswith('kubirun')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # the interface module, and kubirun.base.errors for CgroupError (a
    # KubirunError): no driver, nothing else of kubirun
    assert eval(out) == ["kubirun", "kubirun.base", "kubirun.base.errors", "kubirun.cgroups",
                         "kubirun.cgroups.cgroup"]


# --- paths and state -----------------------------------------------------

@pytest.mark.parametrize("given, expected", [
    ("abc", "/kubirun/abc"),
    ("a/b", "/kubirun/a/b"),
    ("/machine/abc", "/machine/abc"),
    ("//x//y/./", "/x/y"),
])
def test_normalise_path(given, expected):
    assert cgroups.normalise_path(given) == expected


@pytest.mark.parametrize("bad", ["", "/", "//", "../x", "/a/../b", "a\nb"])
def test_normalise_path_refuses(bad):
    with pytest.raises(CgroupError):
        cgroups.normalise_path(bad)


def test_state_must_match_driver_and_path():
    layout = Layout("v2", {}, "/sys/fs/cgroup")
    with pytest.raises(CgroupError, match="made by the 'v1' driver"):
        open_cgroup("/a", {"driver": "v1", "path": "/a", "created": []}, layout=layout)
    with pytest.raises(CgroupError, match="another cgroup"):
        open_cgroup("/a", {"driver": "v2", "path": "/b", "created": []}, layout=layout)
    state = open_cgroup("/a", layout=layout).to_state()
    assert json.loads(json.dumps(state)) == state


# --- conversions ---------------------------------------------------------

@pytest.mark.parametrize("shares, weight", [(0, 0), (1, 1), (2, 1), (512, 20), (1024, 39), (262144, 10000)])
def test_shares_to_weight(shares, weight):
    assert convert.shares_to_weight(shares) == weight


@pytest.mark.parametrize("blkio, io", [(0, 0), (10, 1), (100, 910), (500, 4950), (1000, 10000)])
def test_blkio_weight_to_io_weight(blkio, io):
    assert convert.blkio_weight_to_io_weight(blkio) == io


@pytest.mark.parametrize("swap, memory, v2", [
    (0, 0, 0), (0, -1, -1), (-1, 100, -1), (300, 100, 200), (100, 100, 0), (500, -1, 500),
])
def test_memory_swap_to_v2(swap, memory, v2):
    assert convert.memory_swap_to_v2(swap, memory) == v2


@pytest.mark.parametrize("swap, memory", [(200, 0), (50, 100), (200, -5)])
def test_memory_swap_to_v2_refuses(swap, memory):
    with pytest.raises(convert.ConversionError):
        convert.memory_swap_to_v2(swap, memory)


def test_small_conversions(tmp_path):
    assert [convert.hugepage_size_name(k) for k in (64, 2048, 32768, 1048576)] == ["64KB", "2MB", "32MB", "1GB"]
    for name in ("hugepages-2048kB", "hugepages-1048576kB", "other"):
        (tmp_path / name).mkdir()
    assert convert.hugepage_sizes(str(tmp_path)) == ["1GB", "2MB"]
    assert convert.parse_cpu_list("0-3,7\n") == [0, 1, 2, 3, 7]
    assert convert.parse_cpu_list("\n") == []
    assert convert.pids_limit(-1) == "max" and convert.pids_limit(0) == "0" and convert.pids_limit(9) == "9"
    assert convert.num_to_str(0) == "" and convert.num_to_str(-1) == "max"
    assert convert.rdma_line("mlx5_1", {"hcaHandles": 3}) == "mlx5_1 hca_handle=3 hca_object=max"


# --- a fake cgroupfs ---------------------------------------------------------

V2_FILES = {
    "cgroup.procs": "", "cgroup.freeze": "0\n", "cgroup.events": "populated 0\nfrozen 0\n",
    "cgroup.kill": "", "cgroup.type": "domain\n", "cgroup.subtree_control": "",
    "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0\n", "cpu.max": "max 100000\n",
    "cpu.max.burst": "0\n", "cpu.weight": "100\n", "cpu.idle": "0\n",
    "memory.max": "max\n", "memory.high": "max\n", "memory.low": "0\n", "memory.swap.max": "max\n", "memory.current": "0\n",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n", "memory.stat": "",
    "pids.max": "max\n", "pids.current": "0\n", "io.max": "", "io.weight": "default 100\n", "io.stat": "",
    "cpuset.cpus": "", "cpuset.mems": "", "rdma.max": "",
    "hugetlb.2MB.max": "max\n", "hugetlb.2MB.rsvd.max": "max\n",
    "hugetlb.1GB.max": "max\n", "hugetlb.1GB.rsvd.max": "max\n",
}
V2_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"

V1_FILES = {
    "cpu": {"cpu.shares": "1024\n", "cpu.cfs_period_us": "100000\n", "cpu.cfs_quota_us": "-1\n",
            "cpu.cfs_burst_us": "0\n", "cpu.idle": "0\n", "cpu.rt_period_us": "1000000\n",
            "cpu.rt_runtime_us": "0\n", "cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n"},
    "cpuacct": {"cpuacct.usage": "0\n", "cpuacct.stat": "user 0\nsystem 0\n"},
    "cpuset": {"cpuset.cpus": "\n", "cpuset.mems": "\n"},
    "memory": {"memory.limit_in_bytes": "9223372036854771712\n",
               "memory.memsw.limit_in_bytes": "9223372036854771712\n",
               "memory.soft_limit_in_bytes": "9223372036854771712\n", "memory.swappiness": "60\n",
               "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
               "memory.use_hierarchy": "1\n", "memory.usage_in_bytes": "0\n",
               "memory.max_usage_in_bytes": "0\n", "memory.failcnt": "0\n", "memory.stat": ""},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"},
    "freezer": {"freezer.state": "THAWED\n", "freezer.self_freezing": "0\n"},
    "pids": {"pids.max": "max\n", "pids.current": "0\n"},
    "blkio": {"blkio.weight": "500\n", "blkio.weight_device": "", "blkio.leaf_weight": "500\n",
              "blkio.leaf_weight_device": "", "blkio.throttle.read_bps_device": "",
              "blkio.throttle.write_bps_device": "", "blkio.throttle.read_iops_device": "",
              "blkio.throttle.write_iops_device": ""},
    "net_cls": {"net_cls.classid": "0\n"},
    "net_prio": {"net_prio.ifpriomap": ""},
    "hugetlb": {"hugetlb.2MB.limit_in_bytes": "0\n"},
    "name=systemd": {},
}


class FakeCgroupfs:
    """Hierarchies under tmp_path that behave enough like cgroupfs: mkdir
    fills a new directory with its control files, writes are logged (and
    replace the file, except the few files with their own rules), and
    chosen writes fail with a chosen errno."""

    def __init__(self, tmp_path, monkeypatch, kind: str, controllers=None) -> None:
        self.base = str(tmp_path / "cg")
        self.writes: list[tuple[str, str, str]] = []
        self.fail: dict[str, int] = {}
        self.roots: dict[str, str] = {}  # mountpoint -> "v2" or v1 controller names
        v1: dict[str, str] = {}
        unified = None
        if kind in ("v1", "hybrid"):
            for c in controllers or ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "pids",
                                     "blkio", "name=systemd"):
                mp = f"{self.base}/{c.replace('name=', '')}"
                v1[c] = mp
                self.roots[mp] = c
                os.makedirs(mp)
                self._fill(mp, c)
                if c == "cpuset":
                    self._put(mp, "cpuset.cpus", "0-1\n")
                    self._put(mp, "cpuset.mems", "0\n")
        if kind in ("v2", "hybrid"):
            unified = f"{self.base}/unified"
            self.roots[unified] = "v2"
            os.makedirs(unified)
            self._put(unified, "cgroup.controllers", (V2_CONTROLLERS if kind == "v2" else "hugetlb") + "\n")
            self._put(unified, "cgroup.subtree_control", "")
            self._put(unified, "cgroup.procs", "1\n")
        self.layout = Layout(kind, v1, unified)

        real_mkdir = os.mkdir
        real_rmdir = os.rmdir
        real_write = fs.write

        def mkdir(path, mode=0o777, **kw):
            real_mkdir(path, mode, **kw)
            root = self._root_of(str(path))
            if root is not None:
                self._fill(str(path), self.roots[root])

        def write(cgpath, dirpath, name, value):
            path = os.path.join(dirpath, name)
            if name in self.fail:
                code = self.fail[name]
                raise fs.fail(cgpath, f"cannot write {value!r} to", path, OSError(code, os.strerror(code)))
            if not os.path.exists(path):
                return real_write(cgpath, dirpath, name, value)  # the real ENOENT error
            self.writes.append((self.rel(dirpath), name, value))
            self._kernel_write(dirpath, name, value)

        def rmdir(path, *a, **kw):
            # cgroupfs removes a cgroup with its control files, but not one
            # with a child cgroup (EBUSY)
            p = str(path)
            if self._root_of(p) is not None and os.path.isdir(p):
                entries = [os.path.join(p, e) for e in os.listdir(p)]
                if any(os.path.isdir(e) for e in entries):
                    raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), p)
                for e in entries:
                    os.unlink(e)
            return real_rmdir(path, *a, **kw)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "rmdir", rmdir)
        monkeypatch.setattr(fs, "write", write)

    # -- helpers

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.base)

    def _root_of(self, path: str) -> str | None:
        for root in self.roots:
            if path.startswith(root + "/"):
                return root
        return None

    @staticmethod
    def _put(d: str, name: str, text: str) -> None:
        with open(os.path.join(d, name), "w") as f:
            f.write(text)

    def read(self, rel: str) -> str:
        with open(os.path.join(self.base, rel)) as f:
            return f.read()

    def _fill(self, d: str, what: str) -> None:
        self._put(d, "cgroup.procs", "")
        if what == "v2":
            for name, text in V2_FILES.items():
                self._put(d, name, text)
            parent = os.path.dirname(d)
            with open(os.path.join(parent, "cgroup.subtree_control")) as f:
                self._put(d, "cgroup.controllers", f.read())
        else:
            for name, text in V1_FILES[what].items():
                self._put(d, name, text)

    def _kernel_write(self, d: str, name: str, value: str) -> None:
        path = os.path.join(d, name)
        if name == "cgroup.subtree_control":
            with open(path) as f:
                enabled = f.read().split()
            for token in value.split():
                if token[0] == "+" and token[1:] not in enabled:
                    enabled.append(token[1:])
                elif token[0] == "-" and token[1:] in enabled:
                    enabled.remove(token[1:])
            self._put(d, name, " ".join(enabled) + "\n")
            for child in os.listdir(d):
                if os.path.isdir(os.path.join(d, child)):
                    self._put(os.path.join(d, child), "cgroup.controllers", " ".join(enabled) + "\n")
        elif name in ("devices.allow", "devices.deny"):
            # a simplified devices.list: enough for the emulator's final check
            with open(os.path.join(d, "devices.list")) as f:
                lines = [line for line in f.read().splitlines() if line]
            if value.startswith("a "):
                lines = ["a *:* rwm"] if name == "devices.allow" else []
            elif name == "devices.allow" and "a *:* rwm" not in lines:
                lines.append(value)
            elif name == "devices.deny" and value in lines:
                lines.remove(value)
            self._put(d, "devices.list", "".join(line + "\n" for line in lines))
        elif name == "io.bfq.weight" and ":" not in value:
            with open(path) as f:
                old = f.read()
            self._put(d, name, (f"default {value}\n" + old.partition("\n")[2]) if old.startswith("default")
                      else value + "\n")
        elif name in ("cgroup.procs", "io.max", "rdma.max", "net_prio.ifpriomap", "io.bfq.weight") \
                or name.endswith("_device"):
            with open(path, "a") as f:
                f.write(value + "\n")
        else:
            self._put(d, name, value + "\n")

    def written(self, name: str | None = None) -> list:
        if name is None:
            return self.writes
        return [(d, v) for d, _n, v in self.writes if _n == name]


@pytest.fixture
def fake_v2(tmp_path, monkeypatch):
    return FakeCgroupfs(tmp_path, monkeypatch, "v2")


@pytest.fixture
def fake_v1(tmp_path, monkeypatch):
    return FakeCgroupfs(tmp_path, monkeypatch, "v1")


@pytest.fixture
def fake_hybrid(tmp_path, monkeypatch):
    return FakeCgroupfs(tmp_path, monkeypatch, "hybrid")


def made(fake, path="/kubirun-test/box"):
    cg = open_cgroup(path, layout=fake.layout)
    cg.create()
    fake.writes.clear()
    return cg


# --- create / destroy ----------------------------------------------------------

def test_v2_create_delegates_in_parents_it_made_only(fake_v2):
    fake_v2._put(f"{fake_v2.base}/unified", "cgroup.subtree_control", "memory pids\n")
    cg = open_cgroup("/kubirun-test/box", layout=fake_v2.layout)
    cg.create()
    # the pre-existing root is left alone; our parent passes down what it got
    assert fake_v2.written() == [("unified/kubirun-test", "cgroup.subtree_control", "+memory +pids")]
    assert fake_v2.read("unified/kubirun-test/box/cgroup.controllers").split() == ["memory", "pids"]
    assert cg.to_state()["created"] == [f"{fake_v2.base}/unified/kubirun-test",
                                        f"{fake_v2.base}/unified/kubirun-test/box"]


def test_v1_create_copies_cpuset_from_parent(fake_v1):
    cg = made(fake_v1)
    assert fake_v1.read("cpuset/kubirun-test/cpuset.cpus") == "0-1\n"
    assert fake_v1.read("cpuset/kubirun-test/box/cpuset.mems") == "0\n"
    assert len(cg.to_state()["created"]) == 2 * 9
    cg.add(4242)
    assert [d for d, _ in fake_v1.written("cgroup.procs")] == [fake_v1.rel(d) for d in cg.dirs()]


def test_v1_cpuset_waits_for_a_parent_another_runtime_is_filling(fake_v1):
    # Two containers start under a new parent: the other runtime made it
    # and is about to copy cpus and mems into it when we make our leaf.
    import threading

    parent = f"{fake_v1.base}/cpuset/kubirun-test"
    os.makedirs(parent)
    fake_v1._fill(parent, "cpuset")
    timer = threading.Timer(0.05, lambda: [fake_v1._put(parent, "cpuset.cpus", "0-1\n"),
                                           fake_v1._put(parent, "cpuset.mems", "0\n")])
    timer.start()
    try:
        made(fake_v1)
    finally:
        timer.join()
    assert fake_v1.read("cpuset/kubirun-test/box/cpuset.cpus") == "0-1\n"
    assert fake_v1.read("cpuset/kubirun-test/box/cpuset.mems") == "0\n"


def test_v1_create_completes_a_shared_parent_a_killed_runtime_left_without_cpus(fake_v1):
    os.mkdir(f"{fake_v1.base}/cpuset/kubirun-test")  # killed before its two writes
    os.mkdir(f"{fake_v1.base}/cpuset/configured")
    fake_v1._put(f"{fake_v1.base}/cpuset/configured", "cpuset.cpus", "1\n")
    fake_v1._put(f"{fake_v1.base}/cpuset/configured", "cpuset.mems", "0\n")
    made(fake_v1)
    assert fake_v1.read("cpuset/kubirun-test/cpuset.cpus") == "0-1\n"
    assert fake_v1.read("cpuset/kubirun-test/box/cpuset.mems") == "0\n"
    made(fake_v1, "/configured/box")
    assert fake_v1.read("cpuset/configured/cpuset.cpus") == "1\n"  # someone's: as it was
    assert fake_v1.read("cpuset/configured/box/cpuset.cpus") == "1\n"


def test_destroy_removes_only_what_we_made(fake_v1):
    os.makedirs(f"{fake_v1.base}/memory/kubirun-test")  # someone else's parent, in one hierarchy
    cg = made(fake_v1)
    assert f"{fake_v1.base}/memory/kubirun-test" not in cg.to_state()["created"]
    os.mkdir(f"{fake_v1.base}/pids/kubirun-test/box/sub")  # the container's own sub-cgroup
    # another container under the parent we made in the freezer hierarchy
    os.mkdir(f"{fake_v1.base}/freezer/kubirun-test/other")
    state = cg.to_state()
    again = open_cgroup("/kubirun-test/box", state, layout=fake_v1.layout)
    again.destroy()
    left = sorted(fake_v1.rel(os.path.join(b, d)) for b, ds, _ in os.walk(fake_v1.base) for d in ds
                  if "kubirun" in b + d)
    assert left == ["freezer/kubirun-test", "freezer/kubirun-test/other", "memory/kubirun-test"]
    assert again.to_state()["created"] == [f"{fake_v1.base}/freezer/kubirun-test"]


def test_destroy_waits_for_a_busy_cgroup_then_reports(fake_v2, monkeypatch):
    cg = made(fake_v2)
    monkeypatch.setattr("kubirun.cgroups.cgroup.DESTROY_TIMEOUT", 0.05)  # where destroy reads it
    real_rmdir = os.rmdir
    calls = []

    def busy(path, *a, **kw):
        if path.endswith("/box"):
            calls.append(path)
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        return real_rmdir(path, *a, **kw)

    monkeypatch.setattr(os, "rmdir", busy)
    with pytest.raises(CgroupError, match=r"cannot remove .*/box: Device or resource busy \(EBUSY\)"):
        cg.destroy()
    assert len(calls) > 2  # retried
    monkeypatch.setattr(os, "rmdir", real_rmdir)
    cg.destroy()
    assert not os.path.exists(f"{fake_v2.base}/unified/kubirun-test")


def test_create_rolls_back_on_failure(fake_v1):
    fake_v1.fail["cpuset.cpus"] = errno.EACCES
    cg = open_cgroup("/kubirun-test/box", layout=fake_v1.layout)
    with pytest.raises(CgroupError, match=r"cpuset\.cpus: Permission denied \(EACCES\)"):
        cg.create()
    assert cg.to_state()["created"] == []
    assert not any("kubirun" in d for _, ds, _ in os.walk(fake_v1.base) for d in ds)


# --- apply on v2 ----------------------------------------------------------------

def test_v2_apply_writes_runc_values(fake_v2):
    fake_v2._put(f"{fake_v2.base}/unified", "cgroup.subtree_control", V2_CONTROLLERS + "\n")
    cg = made(fake_v2)
    warnings = cg.apply({
        "memory": {"limit": 100 << 20, "swap": 300 << 20, "reservation": 50 << 20, "kernel": -1},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "burst": 1000, "cpus": "0", "mems": "0",
                "idle": 0},
        "pids": {"limit": 0},
        "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 300}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
        "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}},
        "unified": {"memory.high": str(90 << 20), "io.max": "8:0 riops=7\n8:16 wbps=9"},
        "devices": [{"allow": True, "access": "rwm"}],
    })
    assert warnings == ["memory.kernel is ignored: kernel memory limits are deprecated (runc ignores them too)"]
    box = "unified/kubirun-test/box"
    assert fake_v2.written() == [
        (box, "pids.max", "0"),
        (box, "memory.swap.max", str(200 << 20)),
        (box, "memory.max", str(100 << 20)),
        (box, "memory.low", str(50 << 20)),
        (box, "io.weight", "4950"),
        (box, "io.max", "8:0 rbps=1048576"),
        (box, "io.max", "8:16 wiops=300"),
        (box, "cpu.idle", "0"),
        (box, "cpu.weight", "39"),
        (box, "cpu.max.burst", "1000"),
        (box, "cpu.max", "50000 100000"),
        (box, "cpuset.cpus", "0"),
        (box, "cpuset.mems", "0"),
        (box, "hugetlb.2MB.max", str(4 << 20)),
        (box, "hugetlb.2MB.rsvd.max", str(4 << 20)),
        (box, "rdma.max", "mlx5_1 hca_handle=3 hca_object=10000"),
        (box, "memory.high", str(90 << 20)),
        (box, "io.max", "8:0 riops=7"),
        (box, "io.max", "8:16 wbps=9"),
    ]


@pytest.mark.parametrize("memory, expected", [
    ({"limit": -1}, [("memory.swap.max", "max"), ("memory.max", "max")]),
    ({"limit": 100, "swap": 100}, [("memory.swap.max", "0"), ("memory.max", "100")]),
    ({"limit": 100, "swap": -1}, [("memory.swap.max", "max"), ("memory.max", "100")]),
    ({"limit": 100}, [("memory.max", "100")]),
    ({"reservation": 7}, [("memory.low", "7")]),
])
def test_v2_memory_values(fake_v2, memory, expected):
    fake_v2._put(f"{fake_v2.base}/unified", "cgroup.subtree_control", "memory\n")
    cg = made(fake_v2)
    cg.apply({"memory": memory})
    assert [(n, v) for _, n, v in fake_v2.written()] == expected


@pytest.mark.parametrize("cpu, expected", [
    ({"quota": -1}, "max"),
    ({"quota": 20000}, "20000"),
    ({"period": 50000}, "max 50000"),
])
def test_v2_cpu_max(fake_v2, cpu, expected):
    fake_v2._put(f"{fake_v2.base}/unified", "cgroup.subtree_control", "cpu\n")
    cg = made(fake_v2)
    cg.apply({"cpu": cpu})
    assert fake_v2.written("cpu.max") == [("unified/kubirun-test/box", expected)]


def test_v2_zero_throttle_rate_means_no_limit_as_on_v1(fake_v2):
    fake_v2._put(f"{fake_v2.base}/unified", "cgroup.subtree_control", "io\n")
    cg = made(fake_v2)
    cg.apply({"blockIO": {"throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 0}]}})
    assert fake_v2.written("io.max") == [("unified/kubirun-test/box", "8:0 wbps=max")]


def test_v2_bfq_weights(fake_v2):
    fake_v2._put(f"{fake_v2.base}/unified", "cgroup.subtree_control", "io\n")
    cg = made(fake_v2)
    fake_v2._put(cg.dir, "io.bfq.weight", "default 100\n")
    cg.apply({"blockIO": {"weight": 300, "weightDevice": [{"major": 8, "minor": 0, "weight": 50}]}})
    assert [v for _, v in fake_v2.written("io.bfq.weight")] == ["300", "8:0 50"]
    # an old kernel's io.bfq.weight is a bare number: no per-device weights
    fake_v2._put(cg.dir, "io.bfq.weight", "100\n")
    with pytest.raises(CgroupError, match="weightDevice needs per-device BFQ weights"):
        cg.apply({"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "weight": 50}]}})


def test_v2_enables_a_needed_controller_in_existing_ancestors(fake_v2):
    cg = made(fake_v2)  # the root delegated nothing, so neither did our parent
    assert fake_v2.read("unified/kubirun-test/box/cgroup.controllers").split() == []
    cg.apply({"pids": {"limit": 10}, "memory": {"limit": 1 << 30}})
    assert fake_v2.written("cgroup.subtree_control") == [
        ("unified", "+memory"), ("unified/kubirun-test", "+memory"),
        ("unified", "+pids"), ("unified/kubirun-test", "+pids")]
    assert cg.to_state()["enabled"] == [[f"{fake_v2.base}/unified", "memory"],
                                        [f"{fake_v2.base}/unified/kubirun-test", "memory"],
                                        [f"{fake_v2.base}/unified", "pids"],
                                        [f"{fake_v2.base}/unified/kubirun-test", "pids"]]
    assert fake_v2.read("unified/kubirun-test/box/pids.max") == "10\n"


def test_v2_unavailable_controller_fails_before_any_write(fake_v2):
    fake_v2._put(f"{fake_v2.base}/unified", "cgroup.controllers", "memory pids\n")
    cg = made(fake_v2)
    with pytest.raises(CgroupError, match=r"cpu\.cpus/cpu\.mems needs the cpuset controller, which .* does not "
                                          r"have \(its cgroup.controllers: memory pids\)"):
        cg.apply({"pids": {"limit": 5}, "cpu": {"cpus": "0"}})
    assert fake_v2.written() == []


@pytest.mark.parametrize("resources, message", [
    ({"devices": [{"allow": True, "access": "rwm"}, {"allow": False, "type": "c", "major": 1, "access": "w"},
                  {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "w"}]},
     "cannot punch a hole in the wildcard rule"),  # the rules themselves: tests/unit/test_cgroups_ebpf.py
    ({"network": {"classID": 1048577}}, "net_cls/net_prio"),
    ({"memory": {"limit": 100, "disableOOMKiller": True}}, "cannot disable the OOM killer"),
    ({"cpu": {"realtimeRuntime": 950000}}, "no realtime group scheduling"),
    ({"blockIO": {"leafWeight": 10}}, "no leaf weights"),
    ({"memory": {"swap": 100}}, "unable to set swap limit without memory limit"),
    ({"unified": {"memory/../x": "1"}}, "must be a file name"),
    ({"unified": {"nodot": "1"}}, "CONTROLLER.PARAMETER"),
    ({"cpus": 1}, "unknown resource 'cpus'"),
    ({"memory": {"limit": "1G"}}, r"memory\.limit must be an integer"),
    ({"memory": {"limits": 1}}, r"unknown resource memory\.limits"),
])
def test_v2_refuses_what_it_cannot_do(fake_v2, resources, message):
    fake_v2._put(f"{fake_v2.base}/unified", "cgroup.subtree_control", V2_CONTROLLERS + "\n")
    cg = made(fake_v2)
    with pytest.raises(CgroupError, match=message) as info:
        cg.apply(resources)
    assert "/kubirun-test/box" in str(info.value)
    assert fake_v2.written() == []


def test_v2_warnings_and_trivial_devices(fake_v2):
    fake_v2._put(f"{fake_v2.base}/unified", "cgroup.subtree_control", V2_CONTROLLERS + "\n")
    cg = made(fake_v2)
    os.remove(os.path.join(cg.dir, "cpu.max.burst"))
    warnings = cg.apply({"memory": {"swappiness": 10}, "cpu": {"burst": 5}, "devices": []})
    assert any("swappiness is ignored" in w for w in warnings)
    assert any("cpu.burst is ignored" in w for w in warnings)
    assert cg.apply({}) == []


def test_v2_write_errors_name_cgroup_file_and_errno(fake_v2):
    fake_v2._put(f"{fake_v2.base}/unified", "cgroup.subtree_control", "memory\n")
    cg = made(fake_v2)
    fake_v2.fail["memory.max"] = errno.EINVAL
    with pytest.raises(CgroupError) as info:
        cg.apply({"memory": {"limit": 4096}})
    e = info.value
    assert str(e) == (f"cgroup /kubirun-test/box: cannot write '4096' to {cg.dir}/memory.max: "
                      f"Invalid argument (EINVAL)")
    assert (e.path, e.file, e.errno) == ("/kubirun-test/box", f"{cg.dir}/memory.max", errno.EINVAL)


def test_v2_missing_knob_is_an_error(fake_v2):
    fake_v2._put(f"{fake_v2.base}/unified", "cgroup.subtree_control", "hugetlb\n")
    cg = made(fake_v2)
    with pytest.raises(CgroupError, match="hugepage size 3MB is not supported"):
        cg.apply({"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]})
    os.remove(os.path.join(cg.dir, "hugetlb.2MB.max"))
    with pytest.raises(CgroupError, match=r"hugetlb\.2MB\.max: No such file or directory \(ENOENT\)"):
        cg.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]})


# --- freezer, kill, oom on v2 ---------------------------------------------------------

def test_v2_freeze_waits_for_frozen_event(fake_v2, monkeypatch):
    from kubirun.cgroups import v2

    cg = made(fake_v2)
    events = os.path.join(cg.dir, "cgroup.events")
    fake_v2._put(cg.dir, "cgroup.events", "populated 1\nfrozen 1\n")
    cg.freeze()
    assert fake_v2.written() == [("unified/kubirun-test/box", "cgroup.freeze", "1")]
    assert cg.is_frozen()
    cg.thaw()
    assert not cg.is_frozen()
    # never reaching "frozen 1": thawed again and an error naming cgroup.events
    fake_v2._put(cg.dir, "cgroup.events", "populated 1\nfrozen 0\n")
    monkeypatch.setattr(v2, "FREEZE_TIMEOUT", 0.05)
    with pytest.raises(CgroupError, match=f"waiting for 'frozen 1' in {events}"):
        cg.freeze()
    assert fake_v2.read("unified/kubirun-test/box/cgroup.freeze") == "0\n"


def test_v2_kill_all_uses_cgroup_kill_for_sigkill(fake_v2):
    import signal

    cg = made(fake_v2)
    cg.kill_all(signal.SIGKILL)
    assert fake_v2.written() == [("unified/kubirun-test/box", "cgroup.kill", "1")]


def test_v2_oom_kills_and_pids(fake_v2):
    cg = made(fake_v2)
    assert cg.oom_kills() == 0
    fake_v2._put(cg.dir, "memory.events", "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n")
    assert cg.oom_kills() == 2
    fake_v2._put(cg.dir, "cgroup.procs", "30\n10\n")
    os.mkdir(os.path.join(cg.dir, "sub"))
    fake_v2._put(os.path.join(cg.dir, "sub"), "cgroup.procs", "20\n")
    assert cg.pids() == [10, 20, 30]
    assert open_cgroup("/kubirun-test/none", layout=fake_v2.layout).pids() == []


# --- apply on v1 ------------------------------------------------------------------

def test_v1_apply_writes_runc_values(fake_v1):
    cg = made(fake_v1)
    warnings = cg.apply({
        "memory": {"limit": 100 << 20, "swap": 200 << 20, "reservation": 50 << 20, "swappiness": 0,
                   "disableOOMKiller": True, "kernelTCP": 1 << 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "burst": 1000, "cpus": "0", "mems": "0",
                "realtimeRuntime": 950000, "realtimePeriod": 1000000, "idle": 1},
        "pids": {"limit": -1},
        "blockIO": {"weight": 300, "leafWeight": 200,
                    "weightDevice": [{"major": 8, "minor": 0, "weight": 500, "leafWeight": 300}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 600}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 300}]},
    })
    assert warnings == ["memory.kernelTCP is ignored: kernel memory limits are deprecated (runc ignores them too)"]
    b = "kubirun-test/box"
    assert fake_v1.written() == [
        (f"cpuset/{b}", "cpuset.cpus", "0"),
        (f"cpuset/{b}", "cpuset.mems", "0"),
        # the current limit (unlimited) is not below the new swap: memory first
        (f"memory/{b}", "memory.limit_in_bytes", str(100 << 20)),
        (f"memory/{b}", "memory.memsw.limit_in_bytes", str(200 << 20)),
        (f"memory/{b}", "memory.soft_limit_in_bytes", str(50 << 20)),
        (f"memory/{b}", "memory.oom_control", "1"),
        (f"memory/{b}", "memory.swappiness", "0"),
        (f"cpu/{b}", "cpu.shares", "512"),
        (f"cpu/{b}", "cpu.cfs_period_us", "100000"),
        (f"cpu/{b}", "cpu.cfs_burst_us", "1000"),
        (f"cpu/{b}", "cpu.cfs_quota_us", "50000"),
        (f"cpu/{b}", "cpu.idle", "1"),
        (f"cpu/{b}", "cpu.rt_period_us", "1000000"),
        (f"cpu/{b}", "cpu.rt_runtime_us", "950000"),
        (f"pids/{b}", "pids.max", "max"),
        (f"blkio/{b}", "blkio.weight", "300"),
        (f"blkio/{b}", "blkio.leaf_weight", "200"),
        (f"blkio/{b}", "blkio.weight_device", "8:0 500"),
        (f"blkio/{b}", "blkio.leaf_weight_device", "8:0 300"),
        (f"blkio/{b}", "blkio.throttle.read_bps_device", "8:0 600"),
        (f"blkio/{b}", "blkio.throttle.write_iops_device", "8:16 300"),
    ]


def test_v1_memory_update_orders_swap_first_when_growing(fake_v1):
    cg = made(fake_v1)
    fake_v1._put(cg.dir_of("memory"), "memory.limit_in_bytes", str(100 << 20))
    cg.apply({"memory": {"limit": 200 << 20, "swap": 400 << 20}})
    assert [n for _, n, _ in fake_v1.written()] == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
    fake_v1.writes.clear()
    cg.apply({"memory": {"limit": -1}})  # unlimited memory: unlimited swap too
    assert [(n, v) for _, n, v in fake_v1.written()] == [("memory.memsw.limit_in_bytes", "-1"),
                                                         ("memory.limit_in_bytes", "-1")]


def test_v1_memory_limit_below_usage(fake_v1):
    cg = made(fake_v1)
    fake_v1._put(cg.dir_of("memory"), "memory.usage_in_bytes", "5000000\n")
    fake_v1._put(cg.dir_of("memory"), "memory.max_usage_in_bytes", "6000000\n")
    fake_v1.fail["memory.limit_in_bytes"] = errno.EBUSY
    with pytest.raises(CgroupError, match=r"EBUSY\): unable to set memory limit to 4096 \(current usage: "
                                          r"5000000, peak usage: 6000000\)"):
        cg.apply({"memory": {"limit": 4096}})


def test_v1_cpu_shares_read_back(fake_v1, monkeypatch):
    cg = made(fake_v1)
    real = fs.write

    def clamping(cgpath, d, name, value):  # as the kernel does
        real(cgpath, d, name, "262144" if name == "cpu.shares" else value)

    monkeypatch.setattr(fs, "write", clamping)
    with pytest.raises(CgroupError, match="the maximum allowed cpu-shares is 262144"):
        cg.apply({"cpu": {"shares": 500000}})


def test_v1_cpu_period_retried_after_quota(fake_v1, monkeypatch):
    cg = made(fake_v1)
    real = fs.write
    calls = []

    def picky(cgpath, d, name, value):
        calls.append((name, value))
        if name == "cpu.cfs_period_us" and len([c for c in calls if c[0] == name]) == 1:
            raise fs.fail(cgpath, "cannot write", name, OSError(errno.EINVAL, "Invalid argument"))
        real(cgpath, d, name, value)

    monkeypatch.setattr(fs, "write", picky)
    cg.apply({"cpu": {"quota": 1000, "period": 10000}})
    assert calls == [("cpu.cfs_period_us", "10000"), ("cpu.cfs_quota_us", "1000"), ("cpu.cfs_period_us", "10000")]


def test_v1_bfq_weight_files_when_no_cfq(fake_v1):
    cg = made(fake_v1)
    d = cg.dir_of("blkio")
    os.remove(os.path.join(d, "blkio.weight"))
    fake_v1._put(d, "blkio.bfq.weight", "100\n")
    fake_v1._put(d, "blkio.bfq.weight_device", "")
    cg.apply({"blockIO": {"weight": 300, "weightDevice": [{"major": 8, "minor": 0, "weight": 20}]}})
    assert [(n, v) for _, n, v in fake_v1.written()] == [("blkio.bfq.weight", "300"),
                                                         ("blkio.bfq.weight_device", "8:0 20")]


def test_v1_devices_transition(fake_v1):
    cg = made(fake_v1)
    rules = [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "c", "major": 136, "access": "rwm"},
        {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rw"},
        {"allow": False, "type": "c", "major": 1, "minor": 5, "access": "m"},
    ]
    cg.apply({"devices": rules})
    b = "devices/kubirun-test/box"
    # deny-list to allow-list: one "deny all", then the allows in the order
    # the config lists them (runtime-tools checks devices.list shows that)
    assert fake_v1.written() == [
        (b, "devices.deny", "a *:* rwm"),
        (b, "devices.allow", "c 1:5 rw"),
        (b, "devices.allow", "c 1:3 rwm"),
        (b, "devices.allow", "c 136:* rwm"),
        (b, "devices.allow", "c 10:200 rw"),
    ]
    # an update writes only the difference, and no "deny all"
    fake_v1.writes.clear()
    cg.apply({"devices": rules[:3]})
    assert fake_v1.written() == [(b, "devices.deny", "c 10:200 rw"),
                                 (b, "devices.deny", "c 136:* rwm"),
                                 (b, "devices.allow", "c 1:5 m")]


def test_devices_emulator_like_runc():
    rules = devices.rules_from_oci([{"allow": True, "access": "rwm"},
                                    {"allow": False, "type": "b", "major": 8, "minor": 0, "access": "w"}])
    target = devices.from_rules(rules)
    assert target.default_allow and target.rules == {("b", 8, 0): 2}
    assert not devices.is_allow_all(rules)
    assert devices.is_allow_all(devices.rules_from_oci([{"allow": True, "access": "rwm"}]))
    # from a deny-list cgroup devices.list cannot show the exceptions: reset
    assert [r.cgroup_string() for r in devices.from_list("a *:* rwm\n").transition(target)] == [
        "a *:* rwm", "b 8:0 w"]
    # punching a hole in a wildcard exception is refused (the kernel would ignore it)
    wild = devices.from_rules(devices.rules_from_oci([{"allow": False, "access": "rwm"},
                                                      {"allow": True, "type": "c", "major": 136, "access": "rwm"}]))
    with pytest.raises(devices.DeviceRuleError, match="cannot punch a hole"):
        wild.apply(devices.Rule("c", 136, 2, 1, False))
    with pytest.raises(devices.DeviceRuleError, match="cannot be empty"):
        devices.rules_from_oci([{"allow": True, "type": "c"}])


def test_v1_refuses_what_is_not_mounted(fake_v1):
    cg = made(fake_v1)
    for resources, message in (
        ({"network": {"classID": 1}}, "network.classID needs the net_cls controller, which is not mounted"),
        ({"hugepageLimits": [{"pageSize": "2MB", "limit": 0}]}, "needs the hugetlb controller"),
        ({"unified": {"memory.high": "1"}}, "unified needs cgroup v2"),
        ({"memory": {"swappiness": 101}}, "invalid memory swappiness value: 101"),
        # malformed entries fail before the first write (cpuset comes first)
        ({"cpu": {"cpus": "0"}, "blockIO": {"throttleReadBpsDevice": [{"major": 8, "rate": 1}]}},
         "needs major and minor"),
        ({"cpu": {"cpus": "0"}, "devices": [{"allow": True, "type": "x", "access": "r"}]}, "must be a, b or c"),
        ({"cpu": {"cpus": "0"}, "network": {"priorities": [{"name": "eth0"}]}}, "needs name and priority"),
    ):
        with pytest.raises(CgroupError, match=message):
            cg.apply(resources)
    assert fake_v1.written() == []


def test_v1_swap_without_swap_accounting_fails_before_writing(fake_v1):
    cg = made(fake_v1)
    os.remove(os.path.join(cg.dir_of("memory"), "memory.memsw.limit_in_bytes"))
    with pytest.raises(CgroupError, match="memory.swap needs swap accounting"):
        cg.apply({"cpu": {"cpus": "0"}, "memory": {"limit": 100, "swap": 200}})
    assert fake_v1.written() == []
    cg.apply({"memory": {"limit": -1}})  # the implied unlimited swap is skipped
    assert [(n, v) for _, n, v in fake_v1.written()] == [("memory.limit_in_bytes", "-1")]


def test_v1_network_and_hugetlb_when_mounted(tmp_path, monkeypatch):
    fake = FakeCgroupfs(tmp_path, monkeypatch, "v1", ("memory", "net_cls", "net_prio", "hugetlb"))
    cg = made(fake)
    cg.apply({"network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 500}]},
              "hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}]})
    assert [(n, v) for _, n, v in fake.written()] == [
        ("hugetlb.2MB.limit_in_bytes", str(1 << 21)),  # no .rsvd file: skipped
        ("net_cls.classid", "1048577"), ("net_prio.ifpriomap", "eth0 500")]


def test_v1_freezer(fake_v1):
    cg = made(fake_v1)
    assert cg.can_freeze() and not cg.is_frozen()
    cg.freeze()
    fake_v1._put(cg.dir_of("freezer"), "freezer.self_freezing", "1\n")
    assert cg.is_frozen()
    # frozen only because an ancestor is: not "paused" (runc's view)
    fake_v1._put(cg.dir_of("freezer"), "freezer.self_freezing", "0\n")
    assert not cg.is_frozen()
    cg.thaw()
    assert fake_v1.read("freezer/kubirun-test/box/freezer.state") == "THAWED\n"


def test_v1_frozen_file_says_frozen_or_freezing_whoever_froze_it(fake_v1):
    cg = made(fake_v1)
    assert cg.frozen_file() is None
    state = f"{cg.dir_of('freezer')}/freezer.state"
    for value in ("FROZEN", "FREEZING"):  # self_freezing 0: an ancestor's freeze counts too
        fake_v1._put(cg.dir_of("freezer"), "freezer.state", value + "\n")
        assert cg.frozen_file() == state
    assert open_cgroup("/kubirun-test/none", layout=fake_v1.layout).frozen_file() is None


def test_v2_frozen_file_is_cgroup_freeze_or_a_frozen_event(fake_v2):
    cg = made(fake_v2)
    assert cg.frozen_file() is None
    fake_v2._put(cg.dirs()[0], "cgroup.events", "populated 0\nfrozen 1\n")  # an ancestor's freeze
    assert cg.frozen_file() == f"{cg.dirs()[0]}/cgroup.events"
    fake_v2._put(cg.dirs()[0], "cgroup.freeze", "1\n")
    assert cg.frozen_file() == f"{cg.dirs()[0]}/cgroup.freeze"


def test_hybrid_frozen_file_includes_the_unified_freeze(fake_hybrid):
    cg = made(fake_hybrid)
    assert cg.frozen_file() is None
    fake_hybrid._put(cg.unified_dir, "cgroup.freeze", "1\n")
    assert cg.frozen_file() == f"{cg.unified_dir}/cgroup.freeze"


def test_v1_oom_kills(fake_v1):
    cg = made(fake_v1)
    assert cg.oom_kills() == 0
    fake_v1._put(cg.dir_of("memory"), "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n")
    assert cg.oom_kills() == 4


# --- hybrid -----------------------------------------------------------------------------

def test_hybrid_joins_unified_and_uses_it_for_hugetlb_only(fake_hybrid):
    cg = made(fake_hybrid)
    assert cg.dirs()[-1] == f"{fake_hybrid.base}/unified/kubirun-test/box"
    cg.add(77)
    assert fake_hybrid.written("cgroup.procs")[-1] == ("unified/kubirun-test/box", "77")
    fake_hybrid.writes.clear()
    cg.apply({"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}], "pids": {"limit": 3},
              "unified": {"hugetlb.1GB.max": "0"}})
    assert fake_hybrid.written() == [
        ("unified", "cgroup.subtree_control", "+hugetlb"),
        ("unified/kubirun-test", "cgroup.subtree_control", "+hugetlb"),
        ("pids/kubirun-test/box", "pids.max", "3"),
        ("unified/kubirun-test/box", "hugetlb.2MB.max", str(1 << 21)),
        ("unified/kubirun-test/box", "hugetlb.2MB.rsvd.max", str(1 << 21)),
        ("unified/kubirun-test/box", "hugetlb.1GB.max", "0"),
    ]


def test_hybrid_refuses_v1_controllers_through_unified(fake_hybrid):
    cg = made(fake_hybrid)
    with pytest.raises(CgroupError, match="needs the memory controller, which /.* does not have"):
        cg.apply({"unified": {"memory.high": "1"}})
    assert fake_hybrid.written() == []


# --- stats ---------------------------------------------------------------------------------

# `runc events --stats` on this host (runc 1.1.5, hybrid, cgroup v1 limits:
# memory 64M/128M, pids 50, cpu 20000/100000), with "raw" trimmed.
RUNC_V1_DATA = {
    "cpu": {"usage": {"total": 430443906, "percpu": [385639329, 44804577], "percpu_kernel": [0, 8000000],
                      "percpu_user": [407973380, 40000000], "kernel": 0, "user": 420000000},
            "throttling": {"periods": 20, "throttledPeriods": 20, "throttledTime": 1513140078}},
    "cpuset": {"cpus": [0, 1], "cpu_exclusive": 0, "mems": [0], "mem_hardwall": 0, "mem_exclusive": 0,
               "memory_migrate": 0, "memory_spread_page": 0, "memory_spread_slab": 0, "memory_pressure": 0,
               "sched_load_balance": 1, "sched_relax_domain_level": -1},
    "memory": {"usage": {"limit": 67108864, "usage": 458752, "max": 2506752, "failcnt": 0},
               "swap": {"limit": 134217728, "usage": 458752, "max": 2506752, "failcnt": 0},
               "kernel": {"limit": 9223372036854771712, "usage": 249856, "max": 610304, "failcnt": 0},
               "kernelTCP": {"limit": 9223372036854771712, "failcnt": 0},
               "raw": {"active_anon": 4096, "cache": 0, "hierarchical_memory_limit": 67108864,
                       "pgfault": 788, "rss": 61440, "total_rss": 61440}},
    "pids": {"current": 1, "limit": 50},
    "blkio": {},
    "hugetlb": {},
    "intel_rdt": {},
    "network_interfaces": None,
}


def _files(d, files: dict[str, str]) -> None:
    os.makedirs(d, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)


def test_v1_stats_equal_runcs_output(tmp_path):
    base = str(tmp_path)
    _files(f"{base}/cpuacct", {
        "cpuacct.usage": "430443906\n", "cpuacct.usage_percpu": "385639329 44804577 \n",
        "cpuacct.usage_all": "cpu user system\n0 407973380 0\n1 40000000 8000000\n",
        "cpuacct.stat": "user 42\nsystem 0\n"})
    _files(f"{base}/cpu", {"cpu.stat": "nr_periods 20\nnr_throttled 20\nthrottled_time 1513140078\n"
                                       "nr_bursts 0\nburst_time 0\n"})
    _files(f"{base}/cpuset", {"cpuset.cpus": "0-1\n", "cpuset.mems": "0\n", "cpuset.cpu_exclusive": "0\n",
                              "cpuset.mem_hardwall": "0\n", "cpuset.mem_exclusive": "0\n",
                              "cpuset.memory_migrate": "0\n", "cpuset.memory_spread_page": "0\n",
                              "cpuset.memory_spread_slab": "0\n", "cpuset.memory_pressure": "0\n",
                              "cpuset.sched_load_balance": "1\n", "cpuset.sched_relax_domain_level": "-1\n"})
    mem = {"memory.limit_in_bytes": "67108864", "memory.usage_in_bytes": "458752",
           "memory.max_usage_in_bytes": "2506752", "memory.failcnt": "0",
           "memory.memsw.limit_in_bytes": "134217728", "memory.memsw.usage_in_bytes": "458752",
           "memory.memsw.max_usage_in_bytes": "2506752", "memory.memsw.failcnt": "0",
           "memory.kmem.limit_in_bytes": "9223372036854771712", "memory.kmem.usage_in_bytes": "249856",
           "memory.kmem.max_usage_in_bytes": "610304", "memory.kmem.failcnt": "0",
           "memory.kmem.tcp.limit_in_bytes": "9223372036854771712", "memory.kmem.tcp.usage_in_bytes": "0",
           "memory.kmem.tcp.max_usage_in_bytes": "0", "memory.kmem.tcp.failcnt": "0",
           # the kernel's order, not sorted
           "memory.stat": "cache 0\nrss 61440\npgfault 788\nactive_anon 4096\n"
                          "hierarchical_memory_limit 67108864\ntotal_rss 61440\n"}
    _files(f"{base}/memory", {k: v + "\n" if not v.endswith("\n") else v for k, v in mem.items()})
    _files(f"{base}/pids", {"pids.current": "1\n", "pids.max": "50\n"})
    _files(f"{base}/blkio", {"blkio.bfq.io_serviced_recursive": "Total 0\n",
                             "blkio.bfq.io_service_bytes_recursive": "Total 0\n"})
    got = stats.v1_stats({c: f"{base}/{c}" for c in ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio")})
    assert json.dumps(got) == json.dumps(RUNC_V1_DATA)  # same keys, same order, same values


def test_v1_blkio_stats():
    text = ("8:0 Read 1282048\n8:0 Write 2195456\n8:0 Sync 2195456\n8:0 Async 1282048\n8:0 Discard 0\n"
            "8:0 Total 3477504\nTotal 3477504\n")
    entries = stats.parse_blkio_v1(text)
    assert entries[0] == {"major": 8, "op": "Read", "value": 1282048}  # minor 0 omitted, as Go does
    assert entries[4] == {"major": 8, "op": "Discard"}
    assert len(entries) == 6
    assert stats.parse_blkio_v1("8:16 6792\n") == [{"major": 8, "minor": 16, "value": 6792}]


def test_v2_stats(tmp_path, monkeypatch):
    monkeypatch.setattr(stats, "hugepage_sizes", lambda: ["2MB"])
    d = str(tmp_path)
    _files(d, {
        "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 4\n"
                    "throttled_usec 321\nnr_bursts 0\nburst_usec 0\n",
        "memory.current": "1048576\n", "memory.max": "max\n", "memory.peak": "2097152\n",
        "memory.swap.current": "4096\n", "memory.swap.max": "1000\n",
        "memory.stat": "anon 700000\nfile 300000\nkernel 1000\n",
        "pids.current": "3\n", "pids.max": "max\n",
        "io.stat": "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n253:1 rbytes=5 wbytes=0 rios=1 wios=0\n",
        "hugetlb.2MB.current": "0\n", "hugetlb.2MB.rsvd.current": "2097152\n",
        "hugetlb.2MB.events": "max 3\n",
    })
    assert stats.v2_stats(d) == {
        "cpu": {"usage": {"total": 1500000, "kernel": 500000, "user": 1000000},
                "throttling": {"periods": 10, "throttledPeriods": 4, "throttledTime": 321000}},
        "cpuset": {"cpu_exclusive": 0, "mem_hardwall": 0, "mem_exclusive": 0, "memory_migrate": 0,
                   "memory_spread_page": 0, "memory_spread_slab": 0, "memory_pressure": 0,
                   "sched_load_balance": 0, "sched_relax_domain_level": 0},
        "memory": {"cache": 300000,
                   "usage": {"limit": convert.MAX_UINT64, "usage": 1048576, "max": 2097152, "failcnt": 0},
                   # runc: v1-style memory+swap
                   "swap": {"limit": convert.MAX_UINT64, "usage": 1048576 + 4096, "failcnt": 0},
                   "kernel": {"limit": 0, "failcnt": 0}, "kernelTCP": {"limit": 0, "failcnt": 0},
                   "raw": {"anon": 700000, "file": 300000, "kernel": 1000}},
        "pids": {"current": 3},
        "blkio": {"ioServiceBytesRecursive": [{"major": 8, "op": "Read", "value": 100},
                                              {"major": 8, "op": "Write", "value": 200},
                                              {"major": 253, "minor": 1, "op": "Read", "value": 5},
                                              {"major": 253, "minor": 1, "op": "Write"}],
                  "ioServicedRecursive": [{"major": 8, "op": "Read", "value": 1},
                                          {"major": 8, "op": "Write", "value": 2},
                                          {"major": 253, "minor": 1, "op": "Read", "value": 1},
                                          {"major": 253, "minor": 1, "op": "Write"}]},
        "hugetlb": {"2MB": {"usage": 2097152, "failcnt": 3}},
        "intel_rdt": {},
        "network_interfaces": None,
    }


def test_v2_stats_swap_limit_adds_memory_and_pids_without_controller(tmp_path):
    d = str(tmp_path)
    _files(d, {"memory.current": "10\n", "memory.max": "100\n", "memory.swap.current": "0\n",
               "memory.swap.max": "50\n", "memory.stat": "", "cgroup.procs": "5\n6\n"})
    s = stats.v2_stats(d)
    assert s["memory"]["swap"] == {"limit": 150, "usage": 10, "failcnt": 0}
    assert s["pids"] == {"current": 2}
    assert s["cpu"] == {"usage": {"kernel": 0, "user": 0}, "throttling": {}}


@pytest.mark.parametrize("kind", ["v1", "v2", "hybrid"])
def test_stats_of_a_missing_cgroup_are_empty(tmp_path, monkeypatch, kind):
    fake = FakeCgroupfs(tmp_path, monkeypatch, kind)
    s = open_cgroup("/kubirun-test/none", layout=fake.layout).stats()
    assert s["pids"] == {} and s["memory"]["usage"] == {"limit": 0, "failcnt": 0}
    assert s["hugetlb"] == {} and s["blkio"] == {}


def test_a_shared_parent_removed_while_its_files_are_read_is_made_again(tmp_path):
    """Another container's delete can remove a shared parent (empty for a
    moment) after our mkdir found it and before we read its files (its
    v1 cpuset.cpus): then the path is made again from the top, not refused."""
    from kubirun.base.errors import CgroupError
    from kubirun.cgroups import fs

    (tmp_path / "shared").mkdir()
    calls = []

    def setup(root: str, directory: str, new: bool) -> None:
        calls.append((os.path.relpath(directory, root), new))
        if len(calls) == 1:  # the other container's delete, right now
            os.rmdir(directory)
            raise CgroupError("cannot read cpuset.cpus", path="/shared/c1",
                              file=os.path.join(directory, "cpuset.cpus"), errno=errno.ENOENT)

    made: list[str] = []
    fs.make_path("/shared/c1", str(tmp_path), made, setup)
    assert calls == [("shared", False), ("shared", True), ("shared/c1", True)]
    assert (tmp_path / "shared" / "c1").is_dir()
