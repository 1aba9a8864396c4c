"""Fixtures of the OCI contract tests (test_oci_*.py), defined in
oci_helpers.py: ``oci`` (kubirun and runc) and ``bundle`` (a factory)."""
from tests.integration.oci_helpers import _all_reaped, bundle, oci, reachable_root  # noqa: F401
