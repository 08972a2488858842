"""The WireGuard drain (drainTransport wireguard): the relay as a road-warrior peer of the
homelab firewall. The pack's area: policy/backup_mx_rules/tunnel.py (wireguard-tunnel)."""
from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Optional

from ..facts import SMTP_PORT
from ..grammar import HOSTNAME, is_cidr, is_ipv4
from .model import SecretConfig, WireGuard
from .network import RFC1918
from .reader import Reader

WIREGUARD_KEYS = ("wireguardPrivateKey", "wireguardPeerPublicKey", "wireguardEndpoint", "wireguardRelayAddress",
                  "wireguardPrimaryAddress")
TUNNEL_RANGES = RFC1918 + [ipaddress.IPv4Network("100.64.0.0/10")]
_ENDPOINT = re.compile(r"^(?P<host>[^:\s]+):(?P<port>[0-9]{1,5})$")


def key_problem(text: str) -> str:
    """'' for a WireGuard key as wg genkey / wg pubkey print it: 32 bytes in 44 characters of base64."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raw = b""
    if len(text) == 44 and len(raw) == 32:
        return ""
    return "is not a WireGuard key (44 characters of base64, as wg genkey/wg pubkey print)"


def check(r: Reader, v: dict, mynetworks: tuple[str, ...], key: Optional[SecretConfig]) -> Optional[WireGuard]:
    """With drainTransport wireguard: every tunnel key present and sane, the NAT drain's keys
    unset. With nat: no tunnel key set."""
    if v["drainTransport"] != "wireguard":
        if v["drainTransport"] == "nat":
            for name in WIREGUARD_KEYS:
                if v.get(name) or (name == "wireguardPrivateKey" and key and key.text):
                    r.fail(name, "is set but drainTransport is nat; set drainTransport: wireguard, or remove it")
        return None
    errors = len(r.errors)
    _private_key(r, key)
    peer = v["wireguardPeerPublicKey"]
    if not peer:
        r.fail("wireguardPeerPublicKey", "is required with drainTransport wireguard (the firewall's public key)")
    elif key_problem(peer):
        r.fail("wireguardPeerPublicKey", f"{peer!r} {key_problem(peer)}")
    endpoint = _ENDPOINT.match(v["wireguardEndpoint"])
    if not endpoint or not (HOSTNAME.match(endpoint["host"].lower()) or is_ipv4(endpoint["host"])) \
            or not 1 <= int(endpoint["port"]) <= 65535:
        r.fail("wireguardEndpoint", f"{v['wireguardEndpoint']!r} is not host:port (allowed: e.g. "
                                    "home.example.net:51820 or 198.51.100.7:51820)")
    relay, primary = _addresses(r, v, mynetworks)
    for name in ("drainHost", "drainSourceAddress"):
        if r.given(name):
            r.fail(name, "applies to drainTransport nat only; with wireguard the relay drains to "
                         "wireguardPrimaryAddress and the primary sees wireguardRelayAddress. Remove it")
    if r.given("drainPort"):
        r.fail("drainPort", f"applies to drainTransport nat only; with wireguard the drain is port {SMTP_PORT} "
                            "inside the tunnel. Remove it")
    if len(r.errors) > errors or relay is None or primary is None or endpoint is None:
        return None
    return WireGuard(peer_public_key=peer, endpoint=v["wireguardEndpoint"], relay_address=str(relay),
                     primary_address=str(primary))


def _private_key(r: Reader, key: Optional[SecretConfig]) -> None:
    how = "set it with `pulumi config set --secret wireguardPrivateKey <key>` (from wg genkey)"
    if key is None or not key.text:
        r.fail("wireguardPrivateKey", f"is required with drainTransport wireguard; {how}")
    elif not key.secret:
        r.fail("wireguardPrivateKey", "is stored in plain text in the stack file; remove it there and " + how)
    elif key_problem(key.text):
        r.fail("wireguardPrivateKey", f"{key_problem(key.text)}; {how}")


def _addresses(r: Reader, v: dict, mynetworks: tuple[str, ...]) -> tuple[Optional[ipaddress.IPv4Address], ...]:
    """The tunnel's two addresses: private, distinct, the relay's outside mynetworks and the VCN."""
    found = {}
    for name in ("wireguardRelayAddress", "wireguardPrimaryAddress"):
        text = v[name]
        if not is_ipv4(text) or not any(ipaddress.IPv4Address(text) in n for n in TUNNEL_RANGES):
            r.fail(name, f"{text!r} is not a private IPv4 tunnel address (allowed: RFC 1918 or 100.64.0.0/10, "
                         "e.g. 10.253.0.20)")
        else:
            found[name] = ipaddress.IPv4Address(text)
    relay, primary = found.get("wireguardRelayAddress"), found.get("wireguardPrimaryAddress")
    if relay and primary and relay == primary:
        r.fail("wireguardRelayAddress", "equals wireguardPrimaryAddress; the relay and the primary need their own")
    if relay and any(relay in ipaddress.ip_network(n) for n in mynetworks):
        r.fail("wireguardRelayAddress", f"{relay} lies inside primaryMynetworks; the primary must see the relay as "
                                        "a stranger with per-stage exemptions, never as mynetworks")
    if relay and is_cidr(v["vcnCidr"]) and relay in ipaddress.ip_network(v["vcnCidr"], strict=False):
        r.fail("wireguardRelayAddress", f"{relay} lies inside vcnCidr {v['vcnCidr']}; pick a tunnel address "
                                        "outside the VCN")
    return relay, primary
