"""An example orchestrator on kubirun.api: a pod (a sandbox holding the
network, two containers of an image joining it), each container restarted
with a back-off until it succeeds, the pod stopped with its stop signal.
Usage: example_orchestrator.py IMAGE [STATE_ROOT] [CGROUP_PARENT]"""
import asyncio
import logging
import sys

from kubirun.api import Runtime, Stdio

IMAGE = sys.argv[1]
ROOT = sys.argv[2] if len(sys.argv) > 2 else "/run/example-pods"
CGROUPS = sys.argv[3] if len(sys.argv) > 3 else "/example-pods"
POD = {"server": "echo hello from $(hostname) | nc -l -p 8080 && echo served",
       "client": "nc 127.0.0.1 8080 || exit 3"}


async def keep_running(runtime: Runtime, pod, name: str, script: str) -> str:
    for attempt in range(1, 6):
        box = runtime.run_image(IMAGE, ["sh", "-c", script], name=f"{pod.id}-{name}",
                                sandbox=pod, stdio=Stdio(stdout=Stdio.PIPE))
        status = await box.wait_async()
        output = box.stdout.read().decode().strip()
        box.delete()
        if status.code == 0:
            return f"{name}: {output}"
        logging.warning("%s exited %d (attempt %d): restarting", name, status.code, attempt)
        await asyncio.sleep(0.1 * 2 ** attempt)
    return f"{name}: gave up"


async def main() -> None:
    with Runtime(root=ROOT, cgroup_parent=CGROUPS) as runtime:
        pod = runtime.sandbox("web", hostname="web")
        try:
            results = await asyncio.gather(*(keep_running(runtime, pod, name, script)
                                             for name, script in POD.items()))
        finally:
            pod.kill(pod.stop_signal)
            print(f"pod: {await pod.wait_async()}")
            pod.delete(force=True)
    print("\n".join(results))


asyncio.run(main())
