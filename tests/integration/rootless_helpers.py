"""What the rootless tests share: the unprivileged user (nobody), a
directory of its own with a bundle, and running kubirun as that user."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from tests.conftest import KUBIRUN_SCRIPT

NOBODY = 65534
AS_NOBODY = [shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
             "--clear-groups"]


def user_home(busybox_dir, prefix: str) -> Iterator[str]:
    """For a fixture: a directory of nobody's with bundle/rootfs (a copy of
    the busybox root) and run/ (its XDG_RUNTIME_DIR); removed afterwards."""
    if subprocess.run([*AS_NOBODY, str(KUBIRUN_SCRIPT), "--version"], capture_output=True).returncode:
        pytest.skip("this checkout is not readable by the unprivileged user")
    top = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(top, 0o755)
    shutil.copytree(busybox_dir, os.path.join(top, "bundle", "rootfs"), symlinks=True)
    os.mkdir(os.path.join(top, "run"), 0o700)
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", top], check=True)
    yield top
    subprocess.run(["rm", "-rf", "--one-file-system", top], check=True)


def as_user(home: str, *args: str, path: str = "/usr/bin:/bin", timeout: float = 60,
            prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """``kubirun ARGS`` as nobody, with its state, store and home in
    ``home``.  Output goes through files: a detached container keeps them
    open.  ``prefix`` runs before setpriv (as root)."""
    env = {"XDG_RUNTIME_DIR": os.path.join(home, "run"), "XDG_DATA_HOME": os.path.join(home, "data"),
           "HOME": home, "PATH": path}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        result = subprocess.run([*(prefix or []), *AS_NOBODY, str(KUBIRUN_SCRIPT), *args], stdout=out,
                                stderr=err, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
        out.seek(0)
        err.seek(0)
        result.stdout, result.stderr = out.read(), err.read()
    return result
