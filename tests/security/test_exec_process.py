"""CVE-2019-5736 and CVE-2016-9962 class: while `kubirun exec` sets up its
process inside the container, that process is Python (the runtime's own
interpreter).  It must stay out of the container's reach until it has
become the container's program: non-dumpable, so no container process may
open its /proc/PID/exe, read its memory or ptrace it, and without
CAP_SYS_PTRACE the container cannot override that."""
from __future__ import annotations

import json
import os
import subprocess
import time

from tests.conftest import KUBIRUN_SCRIPT, TEST_CGROUP_PARENT

# Inside: watch every process but ourselves and note any whose exe or
# memory we could reach that is not busybox (the runtime's Python, mid-exec).
WATCHER = r"""
while :; do
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$p" = 1 ] && continue
    [ "$p" = "$$" ] && continue
    if e=$(readlink $d/exe 2>/dev/null); then
      case "$e" in */busybox|"") ;; *) echo "$p exe $e" >> /tmp/reached ;; esac
    else
      # exe hidden (non-dumpable): its memory must be hidden too, unless it
      # has just become the container's program (execve makes it dumpable)
      if head -c 1 $d/mem >/dev/null 2>&1; then
        e=$(readlink $d/exe 2>/dev/null)
        case "$e" in */busybox|"") ;; *) echo "$p mem $e" >> /tmp/reached ;; esac
      fi
    fi
  done
done
"""


def test_a_container_cannot_reach_the_exec_setup_process(tmp_path, busybox_dir):
    subprocess.run([str(KUBIRUN_SCRIPT), "spec", "--bundle", str(tmp_path)], check=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["root"] = {"path": str(busybox_dir), "readonly": True}
    config["process"].update(terminal=False, args=["sh", "-c", WATCHER])
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})
    config["linux"]["cgroupsPath"] = f"{TEST_CGROUP_PARENT}/reach-{os.getpid()}"
    (tmp_path / "config.json").write_text(json.dumps(config))
    root = ["--root", str(tmp_path / "state")]
    with open(tmp_path / "out", "w") as out:
        assert subprocess.run([str(KUBIRUN_SCRIPT), *root, "run", "-d", "--bundle", str(tmp_path), "w"],
                              stdout=out, stderr=out, stdin=subprocess.DEVNULL, timeout=30).returncode == 0
    try:
        time.sleep(0.2)
        for _ in range(30):
            result = subprocess.run([str(KUBIRUN_SCRIPT), *root, "exec", "w", "true"],
                                    capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stderr
        reached = subprocess.run([str(KUBIRUN_SCRIPT), *root, "exec", "w", "cat", "/tmp/reached"],
                                 capture_output=True, text=True, timeout=30)
        assert reached.stdout == "", f"the container reached the runtime's process: {reached.stdout}"
    finally:
        subprocess.run([str(KUBIRUN_SCRIPT), *root, "delete", "--force", "w"], timeout=30)
