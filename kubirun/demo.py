"""Teaching demos.

``kubirun demo ps``: the same ``ps aux``, first on the host, then inside a
container.  Inside, the container's program is PID 1 and nothing of the
host's process tree is visible: that is a PID namespace.
"""
from __future__ import annotations

import os
import subprocess
import sys
from kubirun.errors import KubirunError

# rootfs/ sits beside the package in a checkout (make -C rootfs builds it).
DEMO_IMAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "rootfs", "busybox.tar.gz")

_HOST_LINES = 12


def _heading(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def ps(image: str | None = None) -> int:
    from kubirun import imagerun as container
    from kubirun.process import ProcessSpec

    image = image or DEMO_IMAGE
    if not os.path.exists(image):
        raise KubirunError(f"demo image {image} not found: build it with `make -C rootfs`")

    _heading("ps aux on the host")
    try:
        host = subprocess.run(["ps", "aux"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise KubirunError(f"cannot run ps on the host: {err}") from err
    lines = host.splitlines()
    print("\n".join(lines[: _HOST_LINES + 1]))
    if len(lines) > _HOST_LINES + 1:
        print(f"... and {len(lines) - _HOST_LINES - 1} more processes")

    _heading("ps aux inside a container (kubirun run IMAGE -- ps aux)")
    from kubirun.ns.net import NetworkOptions

    # No network needed for the lesson: no bridge made on the host for it.
    code = container.run(container.RunOptions(image=image, process=ProcessSpec(args=["ps", "aux"]),
                                              network=NetworkOptions("none")))
    sys.stdout.flush()
    print(f"\nThe host shows {len(lines) - 1} processes; the container sees only its own, "
          "and its program is PID 1.")
    return code
