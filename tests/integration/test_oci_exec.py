"""`exec`: a new process in a running container's namespaces, one behaviour
per test, against kubirun and runc (``oci``)."""
from __future__ import annotations

import json

from tests.integration.oci_helpers import DEFAULT_ENV, pid_alive


def running(oci, bundle, **kw) -> str:
    cid = oci.new_id()
    oci.start_created(cid, bundle(**kw))
    return cid


def test_exec_returns_the_process_exit_code(oci, bundle):
    cid = running(oci, bundle)
    result = oci.cmd("exec", cid, "sh", "-c", "exit 3")
    assert result.returncode == 3, result.stderr


def test_exec_output_goes_to_the_callers_stdout(oci, bundle):
    cid = running(oci, bundle)
    result = oci.cmd("exec", cid, "echo", "hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello\n"


def test_exec_sees_the_containers_hostname(oci, bundle):
    cid = running(oci, bundle)
    result = oci.cmd("exec", cid, "hostname")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "oci-test"


def test_exec_is_in_the_containers_pid_namespace(oci, bundle):
    cid = running(oci, bundle, args=["sleep", "123"])
    result = oci.cmd("exec", cid, "cat", "/proc/1/cmdline")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\0")[:2] == ["sleep", "123"]


def test_exec_env_adds_a_variable_to_the_configs(oci, bundle):
    cid = running(oci, bundle)
    result = oci.cmd("exec", "--env", "A=B", cid, "env")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "A=B" in lines
    assert set(DEFAULT_ENV) <= set(lines), "exec lost the config's process.env"


def test_exec_defaults_to_the_configs_cwd(oci, bundle):
    def edit(config):
        config["process"]["cwd"] = "/tmp"

    cid = running(oci, bundle, edit=edit)
    result = oci.cmd("exec", cid, "pwd")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "/tmp\n"


def test_exec_defaults_to_the_configs_user(oci, bundle):
    def edit(config):
        config["process"]["user"] = {"uid": 65534, "gid": 65534}

    cid = running(oci, bundle, edit=edit)
    result = oci.cmd("exec", cid, "id", "-u")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "65534\n"


def _status_fields(text: str, names: tuple[str, ...]) -> dict[str, str]:
    fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
    return {name: fields[name].strip() for name in names}


CAP_SETS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def test_exec_has_the_configs_capabilities(oci, bundle):
    cid = running(oci, bundle)
    exec_status = oci.cmd("exec", cid, "cat", "/proc/self/status")
    init_status = oci.cmd("exec", cid, "cat", "/proc/1/status")
    assert exec_status.returncode == 0, exec_status.stderr
    # the config of `spec`: CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE
    assert _status_fields(exec_status.stdout, ("CapEff",)) == {"CapEff": "0000000020000420"}
    assert _status_fields(exec_status.stdout, CAP_SETS) == _status_fields(init_status.stdout, CAP_SETS)


def test_exec_has_the_configs_no_new_privileges(oci, bundle):
    cid = running(oci, bundle)  # the config of `spec` has noNewPrivileges: true
    result = oci.cmd("exec", cid, "cat", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    assert _status_fields(result.stdout, ("NoNewPrivs",)) == {"NoNewPrivs": "1"}


def test_exec_cwd(oci, bundle):
    cid = running(oci, bundle)
    result = oci.cmd("exec", "--cwd", "/tmp", cid, "pwd")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "/tmp\n"


def test_exec_user(oci, bundle):
    cid = running(oci, bundle)
    result = oci.cmd("exec", "--user", "65534:65534", cid, "id", "-u")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "65534\n"


def test_exec_user_group(oci, bundle):
    cid = running(oci, bundle)
    result = oci.cmd("exec", "--user", "65534:65534", cid, "id", "-g")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "65534\n"


def test_exec_process_file(oci, bundle, tmp_path):
    cid = running(oci, bundle)
    process = {
        "terminal": False,
        "user": {"uid": 65534, "gid": 65534},
        "args": ["sh", "-c", "echo $GREETING; pwd; id -u"],
        "env": ["PATH=/bin:/usr/bin", "GREETING=hi"],
        "cwd": "/tmp",
    }
    path = tmp_path / "process.json"
    path.write_text(json.dumps(process))
    result = oci.cmd("exec", "--process", str(path), cid)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hi", "/tmp", "65534"]


def test_exec_detached_with_pid_file(oci, bundle, tmp_path):
    cid = running(oci, bundle)
    pid_file = tmp_path / "exec.pid"
    result = oci._with_files(["exec", "-d", "--pid-file", str(pid_file), cid, "sleep", "77"],
                             f"exec-{cid}")
    assert result.returncode == 0, result.stderr
    text = pid_file.read_text()
    assert text.isdigit(), repr(text)
    pid = int(text)
    assert pid_alive(pid)
    with open(f"/proc/{pid}/cmdline") as f:
        assert f.read().split("\0")[:2] == ["sleep", "77"]
    pids = json.loads(oci.cmd("ps", "--format", "json", cid).stdout)
    assert pid in pids
    oci.pids.add(pid)  # it must die with the container


def test_detached_exec_of_a_missing_program_fails(oci, bundle, tmp_path):
    """runc reports a detached exec's failed execve too: it returns only once
    the program runs (which is also why its pid file names the program)."""
    cid = running(oci, bundle)
    pid_file = tmp_path / "exec.pid"
    result = oci.cmd("exec", "-d", "--pid-file", str(pid_file), cid, "/no/such/program")
    assert result.returncode != 0
    assert "no such" in result.stderr.lower() or "not found" in result.stderr.lower(), result.stderr


def test_exec_in_a_stopped_container_fails(oci, bundle):
    cid = oci.new_id()
    oci.start_created(cid, bundle(args=["true"]), until="stopped")
    result = oci.cmd("exec", cid, "echo", "should not run")
    assert result.returncode != 0
    assert "should not run" not in result.stdout
    assert result.stderr.strip()


def test_exec_in_an_unknown_container_fails(oci):
    result = oci.cmd("exec", "no-such-container", "true")
    assert result.returncode != 0
    assert result.stderr.strip()


def test_exec_of_a_missing_program_fails(oci, bundle):
    cid = running(oci, bundle)
    result = oci.cmd("exec", cid, "no-such-program")
    assert result.returncode != 0
    assert "executable file not found" in result.stderr
    assert oci.status(cid) == "running"
