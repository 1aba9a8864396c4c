"""The node supervisor: pods kept running as a kubelet keeps them, in one
asyncio event loop, without threads.

    node = Node(root="/run/kubirun/node")
    await node.apply(manifest_dict)        # the pod starts in the background
    node.status("web")                      # the Pod object, status as Kubernetes shows it
    async for event in node.watch(): ...    # its events (or `for` in another thread)
    await node.delete("web")                # stopped, removed, nothing left

A pod is a sandbox (``Runtime.sandbox``: its network, IPC and UTS
namespaces) and containers joining it (``Runtime.run_image(sandbox=)``).
Each container has a task that creates it, waits for its exit
(``Container.wait_async``: the fork server tells), and decides by
kubelet's rules (``status.ContainerTracker``: restart policy, crash-loop
back-off) whether and when to make the next instance; its probes are tasks
too (``prober.Worker`` decides when and what a result means; ``checks``
runs them).  Every wait for a rule's deadline goes through the clock, so a
fast clock runs kubelet's minutes in seconds.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import signal
import uuid
import weakref

from kubirun.api import Container, KubirunError, Runtime, Stdio
from kubirun.node import checks, logs, manifest, prober, status
from kubirun.node.backoff import Backoff
from kubirun.node.clock import Clock
from kubirun.node.events import Events, Watch
from kubirun.node.netns import Dialer

MINIMUM_GRACE = 2.0  # kubelet's minimumGracePeriodInSeconds: what the stop signal gets at least
LOG_DRAIN = 2.0  # how long the output of an exited container may take to reach its log


def _spec_key(pod: str, uid: str, spec: manifest.Container) -> str:
    """kubelet's back-off key: the pod (its uid too), the container and
    its spec's hash (a changed spec is a new ladder)."""
    digest = hashlib.sha256(repr(spec).encode()).hexdigest()[:12]
    return f"{pod}_{uid}_{spec.name}_{digest}"


class _Instance:
    """One run of a container: its kubirun.api handle, log pumps, exit."""

    def __init__(self, container: Container, number: int) -> None:
        self.container = container
        self.number = number
        self.exited: asyncio.Future = asyncio.get_running_loop().create_future()
        self.stopping = False
        self.pumps: list[logs.Pump] = []


class _PodWorker:
    """One pod: its sandbox, containers, probes, status and events."""

    def __init__(self, node: "Node", pod: manifest.Pod, raw: dict,
                 saved: dict | None = None) -> None:
        self.node, self.pod, self.raw = node, pod, raw
        self.name = pod.name
        saved = saved or {}
        self.uid = saved.get("uid") or str(uuid.uuid4())
        self.created = saved.get("created") or node.clock.wall()
        self.started_at: float | None = saved.get("started_at")
        self.directory = os.path.join(node.root, "pods", self.name)
        self.events = Events(node.clock)
        self.events.listeners.append(lambda event: node._publish(self.name, event))
        self.deleting = False
        self._deleted = asyncio.Event()
        self.sandbox: Container | None = None
        self.dialer: Dialer | None = None
        self.pod_ip: str | None = None
        self.probe_host = "127.0.0.1"
        self.instances: dict[str, _Instance] = {}
        # per container: who follows its log (logs -f), told each line written
        self.log_listeners: dict[str, list] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.transitions: dict = {}
        self.sidecars = frozenset(c.name for c in pod.spec.init_containers if c.sidecar)
        self.trackers: dict[str, status.ContainerTracker] = {}
        for spec in pod.spec.init_containers + pod.spec.containers:
            init = spec in pod.spec.init_containers
            self.trackers[spec.name] = status.ContainerTracker(
                spec.name, spec.image, _spec_key(self.name, self.uid, spec),
                policy="Always" if spec.sidecar else pod.spec.restart_policy,
                init=init, sidecar=spec.sidecar,
                has_startup_probe=spec.startup_probe is not None,
                has_readiness_probe=spec.readiness_probe is not None,
                clock=node.clock, backoff=node.backoff, events=self.events, pod=self.name)
        self.main: asyncio.Task | None = None
        self.failed_message = ""
        self.path = os.path.join(self.directory, "pod.json")
        if saved:
            self.transitions = {k: tuple(v) for k, v in saved.get("transitions", {}).items()}
            self.events.items = saved.get("events", [])
            for name, tracker_saved in saved.get("trackers", {}).items():
                if name in self.trackers:
                    self.trackers[name].restore(tracker_saved)
            for key, (delay, last_update) in saved.get("backoff", {}).items():
                node.backoff.restore(key, delay, last_update)
        self.finishing = False  # the regular containers are done: sidecars stop for good

    # --- its record on disk: what a restarted supervisor goes on with ----------------

    def save(self) -> None:
        if self.deleting:
            return
        backoff = {}
        for tracker in self.trackers.values():
            entry = self.node.backoff.entry(tracker.spec_key)
            if entry is not None:
                backoff[tracker.spec_key] = entry
        record = {"raw": self.raw, "uid": self.uid, "created": self.created,
                  "started_at": self.started_at, "transitions": self.transitions,
                  "trackers": {n: t.snapshot() for n, t in self.trackers.items()},
                  "backoff": backoff, "events": self.events.items[-50:]}
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        temporary = self.path + ".new"
        with open(temporary, "w") as file:
            json.dump(record, file)
        os.replace(temporary, self.path)

    # --- the pod's life ---------------------------------------------------------

    async def run(self, adopt: bool = False) -> None:
        """The pod's life; ``adopt``: go on with the one a killed
        supervisor left (its sandbox and containers still run)."""
        try:
            if not (adopt and self._adopt_sandbox()):
                self._make_sandbox()
        except KubirunError as err:
            self.failed_message = str(err)
            self.events.warning("FailedCreatePodSandBox", f"Failed to create pod sandbox: {err}")
            return
        if self.started_at is None:
            self.started_at = self.node.clock.wall()
        self.save()
        for spec in self.pod.spec.init_containers:
            if self.deleting:
                return
            if spec.sidecar:
                self.tasks[spec.name] = asyncio.ensure_future(self._keep(spec, adopt))
                await self._until(lambda s=spec: self.trackers[s.name].started
                                  or self.tasks[s.name].done())
                continue
            await self._keep(spec, adopt)
            state = self.trackers[spec.name].state
            if "terminated" not in state or state["terminated"]["exitCode"] != 0:
                return  # failed for good (restartPolicy Never): the pod failed
        if self.deleting:
            return
        regular = [asyncio.ensure_future(self._keep(spec, adopt))
                   for spec in self.pod.spec.containers]
        for spec, task in zip(self.pod.spec.containers, regular):
            self.tasks[spec.name] = task
        await asyncio.gather(*regular, return_exceptions=True)
        if not self.deleting:
            await self._stop_sidecars(float(self.pod.spec.termination_grace_period_seconds))

    async def _until(self, condition) -> None:
        while not condition() and not self.deleting:
            await asyncio.sleep(0.05)

    def _adopt_sandbox(self) -> bool:
        """The sandbox a killed supervisor left, if it still runs."""
        try:
            sandbox = self.node.runtime.load(self._id("pod"))
            state = sandbox.state()
        except KubirunError:
            return False
        if state["status"] != "running":
            sandbox.delete(force=True)
            return False
        self.sandbox = sandbox
        self._reach(state["pid"])
        return True

    def _reach(self, pid: int) -> None:
        """How probes reach the pod: on its bridge address from here (as
        kubelet probes the pod's IP), on the host's loopback for
        hostNetwork, else on the loopback of its own namespace, on sockets
        the fork server makes there (netns.Dialer)."""
        self.pod_ip = None if self.pod.spec.host_network else self.sandbox.ip_address
        if self.pod_ip or self.pod.spec.host_network:
            self.dialer, self.probe_host = Dialer(None), self.pod_ip or "127.0.0.1"
        else:
            self.dialer, self.probe_host = Dialer(self.sandbox), "127.0.0.1"

    def _make_sandbox(self) -> None:
        spec = self.pod.spec
        ports = [(p.host_port, p.container_port) for c in spec.containers + spec.init_containers
                 for p in c.ports if p.host_port]
        network = "host" if spec.host_network else self.node.network
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        self.sandbox = self.node.runtime.sandbox(
            self._id("pod"), network=network, ports=ports if network == "bridge" else (),
            hostname=None if network == "host" else (spec.hostname or self.name))
        self._reach(self.sandbox.state()["pid"])

    def _id(self, suffix: str) -> str:
        return f"{self.name}_{suffix}"

    async def _keep(self, spec: manifest.Container, adopt: bool = False) -> None:
        """Run ``spec``'s instances, one after the other, as kubelet's
        rules say, until one stays down or the pod is deleted."""
        tracker = self.trackers[spec.name]
        outcome: float | None = await self._readopt(spec, tracker) if adopt else 0.0
        while outcome is not None and not self.deleting:
            while outcome and not self.deleting:  # back-off: CrashLoopBackOff meanwhile
                self.save()
                await self._sleep(outcome)
                outcome = tracker.next_start() if not self.deleting else None
            if outcome is None or self.deleting:
                return
            tracker.creating()
            try:
                instance = self._create(spec, tracker.restart_count)
            except KubirunError as err:
                tracker.failed_to_create(str(err))
                self.node.log.warning("pod %s: container %s: %s", self.name, spec.name, err)
                outcome = tracker.exited(128, reason="ContainerCannotRun",
                                         pod_deleting=self.deleting)
            else:
                outcome = await self._run_instance(spec, tracker, instance)
            self.save()

    async def _readopt(self, spec: manifest.Container,
                       tracker: status.ContainerTracker) -> float | None:
        """Where a killed supervisor left ``spec``: its running instance
        adopted (and waited for), or kubelet's next step for it."""
        if tracker.done:
            return None
        number = tracker.restart_count
        try:
            container = self.node.runtime.load(self._id(f"{spec.name}_{number}"))
            running = container.state()["status"] == "running"
        except KubirunError:
            container, running = None, False
        if running and "running" in tracker.state:
            assert container is not None
            self.node.log.info("pod %s: container %s adopted", self.name, container.id)
            return await self._run_instance(spec, tracker, self._instance(
                container, spec.name, number), adopted=True)
        if container is not None:  # it ended while no supervisor watched
            exit_status = container.exit_status
            container.delete(force=True)
            for stream in ("stdout", "stderr"):
                logs.Fifo(self._fifo_path(spec.name, number, stream), False).remove()
            if "running" in tracker.state:
                if exit_status is None:
                    return tracker.exited(137, reason="ContainerStatusUnknown")
                return tracker.exited(exit_status.code, exit_status.oom_killed,
                                      exit_status.signal)
        if "waiting" in tracker.state and tracker.finished_at is None:
            return 0.0  # never ran: make it now
        return tracker.next_start() if tracker.finished_at is not None else 0.0

    async def _run_instance(self, spec: manifest.Container, tracker: status.ContainerTracker,
                            instance: _Instance, adopted: bool = False) -> float | None:
        self.instances[spec.name] = instance
        if not adopted:
            tracker.running(instance.container.id)
            self.save()
        probes = [asyncio.ensure_future(self._probe(spec, tracker, instance, kind, probe))
                  for kind, probe in spec.probes().items()]
        waiting = asyncio.ensure_future(_wait_adopted(instance.container) if adopted
                                        else instance.container.wait_async())
        if spec.lifecycle.post_start is not None and not adopted:
            ok, output = await self._hook(spec.lifecycle.post_start, spec, instance, None)
            if not ok and not waiting.done():
                self.events.warning("FailedPostStartHook", f"PostStartHook failed: {output}",
                                    tracker.object)
                asyncio.ensure_future(self._stop(spec, instance, "FailedPostStartHook"))
        try:
            exit_status = await waiting
        except KubirunError as err:
            self.node.log.warning("pod %s: container %s: %s", self.name, spec.name, err)
            exit_status = None
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
        if instance.pumps:
            await asyncio.wait([pump.done for pump in instance.pumps], timeout=LOG_DRAIN)
            for pump in instance.pumps:
                pump.close()
            instance.pumps[0].log.close()
            for stream in ("stdout", "stderr"):
                logs.Fifo(self._fifo_path(spec.name, instance.number, stream), False).remove()
        instance.exited.set_result(exit_status)
        code = exit_status.code if exit_status else 137
        outcome = tracker.exited(code, bool(exit_status and exit_status.oom_killed),
                                 exit_status.signal if exit_status else None,
                                 pod_deleting=self.deleting or (spec.sidecar and self.finishing),
                                 reason=None if exit_status else "ContainerStatusUnknown")
        self.instances.pop(spec.name, None)
        try:
            instance.container.delete(force=True)
        except KubirunError as err:
            self.node.log.warning("pod %s: deleting container %s: %s", self.name,
                                  instance.container.id, err)
        return outcome

    def _create(self, spec: manifest.Container, number: int) -> _Instance:
        assert self.sandbox is not None
        entrypoint, command = None, None
        if spec.command is not None:
            entrypoint, command = spec.command, list(spec.args or [])
        elif spec.args is not None:
            command = spec.args
        env: dict[str, str] = {}
        for variable in spec.env:
            env[variable.name] = variable.value
        user = None
        context = spec.security_context
        if context.run_as_user is not None:
            user = str(context.run_as_user)
            if context.run_as_group is not None:
                user += f":{context.run_as_group}"
        fifos = [logs.Fifo(self._fifo_path(spec.name, number, stream))
                 for stream in ("stdout", "stderr")]
        # Our ends are open before the container's: what it writes and
        # exits before we read is kept (a FIFO's data goes with its last fd).
        readers = [fifo.reader() for fifo in fifos]
        try:
            container = self.node.runtime.run_image(
                spec.image, command, name=self._id(f"{spec.name}_{number}"),
                entrypoint=entrypoint, env=env, workdir=spec.working_dir or None, user=user,
                mounts=self._mounts(spec), read_only=context.read_only_root_filesystem,
                resources=_resources(spec), sandbox=self.sandbox,
                stdio=Stdio(stdout=fifos[0].writer, stderr=fifos[1].writer))
        except BaseException:
            for fifo, reader in zip(fifos, readers):
                reader.close()
                fifo.remove()
            raise
        finally:
            for fifo in fifos:
                fifo.close_writer()  # the container holds them now
        return self._instance(container, spec.name, number, readers)

    def _fifo_path(self, container: str, number: int, stream: str) -> str:
        return os.path.join(self.directory, "io", f"{container}_{number}.{stream}")

    def _instance(self, container: Container, name: str, number: int,
                  readers: list | None = None) -> _Instance:
        """Our handle of a container instance: its output pumped into its
        log (``readers``: our ends of its FIFOs; else opened by path)."""
        instance = _Instance(container, number)
        log = logs.LogFile(os.path.join(self.directory, "logs", name), number,
                           self.node.log_max_size, self.log_listeners.setdefault(name, []))
        if readers is None:
            readers = [logs.Fifo(self._fifo_path(name, number, stream), create=False).reader()
                       for stream in ("stdout", "stderr")]
        instance.pumps = [logs.Pump(reader, stream, log)
                          for reader, stream in zip(readers, ("stdout", "stderr"))]
        return instance

    def _mounts(self, spec: manifest.Container) -> list[dict]:
        volumes = {v.name: v for v in self.pod.spec.volumes}
        mounts = []
        for mount in spec.volume_mounts:
            volume = volumes[mount.name]
            if volume.empty_dir is not None:
                source = os.path.join(self.directory, "volumes", volume.name)
                os.makedirs(source, mode=0o777, exist_ok=True)
                os.chmod(source, 0o777)  # as kubelet's emptyDir: writable by any user
            else:
                source = volume.host_path.path
                if volume.host_path.type == "DirectoryOrCreate":
                    os.makedirs(source, mode=0o755, exist_ok=True)
                elif volume.host_path.type == "FileOrCreate" and not os.path.exists(source):
                    open(source, "a").close()
            if mount.sub_path:
                source = os.path.join(source, mount.sub_path)
                os.makedirs(source, exist_ok=True)
            mounts.append({"destination": mount.mount_path, "type": "bind", "source": source,
                           "options": ["rbind", "rprivate", "ro" if mount.read_only else "rw"]})
        return mounts

    # --- probes and hooks ---------------------------------------------------------

    async def _probe(self, spec: manifest.Container, tracker: status.ContainerTracker,
                     instance: _Instance, kind: str, probe: manifest.Probe) -> None:
        worker = prober.Worker(probe.rules, self.node.clock)
        worker.container_running(instance.container.id, self.node.clock.now())
        label = kind.capitalize()
        while True:
            if worker.due(tracker.started):
                result, output = await self._check(probe, spec, instance)
                changed = worker.record(result)
                if result == prober.FAILURE:
                    self.events.warning("Unhealthy", f"{label} probe failed: {output.strip()}",
                                        tracker.object)
                if kind == prober.STARTUP and result == prober.SUCCESS:
                    tracker.startup_succeeded()
                    self.save()
                elif kind == prober.READINESS and changed:
                    tracker.readiness(worker.result == prober.SUCCESS)
                    self.save()
                elif kind != prober.READINESS and changed and worker.result == prober.FAILURE:
                    asyncio.ensure_future(self._stop(
                        spec, instance, f"Container {spec.name} failed {kind} probe,"
                        " will be restarted", probe.termination_grace_period_seconds))
                    return
            elif kind == prober.STARTUP and tracker.started:
                return
            await self.node.clock.sleep(worker.seconds_until_due() or probe.rules.period)

    async def _check(self, probe: manifest.Probe | manifest.LifecycleHandler,
                     spec: manifest.Container, instance: _Instance,
                     timeout: float | None = None) -> tuple[str, str]:
        timeout = timeout or float(getattr(probe, "timeout_seconds", 1))
        assert self.dialer is not None
        if probe.exec is not None:
            return await checks.exec_probe(instance.container, probe.exec.command, timeout)
        if probe.http_get is not None:
            action = probe.http_get
            return await checks.http(self.dialer, action.host or self.probe_host,
                                     spec.port_number(action.port), action.path, timeout,
                                     {h.name: h.value for h in action.http_headers},
                                     action.scheme)
        if probe.tcp_socket is not None:
            action = probe.tcp_socket
            return await checks.tcp(self.dialer, action.host or self.probe_host,
                                    spec.port_number(action.port), timeout)
        grpc = getattr(probe, "grpc", None)  # probes have it, hooks do not
        if grpc is not None:
            from kubirun.node import grpcprobe

            return await grpcprobe.check(self.dialer, self.probe_host, grpc.port,
                                         grpc.service or "", timeout)
        return prober.FAILURE, "no handler"

    async def _hook(self, handler: manifest.LifecycleHandler, spec: manifest.Container,
                    instance: _Instance, timeout: float | None) -> tuple[bool, str]:
        if handler.sleep is not None:
            await self._sleep(handler.sleep.seconds)
            return True, ""
        if handler.exec is not None:
            try:
                code, output = await checks.run_exec(instance.container, handler.exec.command,
                                                     timeout)
            except KubirunError as err:
                return False, str(err)
            return code == 0, output if code is not None else "timed out"
        result, output = await self._check(handler, spec, instance, timeout or 30.0)
        return result == prober.SUCCESS, output

    # --- stopping -------------------------------------------------------------------

    async def _stop(self, spec: manifest.Container, instance: _Instance, message: str,
                    grace: int | None = None) -> None:
        """kubelet's killContainer: preStop, the stop signal, KILL after
        the grace period (preStop's time taken from it; at least 2 s left)."""
        if instance.stopping or instance.exited.done():
            return
        instance.stopping = True
        tracker = self.trackers[spec.name]
        grace_period = float(self.pod.spec.termination_grace_period_seconds
                             if grace is None else grace)
        self.events.normal("Killing", f"Stopping container {spec.name}"
                           if message == "delete" else message, tracker.object)
        clock = self.node.clock
        began = clock.now()
        if spec.lifecycle.pre_stop is not None and grace_period > 0:
            hook = asyncio.ensure_future(self._hook(spec.lifecycle.pre_stop, spec, instance,
                                                    grace_period))
            await asyncio.wait({hook, instance.exited}, return_when=asyncio.FIRST_COMPLETED)
            if hook.done() and not hook.result()[0]:
                self.events.warning("FailedPreStopHook", f"PreStopHook failed: "
                                    f"{hook.result()[1]}", tracker.object)
            hook.cancel()
        remaining = max(MINIMUM_GRACE, grace_period - (clock.now() - began))
        if instance.exited.done():
            return
        try:
            instance.container.kill(instance.container.stop_signal)
        except KubirunError:
            pass  # gone meanwhile
        stopped = asyncio.ensure_future(asyncio.shield(instance.exited))
        sleeper = asyncio.ensure_future(clock.sleep(remaining))
        await asyncio.wait({stopped, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        sleeper.cancel()
        if not instance.exited.done():
            try:
                instance.container.kill(signal.SIGKILL, all=True)
            except KubirunError:
                pass
            await asyncio.shield(instance.exited)
        stopped.cancel()

    async def _stop_sidecars(self, grace: float) -> None:
        self.finishing = True
        for spec in reversed(self.pod.spec.init_containers):
            instance = self.instances.get(spec.name)
            if spec.sidecar and instance is not None:
                await self._stop(spec, instance, "delete", int(grace))

    async def _sleep(self, seconds: float) -> None:
        """The clock's sleep, cut short by the pod's deletion."""
        sleeper = asyncio.ensure_future(self.node.clock.sleep(seconds))
        deleted = asyncio.ensure_future(self._deleted.wait())
        await asyncio.wait({sleeper, deleted}, return_when=asyncio.FIRST_COMPLETED)
        sleeper.cancel()
        deleted.cancel()

    async def delete(self, grace: int | None = None) -> None:
        self.deleting = True
        self._deleted.set()
        grace = self.pod.spec.termination_grace_period_seconds if grace is None else grace
        specs = {s.name: s for s in self.pod.spec.init_containers + self.pod.spec.containers}
        regular = [self._stop(specs[name], instance, "delete", grace)
                   for name, instance in list(self.instances.items())
                   if name not in self.sidecars]
        await asyncio.gather(*regular, return_exceptions=True)
        for spec in reversed(self.pod.spec.init_containers):
            instance = self.instances.get(spec.name)
            if instance is not None:
                await self._stop(spec, instance, "delete", grace)
        if self.main is not None:
            await asyncio.gather(self.main, *self.tasks.values(), return_exceptions=True)
        if self.dialer is not None:
            await self.dialer.close()
        if self.sandbox is not None:
            try:
                self.sandbox.delete(force=True)
            except KubirunError as err:
                self.node.log.warning("pod %s: deleting its sandbox: %s", self.name, err)
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- status ---------------------------------------------------------------------

    def to_dict(self) -> dict:
        init = [self.trackers[c.name].to_dict() for c in self.pod.spec.init_containers]
        regular = [self.trackers[c.name].to_dict() for c in self.pod.spec.containers]
        phase = status.pod_phase(self.pod.spec.restart_policy, init, regular, self.sidecars)
        if self.failed_message:
            phase = "Pending"
        pod_status = {
            "phase": phase,
            "conditions": status.conditions(init, regular, self.transitions,
                                            self.node.clock.wall(), self.sidecars),
            "containerStatuses": regular,
        }
        if init:
            pod_status["initContainerStatuses"] = init
        if self.started_at is not None:
            pod_status["startTime"] = status.timestamp(self.started_at)
        if self.pod_ip:
            pod_status["podIP"] = self.pod_ip
            pod_status["podIPs"] = [{"ip": self.pod_ip}]
        metadata = {"name": self.name, "namespace": self.pod.metadata.namespace, "uid": self.uid,
                    "creationTimestamp": status.timestamp(self.created)}
        if self.pod.metadata.labels:
            metadata["labels"] = dict(self.pod.metadata.labels)
        if self.deleting:
            metadata["deletionTimestamp"] = status.timestamp(self.node.clock.wall())
        spec = dict(self.raw.get("spec") or {})
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec,
                "status": pod_status}


async def _wait_adopted(container: Container):
    """Wait for a container another supervisor's fork server made (its
    pidfd, on the loop).  How it ended: recorded by that fork server, which
    outlives a killed supervisor while it has containers; None if nothing
    recorded it (ContainerStatusUnknown)."""
    try:
        return await container.wait_async()
    except KubirunError:
        return None


def _resources(spec: manifest.Container) -> dict | None:
    limits = spec.resources.limits
    resources: dict = {}
    if "memory" in limits:
        resources["memory"] = {"limit": int(manifest.quantity(limits["memory"], "memory"))}
    if "cpu" in limits:
        period = 100000
        quota = max(1000, int(manifest.quantity(limits["cpu"], "cpu") * period))
        resources["cpu"] = {"quota": quota, "period": period}
    return resources or None


class Node:
    """Pods of one node, kept running in the caller's asyncio event loop.

    ``root``: the node's state (pods' logs, volumes, and the runtime's
    containers under ``root/containers``); ``network``: the pods' network
    ("none" or "bridge"; ``hostNetwork: true`` pods use the host's);
    ``clock``: the rules' time (tests pass a fast one)."""

    def __init__(self, root: str, *, store: str | None = None, network: str = "none",
                 cgroup_parent: str | None = None, clock: Clock | None = None,
                 log: logging.Logger | None = None, log_max_size: int = logs.MAX_SIZE) -> None:
        if network not in ("none", "bridge"):
            raise KubirunError(f"node: network: expected none or bridge, got {network!r}")
        self.root = os.path.abspath(root)
        self.network = network
        self.clock = clock or Clock()
        self.backoff = Backoff(self.clock)
        self.log = log or logging.getLogger("kubirun.node")
        self.log_max_size = log_max_size
        self.runtime = Runtime(root=os.path.join(self.root, "containers"), store=store,
                               cgroup_parent=cgroup_parent, log=self.log)
        self.pods: dict[str, _PodWorker] = {}
        self._watchers: weakref.WeakSet[Watch] = weakref.WeakSet()  # an abandoned one drops

    # --- the API ---------------------------------------------------------------------

    async def apply(self, raw: dict) -> dict:
        """Run the pod of manifest ``raw`` (a dict as YAML/JSON gives it);
        checked first: a bad one raises KubirunError and starts nothing.
        The same pod applied again is unchanged; a changed one is refused
        (a pod's spec cannot change: delete it first)."""
        pod = manifest.parse(raw)
        existing = self.pods.get(pod.name)
        if existing is not None:
            if existing.raw.get("spec") == raw.get("spec") and not existing.deleting:
                return existing.to_dict()
            raise KubirunError(f"pod {pod.name} exists (its spec cannot change: delete it first)")
        for note in pod.notes:
            self.log.info("pod %s: %s", pod.name, note)
        worker = self.pods[pod.name] = _PodWorker(self, pod, raw)
        worker.main = asyncio.ensure_future(self._run(worker))
        self._publish(pod.name, {"type": "Normal", "reason": "Scheduled",
                                 "message": f"Pod {pod.name} applied", "object": "",
                                 "count": 1, "firstTimestamp": self.clock.wall(),
                                 "lastTimestamp": self.clock.wall()})
        return worker.to_dict()

    async def adopt(self) -> list[str]:
        """Go on with the pods a previous supervisor of this root left (it
        was killed, or stopped with ``detach``): their records on disk,
        their running containers adopted, restart counts and back-off
        kept, probes resumed.  The names of the pods adopted."""
        directory = os.path.join(self.root, "pods")
        adopted = []
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
            path = os.path.join(directory, name, "pod.json")
            try:
                with open(path) as file:
                    saved = json.load(file)
                pod = manifest.parse(saved["raw"])
            except (OSError, ValueError, KeyError, KubirunError) as err:
                self.log.warning("pod %s: cannot adopt it (%s): left as is", name, err)
                continue
            if pod.name in self.pods:
                continue
            worker = self.pods[pod.name] = _PodWorker(self, pod, saved["raw"], saved)
            worker.main = asyncio.ensure_future(self._run(worker, adopt=True))
            adopted.append(pod.name)
        return adopted

    async def detach(self) -> None:
        """Stop supervising, leaving every pod running (a supervisor
        started later adopts them, as after ``kill -9``).  The fork server
        goes on reaping their containers and recording their exit statuses
        until they have all ended: call this in a process about to exit
        (``Runtime.close(keep_reaping=True)``)."""
        for worker in self.pods.values():
            worker.save()
            tasks = [t for t in [worker.main, *worker.tasks.values()] if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for instance in worker.instances.values():
                for pump in instance.pumps:
                    pump.detach()
            if worker.dialer is not None:
                await worker.dialer.close()
            if worker.sandbox is not None:
                worker.sandbox.close()  # the pod goes on; our handle's fds go
        self.pods.clear()
        for watch in list(self._watchers):
            watch.put(None)
        self.runtime.close(keep_reaping=True)

    async def _run(self, worker: _PodWorker, adopt: bool = False) -> None:
        try:
            await worker.run(adopt)
        except Exception:  # a bug of ours: say it, keep the node up
            self.log.exception("pod %s: its supervision failed", worker.name)

    def _worker(self, name: str) -> _PodWorker:
        worker = self.pods.get(name)
        if worker is None:
            raise KubirunError(f'pods "{name}" not found')
        return worker

    def status(self, name: str) -> dict:
        """The Pod object of ``name``, with its status."""
        return self._worker(name).to_dict()

    def list(self) -> list[dict]:
        return [worker.to_dict() for worker in self.pods.values()]

    def events(self, name: str) -> list[dict]:
        return [dict(event) for event in self._worker(name).events.items]

    async def delete(self, name: str, grace: int | None = None) -> None:
        """Stop the pod's containers (preStop, stop signal, KILL after the
        grace period) and remove everything kubirun made for it."""
        worker = self._worker(name)
        if worker.deleting:
            raise KubirunError(f'pod "{name}" is already being deleted')
        await worker.delete(grace)
        self.pods.pop(name, None)
        self._publish(name, {"type": "Normal", "reason": "Deleted",
                             "message": f"Pod {name} deleted", "object": "", "count": 1,
                             "firstTimestamp": self.clock.wall(),
                             "lastTimestamp": self.clock.wall()})

    async def close(self) -> None:
        """Delete every pod (all at once, as kubelet does), end the watch
        streams, stop the fork server."""
        results = await asyncio.gather(*(self.delete(name) for name in list(self.pods)),
                                       return_exceptions=True)
        for error in results:
            if isinstance(error, BaseException):
                self.log.warning("node: closing: %s", error)
        for watch in list(self._watchers):
            watch.put(None)
        self.runtime.close()

    def watch(self) -> Watch:
        """Events as they happen (``{"pod": NAME, **event}``) until the node
        closes or detaches: ``async for event in node.watch()`` in the
        node's loop, or ``for event in node.watch()`` in another thread
        (``with node.watch() as events:`` to stop early)."""
        watch = Watch(self._watchers.discard)
        self._watchers.add(watch)
        return watch

    def _publish(self, pod: str, event: dict) -> None:
        for watch in list(self._watchers):
            watch.put({"pod": pod, **event})

    def logs(self, name: str, container: str | None = None, previous: bool = False,
             tail: int | None = None) -> list[str]:
        """The CRI lines of a container's log (this instance's, or the
        previous one's)."""
        worker = self._worker(name)
        tracker = self._tracker(worker, container)
        number = tracker.restart_count - (1 if previous else 0)
        if previous and number < 0:
            raise KubirunError(f'previous terminated container "{tracker.name}" in pod "{name}"'
                               " not found")
        return logs.read(os.path.join(worker.directory, "logs", tracker.name), number, tail)

    def _tracker(self, worker: _PodWorker, container: str | None) -> status.ContainerTracker:
        if container is None:
            if len(worker.pod.spec.containers) > 1:
                names = " ".join(c.name for c in worker.pod.spec.containers)
                raise KubirunError(f"a container name must be specified for pod {worker.name},"
                                   f" choose one of: [{names}]")
            container = worker.pod.spec.containers[0].name
        tracker = worker.trackers.get(container)
        if tracker is None:
            raise KubirunError(f"container {container} is not valid for pod {worker.name}")
        return tracker

    async def exec(self, name: str, container: str | None, command: list[str],
                   timeout: float | None = None) -> tuple[int | None, str]:
        """``command`` in a running container of pod ``name``: its exit
        code and output (stdout and stderr, at most 10 KiB)."""
        worker = self._worker(name)
        tracker = self._tracker(worker, container)
        instance = worker.instances.get(tracker.name)
        if instance is None or "running" not in tracker.state:
            raise KubirunError(f"container {tracker.name} of pod {name} is not running")
        return await checks.run_exec(instance.container, command, timeout)
