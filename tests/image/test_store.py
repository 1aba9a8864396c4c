"""The content store: each layer unpacked once, overlay roots unmounted at
delete, a copy when overlay is off, concurrent runs, ``kubirun images``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import KUBIRUN_SCRIPT, kubirun
from tests.image import builders as b
from tests.image.conftest import ok, run


def layer_inodes(store: Path) -> dict[str, int]:
    return {name: os.stat(store / "layers" / name).st_ino for name in os.listdir(store / "layers")}


def test_a_second_run_unpacks_nothing_and_reads_no_archive(busybox_tarball, tmp_path, private_store):
    image = tmp_path / "busybox.tar.gz"
    shutil.copy(busybox_tarball, image)
    ok(image, "true")
    before = layer_inodes(private_store)
    assert len(before) == 1
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    trace = tmp_path / "trace"
    done = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat,open", "-o", str(trace),
                           str(KUBIRUN_SCRIPT), "run", str(image), "--", "true"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    opened = [line for line in trace.read_text().splitlines() if str(image) in line]
    assert opened == []  # a stat and the store's records: the archive is never read
    assert layer_inodes(private_store) == before
    assert os.listdir(private_store / "tmp") == []


def test_the_root_is_an_overlay_and_goes_away_with_the_container(busybox_tarball, private_store):
    out = ok(busybox_tarball, "sh", "-c", "grep ' / / ' /proc/self/mountinfo; echo x > /written")
    assert " - overlay overlay " in out
    assert os.listdir(private_store / "containers") == []
    layer = next((private_store / "layers").iterdir())
    assert not (layer / "written").exists()  # writes go to the container's upper directory


def test_a_changed_file_is_imported_again(tmp_path, base_tar, private_store):
    image = tmp_path / "img.tar"
    b.oci_image(image, [base_tar, b.tar_bytes([b.file("v", b"1\n")])])
    assert ok(image, "cat", "/v") == "1\n"
    time.sleep(0.01)
    b.oci_image(image, [base_tar, b.tar_bytes([b.file("v", b"2\n")])])
    assert ok(image, "cat", "/v") == "2\n"
    assert len(os.listdir(private_store / "layers")) == 3  # the base layer is shared


def test_without_overlay_the_root_is_a_copy(busybox_tarball, private_store):
    result = run(busybox_tarball, "awk", "$5 == \"/\"", "/proc/self/mountinfo",
                 env={**os.environ, "KUBIRUN_OVERLAY": "0"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and " - overlay " not in result.stdout, result.stdout
    assert os.listdir(private_store / "containers") == []


def test_keep_keeps_a_copied_root(busybox_tarball, private_store):
    ok(busybox_tarball, "sh", "-c", "echo kept > /marker", options=("--keep", "--name", "kept"))
    kept = private_store / "containers" / "kept"
    assert (kept / "rootfs" / "marker").read_text() == "kept\n"
    assert (kept / "rootfs" / "bin" / "busybox").exists()
    assert kubirun("delete", "kept").returncode == 0
    assert not kept.exists()


def test_concurrent_cold_runs_share_one_unpack(tmp_path, base_tar, private_store):
    image = b.oci_image(tmp_path / "img.tar", [base_tar, b.tar_bytes([b.file("hi", b"hi\n")])])
    procs = [subprocess.Popen([str(KUBIRUN_SCRIPT), "run", str(image), "--", "cat", "/hi"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    for out, err, code in results:
        assert code == 0, err
        assert out == "hi\n"
    assert len(os.listdir(private_store / "layers")) == 2
    assert os.listdir(private_store / "tmp") == []
    assert len(os.listdir(private_store / "images")) == 1


# --- kubirun images -----------------------------------------------------------------------

def test_images_import_ls_rm_prune(tmp_path, base_tar, private_store):
    one = b.oci_image(tmp_path / "one.tar", [base_tar, b.tar_bytes([b.file("one", b"1")])])
    two = b.docker_archive(tmp_path / "two.tar", [base_tar, b.tar_bytes([b.file("two", b"2")])],
                           tags=("example/two:latest",))
    first = kubirun("images", "import", str(one))
    assert first.returncode == 0, first.stderr
    second = kubirun("images", "import", str(two))
    assert second.returncode == 0, second.stderr
    listed = json.loads(kubirun("images", "ls", "--format", "json").stdout)
    assert {i["id"] for i in listed} == {first.stdout.strip(), second.stdout.strip()}
    assert len(os.listdir(private_store / "layers")) == 3  # the base once
    table = kubirun("images", "ls").stdout
    assert "example/two:latest" in table and "one.tar" in table

    removed = kubirun("images", "rm", "example/two:latest")
    assert removed.returncode == 0, removed.stderr
    assert len(os.listdir(private_store / "layers")) == 2  # its own layer went with it
    pruned = kubirun("images", "prune", "-a")
    assert pruned.returncode == 0, pruned.stderr
    assert os.listdir(private_store / "layers") == []
    assert kubirun("images", "ls", "-q").stdout == ""


def test_a_cold_import_loads_neither_tempfile_nor_json_nor_platform(busybox_tarball, private_store):
    """Their imports (tempfile brings shutil, re, bz2, lzma) are start-up
    time that a cold run pays before it unpacks anything."""
    result = subprocess.run([sys.executable, "-X", "importtime", str(KUBIRUN_SCRIPT), "images",
                             "import", str(busybox_tarball)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "kubirun.image.importer" in imported  # it did import
    assert not imported & {"tempfile", "shutil", "json", "platform", "re"}, imported
    assert len(os.listdir(private_store / "layers")) == 1
    assert os.listdir(private_store / "tmp") == []


def test_images_rm_of_an_unknown_image(private_store):
    result = kubirun("images", "rm", "nothing-like-it")
    assert result.returncode != 0 and "no image 'nothing-like-it'" in result.stderr


def test_an_image_in_use_is_not_removed(busybox_tarball, private_store, tmp_path):
    proc = subprocess.Popen([str(KUBIRUN_SCRIPT), "run", "--name", "user", str(busybox_tarball),
                             "--", "sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        marker = private_store / "containers" / "user" / "image"
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists()
        result = kubirun("images", "rm", str(busybox_tarball))
        assert result.returncode != 0 and "used by container user" in result.stderr, result.stderr
        pruned = kubirun("images", "prune", "-a")
        assert pruned.returncode == 0
        assert len(os.listdir(private_store / "layers")) == 1
    finally:
        kubirun("kill", "user", "KILL")
        proc.communicate(timeout=30)
    assert kubirun("images", "rm", str(busybox_tarball)).returncode == 0


def test_prune_removes_leftovers_of_an_interrupted_unpack(private_store, busybox_tarball):
    ok(busybox_tarball, "true")
    (private_store / "tmp" / "layer-1-abc").mkdir()
    (private_store / "tmp" / "layer-1-abc" / "half").write_text("x")
    (private_store / "layers" / ("0" * 64)).mkdir()  # a layer no image names
    assert kubirun("images", "prune").returncode == 0
    assert os.listdir(private_store / "tmp") == []
    assert len(os.listdir(private_store / "layers")) == 1


# --- progress -------------------------------------------------------------------------------

def test_no_progress_bar_when_stderr_is_not_a_terminal(busybox_tarball):
    result = kubirun("images", "import", str(busybox_tarball))
    assert result.returncode == 0 and result.stderr == ""


def test_a_progress_bar_on_a_terminal(busybox_tarball, tmp_path):
    import pty

    pid, fd = pty.fork()
    if pid == 0:
        os.execv(str(KUBIRUN_SCRIPT), [str(KUBIRUN_SCRIPT), "images", "import", str(busybox_tarball)])
    output = _read_pty(fd)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert b"unpacking busybox.tar.gz: layer 1/1 [" in output and b"KiB" in output


def _read_pty(fd: int) -> bytes:
    """All a pty's master gives until its other side is closed (EIO)."""
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return output
        if not chunk:
            return output
        output += chunk


# --- bundles --------------------------------------------------------------------------------

def test_bundle_runs_with_runc(tmp_path, base_tar, private_store):
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    image = b.oci_image(tmp_path / "app.tar", [base_tar, b.tar_bytes([
        b.directory("app/"), b.file("app/run.sh", b"#!/bin/sh\necho \"$GREETING from $(pwd) as $(id -u)\"\n", 0o755)])],
        {"Entrypoint": ["/app/run.sh"], "Env": ["GREETING=hello"], "WorkingDir": "/app",
         "User": "1000", "Labels": {"org.example": "yes"}})
    bundle = tmp_path / "bundle"
    made = kubirun("bundle", str(image), str(bundle))
    assert made.returncode == 0, made.stderr
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["/app/run.sh"]
    assert config["annotations"]["org.example"] == "yes"
    assert (bundle / "rootfs" / "bin" / "busybox").exists()
    config["linux"]["cgroupsPath"] = "/kubirun-test-runc/bundle"
    (bundle / "config.json").write_text(json.dumps(config))
    try:
        result = subprocess.run(["runc", "--root", str(tmp_path / "runc"), "run", "--bundle",
                                 str(bundle), "bundle-test"], capture_output=True, text=True,
                                timeout=60, stdin=subprocess.DEVNULL)
    finally:
        from tests.conftest import _remove_runc_cgroup_parents

        _remove_runc_cgroup_parents()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from /app as 1000\n"


def test_bundle_from_a_directory_and_refusal_to_overwrite(busybox_dir, tmp_path):
    bundle = tmp_path / "b"
    assert kubirun("bundle", str(busybox_dir), str(bundle), "--", "echo", "hi").returncode == 0
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["echo", "hi"]
    # the oldest version that says it all: crun 1.8 refuses 1.2.0
    assert config["ociVersion"] == "1.0.2"
    again = kubirun("bundle", str(busybox_dir), str(bundle))
    assert again.returncode != 0 and "exists" in again.stderr


def test_store_option_moves_the_store(busybox_tarball, tmp_path, private_store):
    other = tmp_path / "other-store"
    ok(busybox_tarball, "true", options=("--store", str(other)))
    assert len(os.listdir(other / "layers")) == 1
    assert not (private_store / "layers").exists()
    listed = kubirun("images", "ls", "-q", "--store", str(other))
    assert len(listed.stdout.split()) == 1
    assert kubirun("images", "prune", "-a", "--store", str(other)).returncode == 0
    assert os.listdir(other / "layers") == []


def test_a_stored_image_runs_by_its_name_or_id_from_anywhere(busybox_tarball, tmp_path, private_store):
    assert kubirun("images", "import", str(busybox_tarball)).returncode == 0
    image_id = kubirun("images", "ls", "-q").stdout.split()[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in (busybox_tarball.name, image_id[:12]):
        result = kubirun("run", name, "--", "echo", "ran", cwd=str(elsewhere))
        assert (result.returncode, result.stdout) == (0, "ran\n"), result.stderr
    missing = kubirun("run", "no-such-image", "--", "true", cwd=str(elsewhere))
    assert missing.returncode != 0
    assert "nor an image of that name or id in the store" in missing.stderr
    assert kubirun("images", "rm", busybox_tarball.name).returncode == 0
    assert kubirun("images", "ls", "-q").stdout == ""


def test_a_layout_name_it_does_not_have_is_said_so_with_the_names_it_has(tmp_path, base_tar,
                                                                         private_store):
    oci = b.Oci()
    manifest = oci.image([oci.layer(base_tar)])
    layout = oci.write_dir(tmp_path / "layout", [oci.named(manifest, "v1")])
    result = kubirun("run", f"{layout}:nope", "--", "true")
    assert result.returncode != 0
    assert "no image named 'nope' (its names: v1)" in result.stderr, result.stderr
    assert "--platform" not in result.stderr


def test_platform_with_a_root_filesystem_tarball_warns_that_it_does_not_apply(busybox_tarball,
                                                                              private_store):
    result = kubirun("run", "--platform", "linux/arm64", str(busybox_tarball), "--", "true")
    assert result.returncode == 0, result.stderr
    assert "--platform does not apply to a root filesystem tarball" in result.stderr


def test_concurrent_cold_imports_of_one_root_filesystem_tar_unpack_it_once(tmp_path, private_store):
    # A plain root filesystem tar: its layer is only known once unpacked, so
    # the imports started together wait for the first instead of each
    # unpacking it (each says "unpacking" on its terminal when it does).
    import pty

    blob = os.urandom(1 << 20)
    big = tmp_path / "big.tar"
    big.write_bytes(b.tar_bytes([b.file(f"data/{i}", blob) for i in range(24)]))
    started = []
    for _ in range(4):
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(str(KUBIRUN_SCRIPT), [str(KUBIRUN_SCRIPT), "images", "import", str(big)])
        started.append((pid, fd))
    outputs = []
    for pid, fd in started:
        output = _read_pty(fd)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        assert os.waitstatus_to_exitcode(status) == 0, output
        outputs.append(output)
    assert sum(b"unpacking big.tar" in output for output in outputs) == 1, outputs
    assert len(os.listdir(private_store / "layers")) == 1


def test_a_fifo_given_as_the_image_yields_to_ctrl_c(tmp_path, private_store):
    import signal

    fifo = tmp_path / "image.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen([str(KUBIRUN_SCRIPT), "run", str(fifo), "--", "true"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL,
                            # a terminal's Ctrl-C, whatever the test runner ignores
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode != 0
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
