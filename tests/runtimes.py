"""The runtimes the differential tests compare, in one place: kubirun always,
and each peer (runc, crun) where it is installed.  Every parameter carries
the ``runtimes`` marker (pyproject.toml), so ``pytest -m runtimes`` runs the
differential tests alone and ``-m "not runtimes"`` leaves them out.

    @pytest.fixture(params=runtimes.params("runc"))
    def oci(request, tmp_path): ...          # request.param: "kubirun" or "runc"

Where each runtime's binary is: ``binary(name)``.  How a test drives one
(a bundle, a state root, the clean-up) stays with its fixture
(tests/integration/oci_helpers.py, tests/cgroupv2/test_enforcement_v2.py,
tests/conftest.py's ``runtime``; tests/engines/ has its own for engines).
"""
from __future__ import annotations

import os
import shutil

import pytest

PEERS = ("runc", "crun")


def binary(name: str) -> str | None:
    """The peer runtime's binary, or None when it is not installed (runc is
    often in /usr/sbin, which a non-root PATH may lack)."""
    return shutil.which(name) or next(
        (path for path in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(path, os.X_OK)),
        None)


def params(*peers: str) -> list:
    """kubirun, then each of ``peers`` (skipped where not installed), as
    pytest parameters with the ``runtimes`` marker."""
    unknown = set(peers) - set(PEERS)
    assert not unknown, f"unknown peer runtimes: {unknown}"
    found = [pytest.param("kubirun", id="kubirun", marks=pytest.mark.runtimes)]
    for name in peers:
        found.append(pytest.param(name, id=name, marks=[
            pytest.mark.runtimes,
            pytest.mark.skipif(binary(name) is None, reason=f"{name} is not installed")]))
    return found
