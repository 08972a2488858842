"""Relays and DNS: the protected domains and their Cloudflare zones, the relays' names and MX
preferences, and the second relay. The pack's area: policy/backup_mx_rules/dns.py
(mx-preference, relay-a-record, zone-record-budget) and relay-fault-domains."""
from __future__ import annotations

import ipaddress
import re
from typing import Optional

from ..grammar import HOSTNAME, host_name
from .model import RelaySpec, Zone
from .network import ALWAYS_FREE_STORAGE_GB, BOOT_VOLUME_MIN_GB
from .reader import Reader

RELAY_COUNTS = (1, 2)  # Always-Free allows two E2.1.Micro instances per tenancy
FAULT_DOMAINS = ("FAULT-DOMAIN-1", "FAULT-DOMAIN-2", "FAULT-DOMAIN-3")  # every OCI availability domain has three
SECOND_RELAY_KEYS = ("secondRelayHostname", "secondMxPreference")


def domains_and_zones(r: Reader, v: dict) -> tuple[list[str], tuple[Zone, ...]]:
    """domains, and cloudflareZoneIds as one zone per domain. One Cloudflare zone holds one
    domain (its apex) and that domain's subdomains, never two unrelated domains."""
    domains = [host_name(d) for d in v["domains"]]
    if not domains:
        r.fail("domains", "must list at least one protected domain")
    for d in domains:
        if not HOSTNAME.match(d):
            r.fail("domains", f"{d!r} is not a domain name")
    if len(set(domains)) != len(domains):
        r.fail("domains", "lists a domain twice")
    zone_ids: dict[str, str] = {}
    for entry in v["cloudflareZoneIds"]:
        domain, sep, zone_id = entry.partition("=")
        domain = host_name(domain.strip())
        if not sep or not re.fullmatch(r"[0-9a-f]{32}", zone_id.strip()):
            r.fail("cloudflareZoneIds", f"{entry!r} must be domain=<32 hex digit zone id>")
        elif domain not in domains:
            r.fail("cloudflareZoneIds", f"{domain!r} is not one of domains {domains}")
        elif domain in zone_ids:
            r.fail("cloudflareZoneIds", f"lists {domain!r} twice; keep one {domain}=<zone id> entry")
        else:
            zone_ids[domain] = zone_id.strip()
    for d in domains:
        if d not in zone_ids and not any(e.startswith(d + "=") for e in v["cloudflareZoneIds"]):
            r.fail("cloudflareZoneIds", f"has no entry for {d!r}; allowed form: {d}=<zone id>")
    for zone_id in sorted(set(zone_ids.values())):
        shared = sorted((d for d, z in zone_ids.items() if z == zone_id), key=len)
        if any(not d.endswith("." + shared[0]) for d in shared[1:]):
            r.fail("cloudflareZoneIds", f"gives zone {zone_id} to {', '.join(shared)}; one Cloudflare zone holds one "
                                        "domain and its subdomains, so give each other domain its own zone id")
    return domains, tuple(Zone(d, zone_ids.get(d, "")) for d in domains)


def zone_of(host: str, zones: tuple[Zone, ...]) -> Optional[Zone]:
    """The most specific protected zone the host lies in (its A record goes there)."""
    return next((z for z in sorted(zones, key=lambda z: -len(z.domain)) if host.endswith("." + z.domain)), None)


def names(r: Reader, v: dict, domains: list[str], zones: tuple[Zone, ...]) -> tuple[str, Optional[Zone], str]:
    """The first relay's name (and its zone) and the primary's; the relay's MX after the primary's."""
    relay = host_name(v["relayHostname"] or (f"mx2.{domains[0]}" if domains else ""))
    relay_zone = zone_of(relay, zones)
    if not HOSTNAME.match(relay):
        r.fail("relayHostname", f"{relay!r} is not a host name")
    elif relay_zone is None:
        r.fail("relayHostname", f"{relay!r} must lie inside one of domains {domains} (its A record goes there)")
    primary = host_name(v["primaryMxHost"])
    if not HOSTNAME.match(primary):
        r.fail("primaryMxHost", f"{primary!r} is not a host name")
    elif primary == relay:
        r.fail("primaryMxHost", "must differ from relayHostname")
    for key in ("mxPreference", "primaryMxPreference"):
        if not 0 <= v[key] <= 65535:
            r.fail(key, f"{v[key]} is outside 0..65535")
    if v["mxPreference"] <= v["primaryMxPreference"]:
        r.fail("mxPreference", f"{v['mxPreference']} must be greater than primaryMxPreference "
                               f"({v['primaryMxPreference']}) so senders try the primary first")
    return relay, relay_zone, primary


def relays(r: Reader, v: dict, domains: list[str], zones: tuple[Zone, ...], first: str,
           first_zone: Optional[Zone], primary: str, first_ip: str) -> tuple[RelaySpec, ...]:
    """relayCount: one relay, or two on separate fault domains with their own names. The first
    relay keeps its resource names either way, so an existing stack is never replaced."""
    count = v["relayCount"]
    if count not in RELAY_COUNTS:
        r.fail("relayCount", f"{count} is not allowed; allowed: 1, 2 (Always-Free allows two E2.1.Micro instances)")
        return ()
    if first_zone is None or not first_ip:
        return ()  # relayHostname or vcnCidr failed; named above
    if count == 1:
        for key in SECOND_RELAY_KEYS:
            if r.given(key):
                r.fail(key, "is set but relayCount is 1; set relayCount: 2, or remove it")
        return (RelaySpec(first, first_ip, v["mxPreference"], first_zone, None),)
    errors = len(r.errors)
    second = host_name(v["secondRelayHostname"] or f"mx3.{domains[0]}")
    second_zone = zone_of(second, zones)
    if not HOSTNAME.match(second):
        r.fail("secondRelayHostname", f"{second!r} is not a host name")
    elif second_zone is None:
        r.fail("secondRelayHostname", f"{second!r} must lie inside one of domains {domains} (its A record goes there)")
    elif second in (first, primary):
        r.fail("secondRelayHostname", f"{second!r} is already {'relayHostname' if second == first else 'primaryMxHost'}"
                                      "; each relay needs its own name (e.g. mx3.<domain>)")
    preference = v["secondMxPreference"] or v["mxPreference"]
    if not 0 <= preference <= 65535:
        r.fail("secondMxPreference", f"{preference} is outside 1..65535 (0 means equal to mxPreference)")
    elif preference <= v["primaryMxPreference"]:
        r.fail("secondMxPreference", f"{preference} must be greater than primaryMxPreference "
                                     f"({v['primaryMxPreference']}) so senders try the primary first")
    low, total = BOOT_VOLUME_MIN_GB, ALWAYS_FREE_STORAGE_GB
    if v["bootVolumeSizeGb"] * count > total:
        r.fail("bootVolumeSizeGb", f"{v['bootVolumeSizeGb']} GB per relay is {v['bootVolumeSizeGb'] * count} GB for "
                                   f"{count} relays, over Always-Free's {total} GB; allowed with "
                                   f"relayCount {count}: {low}..{total // count}")
    if v["drainTransport"] != "nat":
        r.fail("relayCount", "2 works with drainTransport nat only (each relay would need its own WireGuard key and "
                             "tunnel address, which this version does not render); allowed with wireguard: 1")
    if v["drainSourceAddress"]:
        r.fail("drainSourceAddress", "names one address, but with relayCount 2 each relay drains from its own "
                                     "reserved IP; remove it")
    if len(r.errors) > errors or second_zone is None:
        return ()
    second_ip = str(ipaddress.IPv4Address(first_ip) + 1)
    return (RelaySpec(first, first_ip, v["mxPreference"], first_zone, FAULT_DOMAINS[0]),
            RelaySpec(second, second_ip, preference, second_zone, FAULT_DOMAINS[1]))
