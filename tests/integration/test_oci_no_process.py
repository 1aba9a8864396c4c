"""A config.json without ``process``: the runtime-spec makes it REQUIRED
only "when start is called", so `create` makes the container and `start`
refuses (runtime-tools' `start` program checks both).  runc 1.1 refuses at
create instead ("process property must not be empty"): these run against
kubirun only, except `run`, where both refuse."""
from __future__ import annotations

import pytest

from tests.integration.oci_helpers import assert_nothing_left


def _no_process(config):
    del config["process"]


@pytest.fixture
def created(oci, bundle):
    if oci.name == "runc":
        pytest.skip("runc 1.1 refuses a config without process at create")
    cid = oci.new_id()
    b = bundle(edit=_no_process)
    result = oci.create(cid, b)
    assert result.returncode == 0, result.stderr
    return cid, b


def test_create_without_a_process_leaves_the_container_created(oci, created):
    cid, _ = created
    assert oci.status(cid) == "created"


def test_start_without_a_process_fails_in_one_line_and_the_container_stays_created(oci, created):
    cid, _ = created
    result = oci.cmd("start", cid)
    assert result.returncode != 0
    assert result.stderr.startswith("kubirun: ") and result.stderr.count("\n") == 1, result.stderr
    assert "process" in result.stderr
    assert oci.status(cid) == "created"


def test_delete_of_a_container_without_a_process_removes_everything(oci, created):
    cid, b = created
    oci.cmd("start", cid)
    result = oci.cmd("delete", cid)
    assert result.returncode == 0, result.stderr
    assert_nothing_left(oci, cid, b)


def test_run_without_a_process_is_refused_and_leaves_nothing(oci, bundle):
    cid = oci.new_id()
    b = bundle(edit=_no_process)
    result = oci.cmd("run", "--bundle", str(b), cid)
    assert result.returncode != 0
    assert_nothing_left(oci, cid, b)


def test_exec_by_command_line_into_it_says_the_config_has_no_process(oci, created):
    """Exec takes the container's process (user, env, capabilities) and
    changes its args: without one, it says so and what to pass instead."""
    cid, _ = created
    result = oci.cmd("exec", cid, "true")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert "config.json has no process" in result.stderr and "--process" in result.stderr
