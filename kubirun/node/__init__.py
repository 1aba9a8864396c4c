"""The node supervisor: pods kept running as a kubelet keeps them.

It is built on the declared library API (``kubirun.api``) alone, never on
the runtime's insides (``tests/unit/test_node_layers.py`` checks that).
kubelet's rules are small modules with an injectable clock, so that their
numbers are checked in milliseconds; the supervisor drives them:

    manifest    Pod v1 manifests (YAML/JSON) into typed dataclasses; a bad
                field is one line naming its path
    backoff     the crash-loop back-off ladder (10 s doubling to 300 s, reset
                after 600 s of running)
    restart     which exited container restarts, by the pod's restartPolicy
    prober      probe workers (thresholds, initial delay, startup gating,
                hold after a liveness failure)
    status      a container's state machine across restarts, the pod's phase,
                conditions and kubectl's STATUS column
    events      Pulled, Created, Started, Killing, Unhealthy, BackOff...
    checks      httpGet / tcpSocket / exec probes and hooks, asynchronous
    netns       sockets made in a pod's network namespace (network "none")
    grpcprobe   the grpc probe: health/v1 Check over a small HTTP/2 client
    logs        CRI-format container logs, fed from FIFOs
    supervisor  ``Node``: pods in one asyncio loop; records on disk, adopted
                by the next supervisor after a kill
    daemon      ``kubirun node serve``: the HTTP+JSON API on a unix socket
"""
