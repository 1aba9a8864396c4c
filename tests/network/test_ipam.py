"""The address pool alone: files under a temporary directory, no network."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kubirun.base import jsonio
from kubirun.base.errors import KubirunError
from kubirun.ns.net import etcfiles, ports
from kubirun.ns.net.ipam import Pool, Subnet
from kubirun.state import has_state


def record_for(owner: str, root: str = "/nonexistent", creator=None):
    def make(address: str) -> dict:
        return {"owner": owner, "root": root, "address": address,
                "creator": creator or [os.getpid(), _start_time(os.getpid())]}
    return make


def _start_time(pid: int) -> int:
    from kubirun.state import process_start_time

    return process_start_time(pid)


def never(record: dict) -> None:
    raise AssertionError(f"nothing is stale here: {record}")


def test_subnet_gateway_and_hosts():
    subnet = Subnet("10.89.7.9/16")
    assert str(subnet) == "10.89.0.0/16"
    hosts = subnet.hosts()
    assert hosts.start == subnet.gateway + 1
    assert len(Subnet("192.168.1.0/30").hosts()) == 1  # network, gateway, one host, broadcast
    for bad in ("10.89.0.0", "10.89.0.0/31", "10.89.0/16", "300.1.1.1/8", "x/16"):
        with pytest.raises(KubirunError):
            Subnet(bad)


def test_addresses_are_handed_out_in_turn_and_given_back(tmp_path):
    pool = Pool(str(tmp_path / "pool"), Subnet("10.9.0.0/29"), has_state)  # hosts .2 to .6
    first = pool.allocate(record_for("a"), never)["address"]
    second = pool.allocate(record_for("b"), never)["address"]
    assert (first, second) == ("10.9.0.2", "10.9.0.3")
    pool.release(first, "someone-else")  # not theirs: kept
    assert pool.leases() == ["10.9.0.2", "10.9.0.3"]
    pool.release(first, "a")
    assert pool.allocate(record_for("c"), never)["address"] == "10.9.0.4"  # not .2 again yet
    assert jsonio.load_file(str(tmp_path / "pool" / "10.9.0.4"))["owner"] == "c"
    for owner in "def":
        pool.allocate(record_for(owner), never)
    assert pool.leases() == ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
    with pytest.raises(KubirunError, match="no free address"):
        pool.allocate(record_for("g"), never)


def test_a_stale_lease_is_reclaimed_and_its_leftovers_undone(tmp_path):
    pool = Pool(str(tmp_path / "pool"), Subnet("10.9.0.0/30"), has_state)  # one host: .2
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    gone_pid = int(dead.stdout)
    pool.allocate(record_for("killed", str(tmp_path), creator=[gone_pid, 1]), never)
    undone = []
    record = pool.allocate(record_for("next"), undone.append)
    assert record["address"] == "10.9.0.2"
    assert [r["owner"] for r in undone] == ["killed"]


def test_a_lease_whose_container_has_a_state_is_not_stale(tmp_path):
    pool = Pool(str(tmp_path / "pool"), Subnet("10.9.0.0/30"), has_state)
    (tmp_path / "alive").mkdir()
    (tmp_path / "alive" / "state.json").write_text("{}")
    pool.allocate(record_for("alive", str(tmp_path), creator=[1, 0]), never)
    with pytest.raises(KubirunError, match="no free address"):
        pool.allocate(record_for("next"), never)


def test_publish_specs():
    parsed = ports.parse_publish(["8080:80", "5353:53/udp", "9000:9000/TCP"])
    assert [str(p) for p in parsed] == ["8080:80/tcp", "5353:53/udp", "9000:9000/tcp"]
    with pytest.raises(KubirunError, match="published twice"):
        ports.parse_publish(["80:80", "80:81"])
    ports.parse_publish(["53:53/tcp", "53:53/udp"])  # one port, two protocols


def test_the_ruleset_dnats_the_hosts_own_addresses_but_not_loopback():
    text = ports.ruleset("kubirun_kv0a590002", "10.89.0.2", ports.parse_publish(["8080:80"]))
    assert "fib daddr type local tcp dport 8080 dnat to 10.89.0.2:80" in text
    assert "ip daddr != 127.0.0.0/8 fib daddr type local tcp dport 8080" in text
    assert text.startswith("add table ip kubirun_kv0a590002\ndelete table ip kubirun_kv0a590002\n")


def test_resolv_conf_drops_loopback_servers():
    text = "search example.org\nnameserver 127.0.0.53\nnameserver 10.0.0.1\nnameserver ::1\n"
    assert etcfiles.resolv_conf(text, keep_loopback=False) == (
        "search example.org\nnameserver 10.0.0.1\n")
    assert etcfiles.resolv_conf(text, keep_loopback=True) == text
