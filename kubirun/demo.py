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
# Without a checkout (`pip install`): a root made from the host's static
# busybox on first use, kept in the store.
HOST_BUSYBOX = ("/bin/busybox", "/usr/bin/busybox")
PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"

_HOST_LINES = 12


def _heading(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def ps(image: str | None = None) -> int:
    from kubirun import imagerun as container
    from kubirun.process import ProcessSpec

    image = image or (DEMO_IMAGE if os.path.exists(DEMO_IMAGE) else busybox_root())
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


def busybox_root() -> str:
    """``$KUBIRUN_STORE/demo/busybox``: the host's static busybox, every
    applet a link to it, and an /etc with root and nobody (made once)."""
    from kubirun.image.store import store_root

    root = os.path.join(store_root(), "demo", "busybox")
    if os.path.exists(os.path.join(root, "etc", "group")):
        return root
    busybox = next((path for path in HOST_BUSYBOX if _is_static(path)), None)
    if busybox is None:
        raise KubirunError("the demo needs rootfs/busybox.tar.gz (a checkout: `make -C rootfs`)"
                           " or a static busybox on the host (apt install busybox-static)")
    import shutil
    import tempfile

    os.makedirs(os.path.dirname(root), 0o755, exist_ok=True)
    building = tempfile.mkdtemp(prefix="busybox.", dir=os.path.dirname(root))
    try:
        for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys",
                          "dev", "tmp"):
            os.makedirs(os.path.join(building, directory), 0o755, exist_ok=True)
        os.chmod(os.path.join(building, "tmp"), 0o1777)
        shutil.copy2(busybox, os.path.join(building, "bin", "busybox"))
        applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True,
                                 check=True).stdout.split()
        for applet in applets:
            if applet != "bin/busybox":
                os.makedirs(os.path.join(building, os.path.dirname(applet)), exist_ok=True)
                os.symlink("/bin/busybox", os.path.join(building, applet))
        with open(os.path.join(building, "etc", "passwd"), "w") as f:
            f.write(PASSWD)
        with open(os.path.join(building, "etc", "group"), "w") as f:
            f.write(GROUP)
        os.rename(building, root)
    except FileExistsError:
        shutil.rmtree(building, ignore_errors=True)  # another demo made it meanwhile
    except (OSError, subprocess.CalledProcessError) as err:
        shutil.rmtree(building, ignore_errors=True)
        raise KubirunError(f"cannot make the demo root {root}: {err}") from None
    return root


def _is_static(path: str) -> bool:
    """An ELF file without a PT_INTERP header (nothing to load from the host)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head[:4] == b"\x7fELF" and b"/ld-linux" not in head and b"/ld-musl" not in head
