"""Joining existing namespaces by path, as CRI containers join their pod
sandbox's ipc, uts and network namespaces; against kubirun and runc."""
from __future__ import annotations


def _join(pid: int, kinds: tuple[str, ...]):
    proc_names = {"network": "net", "ipc": "ipc", "uts": "uts", "pid": "pid"}

    def edit(config):
        config.pop("hostname", None)  # the sandbox's uts namespace brings its name
        for ns in config["linux"]["namespaces"]:
            if ns["type"] in kinds:
                ns["path"] = f"/proc/{pid}/ns/{proc_names[ns['type']]}"
    return edit


def test_a_container_joins_its_sandboxs_namespaces(oci, bundle):
    sandbox = oci.new_id()
    sandbox_pid = oci.start_created(sandbox, bundle(["sleep", "100"]))["pid"]
    app = oci.new_id()
    b = bundle(["sh", "-c", "hostname; for n in net ipc uts; do readlink /proc/self/ns/$n; done"],
               edit=_join(sandbox_pid, ("network", "ipc", "uts")))
    result = oci.cmd("run", "--bundle", str(b), app)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    import os

    assert lines[0] == "oci-test"  # the sandbox's hostname
    assert lines[1:] == [os.readlink(f"/proc/{sandbox_pid}/ns/{n}") for n in ("net", "ipc", "uts")]


def test_a_container_joins_a_pid_namespace(oci, bundle):
    sandbox = oci.new_id()
    sandbox_pid = oci.start_created(sandbox, bundle(["sleep", "100"]))["pid"]
    app = oci.new_id()
    b = bundle(["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"],
               edit=_join(sandbox_pid, ("pid",)))
    result = oci.cmd("run", "--bundle", str(b), app)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sleep 100"


def test_a_namespace_path_that_does_not_exist_is_an_error(oci, bundle):
    app = oci.new_id()
    b = bundle(["true"], edit=_join(999999999, ("network",)))
    result = oci.cmd("run", "--bundle", str(b), app)
    assert result.returncode != 0
    assert result.stderr.strip()
