"""Details of runc's behaviour that users and engines rely on (issue 14,
part 2), one behaviour per test, against kubirun and runc (``oci``)."""
from __future__ import annotations

import os
import shutil
import shlex
import subprocess

import pytest


def _writable_root(busybox_dir, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(busybox_dir, root, symlinks=True)
    return root


def test_a_relative_bind_source_is_in_the_bundle(oci, bundle):
    def edit(config):
        config["mounts"].append({"destination": "/bundle", "type": "bind", "source": ".",
                                 "options": ["rbind", "ro"]})
    b = bundle(["cat", "/bundle/config.json"], edit=edit)
    result = oci.cmd("run", "--bundle", str(b), oci.new_id())
    assert result.returncode == 0, result.stderr
    assert result.stdout == (b / "config.json").read_text()


def test_a_read_only_dev_still_gets_its_devices_and_mounts(oci, bundle):
    def edit(config):
        for mount in config["mounts"]:
            if mount["destination"] == "/dev":
                mount["options"] = [*mount.get("options", []), "ro"]
    script = ("echo x > /dev/null && test -c /dev/zero && test -d /dev/pts && echo devices;"
              " touch /dev/new 2>/dev/null || echo read-only")
    result = oci.cmd("run", "--bundle", str(bundle(["sh", "-c", script], edit=edit)), oci.new_id())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["devices", "read-only"]


def test_the_terminal_belongs_to_the_process_user_and_the_tty_group(oci, bundle):
    if shutil.which("script") is None:
        pytest.skip("needs script(1) (util-linux) for a terminal")

    def edit(config):
        config["process"].update(terminal=True, user={"uid": 1000, "gid": 1000},
                                 args=["sh", "-c", "stat -c %u:%g $(tty)"])
    argv = oci.argv("run", "--bundle", str(bundle(edit=edit)), oci.new_id())
    result = subprocess.run(["script", "-qec", shlex.join(argv), "/dev/null"],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.replace("^@", "").split()[-1] == "1000:5"  # (^@: the tty echoing a NUL)


def test_an_exec_terminal_belongs_to_the_process_user_and_the_tty_group(oci, bundle):
    if shutil.which("script") is None:
        pytest.skip("needs script(1) (util-linux) for a terminal")
    cid = oci.new_id()
    oci.start_created(cid, bundle())
    argv = oci.argv("exec", "-t", "--user", "1000:1000", cid, "sh", "-c", "stat -c %u:%g $(tty)")
    result = subprocess.run(["script", "-qec", shlex.join(argv), "/dev/null"],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.replace("^@", "").split()[-1] == "1000:5"


@pytest.fixture
def root_only_dir(busybox_dir, tmp_path):
    root = _writable_root(busybox_dir, tmp_path)
    (root / "secret").mkdir(mode=0o700)
    os.chmod(root / "secret", 0o700)
    return root


def test_a_cwd_only_root_may_enter_is_entered_before_the_user_switch(oci, bundle, root_only_dir):
    def edit(config):
        config["root"] = {"path": str(root_only_dir), "readonly": True}
        config["process"].update(cwd="/secret", user={"uid": 1000, "gid": 1000},
                                 args=["sh", "-c", "pwd; id -u"])
    result = oci.cmd("run", "--bundle", str(bundle(edit=edit)), oci.new_id())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["/secret", "1000"]


def test_exec_as_a_user_into_a_cwd_only_root_may_enter(oci, bundle, root_only_dir):
    def edit(config):
        config["root"] = {"path": str(root_only_dir), "readonly": True}
    cid = oci.new_id()
    oci.start_created(cid, bundle(edit=edit))
    result = oci.cmd("exec", "--user", "1000", "--cwd", "/secret", cid, "pwd")
    assert (result.returncode, result.stdout) == (0, "/secret\n"), result.stderr


@pytest.mark.parametrize("how", ["no-such-program", "missing-cwd", "pid-file-dir"])
def test_an_exec_that_cannot_start_exits_255(oci, bundle, how, tmp_path):
    cid = oci.new_id()
    oci.start_created(cid, bundle())
    args = {"no-such-program": [cid, "no-such-program"],
            "missing-cwd": ["--cwd", "/no/such/dir", cid, "true"],
            "pid-file-dir": ["--pid-file", str(tmp_path / "missing" / "pid"), cid, "true"]}[how]
    result = oci.cmd("exec", *args)
    assert result.returncode == 255, (result.returncode, result.stderr)
    assert result.stderr.strip()


def test_create_container_hooks_run_in_the_containers_root(oci, bundle, tmp_path, busybox_dir):
    out = tmp_path / "hook-cwd"

    def edit(config):
        config["hooks"] = {"createContainer": [{
            "path": "/bin/sh", "args": ["sh", "-c", f"pwd > {out}"]}]}
    oci.cmd("run", "--bundle", str(bundle(["true"], edit=edit)), oci.new_id())
    assert out.read_text().strip() == str(busybox_dir)


def test_exec_into_a_paused_container_fails_unless_told_to_ignore_it(oci, bundle):
    cid = oci.new_id()
    oci.start_created(cid, bundle())
    assert oci.cmd("pause", cid).returncode == 0
    try:
        refused = oci.cmd("exec", cid, "true")
        assert refused.returncode == 255, refused.stderr
        # It joins the frozen cgroup, so it runs once the container resumes.
        waiting = subprocess.Popen(oci.argv("exec", "--ignore-paused", cid, "echo", "ran"),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   stdin=subprocess.DEVNULL)
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                waiting.wait(timeout=1)
            assert oci.cmd("resume", cid).returncode == 0
            out, err = waiting.communicate(timeout=30)
            assert (waiting.returncode, out) == (0, "ran\n"), err
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
    finally:
        oci.cmd("resume", cid)


@pytest.mark.parametrize("verb", ["checkpoint", "restore"])
def test_checkpoint_and_restore_are_refused_in_one_line(verb):
    from tests.conftest import kubirun

    result = kubirun(verb, "some-id")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "not supported" in result.stderr
