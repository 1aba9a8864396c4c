"""config.json validation: every error names the JSON path and the value."""
from __future__ import annotations

import copy
import json

import pytest

from kubirun.base import jsonio
from kubirun.spec import SpecError, default_config, load_bundle, parse


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "rootfs").mkdir()
    return tmp_path


def _config(**changes) -> dict:
    config = copy.deepcopy(default_config())
    config.update(changes)
    if "linux" in changes:
        config.pop("hostname")  # it would need the uts namespace changes drop
    return config


def test_the_default_config_is_valid(bundle):
    spec = parse(_config(), str(bundle))
    assert spec.root == str(bundle / "rootfs")
    assert spec.process.args == ["sh"]
    assert spec.process.capabilities["bounding"] == ["CAP_AUDIT_WRITE", "CAP_KILL",
                                                     "CAP_NET_BIND_SERVICE"]
    # runc 1.1's default: no cgroup namespace, ambient capabilities too
    assert [ns.type for ns in spec.namespaces] == ["pid", "network", "ipc", "uts", "mount"]
    assert spec.process.capabilities["ambient"] == spec.process.capabilities["bounding"]


@pytest.mark.parametrize("version", ["1.0.0", "1.0.2", "1.1.0", "1.2.1", "1.3.0"])
def test_supported_versions(bundle, version):
    assert parse(_config(ociVersion=version), str(bundle)).version == version


@pytest.mark.parametrize("version", ["0.1.0", "2.0.0", "", None, 1])
def test_unsupported_versions_are_refused(bundle, version):
    with pytest.raises(SpecError, match="ociVersion"):
        parse(_config(ociVersion=version), str(bundle))


def test_root_path_is_relative_to_the_bundle_and_dot_is_allowed(bundle):
    assert parse(_config(root={"path": "."}), str(bundle)).root == str(bundle)


@pytest.mark.parametrize("change, where", [
    ({"root": {"path": "missing"}}, "root.path"),
    ({"root": {}}, "root.path"),
    ({"process": {"args": [], "cwd": "/"}}, "process.args"),
    ({"process": {"args": ["sh", 5], "cwd": "/"}}, "process.args[1]"),
    ({"process": {"args": ["sh"], "cwd": "relative"}}, "process.cwd"),
    ({"process": {"args": ["sh"], "env": ["NOEQUALS"]}}, "process.env[0]"),
    ({"process": {"args": ["sh"], "user": {"uid": -1}}}, "process.user.uid"),
    ({"process": {"args": ["sh"], "capabilities": {"bounding": ["CAP_BOGUS"]}}},
     "process.capabilities.bounding[0]"),
    ({"process": {"args": ["sh"], "rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]}},
     "process.rlimits[0].type"),
    ({"process": {"args": ["sh"], "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 2, "hard": 1}]}},
     "process.rlimits[0]"),
    ({"mounts": [{"destination": "relative", "type": "tmpfs"}]}, "mounts[0].destination"),
    ({"mounts": [{"type": "tmpfs"}]}, "mounts[0].destination"),
    ({"hooks": {"prestart": [{"path": "relative"}]}}, "hooks.prestart[0].path"),
    ({"hooks": {"nonsense": []}}, "hooks.nonsense"),
    ({"hooks": {"poststop": [{"path": "/bin/true", "timeout": 0}]}}, "hooks.poststop[0].timeout"),
    ({"linux": {"namespaces": [{"type": "bogus"}]}}, "linux.namespaces[0].type"),
    ({"linux": {"namespaces": [{"type": "pid"}, {"type": "pid"}]}}, "linux.namespaces[1].type"),
    ({"linux": {"namespaces": [{"type": "net", "path": "relative"}]}}, "linux.namespaces[0].type"),
    ({"linux": {"devices": [{"path": "/etc/x", "type": "c"}]}}, "linux.devices[0].path"),
    ({"linux": {"rootfsPropagation": "sideways"}}, "linux.rootfsPropagation"),
    ({"annotations": {"a": 1}}, "annotations.a"),
])
def test_errors_name_the_json_path(bundle, change, where):
    with pytest.raises(SpecError) as err:
        parse(_config(**change), str(bundle))
    assert str(err.value).startswith(f"config.json: {where}:"), str(err.value)


def test_a_hostname_needs_a_uts_namespace(bundle):
    config = _config()
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "uts"]
    with pytest.raises(SpecError, match="hostname"):
        parse(config, str(bundle))


def test_what_kubirun_cannot_honour_is_refused_not_ignored(bundle):
    config = _config()
    config["linux"]["intelRdt"] = {"closID": "x"}
    with pytest.raises(SpecError, match="linux.intelRdt"):
        parse(config, str(bundle))
    config = _config()
    config["process"]["apparmorProfile"] = "docker-default"
    with pytest.raises(SpecError, match="AppArmor"):
        parse(config, str(bundle))


def test_selinux_process_label_is_refused_without_selinux(bundle):
    config = _config()
    config["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0"
    with pytest.raises(SpecError, match="process.selinuxLabel.*SELinux"):
        parse(config, str(bundle))


def test_a_mount_label_is_ignored_with_a_warning_without_selinux(bundle, capsys):
    """A mount label only labels files: with SELinux off nothing would read
    it (crun ignores it too); a process label, a confinement, stays refused."""
    config = _config()
    config["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0:c1,c2"
    parse(config, str(bundle))
    assert "linux.mountLabel" in capsys.readouterr().err
    config["linux"]["mountLabel"] = 7
    with pytest.raises(SpecError, match="linux.mountLabel: expected a string"):
        parse(config, str(bundle))


def test_malformed_json_gives_line_and_column(bundle):
    (bundle / "config.json").write_text('{"ociVersion": "1.2.0",\n "root": }')
    with pytest.raises(SpecError, match=r"malformed JSON: .*line 2 column"):
        load_bundle(str(bundle))


def test_a_directory_without_config_json_is_not_a_bundle(tmp_path):
    with pytest.raises(SpecError, match="no config.json"):
        load_bundle(str(tmp_path))


def test_jsonio_matches_json():
    value = {"a": [1, 2.5, {"b": None, "c": True}], "s": "é\"\n", "e": {}, "l": []}
    text = json.dumps(value)
    assert jsonio.loads(text) == value
    assert jsonio.dumps(value) == json.dumps(value, separators=(",", ":"))
    assert jsonio.dumps(value, indent=2) == json.dumps(value, indent=2)
    for bad in ["", "{", '{"a": 1} x', "[1,]"]:
        with pytest.raises(jsonio.JSONError):
            jsonio.loads(bad)


@pytest.mark.parametrize("key", ["net.ipv4.ip_forward", "kernel.msgmax", "fs.mqueue.msg_max"])
def test_namespaced_sysctls_are_accepted(bundle, key):
    config = _config()
    config["linux"]["sysctl"] = {key: "1"}
    assert parse(config, str(bundle)).sysctl == {key: "1"}


@pytest.mark.parametrize("key", ["kernel.core_pattern", "vm.overcommit_memory", "kernel.hostname"])
def test_host_sysctls_are_refused(bundle, key):
    config = _config()
    config["linux"]["sysctl"] = {key: "1"}
    with pytest.raises(SpecError, match=f"linux.sysctl.{key}"):
        parse(config, str(bundle))


def test_a_net_sysctl_needs_a_network_namespace(bundle):
    config = _config()
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "network"]
    config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    with pytest.raises(SpecError, match="network namespace"):
        parse(config, str(bundle))


def test_jsonio_sorted_compact_form_is_json_dumps_sort_keys():
    """The form an image id digests: the same bytes json.dumps makes."""
    value = {"rootfs": {"type": "layers", "diff_ids": ["sha256:00"]}, "os": "linux",
             "architecture": "amd64", "config": {"Env": ["Z=é", "A=1"], "b": None, "a": 1.5}}
    assert jsonio.dumps(value, sort_keys=True) == json.dumps(value, sort_keys=True,
                                                             separators=(",", ":"))
