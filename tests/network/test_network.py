"""``kubirun run --network none|host|bridge|ns:PATH``, ``-p``, ``--nat``,
teardown: each test in a throwaway network namespace (see conftest.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import KUBIRUN_SCRIPT, kubirun
from tests.network.conftest import connect


def addresses(output: str) -> list[str]:
    """The IPv4 addresses in ``ip -o -4 addr`` output."""
    return [line.split()[3].split("/")[0] for line in output.splitlines() if " inet " in line]


# --- modes ---------------------------------------------------------------

def test_none_shows_only_lo(netns, rootfs):
    result = netns.kubirun("run", "--network", "none", str(rootfs), "--", "ip", "-o", "link")
    assert result.returncode == 0, result.stderr
    names = [line.split(":")[1].strip() for line in result.stdout.splitlines()]
    assert names == ["lo"]
    assert "UP" in result.stdout
    assert netns.links() == ["lo"]  # none makes nothing outside either


def test_default_is_bridge_as_root(netns, rootfs):
    """As root a bridge can be made, so it is the default (as docker0 is
    docker's); it is made on first use and stays."""
    assert "kubi0" not in netns.links()
    result = netns.kubirun("run", str(rootfs), "--", "ip", "-o", "-4", "addr")
    assert result.returncode == 0, result.stderr
    assert "eth0" in result.stdout
    assert "kubi0" in netns.links()  # it stays, as docker0 does


def test_bridge_gives_eth0_an_address_a_route_and_the_bridge_mtu(netns, rootfs):
    result = netns.kubirun("run", "--network", "bridge", str(rootfs), "--", "sh", "-c",
                           "ip -o -4 addr show eth0; ip route; cat /sys/class/net/eth0/mtu")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert addresses(result.stdout) == ["10.89.0.2"]
    assert "10.89.0.2/16" in lines[0]
    assert "default via 10.89.0.1 dev eth0" in result.stdout
    bridge_mtu = netns.sh("ip -o link show kubi0").split(" mtu ")[1].split()[0]
    assert lines[-1] == bridge_mtu == "1500"  # no default route here: 1500
    gateway = netns.sh("ip -o -4 addr show kubi0")
    assert "10.89.0.1/16" in gateway


def test_bridge_name_and_subnet_are_options(netns, rootfs):
    result = netns.kubirun("run", "--network", "bridge", "--bridge", "kbtest", "--subnet",
                           "192.168.77.0/24", str(rootfs), "--", "ip", "-o", "-4", "addr",
                           "show", "eth0")
    assert result.returncode == 0, result.stderr
    assert addresses(result.stdout) == ["192.168.77.2"]
    assert "192.168.77.1/24" in netns.sh("ip -o -4 addr show kbtest")
    assert netns.leases("kbtest") == []
    # The bridge has its subnet: another one for the same bridge is refused.
    result = netns.kubirun("run", "--network", "bridge", "--bridge", "kbtest", "--subnet",
                           "10.1.0.0/16", str(rootfs), "--", "true")
    assert result.returncode != 0
    assert "192.168.77.1/24" in result.stderr


def test_host_mode_shares_the_runtimes_namespace(netns, rootfs):
    netns.sh("ip link add kbmark type bridge")
    result = netns.kubirun("run", "--network", "host", str(rootfs), "--", "ip", "-o", "link")
    assert result.returncode == 0, result.stderr
    assert "kbmark" in result.stdout


def test_ns_path_joins_that_namespace(netns, rootfs):
    netns.sh("ip link add kbmark type bridge")
    # From the host's namespace, into the throwaway one by path.
    result = kubirun("run", "--network", f"ns:{netns.path}", str(rootfs), "--", "ip", "-o", "link")
    assert result.returncode == 0, result.stderr
    assert "kbmark" in result.stdout


# --- /etc files ------------------------------------------------------------

def test_etc_files_are_generated_and_bind_mounted(netns, rootfs):
    image_hostname = (rootfs / "etc" / "hostname").read_text()
    result = netns.kubirun("run", "--network", "bridge", "--hostname", "web", str(rootfs), "--",
                           "sh", "-c", "cat /etc/hosts; echo ---; cat /etc/hostname; echo ---;"
                           " cat /etc/resolv.conf; echo ---; grep /etc/ /proc/mounts")
    assert result.returncode == 0, result.stderr
    hosts, hostname, resolv, mounts = result.stdout.split("---\n")
    assert "127.0.0.1\tlocalhost" in hosts
    assert "10.89.0.2\tweb" in hosts
    assert hostname == "web\n"
    assert "nameserver 127." not in resolv
    for name in ("hosts", "hostname", "resolv.conf"):
        assert f" /etc/{name} " in mounts
    assert (rootfs / "etc" / "hostname").read_text() == image_hostname  # the image's, untouched


# --- traffic -----------------------------------------------------------------

def test_two_containers_on_the_bridge_exchange_tcp(netns, rootfs):
    # The server answers only once it has read the client's line: both ways, no race.
    with netns.background("server", "--network", "bridge", str(rootfs), "--",
                          "nc", "-l", "-p", "7000", "-e", "sh", "-c",
                          'read line; echo "pong to $line"') as server:
        address = netns.wait_running("server")["network"]["address"]
        client = netns.kubirun(
            "run", "--network", "bridge", "--name", "client", str(rootfs), "--", "sh", "-c",
            f"for i in $(seq 100); do echo ping | nc -w 2 {address} 7000 && exit 0;"
            " sleep 0.05; done; exit 1")
        assert client.returncode == 0, client.stderr
        assert client.stdout == "pong to ping\n"
        _, err = server.communicate(timeout=20)
    assert server.returncode == 0, err
    assert address == "10.89.0.2"


def test_published_port_answers_from_the_test_namespace(netns, rootfs):
    with netns.background("web", "--network", "bridge", "-p", "18080:80", "-p", "18053:53/udp",
                          str(rootfs), "--", "sh", "-c",
                          "nc -l -p 80 -e echo one; nc -l -p 80 -e echo two") as server:
        state = netns.wait_running("web")
        table = state["network"]["table"]
        rules = netns.sh(f"nft list table ip {table}")
        assert "tcp dport 18080 dnat to 10.89.0.2:80" in rules
        assert "udp dport 18053 dnat to 10.89.0.2:53" in rules
        # The host's own address (nft DNAT, output hook), then loopback (the proxy).
        assert connect(netns, "10.89.0.1", 18080) == b"one\n"
        assert connect(netns, "127.0.0.1", 18080) == b"two\n"
        _, err = server.communicate(timeout=20)
    assert server.returncode == 0, err
    assert err == ""  # not a word from the runtime (nor from its proxy threads)
    assert table not in netns.tables()


def test_nat_only_when_asked(netns, rootfs):
    result = netns.kubirun("run", "--network", "bridge", str(rootfs), "--", "true")
    assert result.returncode == 0, result.stderr
    assert netns.read_file("/proc/sys/net/ipv4/ip_forward").strip() == "0"
    assert [t for t in netns.tables() if "nat" in t] == []
    # Asked for: in the throwaway namespace only (it has no way out anyway).
    result = netns.kubirun("run", "--network", "bridge", "--nat", str(rootfs), "--", "true")
    assert result.returncode == 0, result.stderr
    assert netns.read_file("/proc/sys/net/ipv4/ip_forward").strip() == "1"
    assert "kubirun-nat-kubi0" in netns.tables()
    assert "masquerade" in netns.sh("nft list table ip kubirun-nat-kubi0")


# --- teardown and concurrency ------------------------------------------------

def test_50_lifecycles_leave_no_veth_lease_or_rule(netns, rootfs):
    for i in range(50):
        result = netns.kubirun("run", "--network", "bridge", "-p", f"{19000 + i % 5}:80",
                               str(rootfs), "--", "true")
        assert result.returncode == 0, (i, result.stderr)
    assert netns.wait_no_veths() == []
    assert netns.leases() == []
    assert [t for t in netns.tables() if t.startswith("kubirun_")] == []
    assert "kubi0" in netns.links()


def test_10_concurrent_starts_get_distinct_addresses(netns, rootfs):
    runs = [netns.popen("run", "--network", "bridge", str(rootfs), "--", "sh", "-c",
                        "ip -o -4 addr show eth0; sleep 1") for _ in range(10)]
    found = []
    for run in runs:
        out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        found += addresses(out)
    assert len(found) == 10
    assert len(set(found)) == 10, found


def test_kill_9_of_the_runtime_then_delete_force_reclaims(netns, rootfs):
    with netns.background("victim", "--network", "bridge", "-p", "18090:80", str(rootfs),
                          "--", "sleep", "100") as run:
        record = netns.wait_running("victim")["network"]
        assert record["host_if"] in netns.veths()
        run.send_signal(signal.SIGKILL)  # the kubirun process itself, by PID
        run.wait()
    assert netns.leases() == [record["address"]]
    assert record["table"] in netns.tables()
    result = netns.kubirun("delete", "--force", "victim")
    assert result.returncode == 0, result.stderr
    assert netns.leases() == []
    assert record["table"] not in netns.tables()
    assert netns.wait_no_veths() == []
    assert not (netns.state_root / "victim").exists()


def test_a_failed_network_setup_leaves_nothing(netns, rootfs):
    netns.sh("ip link add kubi0 type veth peer name kubi0p")  # not a bridge
    result = netns.kubirun("run", "--network", "bridge", str(rootfs), "--", "true")
    assert result.returncode != 0
    assert "kubi0 exists and is not a bridge" in result.stderr
    assert netns.leases() == []
    netns.sh("ip link del kubi0")


# --- the command line ----------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--network", "none", "-p", "80:80"], "-p/--publish needs --network bridge"),
    (["--network", "host", "--nat"], "--nat needs --network bridge"),
    (["--network", "bridge", "-p", "80"], "expected HOST:CONTAINER"),
    (["--network", "bridge", "-p", "80:80/sctp"], "expected HOST:CONTAINER"),
    (["--network", "bridge", "-p", "0:80"], "expected HOST:CONTAINER"),
    (["--network", "bridge", "--subnet", "10.0.0.0/31"], "prefix must be 8 to 30"),
    (["--network", "bridge", "--bridge", "a-name-far-too-long"], "--bridge"),
    (["--network", "wifi"], "expected none, host, bridge or ns:PATH"),
    (["--network", "ns:relative"], "absolute path"),
])
def test_bad_network_options_are_refused_before_anything_is_made(netns, rootfs, args, message):
    result = netns.kubirun("run", *args, str(rootfs), "--", "true")
    assert result.returncode != 0
    assert message in result.stderr
    assert netns.links() == ["lo"]


def test_the_bundle_form_refuses_network_options(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    result = kubirun("run", "-b", str(tmp_path), "--network", "none", "someid")
    assert result.returncode != 0
    assert "--network" in result.stderr


def test_help_states_the_default():
    result = kubirun("run", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--network MODE" in text
    assert "Default: bridge when a bridge can be made" in text
    assert os.environ.get("KUBIRUN_ROOT")  # the autouse store is in force


@pytest.mark.parametrize("mode", ["none", "host"])
def test_none_and_host_import_nothing_of_pyroute2_or_socket(netns, rootfs, mode):
    result = subprocess.run([*netns.prefix(), sys.executable, "-X", "importtime",
                             str(KUBIRUN_SCRIPT), "run", "--network", mode, str(rootfs), "--",
                             "true"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert not {name for name in imported if name.startswith("pyroute2")}
    assert "socket" not in imported


def test_kubirun_network_replaces_the_default(netns, rootfs):
    result = netns.kubirun("run", str(rootfs), "--", "ip", "-o", "-4", "addr", "show", "eth0",
                           env={**os.environ, "KUBIRUN_NETWORK": "bridge"})
    assert result.returncode == 0, result.stderr
    assert addresses(result.stdout) == ["10.89.0.2"]
    result = netns.kubirun("run", str(rootfs), "--", "ip", "-o", "link",
                           env={**os.environ, "KUBIRUN_NETWORK": "none"})
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1  # lo, although kubi0 exists now


NETWORK_STEPS = ["run.network", "run.mounted", "create.forked", "run.created", "run.attached",
                 "run.exited", "delete.cgroup", "delete.network"]


@pytest.mark.parametrize("step", NETWORK_STEPS)
@pytest.mark.parametrize("reclaimer", ["delete --force", "run", "gc"])
def test_a_bridge_run_killed_at_any_step_leaves_no_lease_veth_or_rule(netns, rootfs, step,
                                                                     reclaimer):
    run = ("run", "--name", "victim", "--network", "bridge", "-p", "18091:80", str(rootfs), "--")
    killed = netns.kubirun(*run, "true", env={**os.environ, "KUBIRUN_TEST_KILL_AT": step})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if reclaimer == "delete --force":
        result = netns.kubirun("delete", "--force", "victim")
    elif reclaimer == "run":
        result = netns.kubirun(*run, "true")
    else:
        result = netns.kubirun("gc")
    assert result.returncode == 0, result.stderr
    assert netns.leases() == []
    assert [t for t in netns.tables() if t.startswith("kubirun_")] == []
    assert netns.wait_no_veths() == []
    assert sorted(os.listdir(netns.state_root)) == ["network:kubi0"]
    assert os.listdir(os.path.join(os.environ["KUBIRUN_STORE"], "containers")) == []
