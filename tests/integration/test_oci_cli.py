"""The runtime's own command line around the lifecycle: --log and
--log-format (engines read the last error from the log), `features`;
one behaviour per test, against kubirun and runc (``oci``)."""
from __future__ import annotations

import json

import pytest


def _json_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_log_json_records_the_error(oci, tmp_path):
    log = tmp_path / "log.json"
    result = oci.cmd("--log", str(log), "--log-format", "json", "state", "nope")
    assert result.returncode != 0
    entries = _json_lines(log)
    assert entries, "nothing was logged"
    for entry in entries:
        assert {"level", "msg", "time"} <= set(entry), entry
    errors = [e for e in entries if e["level"] == "error"]
    assert errors, entries
    assert errors[-1]["msg"]


def test_log_json_appends(oci, tmp_path):
    log = tmp_path / "log.json"
    log.write_text('{"level":"info","msg":"before","time":"2020-01-01T00:00:00Z"}\n')
    assert oci.cmd("--log", str(log), "--log-format", "json", "state", "nope").returncode != 0
    entries = _json_lines(log)
    assert entries[0]["msg"] == "before"
    assert entries[-1]["level"] == "error"


def test_log_json_of_a_failed_create_names_the_cause(oci, bundle, tmp_path):
    log = tmp_path / "log.json"
    cid = oci.new_id()
    b = bundle(["no-such-program"])
    result = oci._with_files(["--log", str(log), "--log-format", "json", "create", "--bundle",
                              str(b), cid], f"create-{cid}")
    assert result.returncode != 0
    errors = [e for e in _json_lines(log) if e["level"] == "error"]
    assert errors
    assert "executable file not found" in errors[-1]["msg"]


def test_log_text_format(oci, tmp_path):
    log = tmp_path / "log.txt"
    assert oci.cmd("--log", str(log), "state", "nope").returncode != 0
    lines = log.read_text().splitlines()
    assert lines
    assert "level=error" in lines[-1]
    assert 'msg="' in lines[-1]


def test_features(oci):
    result = oci.cmd("features")
    if oci.name == "runc" and result.returncode != 0:
        pytest.skip("this runc has no `features` command (runc < 1.1.?)")
    assert result.returncode == 0, result.stderr
    features = json.loads(result.stdout)
    assert features["ociVersionMin"].startswith("1.")
    assert features["ociVersionMax"] >= features["ociVersionMin"]
    assert {"prestart", "createRuntime", "createContainer", "startContainer", "poststart",
            "poststop"} <= set(features["hooks"])
    assert {"pid", "mount", "network", "ipc", "uts"} <= set(features["linux"]["namespaces"])


def test_version(oci):
    result = oci.cmd("--version")
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("spec: 1.") for line in result.stdout.splitlines()), result.stdout


def test_output_to_a_closed_pipe_ends_quietly_by_sigpipe(oci):
    # `kubirun features | head -1`: the reader is gone; die as a Unix
    # filter does (SIGPIPE), without "Broken pipe" on stderr.
    import os
    import signal
    import subprocess

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(oci.argv("features"), stdout=write_end, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, timeout=30)
    finally:
        os.close(write_end)
    assert result.returncode == -signal.SIGPIPE, (result.returncode, result.stderr)
    assert result.stderr == b""


def test_spec_writes_runcs_default_config(tmp_path):
    # kubirun spec as runc 1.1 writes it (but for its own hostname and the
    # spec version's -dev suffix): engines and users start from it.
    import shutil
    import subprocess

    from tests.conftest import KUBIRUN_SCRIPT

    if shutil.which("runc") is None:
        pytest.skip("runc is not installed")
    for runtime, directory in ((str(KUBIRUN_SCRIPT), tmp_path / "k"), ("runc", tmp_path / "r")):
        directory.mkdir()
        subprocess.run([runtime, "spec", "--bundle", str(directory)], check=True)
    ours = json.loads((tmp_path / "k" / "config.json").read_text())
    runcs = json.loads((tmp_path / "r" / "config.json").read_text())
    for config in (ours, runcs):
        config.pop("hostname")
        config["ociVersion"] = config["ociVersion"].removesuffix("-dev")
    assert ours == runcs


def test_list_json_has_runcs_fields_in_runcs_order(oci, bundle):
    assert oci.cmd("list", "--format", "json").stdout.strip() == "null"  # nothing yet
    cid = oci.new_id()
    oci.start_created(cid, bundle())
    listed = json.loads(oci.cmd("list", "--format", "json").stdout)
    (entry,) = [e for e in listed if e["id"] == cid]
    assert list(entry) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created",
                           "owner"]
    assert entry["owner"] == "root" and entry["status"] == "running"


DEBUG_LINE = r'^time="[^"]+" level=debug msg=".*"$'


@pytest.mark.parametrize("verb", ["run", "create", "exec"])
def test_debug_lines_are_logfmt_on_stderr_or_in_the_log(oci, bundle, tmp_path, verb):
    import re

    import subprocess

    def debug_lines(text: str) -> list[str]:
        return [line for line in text.splitlines() if re.match(DEBUG_LINE, line)]

    for log in (None, tmp_path / "log.txt"):
        where = ["--log", str(log)] if log else []
        cid = oci.new_id()
        if verb == "exec":
            oci.start_created(cid, bundle())
            result = oci.cmd(*where, "--debug", "exec", cid, "true")
        elif verb == "create":
            # (the waiting init keeps create's stderr: a file, not a pipe)
            err_path = tmp_path / f"create-{cid}.err"
            with open(err_path, "w") as err:
                result = oci.cmd(*where, "--debug", "create", "--bundle", str(bundle()), cid,
                                 stdout=subprocess.DEVNULL, stderr=err)
            result.stderr = err_path.read_text()
        else:
            result = oci.cmd(*where, "--debug", "run", "--bundle", str(bundle(["true"])), cid)
        assert result.returncode == 0, result.stderr
        if log is None:
            assert debug_lines(result.stderr), result.stderr
        else:
            assert debug_lines(log.read_text()), log.read_text()
            assert not debug_lines(result.stderr), result.stderr
