"""`kubirun run` on bad images: one line on stderr that names the problem,
a failing exit status, nothing written outside, nothing left behind (no
container directory, no mount)."""
from __future__ import annotations

import os
import random
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import TEST_CGROUP_PARENT, _mount_table, kubirun, make_tar, snapshot
from tests.image import builders as b

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="kubirun run needs root")


@pytest.fixture
def bad_run(tmp_path, private_store):
    """Run ``kubirun run [OPTIONS] IMAGE -- true``, check everything a
    refused image must leave as it was, and return the one line on stderr."""
    def files_outside() -> dict:
        found = snapshot(tmp_path, skip=private_store)
        found.pop("state", None)  # the state root: checked empty by private_store
        return found

    def run(image: Path, *options: str) -> str:
        mounts_before = _mount_table()
        files_before = files_outside()
        result = kubirun("run", *options, str(image), "--", "true", timeout=30)
        assert result.returncode != 0
        assert result.stdout == ""
        assert result.stderr.startswith("kubirun: "), result.stderr
        assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
        assert files_outside() == files_before
        assert _mount_table() == mounts_before
        containers = private_store / "containers"
        assert not containers.exists() or os.listdir(containers) == []
        return result.stderr.rstrip("\n")
    return run


def entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o777 if kind == tarfile.SYMTYPE else 0o644
    info.linkname = linkname
    return info


def test_missing_image_is_reported(bad_run, tmp_path):
    image = tmp_path / "no-such-image.tar.gz"
    line = bad_run(image)
    assert str(image) in line and "no such file" in line


def test_file_that_is_not_a_tar_is_reported(bad_run, tmp_path):
    image = tmp_path / "random.bin"
    image.write_bytes(b"\x00" + random.Random(3).randbytes(8191))
    line = bad_run(image)
    assert str(image) in line and "not a directory or a tar archive" in line


def test_corrupt_gzip_is_reported(bad_run, tmp_path):
    image = tmp_path / "corrupt.tar.gz"
    image.write_bytes(b"\x1f\x8b\x08\x00" + random.Random(4).randbytes(8192))
    line = bad_run(image)
    assert str(image) in line and "cannot unpack" in line


def test_truncated_gzip_is_reported(bad_run, tmp_path, busybox_tarball):
    image = tmp_path / "half.tar.gz"
    data = busybox_tarball.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    line = bad_run(image)
    assert str(image) in line and "cannot unpack" in line


def test_gzip_header_cut_short_is_reported_on_one_line(bad_run, tmp_path):
    image = tmp_path / "short-header.tar.gz"
    image.write_bytes(b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\x00")  # FEXTRA, then nothing
    line = bad_run(image)
    assert str(image) in line


def test_dotdot_entry_is_refused(bad_run, tmp_path, outside):
    # the unpack root is STORE/containers/ID/rootfs: this aims at tmp_path/outside
    name = "../../../../outside/x"
    image = make_tar(tmp_path / "dotdot.tar.gz", [(entry(name), b"pwned")])
    line = bad_run(image)
    assert name in line
    assert os.listdir(outside) == []


def test_plain_dotdot_entry_is_refused(bad_run, tmp_path):
    image = make_tar(tmp_path / "dotdot.tar.gz", [(entry("../x"), b"pwned")])
    line = bad_run(image)
    assert "'../x'" in line


def test_write_through_absolute_symlink_is_refused(bad_run, tmp_path, outside):
    image = make_tar(tmp_path / "symlink.tar.gz", [
        entry("evil", tarfile.SYMTYPE, linkname=str(outside)), (entry("evil/pwned"), b"pwned")])
    line = bad_run(image)
    assert "evil/pwned" in line and "symlink" in line
    assert os.listdir(outside) == []


def test_hardlink_to_host_file_is_refused(bad_run, tmp_path, host_file):
    image = make_tar(tmp_path / "hardlink.tar.gz", [entry("h", tarfile.LNKTYPE, linkname=str(host_file))])
    line = bad_run(image)
    assert "'h'" in line and str(host_file) in line
    assert os.lstat(host_file).st_nlink == 1
    assert host_file.read_bytes() == b"host data\n"


# --- run's flags (issue 19) ------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["-w", "rel/dir"], "must be an absolute path"),
    (["-w", "/etc/passwd"], "not a directory in the container"),
    (["--network", "ns:/etc/passwd"], "is not a network namespace"),
])
def test_a_bad_run_flag_is_one_line(busybox_dir, args, says):
    result = kubirun("run", *args, str(busybox_dir), "--", "true")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], lines


@pytest.mark.parametrize("args, says", [
    (["run", "--no-such-flag", "busybox.tar.gz"], "no such option '--no-such-flag'"),
    (["state"], "missing argument 'container_id'"),
    (["kill"], "missing argument 'container_id'"),
    (["delete", "a", "b", "c"], "unexpected extra arguments"),
    (["list", "--format"], "requires an argument"),
    (["node", "get", "--no-such-flag"], "no such option '--no-such-flag'"),
])
def test_a_bad_command_line_is_one_line_naming_the_help(args, says):
    """Not a usage block: one line, as every other error (engines show the
    last line of stderr), saying what is wrong and where the help is."""
    result = kubirun(*args)
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("kubirun: ") and says in lines[0].lower(), lines
    assert "--help'" in lines[0], lines


def test_a_state_root_that_is_a_file_is_named(monkeypatch, busybox_dir):
    monkeypatch.setenv("KUBIRUN_ROOT", "/etc/passwd")
    for args in (["list"], ["run", str(busybox_dir), "--", "true"]):
        result = kubirun(*args)
        assert result.returncode != 0
        assert "state root /etc/passwd is not a directory" in result.stderr, result.stderr


# --- archives: tar headers no file system can hold --------------------------------
# (tests/image/test_fuzz_archives.py fuzzes the same, seeded)

def raw_image(tmp_path: Path, *members) -> Path:
    image = tmp_path / "raw.tar"
    image.write_bytes(b.raw_tar(list(members)))
    return image


def test_negative_uid_in_a_tar_header_is_refused(bad_run, tmp_path):
    member = b.RawMember(b"f", data=b"x")
    member.header[108:116] = b"\xff" * 7 + b"\xfe"  # GNU base-256: -2
    line = bad_run(raw_image(tmp_path, member))
    assert "tar entry 'f'" in line and "uid -2 is out of range" in line


def test_pax_mtime_nan_is_refused(bad_run, tmp_path):
    member = b.RawMember(b"f", data=b"x")
    member.pax.append((b"mtime", b"nan"))
    line = bad_run(raw_image(tmp_path, member))
    assert "tar entry 'f'" in line and "mtime nan is not a time" in line


def test_nul_in_a_pax_path_is_refused(bad_run, tmp_path):
    member = b.RawMember(b"f", data=b"x")
    member.pax.append((b"path", b"a\0b"))
    line = bad_run(raw_image(tmp_path, member))
    assert "a NUL byte in its name" in line


def test_an_entry_the_kernel_refuses_is_named(bad_run, tmp_path):
    # An extended attribute too large for any file system: setxattr(fd)
    # fails with E2BIG, once said as "14: Argument list too long" (the fd).
    member = b.RawMember(b"dir/big", data=b"x")
    member.pax.append((b"SCHILY.xattr.user.big", b"x" * 70000))
    line = bad_run(raw_image(tmp_path, b.RawMember(b"dir/", b"5", mode=0o755), member))
    assert "tar entry 'dir/big'" in line and "Argument list too long" in line


# --- image JSON ---------------------------------------------------------------------

def docker_save(tmp_path: Path, manifest: bytes | None = None, config: dict | None = None) -> Path:
    """A docker-save archive of one small layer, its manifest.json replaced."""
    import io
    import json

    image = b.docker_archive(tmp_path / "docker.tar", [b.tar_bytes([b.file("x", b"x\n")])],
                             config=config)
    if manifest is None:
        return image
    with tarfile.open(image) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    files["manifest.json"] = manifest
    with tarfile.open(image, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return image


def test_a_manifest_nested_100000_deep_is_refused(bad_run, tmp_path):
    line = bad_run(docker_save(tmp_path, b"[" * 100_000 + b"]" * 100_000))
    assert "manifest.json" in line and "nested deeper than" in line


def test_manifest_layers_that_are_not_file_names_are_refused(bad_run, tmp_path):
    image = docker_save(tmp_path)
    with tarfile.open(image) as tar:
        config_name = next(n for n in tar.getnames() if n.endswith(".json") and n != "manifest.json")
    line = bad_run(docker_save(tmp_path, json_bytes([{"Config": config_name, "Layers": [5]}])))
    assert "manifest.json: Layers must be an array of file names" in line


def test_a_nul_in_the_image_config_env_is_refused(bad_run, tmp_path):
    line = bad_run(docker_save(tmp_path, config={"Env": ["A=\0"], "Cmd": ["true"]}))
    assert "config.Env[0]: a NUL byte" in line


def test_an_image_config_that_is_not_an_object_is_refused(bad_run, tmp_path):
    oci = b.Oci()
    layer, diff_id = oci.layer(b.tar_bytes([b.file("x", b"x\n")]))
    config = oci.blob(b"[]", b.OCI_CONFIG)
    manifest = oci.blob(json_bytes({"schemaVersion": 2, "mediaType": b.OCI_MANIFEST,
                                    "config": config, "layers": [layer]}), b.OCI_MANIFEST)
    line = bad_run(oci.write_tar(tmp_path / "oci.tar", [manifest]))
    assert "config: expected a JSON object" in line


def json_bytes(value) -> bytes:
    import json

    return json.dumps(value).encode()


# --- a layer already in the store ---------------------------------------------------

def _import(image: Path):
    return kubirun("images", "import", str(image))


def test_a_tampered_blob_is_refused_even_when_its_layer_is_in_the_store(tmp_path, private_store):
    oci = b.Oci()
    layers = [oci.layer(b.tar_bytes([b.file("x", b"x\n")]))]
    manifest = oci.image(layers)
    assert _import(oci.write_tar(tmp_path / "good.tar", [manifest])).returncode == 0
    desc = layers[0][0]
    evil = b.compress(b.tar_bytes([b.file("x", b"evil")]), "gzip")
    oci.blobs[desc["digest"]] = evil[:desc["size"]].ljust(desc["size"], b"\0")
    result = _import(oci.write_tar(tmp_path / "bad.tar", [manifest]))
    assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
    assert "layer 1" in result.stderr and "blob digest mismatch" in result.stderr


def test_a_tampered_docker_layer_is_refused_even_when_it_is_in_the_store(tmp_path, private_store):
    good = b.docker_archive(tmp_path / "good.tar", [b.tar_bytes([b.file("x", b"x\n")])])
    assert _import(good).returncode == 0
    bad = tmp_path / "bad.tar"
    bad.write_bytes(good.read_bytes().replace(b"x\n" + b"\0" * 510, b"y\n" + b"\0" * 510, 1))
    result = _import(bad)
    assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
    assert "layer 1" in result.stderr and "diff_id mismatch" in result.stderr


# --- kubirun run's options --------------------------------------------------------------

@pytest.mark.parametrize("option, value, words", [
    ("-u", "99999999999", "-u 99999999999: 99999999999 is out of range"),
    ("-u", "0:4294967295", "-u 0:4294967295: 4294967295 is out of range"),
    ("--cpus", "inf", "--cpus: expected a positive number of CPUs"),
    ("--cpus", "1e300", "CPUs available here"),
    ("--pids-limit", "99999999999999999999", "--pids-limit: '99999999999999999999' is out of range"),
    ("--cpus", "0.0001", "is below 0.01"),
    ("--cpuset-cpus", "99", "no CPU 99 here; this host has CPUs"),
    ("--memory", "99999999999g", "is out of range"),
])
def test_out_of_range_run_options_are_refused(bad_run, busybox_tarball, option, value, words):
    line = bad_run(busybox_tarball, option, value)
    assert words in line


def test_an_etc_passwd_that_is_a_fifo_is_refused_without_hanging(bad_run, busybox_dir, tmp_path):
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(busybox_dir), str(root)], check=True)
    (root / "etc" / "passwd").unlink()
    os.mkfifo(root / "etc" / "passwd")
    line = bad_run(root, "-u", "nobody")
    assert line == "kubirun: the image's /etc/passwd is not a regular file (a FIFO): not read"


def test_an_etc_passwd_symlink_cannot_lead_out_of_the_image(busybox_dir, tmp_path, private_store):
    # `kubirun bundle` resolves the user on the host, in the image's root:
    # a symlink there must resolve inside it, never to the host's files.
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(busybox_dir), str(root)], check=True)
    (root / "etc" / "passwd").unlink()
    host_passwd = tmp_path / "host-passwd"
    host_passwd.write_text("root:x:0:0::/secret:/bin/sh\n")
    os.symlink(f"../../../../../../../../..{host_passwd}", root / "etc" / "passwd")
    result = kubirun("bundle", str(root), str(tmp_path / "bundle"))
    assert result.returncode == 0, result.stderr
    import json

    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert "HOME=/root" in config["process"]["env"], config["process"]["env"]  # not /secret


# --- config.json: `kubirun create` --------------------------------------------------------

@pytest.fixture
def bad_create(tmp_path, busybox_dir):
    """``kubirun create`` of a bundle whose config is ``kubirun spec``'s,
    made runnable, then ``edit``ed (or replaced by ``raw`` bytes): it must
    be refused with one line, and leave no state.  Returns the line."""
    import json

    made = iter(range(1000))

    def create(edit=None, raw: bytes | None = None) -> str:
        bundle = tmp_path / f"bundle{next(made)}"
        bundle.mkdir()
        subprocess.run([kubirun_path(), "spec", "--bundle", str(bundle)], check=True)
        config = json.loads((bundle / "config.json").read_text())
        config["root"] = {"path": str(busybox_dir), "readonly": True}
        config["process"].update(terminal=False, args=["true"])
        config["linux"]["cgroupsPath"] = f"{TEST_CGROUP_PARENT}/bad-{bundle.name}-{os.getpid()}"
        if edit is not None:
            edit(config)
        (bundle / "config.json").write_bytes(raw if raw is not None else json.dumps(config).encode())
        out, err = tmp_path / f"{bundle.name}.out", tmp_path / f"{bundle.name}.err"
        with open(out, "w") as o, open(err, "w") as e:
            result = subprocess.run([kubirun_path(), "create", "--bundle", str(bundle), "bad"],
                                    stdout=o, stderr=e, stdin=subprocess.DEVNULL, timeout=60)
        stderr = err.read_text()
        if result.returncode == 0:
            kubirun("delete", "--force", "bad")
        assert result.returncode != 0, "accepted"
        assert stderr.startswith("kubirun: ") and stderr.count("\n") == 1, stderr
        assert "internal error" not in stderr
        state_root = Path(os.environ["KUBIRUN_ROOT"])
        assert not state_root.exists() or os.listdir(state_root) == []
        return stderr.rstrip("\n")
    return create


def kubirun_path() -> str:
    from tests.conftest import KUBIRUN_SCRIPT

    return str(KUBIRUN_SCRIPT)


def test_a_config_nested_100000_deep_is_refused(bad_create):
    line = bad_create(raw=b"[" * 100_000 + b"]" * 100_000)
    assert "config.json: malformed JSON: nested deeper than 200 levels" in line


def test_a_device_uid_beyond_uid_t_is_refused(bad_create):
    line = bad_create(lambda c: c["linux"].update(devices=[
        {"path": "/dev/x", "type": "c", "major": 1, "minor": 3, "uid": 2**40}]))
    assert line == ("kubirun: config.json: linux.devices[0].uid: must be at most 4294967294,"
                    " got 1099511627776")


def test_a_process_uid_of_2_to_the_32_is_refused(bad_create):
    line = bad_create(lambda c: c["process"]["user"].update(uid=2**32))
    assert "process.user.uid: must be at most 4294967294" in line


def test_a_hook_timeout_beyond_64_bits_is_refused(bad_create):
    line = bad_create(lambda c: c.update(hooks={"prestart": [{"path": "/bin/true", "timeout": 2**63}]}))
    assert "hooks.prestart[0].timeout: must be 1 to 9223372036854775807 seconds" in line


def test_a_hook_timeout_longer_than_poll_can_wait_is_accepted(tmp_path, busybox_dir):
    import json

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    subprocess.run([kubirun_path(), "spec", "--bundle", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["root"] = {"path": str(busybox_dir), "readonly": True}
    config["process"].update(terminal=False, args=["true"])
    config["linux"]["cgroupsPath"] = f"{TEST_CGROUP_PARENT}/hook-{os.getpid()}"
    config["hooks"] = {"createRuntime": [{"path": "/bin/true", "timeout": 2**40}]}
    (bundle / "config.json").write_text(json.dumps(config))
    with open(tmp_path / "out", "w") as out:
        created = subprocess.run([kubirun_path(), "create", "--bundle", str(bundle), "hook"],
                                 stdout=out, stderr=out, stdin=subprocess.DEVNULL, timeout=60)
    if created.returncode == 0:
        assert kubirun("delete", "--force", "hook").returncode == 0
    assert created.returncode == 0, (tmp_path / "out").read_text()


@pytest.mark.parametrize("entry", ["", "=x"])
def test_a_hook_env_entry_without_a_name_is_refused(bad_create, entry):
    line = bad_create(lambda c: c.update(hooks={"createRuntime": [{"path": "/bin/true",
                                                                   "env": [entry]}]}))
    assert "hooks.createRuntime[0].env[0]: expected KEY=VALUE" in line


def test_a_lone_surrogate_in_the_hostname_is_refused(bad_create):
    line = bad_create(lambda c: c.update(hostname="box\udc80"))
    assert "config.json: hostname: is not valid Unicode text" in line


def test_a_nul_in_masked_paths_is_refused(bad_create):
    line = bad_create(lambda c: c["linux"]["maskedPaths"].append("/proc/a\0b"))
    assert "linux.maskedPaths[10]: must not contain a NUL byte" in line


def test_a_nul_in_a_hook_path_is_refused(bad_create):
    line = bad_create(lambda c: c.update(hooks={"createRuntime": [{"path": "/bin/tr\0ue"}]}))
    assert "hooks.createRuntime[0].path: must not contain a NUL byte" in line


def test_a_nul_in_the_domainname_is_refused(bad_create):
    line = bad_create(lambda c: c.update(domainname="a\0b"))
    assert "config.json: domainname: must not contain a NUL byte" in line


def test_a_domainname_without_a_uts_namespace_is_refused(bad_create):
    # (the host's own name: were it accepted, nothing would change)
    current = open("/proc/sys/kernel/domainname").read().strip()

    def edit(config):
        config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != "uts"]
        config.pop("hostname")
        config["domainname"] = current
    line = bad_create(edit)
    assert "domainname: setting a domainname needs a uts namespace" in line


@pytest.mark.parametrize("devices, words", [
    ([{"allow": False, "access": ["r", "w"]}], "devices[0].access must be a string"),
    ([{"allow": False, "access": 5}], "devices[0].access must be a string"),
    (True, "devices must be a list"),
])
def test_malformed_device_rules_are_refused(bad_create, devices, words):
    line = bad_create(lambda c: c["linux"]["resources"].update(devices=devices))
    assert line.startswith("kubirun: config.json: linux.resources: ") and words in line


def test_a_limit_the_kernel_refuses_leaves_no_cgroup_and_no_init(bad_create, tmp_path):
    """The limits are written once the init was told to join its cgroup
    (runc's order): one the kernel refuses still fails create with one
    line, and takes the init, its cgroup and its state with it."""
    absent = max(os.sched_getaffinity(0)) + 64  # a CPU this host lacks
    line = bad_create(lambda c: c["linux"]["resources"].update(cpu={"cpus": str(absent)}))
    assert "cpuset.cpus" in line and str(absent) in line
    path = f"{TEST_CGROUP_PARENT}/bad-bundle0-{os.getpid()}".lstrip("/")
    cgroups = Path("/sys/fs/cgroup")
    assert [*cgroups.glob(f"*/{path}"), *cgroups.glob(path)] == []
    # The init is a fork of `kubirun create`: its command line names the bundle.
    bundle = str(tmp_path / "bundle0").encode()
    assert [pid for pid, line in _command_lines().items() if bundle in line] == []


def _command_lines() -> dict[int, bytes]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found[int(entry)] = f.read()
            except OSError:
                pass
    return found


def test_a_nested_state_json_is_reported_as_corrupt(tmp_path, busybox_dir):
    import json

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    subprocess.run([kubirun_path(), "spec", "--bundle", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["root"] = {"path": str(busybox_dir), "readonly": True}
    config["process"].update(terminal=False, args=["true"])
    config["linux"]["cgroupsPath"] = f"{TEST_CGROUP_PARENT}/state-{os.getpid()}"
    (bundle / "config.json").write_text(json.dumps(config))
    with open(tmp_path / "out", "w") as out:
        created = subprocess.run([kubirun_path(), "create", "--bundle", str(bundle), "deep"],
                                 stdout=out, stderr=out, stdin=subprocess.DEVNULL, timeout=60)
    assert created.returncode == 0, (tmp_path / "out").read_text()
    state_file = Path(os.environ["KUBIRUN_ROOT"]) / "deep" / "state.json"
    saved = state_file.read_bytes()
    try:
        state_file.write_bytes(b"[" * 100_000 + b"]" * 100_000)
        result = kubirun("state", "deep")
        assert result.returncode != 0
        assert result.stderr == "kubirun: container 'deep': corrupt state.json: nested deeper than 200 levels\n"
    finally:
        state_file.write_bytes(saved)
        assert kubirun("delete", "--force", "deep").returncode == 0


def test_a_fractional_memory_size_is_taken_as_docker_takes_it(busybox_dir):
    result = kubirun("run", "--memory", "1.5g", str(busybox_dir), "--", "true")
    assert result.returncode == 0, result.stderr
