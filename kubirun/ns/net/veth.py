"""A container's link to the bridge: a veth pair whose host end
(``kv`` + its address in hex: unique while the lease is held) is plugged
into the bridge, and whose other end is born ``eth0`` inside the
container's network namespace, in one request.  Then, from inside that
namespace: the address, ``arp_notify`` (the bridge's neighbours learn the
new MAC at once, even for an address used before), up, the default route.
"""
from __future__ import annotations

import os

from kubirun import _native
from kubirun.ns.net import rtnl
from kubirun.ns.net.ipam import Subnet, int_to_ip, ip_to_int

CLONE_NEWNET = 0x40000000
AF_INET = 2
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1
INSIDE = "eth0"


def host_name(address: str) -> str:
    return f"kv{ip_to_int(address):08x}"


def create(nl: rtnl.Netlink, ifinfmsg, host_if: str, bridge_index: int, mtu: int,
           netns_fd: int) -> None:
    peer = {"attrs": [("IFLA_IFNAME", INSIDE), ("IFLA_MTU", mtu), ("IFLA_NET_NS_FD", netns_fd)]}
    msg = ifinfmsg()
    msg["flags"] = msg["change"] = rtnl.IFF_UP
    msg["attrs"] = [
        ("IFLA_IFNAME", host_if), ("IFLA_MTU", mtu), ("IFLA_MASTER", bridge_index),
        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth"),
                                     ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]})]}),
    ]
    what = f"creating veth {host_if} (eth0 inside)"
    try:
        nl.request(msg, rtnl.RTM_NEWLINK, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL, what=what)
    except FileExistsError:
        # The lease is ours: a link of that name is a leftover of a runtime
        # killed before its teardown.
        rtnl.delete_link(host_if)
        nl.request(msg, rtnl.RTM_NEWLINK, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL, what=what)


def configure_inside(messages, netns_fd: int, address: str, subnet: Subnet) -> None:
    """Join the container's network namespace (this process is the
    helper: it never goes back) and set eth0 up."""
    ifinfmsg, ifaddrmsg, rtmsg = messages
    _native.setns(netns_fd, CLONE_NEWNET)
    with rtnl.Netlink() as nl:
        link = ifinfmsg()
        link["attrs"] = [("IFLA_IFNAME", INSIDE)]
        index = nl.request(link, rtnl.RTM_GETLINK, what="looking up eth0")[0]["index"]
        try:  # /proc/sys/net is the namespace of whoever opens it: the container's now
            with open(f"/proc/sys/net/ipv4/conf/{INSIDE}/arp_notify", "w") as f:
                f.write("1")
        except OSError:
            pass
        addr = ifaddrmsg()
        addr["family"] = AF_INET
        addr["prefixlen"] = subnet.prefix
        addr["index"] = index
        addr["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address),
                         ("IFA_BROADCAST", int_to_ip(subnet.broadcast))]
        nl.request(addr, rtnl.RTM_NEWADDR, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL,
                   what=f"adding {address}/{subnet.prefix} to eth0")
        up = ifinfmsg()
        up["index"] = index
        up["flags"] = up["change"] = rtnl.IFF_UP
        nl.request(up, rtnl.RTM_NEWLINK, what="bringing eth0 up")
        route = rtmsg()
        route["family"] = AF_INET
        route["table"] = RT_TABLE_MAIN
        route["proto"] = RTPROT_STATIC
        route["scope"] = RT_SCOPE_UNIVERSE
        route["type"] = RTN_UNICAST
        route["attrs"] = [("RTA_GATEWAY", int_to_ip(subnet.gateway)), ("RTA_OIF", index)]
        nl.request(route, rtnl.RTM_NEWROUTE, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL,
                   what="adding the default route")
    os.close(netns_fd)
