"""Fault injection for the tests of what a killed runtime leaves behind.

``KUBIRUN_TEST_KILL_AT=STEP`` makes the runtime SIGKILL itself when it
reaches the step named STEP (``reached("create.forked")``): the test then
checks that ``delete --force``, ``run`` of the same name and ``gc`` take
back everything that runtime had made.  The steps are the points between
two things a command makes (tests/integration/test_killed_runtime.py lists
them).  Unset (always, outside tests), it costs one environment lookup when
this module is imported and one string comparison per step.
"""
from __future__ import annotations

import os

_KILL_AT = os.environ.get("KUBIRUN_TEST_KILL_AT") or None


def reached(step: str) -> None:
    """SIGKILL this process if the tests asked to die at ``step``."""
    if step == _KILL_AT:
        os.kill(os.getpid(), 9)
