"""OCI mounts and devices to mount-plan steps, as runc reads them."""
from __future__ import annotations

import stat

import pytest

from kubirun._native import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT
from kubirun.base.errors import KubirunError
from kubirun.ns.mounts import Device, Symlink
from kubirun.ns.mountspec import parse_options, plan_devices, plan_mounts


def test_flags_propagation_and_data_are_split():
    flags, propagation, data = parse_options(
        ["nosuid", "noexec", "rprivate", "mode=755", "size=65536k", "ro"], "m")
    assert flags == MS_NOSUID | MS_NOEXEC | MS_RDONLY
    assert propagation == MS_PRIVATE | MS_REC
    assert data == "mode=755,size=65536k"


def test_later_options_win():
    assert parse_options(["ro", "rw"], "m")[0] == 0


def test_unsupported_options_are_refused():
    with pytest.raises(KubirunError, match="idmap"):
        parse_options(["idmap"], "mounts[0]")


def test_a_bind_mount_is_bound_then_remounted_with_its_flags(tmp_path):
    (step,) = plan_mounts([{"destination": "/data", "type": "bind", "source": str(tmp_path),
                            "options": ["rbind", "ro", "nosuid"]}], [])
    assert (step.flags, step.remount_flags) == (MS_BIND | MS_REC, MS_RDONLY | MS_NOSUID)
    assert not step.target_is_file and step.follow_symlinks


def test_a_bind_of_a_file_lands_on_a_file(tmp_path):
    source = tmp_path / "hosts"
    source.write_text("127.0.0.1 localhost\n")
    (step,) = plan_mounts([{"destination": "/etc/hosts", "source": str(source),
                            "options": ["bind"]}], [])
    assert step.target_is_file


def test_a_missing_bind_source_is_an_error_naming_the_mount(tmp_path):
    with pytest.raises(KubirunError, match=r"mounts\[0\].source"):
        plan_mounts([{"destination": "/x", "type": "bind", "source": str(tmp_path / "no")}], [])


def test_proc_sys_and_dev_never_follow_symlinks():
    steps = plan_mounts([{"destination": d, "type": "tmpfs", "source": "tmpfs"}
                         for d in ("/proc", "/sys", "/dev", "/run")], [])
    assert [s.follow_symlinks for s in steps] == [False, False, False, True]


def test_cgroup_mount_binds_the_containers_own_cgroups_read_only():
    steps = plan_mounts([{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                          "options": ["nosuid", "noexec", "nodev", "ro"]}],
                        [("memory", "/sys/fs/cgroup/memory/k/c"), ("pids", "/sys/fs/cgroup/pids/k/c")])
    assert [(s.source, s.target, s.fstype) for s in steps] == [
        ("tmpfs", "/sys/fs/cgroup", "tmpfs"),
        ("/sys/fs/cgroup/memory/k/c", "/sys/fs/cgroup/memory", None),
        ("/sys/fs/cgroup/pids/k/c", "/sys/fs/cgroup/pids", None),
        (None, "/sys/fs/cgroup", None),
    ]
    assert steps[-1].flags == MS_REMOUNT and steps[-1].remount_flags & MS_RDONLY
    assert all(s.remount_flags & MS_RDONLY for s in steps[1:3])


def test_cgroup_mount_on_a_v2_host_is_one_bind():
    (step,) = plan_mounts([{"destination": "/sys/fs/cgroup", "type": "cgroup2", "source": "cgroup",
                            "options": ["ro", "nosuid", "nodev", "noexec"]}],
                          [("", "/sys/fs/cgroup/k/c")])
    assert step.source == "/sys/fs/cgroup/k/c" and step.remount_flags & MS_RDONLY
    assert step.remount_flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC) == MS_NOSUID | MS_NODEV | MS_NOEXEC


def test_devices_defaults_links_and_spec_devices():
    steps = plan_devices([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                           "fileMode": 0o600, "uid": 0, "gid": 0},
                          {"path": "/dev/loop0", "type": "b", "major": 7, "minor": 0}])
    devices = {s.path: s for s in steps if isinstance(s, Device)}
    assert set(devices) >= {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                            "/dev/tty", "/dev/fuse", "/dev/loop0"}
    assert devices["/dev/fuse"].mode == 0o600 and devices["/dev/fuse"].kind == stat.S_IFCHR
    assert devices["/dev/loop0"].kind == stat.S_IFBLK
    links = {s.path: s.target for s in steps if isinstance(s, Symlink)}
    assert links["/dev/ptmx"] == "pts/ptmx" and links["/dev/fd"] == "/proc/self/fd"


def test_the_default_devices_are_made_without_a_dev_tmpfs_too():
    # a config without a /dev mount gets them in the image's /dev, as runc's
    devices = {s.path for s in plan_devices([]) if isinstance(s, Device)}
    assert {"/dev/null", "/dev/zero", "/dev/full", "/dev/tty"} <= devices


def test_rro_is_a_recursive_read_only_step(tmp_path):
    (step,) = plan_mounts([{"destination": "/data", "type": "bind", "source": str(tmp_path),
                            "options": ["rbind", "rro"]}], [])
    assert step.recursive_read_only and step.flags == MS_BIND | MS_REC and step.remount_flags == 0
    (step,) = plan_mounts([{"destination": "/data", "type": "bind", "source": str(tmp_path),
                            "options": ["rbind", "rro", "rrw"]}], [])
    assert not step.recursive_read_only
