"""The bridge every container of bridge mode is plugged into (default
``kubi0``): made on first use, with the subnet's gateway address, up; its
MTU is that of the link the default route goes out of (1500 without one),
so that containers never send what the uplink would have to fragment.

It stays when its last container goes, as docker0 does: the next
container finds it ready, and so does the default of ``--network``.
"""
from __future__ import annotations

from kubirun.ns.net import rtnl
from kubirun.ns.net.ipam import Subnet, int_to_ip

DEFAULT_MTU = 1500
AF_INET = 2


def get_link(nl: rtnl.Netlink, ifinfmsg, name: str):
    """The link named ``name`` (an ifinfmsg), or None."""
    msg = ifinfmsg()
    msg["attrs"] = [("IFLA_IFNAME", name)]
    try:
        found = nl.request(msg, rtnl.RTM_GETLINK, what=f"looking up link {name}")
    except OSError as err:
        if err.errno == 19:  # ENODEV
            return None
        raise
    return found[0] if found else None


def link_kind(link) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def uplink_mtu(nl: rtnl.Netlink, ifinfmsg) -> int:
    """The MTU of the default route's link, or 1500."""
    try:
        with open("/proc/net/route") as f:  # this network namespace's routes
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
                    link = get_link(nl, ifinfmsg, fields[0])
                    if link is not None:
                        return link.get_attr("IFLA_MTU") or DEFAULT_MTU
    except (OSError, StopIteration):
        pass
    return DEFAULT_MTU


def ensure(nl: rtnl.Netlink, messages, name: str, subnet: Subnet) -> tuple[int, int]:
    """Make the bridge if it is missing; (its index, its MTU)."""
    ifinfmsg, ifaddrmsg, _ = messages
    link = get_link(nl, ifinfmsg, name)
    if link is None:
        msg = ifinfmsg()
        msg["flags"] = msg["change"] = rtnl.IFF_UP
        msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_MTU", uplink_mtu(nl, ifinfmsg)),
                        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]})]
        try:
            nl.request(msg, rtnl.RTM_NEWLINK, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL,
                       what=f"creating bridge {name}")
        except FileExistsError:
            pass  # another kubirun made it meanwhile
        link = get_link(nl, ifinfmsg, name)
        if link is None:
            raise OSError(19, f"bridge {name} vanished as it was made")
    if link_kind(link) != "bridge":
        raise OSError(22, f"{name} exists and is not a bridge (--bridge NAME chooses another)")
    index = link["index"]
    if not link["flags"] & rtnl.IFF_UP:
        up = ifinfmsg()
        up["index"] = index
        up["flags"] = up["change"] = rtnl.IFF_UP
        nl.request(up, rtnl.RTM_NEWLINK, what=f"bringing bridge {name} up")
    _ensure_gateway(nl, ifaddrmsg, name, index, subnet)
    return index, link.get_attr("IFLA_MTU") or DEFAULT_MTU


def _ensure_gateway(nl: rtnl.Netlink, ifaddrmsg, name: str, index: int, subnet: Subnet) -> None:
    gateway = int_to_ip(subnet.gateway)
    query = ifaddrmsg()
    query["family"] = AF_INET
    mine = [a for a in nl.request(query, rtnl.RTM_GETADDR, rtnl.NLM_F_DUMP,
                                  what="listing addresses") if a["index"] == index]
    have = [(a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in mine]
    if (gateway, subnet.prefix) in have:
        return
    if have:
        shown = ", ".join(f"{a}/{p}" for a, p in have)
        raise OSError(22, f"bridge {name} has {shown}, not {gateway}/{subnet.prefix}"
                          f" (--subnet {subnet} does not match it)")
    msg = ifaddrmsg()
    msg["family"] = AF_INET
    msg["prefixlen"] = subnet.prefix
    msg["index"] = index
    msg["attrs"] = [("IFA_LOCAL", gateway), ("IFA_ADDRESS", gateway),
                    ("IFA_BROADCAST", int_to_ip(subnet.broadcast))]
    try:
        nl.request(msg, rtnl.RTM_NEWADDR, rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL,
                   what=f"adding {gateway}/{subnet.prefix} to bridge {name}")
    except FileExistsError:
        pass  # another kubirun added it meanwhile
