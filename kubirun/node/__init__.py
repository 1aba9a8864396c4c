"""The node supervisor: pods kept running as a kubelet keeps them.

It is built on the declared library API (``kubirun.api``) alone, never on
the runtime's insides (``tests/unit/test_node_layers.py`` checks that).
What exists so far are kubelet's rules, each a small module with an
injectable clock, so that their numbers are checked in milliseconds:

    backoff   the crash-loop back-off ladder (10 s doubling to 300 s, reset
              after 600 s of running)
    restart   which exited container restarts, by the pod's restartPolicy
    prober    probe workers (thresholds, initial delay, startup gating,
              hold after a liveness failure) and the exec, tcpSocket and
              httpGet checks
"""
