"""Where the pack's expected values come from: one written contract (docs/policies.md).

1. The invariants are the pack's own defaults, declared in each policy's config schema
   (queue 30d, bounce 1d, budget 200, never 5xx, drain never on port 25). Policy config
   (`--policy-pack-config`) may only tighten them; a looser value is itself reported.
2. Environment facts (the homelab CIDR, the primary's mynetworks and size limit, the
   protected domains, the drain host and port, ...) come from the stack's config, which
   the engine hands the pack in PULUMI_CONFIG. They are never read from the program's
   rendered props and never copied into a second file. A fact the stack does not set
   takes the default below, which mirrors the `default:` of the key in Pulumi.yaml (the
   pack keeps its own copy on purpose: it imports nothing from the program).
3. A fact the pack needs but cannot read or parse is a violation, never a silent pass.
"""
from __future__ import annotations

import ipaddress
import json
import os
from typing import Any

# Defaults of the stack keys the pack reads (the same values Pulumi.yaml declares).
FACT_DEFAULTS: dict[str, Any] = {
    "relayHostname": "", "mxPreference": 20, "primaryMxPreference": 1, "primaryMynetworks": ["127.0.0.0/8"],
    "drainHost": "", "drainPort": 2526, "messageSizeLimit": 209715200, "drainSourceAddress": "",
    "breakGlassSsh": False, "drainTransport": "nat", "wireguardPeerPublicKey": "", "wireguardRelayAddress": "",
    "wireguardPrimaryAddress": "", "relayCount": 1, "secondRelayHostname": "", "secondMxPreference": 0,
    "mtaSts": "off", "accountMode": "payg", "tailnetTag": "tag:backup-mx", "sshAuthorizedKeys": [],
    "queueLifetime": "30d", "wireguardEndpoint": "", "tailnet": "headscale", "headscaleLoginServer": "",
    "recipients": "catchall", "recipientListUrl": "", "ociRegion": "eu-frankfurt-1",
}
SMTP_PORT = 25  # the pack's own copy: with drainTransport wireguard the drain is port 25 in the tunnel
# The contract's size headroom (docs/policies.md): the relay's message_size_limit is the
# primary's (messageSizeLimit) less this, which its own and the primary's headers need.
SIZE_HEADROOM = 1024 * 1024
DRAIN_TRANSPORTS = ("nat", "wireguard")
ACCOUNT_MODES = ("payg", "free")
TAILNETS = ("headscale", "tailscale", "none")
RECIPIENT_MODES = ("catchall", "list", "verify")
REQUIRED = ("domains", "cloudflareZoneIds", "primaryMxHost", "homelabCidr")
ARRAYS = ("domains", "cloudflareZoneIds", "primaryMynetworks", "sshAuthorizedKeys")
INTEGERS = ("mxPreference", "primaryMxPreference", "drainPort", "messageSizeLimit", "relayCount", "secondMxPreference")
RELAY_COUNTS = (1, 2)
BOOLEANS = ("breakGlassSsh",)


class FactError(ValueError):
    """A stack config value the pack needs is missing or malformed."""


def project() -> str:
    return os.environ.get("PULUMI_PROJECT") or "backup-mx"


def _raw() -> dict[str, str]:
    text = os.environ.get("PULUMI_CONFIG") or "{}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise FactError("PULUMI_CONFIG is not JSON; run the pack through `pulumi preview --policy-pack`") from None
    return data if isinstance(data, dict) else {}


def fact(name: str) -> Any:
    """One stack config value, typed; FactError names the key and what is wrong."""
    raw = _raw()
    key = f"{project()}:{name}"
    text = raw.get(key, raw.get(f"{project()}:config:{name}"))
    if text is None:
        if name in FACT_DEFAULTS:
            return FACT_DEFAULTS[name]
        raise FactError(f"stack config {key} is not set, so the pack cannot judge against it; set it in the "
                        "stack (pulumi config set)")
    if name in ARRAYS:
        try:
            value = json.loads(text) if isinstance(text, str) else text
        except json.JSONDecodeError:
            raise FactError(f"stack config {key} = {text!r} is not an array") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FactError(f"stack config {key} = {text!r} is not an array of strings")
        return value
    if name in BOOLEANS:
        word = str(text).strip().lower()
        if word not in ("true", "false"):
            raise FactError(f"stack config {key} = {text!r} is not a boolean (true or false)")
        return word == "true"
    if name in INTEGERS:
        try:
            return int(str(text).strip())
        except ValueError:
            raise FactError(f"stack config {key} = {text!r} is not an integer") from None
    return str(text)


def host_name(text: str) -> str:
    """A DNS name as the pack compares it: without case, and `name.` is `name` (RFC 4343,
    RFC 1034 section 3.1; one dot only, so `name..` stays malformed); the program's settings
    read each name the same way."""
    return text.lower().removesuffix(".")


def domains() -> list[str]:
    out = []
    for d in fact("domains"):
        clean = host_name(d)
        if not clean or clean != clean.strip() or " " in clean:
            raise FactError(f"stack config {project()}:domains entry {d!r} is not a domain name")
        out.append(clean)
    if not out:
        raise FactError(f"stack config {project()}:domains is empty")
    return out


def zone_ids() -> dict[str, str]:
    out = {}
    for entry in fact("cloudflareZoneIds"):
        # blanks around either side are the settings' too: they strip them
        domain, sep, zone = (part.strip() for part in entry.partition("="))
        domain = host_name(domain)
        if not sep or not domain or not zone or " " in domain or " " in zone:
            raise FactError(f"stack config {project()}:cloudflareZoneIds entry {entry!r} is not domain=zoneid")
        if domain in out:
            raise FactError(f"stack config {project()}:cloudflareZoneIds lists {domain} twice")
        out[domain] = zone
    return out


def relay_hostname() -> str:
    return host_name(fact("relayHostname") or f"mx2.{domains()[0]}")


def relays() -> list[tuple[str, int]]:
    """(host name, MX preference) of every relay the stack declares (relayCount)."""
    count = fact("relayCount")
    if count not in RELAY_COUNTS:
        raise FactError(f"stack config {project()}:relayCount = {count} is not one of 1, 2; the pack cannot tell "
                        "which relays to expect")
    found = [(relay_hostname(), fact("mxPreference"))]
    if count == 2:
        second = host_name(fact("secondRelayHostname") or f"mx3.{domains()[0]}")
        found.append((second, fact("secondMxPreference") or fact("mxPreference")))
    return found


def primary_mx_host() -> str:
    return host_name(fact("primaryMxHost"))


def drain_host() -> str:
    return host_name(fact("drainHost") or fact("primaryMxHost"))


def _one_of(name: str, allowed: tuple[str, ...], consequence: str) -> str:
    value = fact(name)
    if value not in allowed:
        raise FactError(f"stack config {project()}:{name} = {value!r} is not one of {', '.join(allowed)}; "
                        f"the pack cannot tell {consequence}")
    return value


def drain_transport() -> str:
    return _one_of("drainTransport", DRAIN_TRANSPORTS, "where the drain goes")


def account_mode() -> str:
    return _one_of("accountMode", ACCOUNT_MODES, "whether the relay needs its keep-alive")


def tailnet() -> str:
    return _one_of("tailnet", TAILNETS, "which files and enrolment the relay should have")


def recipients() -> str:
    return _one_of("recipients", RECIPIENT_MODES, "which recipients the relay may refuse")


def tunnel_address(name: str) -> str:
    """wireguardRelayAddress / wireguardPrimaryAddress, required with drainTransport wireguard."""
    text = fact(name)
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise FactError(f"stack config {project()}:{name} = {text!r} is not an IPv4 address; with drainTransport "
                        "wireguard the pack needs it") from None


def drain_target() -> tuple[str, int, str]:
    """(host, port, the stack key that names the host) the relay must drain to."""
    if drain_transport() == "wireguard":
        return tunnel_address("wireguardPrimaryAddress"), SMTP_PORT, "wireguardPrimaryAddress"
    return drain_host(), int(fact("drainPort")), "drainHost"


def network(name: str, text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise FactError(f"stack config {project()}:{name} entry {text!r} is not a CIDR") from None


def networks(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    value = fact(name)
    return [network(name, v) for v in (value if isinstance(value, list) else [value])]
