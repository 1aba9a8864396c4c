"""The kernel boundary: failures carry errno, the system call and its paths."""
from __future__ import annotations

import errno
import os

import pytest

from kubirun import _native


def test_mount_failure_names_syscall_and_paths(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError) as info:
        _native.mount("tmpfs", missing, "tmpfs")
    err = info.value
    assert err.errno == errno.ENOENT
    assert err.strerror.startswith("mount:")
    assert err.filename == "tmpfs" and err.filename2 == missing
    assert missing in str(err)


def test_pivot_root_failure_has_both_paths(tmp_path):
    with pytest.raises(OSError) as info:
        _native.pivot_root(str(tmp_path / "a"), str(tmp_path / "b"))
    assert info.value.strerror.startswith("pivot_root:")
    assert info.value.filename2 == str(tmp_path / "b")


def test_openat2_in_root_refuses_symlinks(tmp_path):
    (tmp_path / "link").symlink_to("/etc")
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as info:
            _native.openat2(root, "link/passwd", os.O_RDONLY, 0,
                            _native.RESOLVE_IN_ROOT | _native.RESOLVE_NO_SYMLINKS)
        assert info.value.errno == errno.ELOOP
        assert info.value.filename == "link/passwd"
    finally:
        os.close(root)


def test_pidfd_signals_reach_a_child():
    pid = os.fork()
    if pid == 0:
        import signal
        signal.pause()
        os._exit(0)
    pidfd = _native.pidfd_open(pid)
    try:
        _native.pidfd_send_signal(pidfd, 9)
        _, status = os.waitpid(pid, 0)
        assert os.WTERMSIG(status) == 9
    finally:
        os.close(pidfd)


def test_close_range_cloexec_marks_fds(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY)
    os.set_inheritable(fd, True)
    pid = os.fork()
    if pid == 0:
        _native.close_range(fd, fd, _native.CLOSE_RANGE_CLOEXEC)
        os._exit(0 if not os.get_inheritable(fd) else 1)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0


def test_replace_file_puts_the_new_file_at_the_path_and_leaves_no_other(tmp_path):
    path, new = tmp_path / "state.json", tmp_path / "state.json.tmp"
    path.write_text("old")
    old_inode = path.stat().st_ino
    new.write_text("new")
    new_inode = new.stat().st_ino
    _native.replace_file(str(new), str(path))
    assert path.read_text() == "new" and path.stat().st_ino == new_inode != old_inode
    assert sorted(os.listdir(tmp_path)) == ["state.json"]


def test_replace_file_with_nothing_at_the_path_is_a_rename(tmp_path):
    path, new = tmp_path / "exit.json", tmp_path / "exit.json.tmp"
    new.write_text("first")
    _native.replace_file(str(new), str(path))
    assert path.read_text() == "first"
    assert sorted(os.listdir(tmp_path)) == ["exit.json"]


def test_replace_file_names_both_paths_when_it_fails(tmp_path):
    with pytest.raises(OSError) as failed:
        _native.replace_file(str(tmp_path / "missing.tmp"), str(tmp_path / "missing"))
    assert failed.value.errno == errno.ENOENT
    assert "missing.tmp" in str(failed.value)
