"""Network and cloud: the VCN and the relays' private addresses, the homelab CIDR, the
primary's mynetworks, the NAT drain's target, and the Always-Free placement. The pack's area:
policy/backup_mx_rules/network.py (vm-not-in-mynetworks, security-list, always-free,
reserved-public-ip) and drain-port for the target."""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional

from ..facts import SMTP_PORT
from ..grammar import HOSTNAME, host_name, is_cidr, is_ipv4
from .model import RelaySpec, WireGuard
from .reader import Reader

ALWAYS_FREE_SHAPES = ("VM.Standard.E2.1.Micro",)
ACCOUNT_MODES = ("payg", "free")
BOOT_VOLUME_MIN_GB, ALWAYS_FREE_STORAGE_GB = 50, 200
RELAY_HOST_NUMBER = 10  # the first relay's fixed private address inside the subnet; the second takes the next
RFC1918 = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
HOMELAB_WIDEST_PUBLIC, HOMELAB_WIDEST_PRIVATE = 24, 16
DRAIN_TRANSPORTS = ("nat", "wireguard")


@dataclass(frozen=True)
class Network:
    mynetworks: tuple[str, ...]
    drain_host: str  # the NAT drain's; WireGuard replaces it with the tunnel address
    relay_private_ip: str  # "" when vcnCidr failed
    homelab_cidr: str


def check(r: Reader, v: dict, primary: str) -> Network:
    mynetworks = []
    for cidr in v["primaryMynetworks"]:
        try:
            mynetworks.append(str(ipaddress.ip_network(cidr, strict=False)))
        except ValueError:
            bare = re.sub(r"^\[([^\]]*)\]", r"\1", str(cidr))
            hint = f"; write Postfix's {cidr!r} without the brackets: {bare!r}" if bare != cidr and is_cidr(bare) else ""
            r.fail("primaryMynetworks", f"{cidr!r} is not a CIDR (allowed: e.g. 192.168.1.0/24, ::1/128){hint}")
    drain_host = host_name(v["drainHost"] or primary)
    if not (HOSTNAME.match(drain_host) or is_ipv4(drain_host)):
        r.fail("drainHost", f"{drain_host!r} is not a host name or IPv4 address")
    if v["drainTransport"] not in DRAIN_TRANSPORTS:
        r.fail("drainTransport", f"{v['drainTransport']!r} is not allowed; allowed: {', '.join(DRAIN_TRANSPORTS)}")
    elif v["drainTransport"] == "wireguard":
        pass  # drainHost, drainPort: settings/tunnel.py
    elif v["drainPort"] == SMTP_PORT:
        r.fail("drainPort", f"{SMTP_PORT} is blocked for egress by Oracle tenancy-wide (the pack's mandatory drain-port "
                            f"policy refuses it); allowed: 1..65535 except {SMTP_PORT} "
                            f"(default {r.decls['drainPort']['default']})")
    elif not 1 <= v["drainPort"] <= 65535:
        r.fail("drainPort", f"{v['drainPort']} is outside 1..65535")
    if v["drainSourceAddress"] and not is_ipv4(v["drainSourceAddress"]):
        r.fail("drainSourceAddress", f"{v['drainSourceAddress']!r} is not an IPv4 address (or empty)")
    _placement(r, v)
    return Network(tuple(mynetworks), drain_host, _relay_private_ip(r, v), _homelab(r, v))


def _placement(r: Reader, v: dict) -> None:
    """The Always-Free shape, storage and account, and where in OCI the relay goes."""
    if v["accountMode"] not in ACCOUNT_MODES:
        r.fail("accountMode", f"{v['accountMode']!r} is not allowed; allowed: {', '.join(ACCOUNT_MODES)}")
    if v["shape"] not in ALWAYS_FREE_SHAPES:
        r.fail("shape", f"{v['shape']!r} is not an Always-Free shape; allowed: {', '.join(ALWAYS_FREE_SHAPES)}")
    if not BOOT_VOLUME_MIN_GB <= v["bootVolumeSizeGb"] <= ALWAYS_FREE_STORAGE_GB:
        r.fail("bootVolumeSizeGb", f"{v['bootVolumeSizeGb']} is outside {BOOT_VOLUME_MIN_GB}..{ALWAYS_FREE_STORAGE_GB}")
    if not 0 <= v["availabilityDomainIndex"] <= 2:
        r.fail("availabilityDomainIndex", f"{v['availabilityDomainIndex']} is outside 0..2")
    if not re.fullmatch(r"ocid1\.(compartment|tenancy)\.oc\d+\.\.[a-z0-9]+", v["ociCompartmentId"]):
        r.fail("ociCompartmentId", f"{v['ociCompartmentId']!r} is not a compartment or tenancy OCID")
    if not re.fullmatch(r"[a-z]+-[a-z]+-\d", v["ociRegion"]):
        r.fail("ociRegion", f"{v['ociRegion']!r} is not an OCI region identifier such as eu-frankfurt-1")


def _relay_private_ip(r: Reader, v: dict) -> str:
    try:
        vcn = ipaddress.ip_network(v["vcnCidr"])
    except ValueError:
        r.fail("vcnCidr", f"{v['vcnCidr']!r} is not a CIDR (allowed: e.g. 10.42.0.0/24)")
        return ""
    private = isinstance(vcn, ipaddress.IPv4Network) and any(vcn.subnet_of(n) for n in RFC1918)
    if not private or not 16 <= vcn.prefixlen <= 28:
        r.fail("vcnCidr", f"{v['vcnCidr']!r} must be a private (RFC 1918: 10/8, 172.16/12, 192.168/16) "
                          "IPv4 block between /16 and /28")
        return ""
    return str(vcn.network_address + RELAY_HOST_NUMBER)


def _homelab(r: Reader, v: dict) -> str:
    try:
        homelab = ipaddress.ip_network(v["homelabCidr"])
    except ValueError:
        r.fail("homelabCidr", f"{v['homelabCidr']!r} is not a CIDR (allowed: e.g. 198.51.100.7/32)")
        return ""
    widest = HOMELAB_WIDEST_PUBLIC if homelab.is_global else HOMELAB_WIDEST_PRIVATE
    if homelab.version != 4 or homelab.prefixlen < widest or homelab.is_unspecified or homelab.is_loopback \
            or homelab.is_link_local or homelab.is_multicast or homelab.network_address.is_unspecified:
        r.fail("homelabCidr", f"{v['homelabCidr']!r} must be the homelab's own IPv4 block: a public block of "
                              f"/{HOMELAB_WIDEST_PUBLIC} or narrower (the exporters open to every host in it), "
                              f"or a private one of /{HOMELAB_WIDEST_PRIVATE} or narrower")
    return str(homelab)


def _routable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip == ipaddress.ip_address("255.255.255.255"))


def drains_somewhere(r: Reader, v: dict, relays: tuple[RelaySpec, ...], drain_host: str,
                     wireguard: Optional[WireGuard]) -> None:
    """The drain target, over NAT or the tunnel, is never loopback, never a relay (by any of
    its names or addresses), and never inside the relay's VCN, where only relays live: any of
    those holds every message until it expires. The WireGuard endpoint likewise, and never an
    address inside the tunnel, which can only be reached through the tunnel itself."""
    names = {x.hostname for x in relays} | {"localhost"}
    addresses = {x.private_ip for x in relays}
    vcn = ipaddress.ip_network(v["vcnCidr"], strict=False) if is_cidr(v["vcnCidr"]) else None

    def problem(host: str) -> str:
        host = host_name(host)
        if host in names or host.endswith(".localhost"):
            return f"{host!r} is a relay of this stack (or localhost), not the primary"
        if is_ipv4(host):
            ip = ipaddress.IPv4Address(host)
            if str(ip) in addresses or (vcn is not None and ip in vcn):
                return f"{host} lies inside vcnCidr {v['vcnCidr']}, where only the relays live"
            if not _routable(ip):
                return f"{host} is no host at all (loopback, unspecified, link-local, multicast)"
        return ""

    if wireguard is None:
        why = problem(drain_host)
        if why and v["drainTransport"] == "nat":
            r.fail("drainHost", f"{why}: the relay would drain to itself or nowhere until every message expires; allowed: "
                                "the primary's public name or address, or its tailnet address")
        return
    endpoint = wireguard.endpoint.rpartition(":")[0]
    tunnel = {wireguard.primary_address, wireguard.relay_address}
    why = problem(endpoint) or (f"{endpoint} is inside the tunnel (AllowedIPs {wireguard.allowed_ips}), "
                                "which only the tunnel itself reaches" if endpoint in tunnel else "")
    if why:
        r.fail("wireguardEndpoint", f"{why}; allowed: the firewall's public name or address and its WireGuard "
                                    "port, e.g. home.example.net:51820")
    why = problem(wireguard.primary_address)
    if why:
        r.fail("wireguardPrimaryAddress", f"{why}: the relay would drain to itself; allowed: the primary's "
                                          "address inside the tunnel, outside vcnCidr")
