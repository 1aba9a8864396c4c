"""The library's inits from spares (kubirun.zygote) on a pure cgroup v2
host, where they serve every create of root's without hiding anything:
tests/integration/test_api_spares.py's tests again, with this module's
marks.  Meant for the v2 VM (see test_cgroups_v2.py); skipped elsewhere."""
from __future__ import annotations

import os

import pytest

import tests.integration.test_api_spares as spares
from tests.cgroupv2.test_cgroups_v2 import PURE_V2

test_an_init_is_a_spare_forked_before_the_create = spares.test_an_init_is_a_spare_forked_before_the_create
test_a_spares_network_namespace_is_new_with_loopback_up = \
    spares.test_a_spares_network_namespace_is_new_with_loopback_up
test_a_container_without_a_network_namespace_has_the_hosts = \
    spares.test_a_container_without_a_network_namespace_has_the_hosts
test_a_spares_ipc_namespace_is_the_containers_only_when_it_asks_for_a_new_one = \
    spares.test_a_spares_ipc_namespace_is_the_containers_only_when_it_asks_for_a_new_one
test_a_failed_create_from_a_spare_leaves_nothing_and_the_next_works = \
    spares.test_a_failed_create_from_a_spare_leaves_nothing_and_the_next_works
test_the_zygote_and_its_spare_die_with_the_fork_server = \
    spares.test_the_zygote_and_its_spare_die_with_the_fork_server

pytestmark = [
    pytest.mark.cgroupv2,
    pytest.mark.skipif(not PURE_V2, reason="needs a pure cgroup v2 host (run it in ../shared/v2vm)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="spares serve root only"),
]
