"""The library is the CLI's code: a container driven from Python."""
from __future__ import annotations

import json
import os

from tests.conftest import TEST_CGROUP_PARENT


def test_create_start_exec_kill_delete_from_python(busybox_dir, tmp_path):
    from kubirun.container import Container
    from kubirun.exec_into import process_from_args
    from kubirun.spec import load_bundle

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    from kubirun.spec import default_config

    config = default_config()
    config["root"] = {"path": str(busybox_dir), "readonly": True}
    config["process"].update(terminal=False, args=["sleep", "60"])
    config["linux"]["cgroupsPath"] = f"{TEST_CGROUP_PARENT}/library"
    (bundle / "config.json").write_text(json.dumps(config))

    root = str(tmp_path / "state")
    container = Container.create("library", load_bundle(str(bundle)), root=root)
    try:
        assert container.state()["status"] == "created"
        container.start()
        assert container.state()["status"] == "running"
        assert container.exec(process_from_args(["sh", "-c", "exit 5"],
                                                container.load()["process"])) == 5
        assert container.exec(process_from_args(["sh", "-c", "exit 6"],
                                                container.load())) == 6
        assert container.processes() == [container.state()["pid"]]
        container.kill(9)
    finally:
        container.delete(force=True)
    assert not os.path.exists(os.path.join(root, "library"))


def test_a_failed_start_carries_the_errno_of_the_missing_program(busybox_dir, tmp_path):
    import errno

    import pytest

    from kubirun.base.errors import ContainerStartError
    from kubirun.container import Container
    from kubirun.spec import default_config, load_bundle

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    config = default_config()
    config["root"] = {"path": str(busybox_dir), "readonly": True}
    config["process"].update(terminal=False, args=["/no/such/program"])
    config["linux"]["cgroupsPath"] = f"{TEST_CGROUP_PARENT}/library-errno"
    (bundle / "config.json").write_text(json.dumps(config))
    root = str(tmp_path / "state")
    try:
        with pytest.raises(ContainerStartError) as caught:
            Container.create("library-errno", load_bundle(str(bundle)), root=root).start()
        assert (caught.value.exit_code, caught.value.errno) == (127, errno.ENOENT)
    finally:
        if os.path.exists(os.path.join(root, "library-errno")):
            Container("library-errno", root).delete(force=True)
