"""``kubirun features``: what this build supports, in the runtime-spec's
features.md format, built from the same tables the code uses (so it
cannot claim more than kubirun does)."""
from __future__ import annotations


def features() -> dict:
    from kubirun import __version__, seccomp
    from kubirun.capabilities import CAPABILITIES
    from kubirun.ns.mountspec import FLAG_OPTIONS, IGNORED_OPTIONS, PROPAGATION_OPTIONS
    from kubirun.spec import HOOK_PHASES, NAMESPACE_TYPES

    unsupported_ns = ()
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.3.0",
        "hooks": list(HOOK_PHASES),
        "mountOptions": sorted({*FLAG_OPTIONS, *PROPAGATION_OPTIONS, *IGNORED_OPTIONS, "rro", "rrw"}),
        "linux": {
            "namespaces": [ns for ns in NAMESPACE_TYPES if ns not in unsupported_ns],
            "capabilities": list(CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                       "rdma": False},
            "seccomp": seccomp.features(),
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {"org.kubirun.version": __version__},
    }
