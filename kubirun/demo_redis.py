"""``kubirun demo redis``: "start a Redis in 10 seconds without any install".

``kubirun run rootfs/redis.tar.gz`` (an OCI image archive made by
``make test-images``: Debian's redis-server, its config starting it), then
``kubirun exec NAME redis-cli ping`` until it answers PONG, timed twice:
cold, into an empty throwaway store (the layers are unpacked first), and
warm (the layers already there: only the overlay mount and the start).

The container has a network namespace of its own with only ``lo``
(``--network none``): redis-cli asks from inside it, so nothing is
plugged into the host's network, and the namespace goes with the
container.  The store goes at the end too.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from kubirun.base.errors import KubirunError

REDIS_IMAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "rootfs", "redis.tar.gz")
TIMEOUT = 120.0


def _heading(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _kubirun(*args: str, env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubirun", *args], env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, **kwargs)


def start_and_ping(image: str, name: str, env: dict, log) -> float:
    """Seconds from ``kubirun run`` to redis-cli's PONG; the container is
    killed and waited for before returning."""
    began = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "kubirun", "run", "--network", "none",
                               "--name", name, image], env=env, stdin=subprocess.DEVNULL,
                              stdout=log, stderr=log)
    try:
        while True:
            answer = _kubirun("exec", name, "redis-cli", "ping", env=env, timeout=30)
            if answer.stdout.strip() == "PONG":
                elapsed = time.monotonic() - began
                print(f"  redis-cli ping -> {answer.stdout.strip()}")
                links = _kubirun("exec", name, "ls", "/sys/class/net", env=env, timeout=30)
                print(f"  network devices inside: {' '.join(links.stdout.split())}")
                return elapsed
            if server.poll() is not None:
                log.seek(0)
                raise KubirunError(f"the redis container exited {server.returncode}:"
                                   f" {log.read().decode(errors='replace').strip()[-300:]}")
            if time.monotonic() - began > TIMEOUT:
                raise KubirunError(f"redis did not answer within {TIMEOUT:.0f} s")
            time.sleep(0.05)
    finally:
        if server.poll() is None:
            _kubirun("kill", name, "KILL", env=env, timeout=30)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()  # our own child: the runtime, by its PID
            server.wait()


def redis(image: str | None) -> int:
    image = image or REDIS_IMAGE
    if not os.path.exists(image):
        raise KubirunError(f"demo image {image} not found: build it with `make test-images`"
                           " (debootstrap and Debian's mirror, about a minute)")
    store = tempfile.mkdtemp(prefix="kubirun-demo-redis.")
    env = dict(os.environ, KUBIRUN_STORE=store)
    name = f"demo-redis-{os.getpid()}"
    times = []
    try:
        with tempfile.TemporaryFile() as log:
            for label, what in (("cold", "an empty store: its layers are unpacked first"),
                                ("warm", "the same store: its layers are there already")):
                _heading(f"{label}: kubirun run --network none {os.path.basename(image)}"
                         f" ({what})")
                times.append(start_and_ping(image, name, env, log))
                print(f"  {label}: {times[-1]:.2f} s from `kubirun run` to PONG")
    finally:
        shutil.rmtree(store, ignore_errors=True)
    print(f"\nShown: a Redis server from a tar.gz, nothing installed on the host, answering PONG"
          f" {times[0]:.2f} s after `kubirun run` cold and {times[1]:.2f} s warm, in a network"
          " namespace of its own.")
    return 0
