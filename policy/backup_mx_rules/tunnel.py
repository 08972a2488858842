"""wireguard-tunnel: with drainTransport wireguard, the relay's wg-quick config routes only the
primary's tunnel address into the tunnel, names the firewall the stack declares, and its
private key stays inside the instance's secret user_data.

The config is read as wg-quick(8) and then wg(8) read it (wireguard-tools 1.0.20210914, the
version Debian ships; tests/test_wireguard.py runs both on every form the tests write):
- wg-quick reads the file line by line, split on newlines only, cuts each line at its first '#'
  and splits it at its first '='; key and value lose their leading and trailing [[:space:]].
  A key starting with '[' ends its section; '[Interface]' (any case) opens its own. There it
  takes Address, MTU, DNS, Table, SaveConfig and the hooks for itself; every other line goes on
  to wg setconf unchanged.
- wg cuts each line at its first '#' and removes every space, tab, newline, vertical tab, form
  feed and CR from it, wherever it stands. '[Interface]' and '[Peer]' (any case) open sections;
  in them only its own keys are known ('Key=' matched without case). Any other line, or a key
  before a section, makes wg setconf fail, and the tunnel does not come up.
Hooks (PreUp, PostUp, PreDown, PostDown), SaveConfig and Table run or change things the pack
does not model: they fail closed.
"""
from __future__ import annotations

import ipaddress
import json
import posixpath
import re
from dataclasses import dataclass, field

from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from . import cloudinit, environment
from .environment import FactError
from .view import INSTANCE, dig, known, plain, stack_policy

CONF_DIR = "/etc/wireguard"  # wg-quick reads /etc/wireguard/<interface>.conf
SPACE = " \t\n\v\f\r"  # wg's char_is_space, and bash's [[:space:]] in the C locale
WG_QUICK_KEYS = {"address", "mtu", "dns", "table", "preup", "predown", "postup", "postdown", "saveconfig"}
WG_KEYS = {"interface": {"listenport", "fwmark", "privatekey"},
           "peer": {"publickey", "allowedips", "endpoint", "persistentkeepalive", "presharedkey"}}
UNMODELED = {"preup", "postup", "predown", "postdown", "saveconfig", "table"}


class ConfError(ValueError):
    pass


@dataclass
class Conf:
    """What wg-quick keeps for itself, and the sections wg setconf is given, in file order."""
    wg_quick: dict[str, list[str]] = field(default_factory=dict)
    sections: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)

    def of(self, section: str) -> list[dict[str, list[str]]]:
        return [keys for name, keys in self.sections if name == section]

    def addresses(self) -> list[str]:
        """The interface's addresses as wg-quick adds them (Address lines, comma- or
        space-separated); ValueError when one is not an address."""
        return sorted(str(ipaddress.ip_interface(a))
                      for value in self.wg_quick.get("address", []) for a in _words(value.replace(",", " ")))


def parse(text: str) -> Conf:
    conf, interface_section = Conf(), False
    for n, line in enumerate(text.split("\n"), 1):
        stripped = line.split("#", 1)[0]
        key, sep, value = stripped.partition("=")
        key, value = key.strip(SPACE), (value if sep else stripped).strip(SPACE)
        if key.startswith("["):
            interface_section = key.lower() == "[interface]"
        if interface_section and key.lower() in WG_QUICK_KEYS:
            if key.lower() in UNMODELED:
                raise ConfError(f"line {n}: {key} runs or changes things the pack does not model; remove it")
            conf.wg_quick.setdefault(key.lower(), []).append(value)
            continue
        _wg_line(conf, n, line)
    return conf


def _wg_line(conf: Conf, n: int, line: str) -> None:
    cleaned = "".join(c for c in line.split("#", 1)[0] if c not in SPACE)
    if not cleaned:
        return
    if cleaned.lower() in ("[interface]", "[peer]"):
        conf.sections.append((cleaned.lower()[1:-1], {}))
        return
    key, sep, value = cleaned.partition("=")
    if not conf.sections or not sep or key.lower() not in WG_KEYS[conf.sections[-1][0]]:
        raise ConfError(f"line {n}: wg setconf refuses {cleaned!r}"
                        + ("" if conf.sections else " outside a section")
                        + ", so the tunnel would not come up")
    conf.sections[-1][1].setdefault(key.lower(), []).append(value)


def _words(text: str) -> list[str]:
    """bash's word splitting with the default IFS: space, tab and newline only."""
    return [w for w in re.split("[ \t\n]+", text) if w]


def _listed(values: list[str]) -> list[str]:
    return [v.strip(SPACE) for value in values for v in value.split(",") if v.strip(SPACE)]


def conf_problems(text: str, relay: str, primary: str, peer_key: str, endpoint: str) -> list[str]:
    conf = parse(text)
    interfaces, peers = conf.of("interface"), conf.of("peer")
    problems = []
    if len(interfaces) != 1 or len(peers) != 1:
        return [f"has {len(interfaces)} [Interface] and {len(peers)} [Peer] sections as wg reads it; the relay "
                "needs exactly one of each (the homelab firewall)"]
    iface, peer = interfaces[0], peers[0]
    if len(iface.get("privatekey", [])) != 1:
        problems.append("has no single PrivateKey")
    try:
        addresses = set(conf.addresses())
    except ValueError:
        addresses = {"(unreadable)"}
    if addresses != {f"{relay}/32"}:
        problems.append(f"Address is {sorted(addresses)} as wg-quick reads it; set Address = {relay}/32 in "
                        "[Interface] (stack config wireguardRelayAddress)")
    if peer.get("publickey") != [peer_key]:
        problems.append(f"the peer's PublicKey is {peer.get('publickey')}, not the firewall's {peer_key} (stack "
                        "config wireguardPeerPublicKey)")
    if peer.get("endpoint") != ["".join(c for c in endpoint if c not in SPACE)]:
        problems.append(f"the peer's Endpoint is {peer.get('endpoint')} as wg reads it, not {endpoint} (stack "
                        "config wireguardEndpoint): the tunnel would never come up and the drain would stop")
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
                keys += [v for s in parse(text).of("interface") for v in s.get("privatekey", [])]
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
