"""Teaching demos.

``kubirun demo ps``: the same ``ps aux``, first on the host, then inside a
container.  Inside, the container's program is PID 1 and nothing of the
host's process tree is visible: that is a PID namespace.
``kubirun demo namespaces`` and ``kubirun demo cgroups``: the two kernel
features a container is made of.  (``image``, ``escape`` and ``redis``
have modules of their own: demo_image, demo_escape, demo_redis.)
"""
from __future__ import annotations

import os
import subprocess
import sys
from kubirun.base.errors import KubirunError

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


NAMESPACES = ("uts", "net", "mnt", "pid", "ipc", "cgroup")


def _image(image: str | None) -> str:
    image = image or (DEMO_IMAGE if os.path.exists(DEMO_IMAGE) else busybox_root())
    if not os.path.exists(image):
        raise KubirunError(f"demo image {image} not found: build it with `make -C rootfs`")
    return image


def _inside(image: str, args: list[str], resources: dict | None = None) -> tuple[int, str]:
    """Run ``args`` in a container of ``image`` (no network); its exit
    status and what it printed."""
    import tempfile

    from kubirun import imagerun
    from kubirun.ns.net import NetworkOptions
    from kubirun.process import ProcessSpec

    with tempfile.TemporaryFile() as out:
        saved = os.dup(1)
        sys.stdout.flush()
        os.dup2(out.fileno(), 1)  # the container's stdout: ours, for now
        try:
            code = imagerun.run(imagerun.RunOptions(image=image, process=ProcessSpec(args=args),
                                                    network=NetworkOptions("none"),
                                                    resources=resources or {}))
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        out.seek(0)
        return code, out.read().decode(errors="replace")


def namespaces(image: str | None = None) -> int:
    """Host and container side by side: each namespace a different object
    (its inode in /proc/PID/ns), and what that changes."""
    image = _image(image)
    script = ("for ns in " + " ".join(NAMESPACES) + "; do echo \"ns $ns $(readlink /proc/self/ns/$ns)\"; done;"
              " echo \"hostname $(hostname)\"; echo \"links $(ls /sys/class/net | tr '\\n' ' ')\";"
              " echo \"mounts $(wc -l < /proc/self/mounts)\"; echo \"pid $$\";"
              " echo \"pid-1 $(cat /proc/1/comm)\"")
    code, text = _inside(image, ["sh", "-c", script])
    if code != 0:
        raise KubirunError(f"the demo container exited {code}: {text.strip()}")
    inside = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "ns":
            name, _, link = value.partition(" ")
            inside[f"ns {name}"] = link
        else:
            inside[key] = value.strip()
    host = {f"ns {ns}": os.readlink(f"/proc/self/ns/{ns}") for ns in NAMESPACES}
    host["hostname"] = os.uname().nodename
    host["links"] = " ".join(sorted(os.listdir("/sys/class/net")))
    with open("/proc/self/mounts") as f:
        host["mounts"] = str(sum(1 for _ in f))
    host["pid"] = str(os.getpid())
    try:  # PID 1's identity: the host's init; inside, the container's program
        with open("/proc/1/comm") as f:
            host["pid-1"] = f.read().strip()
    except OSError:
        host["pid-1"] = "?"
    _heading("the same questions, asked on the host and inside a container")
    width = max(len(k) for k in host)
    print(f"{'':<{width}}  {'host':<36}  container")
    differ = 0
    for key in host:
        mark = "  " if host[key] == inside.get(key) else " *"
        differ += mark == " *"
        print(f"{key:<{width}}  {host[key][:36]:<36}  {inside.get(key, '?')}{mark}")
    print(f"\n{differ} of {len(host)} answers differ (*): every namespace is another kernel object"
          " (its inode), so the container has its own hostname, network (only lo), mounts and"
          " process tree, in which its program is PID 1.")
    return 0


# The memory part: the limit as the container sees it, an allocation past
# it (tail holds all its input in memory), then the cgroup's OOM counter.
# The allocation runs with the highest OOM score (raising one's own needs
# no privilege), so that the killer picks it, never the shell that then
# reads the counter.
_MEMORY_SCRIPT = (
    "cg=/sys/fs/cgroup; if [ -e $cg/memory.max ]; then f=memory.max; else cg=$cg/memory;"
    " f=memory.limit_in_bytes; fi; echo \"limit $(cat $cg/$f)  ($f)\";"
    " (echo 1000 > /proc/self/oom_score_adj; head -c 67108864 /dev/zero | tail > /dev/null);"
    " status=$?;"
    " if [ -e $cg/memory.events ]; then e=memory.events; else e=memory.oom_control; fi;"
    " echo \"$(grep '^oom_kill ' $cg/$e)  ($e)\"; exit $status")
# The CPU part: a busy loop under 0.2 CPU, the cgroup's throttling counters
# printed every half second while it runs.
_CPU_SCRIPT = (
    "f=/sys/fs/cgroup/cpu.stat; [ -e /sys/fs/cgroup/cpu.max ] || f=/sys/fs/cgroup/cpu/cpu.stat;"
    " (while :; do :; done) & for i in 1 2 3 4 5 6; do sleep 0.5;"
    " echo \"throttled $(grep -E '^(nr_throttled|throttled_(time|usec)) ' $f | tr '\\n' ' ')\";"
    " done; kill $!")


def cgroups(image: str | None = None) -> int:
    """Limits the kernel enforces: a program that allocates past 16 MiB is
    killed by the OOM killer (exit 137, counted in the cgroup), and a busy
    loop held to 0.2 CPU is throttled (the counter rising, shown live)."""
    image = _image(image)
    _heading("a container limited to 16 MiB of memory allocates 64 MiB")
    code, text = _inside(image, ["sh", "-c", _MEMORY_SCRIPT], {"memory": {"limit": 16 << 20}})
    print(text.rstrip())
    print(f"exit status: {code}")
    oom = next((line.split()[1] for line in text.splitlines() if line.startswith("oom_kill ")), "?")

    _heading("a container limited to 0.2 CPU runs a busy loop (cpu.stat every 0.5 s, live)")
    counts = []
    sys.stdout.flush()
    # A child runtime, its output relayed line by line: live, and read.
    with subprocess.Popen([sys.executable, "-m", "kubirun", "run", "--network", "none",
                           "--cpus", "0.2", image, "--", "sh", "-c", _CPU_SCRIPT],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True) as child:
        for line in child.stdout:
            print(line.rstrip(), flush=True)
            fields = line.split()
            if "nr_throttled" in fields[:-1]:
                counts.append(int(fields[fields.index("nr_throttled") + 1]))
    throttled = (f"nr_throttled rising from {counts[0]} to {counts[-1]}"
                 if len(counts) > 1 and counts[-1] > counts[0] else "no throttling seen here")
    if code == 137:
        print(f"\nShown: the kernel's OOM killer ended the allocating process inside the cgroup"
              f" (exit 137 = 128 + SIGKILL, oom_kill {oom}), and the CPU limit held the busy loop"
              f" back ({throttled}): a cgroup limit is the kernel's, not the runtime's.")
    else:
        print("\nShown: the program was not killed: this host does not enforce the memory limit"
              " (no memory controller for the container).")
    return 0


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
