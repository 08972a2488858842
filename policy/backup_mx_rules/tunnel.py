"""wireguard-tunnel: with drainTransport wireguard, the relay's wg-quick config routes only the
primary's tunnel address into the tunnel, names the firewall the stack declares, and its
private key stays inside the instance's secret user_data.

wg-quick config as wg(8) and wg-quick(8) read it: INI sections [Interface] and [Peer], keys
case-insensitive, '#' comments, AllowedIPs and Address comma-separated and repeatable.
Hooks (PreUp, PostUp, PreDown, PostDown), SaveConfig and Table run or change things the
pack does not model: they fail closed.
"""
from __future__ import annotations

import ipaddress
import json
import posixpath

from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from . import cloudinit, environment
from .environment import FactError
from .view import INSTANCE, dig, known, plain, stack_policy

CONF_DIR = "/etc/wireguard"  # wg-quick reads /etc/wireguard/<interface>.conf
KEYS = {"interface": {"privatekey", "address", "listenport", "mtu", "dns", "fwmark"},
        "peer": {"publickey", "allowedips", "endpoint", "persistentkeepalive", "presharedkey"}}
UNMODELED = {"preup", "postup", "predown", "postdown", "saveconfig", "table"}


class ConfError(ValueError):
    pass


def parse(text: str) -> list[tuple[str, dict[str, list[str]]]]:
    """[(section, {key: [values]})] in file order."""
    sections: list[tuple[str, dict[str, list[str]]]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1].strip().lower()
            if name not in KEYS:
                raise ConfError(f"line {n}: unknown section {line}")
            sections.append((name, {}))
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        if not sep or not sections:
            raise ConfError(f"line {n}: {raw.strip()!r} is not key = value inside a section")
        if key in UNMODELED:
            raise ConfError(f"line {n}: {key} runs or changes things the pack does not model; remove it")
        if key not in KEYS[sections[-1][0]]:
            raise ConfError(f"line {n}: unknown key {key!r} in [{sections[-1][0]}]")
        sections[-1][1].setdefault(key, []).append(value.strip())
    return sections


def _listed(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def conf_problems(text: str, relay: str, primary: str, peer_key: str, endpoint: str) -> list[str]:
    sections = parse(text)
    interfaces = [s for name, s in sections if name == "interface"]
    peers = [s for name, s in sections if name == "peer"]
    problems = []
    if len(interfaces) != 1 or len(peers) != 1:
        return [f"has {len(interfaces)} [Interface] and {len(peers)} [Peer] sections; the relay needs exactly one "
                "of each (the homelab firewall)"]
    iface, peer = interfaces[0], peers[0]
    if len(iface.get("privatekey", [])) != 1:
        problems.append("has no single PrivateKey")
    addresses = {str(ipaddress.ip_interface(a)) for a in _listed(iface.get("address", []))}
    if addresses != {f"{relay}/32"}:
        problems.append(f"Address is {sorted(addresses)}; set Address = {relay}/32 (stack config "
                        "wireguardRelayAddress)")
    if peer.get("publickey") != [peer_key]:
        problems.append(f"the peer's PublicKey is {peer.get('publickey')}, not the firewall's {peer_key} (stack "
                        "config wireguardPeerPublicKey)")
    if peer.get("endpoint") != [endpoint]:
        problems.append(f"the peer's Endpoint is {peer.get('endpoint')}, not {endpoint} (stack config "
                        "wireguardEndpoint): the tunnel would never come up and the drain would stop")
    allowed = _listed(peer.get("allowedips", []))
    try:
        nets = [ipaddress.ip_network(a, strict=False) for a in allowed]
    except ValueError:
        return problems + [f"AllowedIPs {allowed} cannot be read; the pack fails closed"]
    if [str(n) for n in nets] != [f"{primary}/32"]:
        wide = [str(n) for n in nets if n.prefixlen == 0]
        why = f" ({', '.join(wide)} is a default route through the firewall)" if wide else ""
        problems.append(f"AllowedIPs is {[str(n) for n in nets]}{why}; it must be exactly the primary's tunnel "
                        f"address {primary}/32 (stack config wireguardPrimaryAddress), never a default route")
    return problems


def _wireguard_tunnel(args, report_violation):
    try:
        if environment.drain_transport() != "wireguard":
            args.not_applicable("stack config drainTransport is nat: there is no tunnel")
        relay = environment.tunnel_address("wireguardRelayAddress")
        primary = environment.tunnel_address("wireguardPrimaryAddress")
        peer_key = environment.fact("wireguardPeerPublicKey")
        endpoint = environment.fact("wireguardEndpoint")
    except FactError as exc:
        report_violation(str(exc))
        return
    instances = [r for r in args.resources if r.resource_type == INSTANCE]
    if not instances:
        report_violation("drainTransport is wireguard but the stack has no relay instance to check")
    for r in instances:
        value = dig(plain(r.props), "metadata", "user_data")
        if value is not None and not known(value):
            raise UnknownValueError(UNKNOWN_STRING_VALUE, [r.name, "metadata", "user_data"])
        try:
            doc = cloudinit.cloud_config(cloudinit.decode(value))
            files = cloudinit.written_files(doc)
        except cloudinit.UserDataError as exc:
            report_violation(f"instance '{r.name}': cannot read user_data ({exc}); the pack fails closed", r.urn)
            continue
        confs = {p: t for p, t in files.items() if posixpath.dirname(p) == CONF_DIR and p.endswith(".conf")}
        if not confs:
            report_violation(f"instance '{r.name}': drainTransport is wireguard but user_data writes no "
                             f"{CONF_DIR}/<interface>.conf; the drain has no tunnel", r.urn)
            continue
        modes = cloudinit.written_modes(doc)
        keys = []
        for path, text in confs.items():
            where = f"instance '{r.name}': {path}"
            if modes.get(path) != "600":
                report_violation(f"{where} is written with mode {modes.get(path)}; it holds the private key, "
                                 "write it with permissions 0600", r.urn)
            try:
                problems = conf_problems(text, relay, primary, peer_key, endpoint)
                keys += [v for name, s in parse(text) if name == "interface" for v in s.get("privatekey", [])]
            except ConfError as exc:
                problems = [f"{exc} (the pack fails closed)"]
            for problem in problems:
                report_violation(f"{where} {problem}", r.urn)
        if "metadata" not in (r.opts.additional_secret_outputs or []):
            report_violation(f"instance '{r.name}': metadata is not in additionalSecretOutputs, so the state would "
                             "hold the WireGuard private key in plain text; add it", r.urn)
        _report_leaks(args, r, keys, report_violation)


def _report_leaks(args, instance, keys: list[str], report_violation) -> None:
    """The private key may live only in the relay instance's user_data."""
    for other in args.resources:
        if other is instance:
            continue
        text = json.dumps(plain(other.props), default=str)
        for key in keys:
            if key and key in text:
                report_violation(f"resource '{other.name}' carries the relay's WireGuard private key in its inputs; "
                                 "it may appear only in the instance's user_data (a secret)", other.urn)


wireguard_tunnel = stack_policy(
    "wireguard-tunnel",
    "With stack config drainTransport wireguard: the relay's wg-quick config has one [Interface] at "
    "wireguardRelayAddress/32 and one [Peer], the firewall (wireguardPeerPublicKey), whose AllowedIPs is exactly "
    "wireguardPrimaryAddress/32 (never a default route); the file is 0600, the instance's metadata is an "
    "additional secret output, and the private key appears in no other resource. No wg-quick hooks.",
    _wireguard_tunnel)
