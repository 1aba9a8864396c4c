"""What config.json gives the container, and what a bad one does: one
behaviour per test, against kubirun and runc (``oci``).  `spec` writes the
default config."""
from __future__ import annotations

import json

import pytest

from tests.integration.oci_helpers import assert_nothing_left

# --- spec ------------------------------------------------------------------


def test_spec_writes_a_default_config(oci, tmp_path):
    result = oci.cmd("spec", "--bundle", str(tmp_path))
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["ociVersion"].startswith("1.")
    assert config["process"]["args"] == ["sh"]
    assert config["root"]["path"] == "rootfs"
    kinds = {ns["type"] for ns in config["linux"]["namespaces"]}
    assert {"pid", "mount", "ipc", "uts", "network"} <= kinds
    assert "/proc" in {m["destination"] for m in config["mounts"]}


def test_spec_refuses_to_overwrite(oci, tmp_path):
    (tmp_path / "config.json").write_text("mine\n")
    result = oci.cmd("spec", "--bundle", str(tmp_path))
    assert result.returncode != 0
    assert result.stderr.strip()
    assert (tmp_path / "config.json").read_text() == "mine\n"


# --- the process the config describes --------------------------------------


def run(oci, b):
    cid = oci.new_id()
    return oci.cmd("run", "--bundle", str(b), cid)


def test_env_is_exactly_process_env(oci, bundle):
    env = ["PATH=/bin:/usr/bin", "FOO=bar", "EMPTY=", "WITH_SPACE=a b"]

    def edit(config):
        config["process"]["env"] = env

    result = run(oci, bundle(["env"], edit=edit))
    assert result.returncode == 0, result.stderr
    got = [line for line in result.stdout.splitlines() if not line.startswith("HOME=")]
    assert sorted(got) == sorted(env)


def test_home_is_set_from_the_users_passwd_entry(oci, bundle):
    result = run(oci, bundle(["sh", "-c", "echo $HOME"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "/root\n"


def test_hostname_from_config(oci, bundle):
    def edit(config):
        config["hostname"] = "from-config"

    result = run(oci, bundle(["hostname"], edit=edit))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from-config\n"


def test_cwd_from_config(oci, bundle):
    def edit(config):
        config["process"]["cwd"] = "/tmp"

    result = run(oci, bundle(["pwd"], edit=edit))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "/tmp\n"


def test_user_from_config(oci, bundle):
    def edit(config):
        config["process"]["user"] = {"uid": 65534, "gid": 65534, "additionalGids": [5]}

    result = run(oci, bundle(["sh", "-c", "id -u; id -g; id -G"], edit=edit))
    assert result.returncode == 0, result.stderr
    uid, gid, groups = result.stdout.splitlines()
    assert (uid, gid) == ("65534", "65534")
    assert set(groups.split()) == {"65534", "5"}


def test_readonly_root_is_read_only(oci, bundle):
    result = run(oci, bundle(["sh", "-c", "touch /etc/x && echo WROTE; echo done"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"


def test_the_program_is_pid_1(oci, bundle):
    result = run(oci, bundle(["sh", "-c", "echo $$"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1\n"


def test_death_by_signal_is_128_plus_n(oci, bundle):
    # PID 1 ignores signals it has no handler for, even KILL from inside:
    # a child kills itself instead, and sh reports 128+N.
    result = run(oci, bundle(["sh", "-c", "sh -c 'kill -9 $$'; exit $?"]))
    assert result.returncode == 137, result.stderr


# --- a missing program ---------------------------------------------------------


@pytest.mark.parametrize("verb", ["create", "run"])
def test_missing_executable_by_name(oci, bundle, verb):
    cid = oci.new_id()
    b = bundle(["no-such-program"])
    result = oci._with_files([verb, "--bundle", str(b), cid], f"{verb}-{cid}")
    assert result.returncode != 0
    assert "executable file not found" in result.stderr, result.stderr
    assert_nothing_left(oci, cid, b)


@pytest.mark.parametrize("verb", ["create", "run"])
def test_missing_executable_by_absolute_path(oci, bundle, verb):
    cid = oci.new_id()
    b = bundle(["/no/such/program"])
    result = oci._with_files([verb, "--bundle", str(b), cid], f"{verb}-{cid}")
    assert result.returncode != 0
    assert "no such file or directory" in result.stderr.lower(), result.stderr
    assert_nothing_left(oci, cid, b)


# --- a malformed config.json ---------------------------------------------------


def _refused(oci, b, where: str | None):
    cid = oci.new_id()
    result = oci.create(cid, b)
    assert result.returncode != 0
    assert result.stderr.strip(), "no error message"
    if oci.name == "kubirun":
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        if where:
            assert where in result.stderr, result.stderr
    assert_nothing_left(oci, cid, b)
    return result


@pytest.mark.parametrize("text", ['{"ociVersion": "1.0.2", "process": ',
                                  '{ociVersion: "1.0.2"}', '{"ociVersion": "1.0.2",}'],
                         ids=["truncated", "unquoted-key", "trailing-comma"])
def test_invalid_json_is_refused(oci, bundle, text):
    b = bundle()
    (b / "config.json").write_text(text)
    result = _refused(oci, b, None)
    if oci.name == "kubirun":
        assert "config.json" in result.stderr and "line 1 column" in result.stderr, result.stderr
        assert "internal error" not in result.stderr, result.stderr


def test_missing_process_args_is_refused(oci, bundle):
    def edit(config):
        del config["process"]["args"]

    _refused(oci, bundle(edit=edit), "process.args")


def test_empty_process_args_is_refused(oci, bundle):
    _refused(oci, bundle([]), "process.args")


def test_wrong_type_is_refused_naming_the_field(oci, bundle):
    def edit(config):
        config["process"]["args"] = ["sh", 5]

    _refused(oci, bundle(edit=edit), "process.args[1]")


def test_missing_root_is_refused(oci, bundle, tmp_path):
    def edit(config):
        config["root"]["path"] = str(tmp_path / "no-such-root")

    _refused(oci, bundle(edit=edit), "root.path")


def test_a_bundle_without_config_json_is_refused(oci, bundle):
    b = bundle()
    (b / "config.json").unlink()
    cid = oci.new_id()
    result = oci.create(cid, b)
    assert result.returncode != 0
    assert result.stderr.strip()
    assert oci.cmd("state", cid).returncode != 0
    assert not (oci.root / cid).exists()


def test_an_unsupported_oci_version_is_refused(oci, bundle):
    if oci.name == "runc":
        pytest.skip("runc 1.1.5 does not check ociVersion (it runs a 0.1 config)")
    def edit(config):
        config["ociVersion"] = "0.1"

    _refused(oci, bundle(edit=edit), "ociVersion")


def test_a_capability_the_runtime_lacks_fails_create(oci, bundle):
    """No thread gains a capability its bounding set lacks: a runtime run
    without CAP_SYS_TIME cannot give it, and says so at create (runc
    too), not after `start`."""
    def edit(config):
        for kind in ("bounding", "effective", "permitted"):
            config["process"]["capabilities"][kind].append("CAP_SYS_TIME")
    b = bundle(["true"], edit=edit)
    cid = oci.new_id()
    without = ["setpriv", "--bounding-set", "-sys_time", *oci.argv("create", "--bundle", str(b), cid)]
    import subprocess

    result = subprocess.run(without, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    if oci.name == "kubirun":
        assert "process.capabilities.effective: CAP_SYS_TIME is not in kubirun's own bounding set" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert_nothing_left(oci, cid, b)
