"""reachability: what the relay's network lets through, computed from every OCI network
resource of the plan, not from one list.

For each relay instance the pack follows the engine's property dependencies (ids are
unknown at preview): the VNIC's subnet and NSGs, the subnet's route table and security
lists, each route's target, each NSG's rules. From them it asks three questions, as OCI
answers them (docs.oracle.com, "Security Rules", "VCN Route Tables", "Internet Gateway"):

- does the world (0.0.0.0/0, however it is split) reach TCP 25 and 80 on the relay: a
  security list attached to its subnet or an NSG on its VNIC allows it from any source
  port, a stateless rule only with the egress rule its replies need, and the subnet routes
  0.0.0.0/0 to an enabled internet gateway of the stack;
- does the relay reach the drain (TCP drainPort to drainHost, with WireGuard UDP to the
  endpoint's port) and DNS (UDP 53 to the VCN resolver, 169.254.169.254), by the same rules;
- is every OCI resource on an explicit provider in the stack's region (ociRegion): the
  free tier exists only in the home region.

What the pack cannot follow fails closed: a subnet, route table, security list, NSG or
route target that does not come from a resource of this stack (a literal OCID), the VCN's
default route table or security list, DHCP options, a gateway with its own route table.
A drainHost written as a name is only shown reachable by a rule to 0.0.0.0/0.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from . import environment
from .environment import FactError
from .network import _port_range
from .view import (
    DEFAULT_SECURITY_LIST,
    INSTANCE,
    INTERNET_GATEWAY,
    NSG,
    NSG_RULE,
    OCI_PROVIDER,
    ROUTE_TABLE,
    SECURITY_LIST,
    SUBNET,
    VCN,
    as_bool,
    known,
    plain,
    stack_policy,
)

WORLD = ipaddress.IPv4Network("0.0.0.0/0")
RESOLVER = ipaddress.IPv4Address("169.254.169.254")  # the VCN's DNS resolver (and metadata service)
TCP, UDP = "6", "17"
ALL_PORTS = (1, 65535)
IGW_OCID = "ocid1.internetgateway."  # an OCID names its resource type
INBOUND = {25: "SMTP from every sender", 80: "HTTP-01 for certbot"}


@dataclass(frozen=True)
class Rule:
    """One security rule, as OCI applies it: `net` is the source of an ingress rule and the
    destination of an egress rule; port ranges None mean every port."""
    what: str
    protocol: str
    net: ipaddress.IPv4Network | ipaddress.IPv6Network | None  # None: not a CIDR (an NSG or a service label)
    ports: tuple[int, int] | None
    source_ports: tuple[int, int] | None
    stateless: bool

    def allows(self, protocol: str, port: int, any_source_port: bool = True) -> bool:
        if self.protocol not in ("all", protocol):
            return False
        if self.ports is not None and not self.ports[0] <= port <= self.ports[1]:
            return False
        return not any_source_port or self.source_ports in (None, ALL_PORTS)

    def replies_to(self, protocol: str, port: int) -> bool:
        """As the rule in the other direction that lets replies out (or in): from `port`, to any port."""
        if self.protocol not in ("all", protocol) or self.ports not in (None, ALL_PORTS):
            return False
        return self.source_ports is None or self.source_ports[0] <= port <= self.source_ports[1]


def _rule(what: str, props: dict, direction: str) -> Rule:
    """Raises ValueError on a rule the pack cannot read."""
    protocol = str(props.get("protocol", "")).lower()
    if not known(protocol) or not protocol:
        raise ValueError("its protocol is unknown")
    key, kind = ("source", "sourceType") if direction == "INGRESS" else ("destination", "destinationType")
    address, address_kind = props.get(key), str(props.get(kind) or "CIDR_BLOCK").upper()
    if not known(address) or not known(address_kind):
        raise ValueError(f"its {key} is unknown at preview")
    net = ipaddress.ip_network(str(address), strict=False) if address_kind == "CIDR_BLOCK" else None
    options = props.get("tcpOptions") if protocol == TCP else props.get("udpOptions") if protocol == UDP else None
    ports = _port_range(options)
    source_ports = _port_range(options.get("sourcePortRange")) if isinstance(options, dict) else None
    stateless = as_bool(props.get("stateless"))
    if not known(stateless):
        raise ValueError("whether it is stateless is unknown")
    return Rule(what, protocol, net, ports, source_ports, bool(stateless))


class Unfollowed(Exception):
    """A link of the network the pack cannot follow: it fails closed."""


def _deps(r, key: str, types: tuple[str, ...]) -> list:
    return [d for d in (r.property_dependencies or {}).get(key, []) if d.resource_type in types]


def _ids(value) -> int | None:
    """How many ids a list input names; None when it is unknown."""
    if not known(value):
        return None
    return len(value) if isinstance(value, list) else (0 if value in (None, "") else 1)


@dataclass
class Path:
    """What one relay's VNIC is subject to."""
    ingress: list[Rule]
    egress: list[Rule]
    problems: list[str]


def _lists_rules(lists: list) -> tuple[list[Rule], list[Rule], list[str]]:
    """The attached lists' rules. An ingress rule the pack cannot read is security-list's to
    report (it judges every ingress rule); here it only never counts as letting anything in."""
    ingress: list[Rule] = []
    egress: list[Rule] = []
    problems: list[str] = []
    for sl in lists:
        props = plain(sl.props)
        for direction, key, out in (("INGRESS", "ingressSecurityRules", ingress),
                                    ("EGRESS", "egressSecurityRules", egress)):
            for i, rule in enumerate(props.get(key) or []):
                what = f"security list '{sl.name}' {key}[{i}]"
                try:
                    out.append(_rule(what, rule if isinstance(rule, dict) else {}, direction))
                except (ValueError, TypeError) as exc:
                    if direction == "EGRESS":
                        problems.append(f"{what} cannot be read ({exc}); the pack fails closed")
    return ingress, egress, problems


def _path(inst, resources: list) -> Path:
    props = plain(inst.props)
    vnic = props.get("createVnicDetails") or {}
    if not isinstance(vnic, dict) or vnic.get("vlanId"):
        raise Unfollowed("its VNIC is not in a subnet (createVnicDetails with a vlanId, or none)")
    subnets = _deps(inst, "createVnicDetails", (SUBNET,))
    if len(subnets) != 1:
        raise Unfollowed(f"createVnicDetails.subnetId does not come from one Subnet of this stack ({len(subnets)} "
                         "found): the subnet's routes and security lists are outside the plan")
    subnet = subnets[0]
    sp = plain(subnet.props)
    problems = []
    if as_bool(sp.get("prohibitPublicIpOnVnic")) is True or as_bool(sp.get("prohibitInternetIngress")) is True:
        problems.append(f"subnet '{subnet.name}' prohibits public IPs or internet ingress: the reserved IP cannot "
                        "carry mail to the relay")
    if sp.get("dhcpOptionsId"):
        problems.append(f"subnet '{subnet.name}' sets dhcpOptionsId; the pack models the VCN resolver only "
                        "(DHCP options can name another), so it fails closed")
    # Routes: the subnet's own table, every rule to an enabled internet gateway of the stack.
    tables = _deps(subnet, "routeTableId", (ROUTE_TABLE,))
    if not sp.get("routeTableId"):
        problems.append(f"subnet '{subnet.name}' names no route table, so OCI gives it the VCN's default route "
                        "table, which has no route to the internet; set route_table_id to this stack's table")
    elif len(tables) != 1:
        raise Unfollowed(f"subnet '{subnet.name}': routeTableId does not come from a RouteTable of this stack")
    else:
        table = tables[0]
        rules = plain(table.props).get("routeRules") or []
        gateways = _deps(table, "routeRules", (INTERNET_GATEWAY,))
        others = [d for d in (table.property_dependencies or {}).get("routeRules", []) if d not in gateways]
        literal = [str(r.get("networkEntityId")) for r in rules if isinstance(r, dict) and known(r.get("networkEntityId"))
                   and not str(r.get("networkEntityId")).startswith(IGW_OCID)]
        if others or literal or (rules and not gateways):
            targets = ", ".join([f"'{d.name}'" for d in others] + literal) or "an entity outside the plan"
            problems.append(f"route table '{table.name}' sends traffic to {targets}, not this stack's internet "
                            "gateway (a private IP, NAT, DRG or another VCN's entity can divert the drain); the "
                            "pack models internet gateway routes only and fails closed")
        for gw in gateways:
            gp = plain(gw.props)
            if as_bool(gp.get("enabled")) is False:
                problems.append(f"internet gateway '{gw.name}' is disabled: nothing reaches the relay or leaves it")
            if gp.get("routeTableId"):
                problems.append(f"internet gateway '{gw.name}' has its own route table (ingress routing), which the "
                                "pack does not model; it fails closed")
        default = [r for r in rules if isinstance(r, dict) and str(r.get("destination") or r.get("cidrBlock"))
                   == str(WORLD) and str(r.get("destinationType") or "CIDR_BLOCK").upper() == "CIDR_BLOCK"]
        if not default:
            problems.append(f"route table '{table.name}' has no 0.0.0.0/0 route to the internet gateway: senders' "
                            "replies and the drain have no way out")
    # Security lists on the subnet, NSGs on the VNIC.
    named = _ids(sp.get("securityListIds"))
    lists = _deps(subnet, "securityListIds", (SECURITY_LIST, DEFAULT_SECURITY_LIST))
    if named == 0 or sp.get("securityListIds") is None:
        problems.append(f"subnet '{subnet.name}' names no security lists, so OCI applies the VCN's default "
                        "security list (SSH open to the world); attach this stack's security list")
    elif named is not None and named != len(lists):
        other = _deps(subnet, "securityListIds", (VCN,))
        why = "the VCN's default security list (SSH open to the world), whose rules the plan does not show" if other \
            else "a security list outside this stack (a literal OCID)"
        problems.append(f"subnet '{subnet.name}' attaches {named} security lists, {named - len(lists)} of them "
                        f"{why}; the pack fails closed: attach only this stack's lists")
    ingress, egress, unread = _lists_rules(lists)
    problems += unread
    nsg_count = _ids(vnic.get("nsgIds"))
    nsgs = _deps(inst, "createVnicDetails", (NSG,))
    if nsg_count and nsg_count != len(nsgs):
        problems.append(f"createVnicDetails.nsgIds names {nsg_count} NSGs, {nsg_count - len(nsgs)} outside this "
                        "stack; the pack fails closed")
    mine = {n.urn for n in nsgs}
    for r in resources:
        if r.resource_type == NSG_RULE and {d.urn for d in _deps(r, "networkSecurityGroupId", (NSG,))} & mine:
            rp = plain(r.props)
            direction = str(rp.get("direction", "")).upper()
            try:
                rule = _rule(f"NSG rule '{r.name}'", rp, direction)
            except (ValueError, TypeError) as exc:
                if direction != "INGRESS":
                    problems.append(f"NSG rule '{r.name}' cannot be read ({exc}); the pack fails closed")
                continue
            (ingress if direction == "INGRESS" else egress).append(rule)
    return Path(ingress, egress, problems)


def _reached(path: Path, protocol: str, port: int, direction: str, target) -> bool:
    """Some rule of `direction` lets `protocol`/`port` through for the whole of `target` (a
    network: the union of the rules' CIDRs must cover it), any source port; a stateless rule
    counts only with a rule the other way that lets its replies back."""
    rules, back = (path.ingress, path.egress) if direction == "INGRESS" else (path.egress, path.ingress)
    nets = []
    for rule in rules:
        if rule.net is None or rule.net.version != 4 or not rule.allows(protocol, port):
            continue
        if rule.stateless and not any(b.net is not None and b.net.version == 4 and rule.net.subnet_of(b.net)
                                      and b.replies_to(protocol, port) for b in back):
            continue
        nets.append(rule.net)
    return any(target.subnet_of(n) for n in ipaddress.collapse_addresses(nets))


def _drain_targets() -> list[tuple[str, str, int, ipaddress.IPv4Network]]:
    """(what, protocol, port, destination) the relay must reach, from the stack's config."""
    if environment.drain_transport() == "wireguard":
        endpoint = str(environment.fact("wireguardEndpoint"))
        host, _, port_text = endpoint.rpartition(":")
        try:
            port = int(port_text)
        except ValueError:
            raise FactError(f"stack config {environment.project()}:wireguardEndpoint = {endpoint!r} has no port; "
                            "the pack cannot tell where the tunnel goes") from None
        what, protocol = f"the WireGuard endpoint {endpoint} (UDP)", UDP
    else:
        host, port = environment.drain_host(), int(environment.fact("drainPort"))
        what, protocol = f"the drain {host}:{port} (TCP)", TCP
    try:
        dest = ipaddress.IPv4Network(host.strip("[]"))
    except ValueError:
        dest = WORLD  # a name: only a rule to every address is shown to reach it
    return [(what, protocol, port, dest), ("the VCN resolver 169.254.169.254 (DNS, UDP 53)", UDP, 53,
                                           ipaddress.IPv4Network(RESOLVER))]


def _reachability(args, report_violation):
    try:
        targets = _drain_targets()
        region = str(environment.fact("ociRegion"))
    except FactError as exc:
        report_violation(str(exc))
        return
    for r in args.resources:
        if r.resource_type.startswith("oci:"):
            provider = r.provider
            if provider is None or provider.resource_type != OCI_PROVIDER:
                report_violation(f"'{r.name}' uses the default OCI provider, whose region the plan does not show; "
                                 f"give it this stack's provider (region {region}, stack config ociRegion)", r.urn)
                continue
            given = plain(provider.props).get("region")
            if known(given) and str(given) != region:
                report_violation(f"'{r.name}' is created in region {given!r}, not the stack's ociRegion {region!r}: "
                                 "Always-Free resources exist only in the home region", r.urn)
    for inst in args.resources:
        if inst.resource_type != INSTANCE:
            continue
        try:
            path = _path(inst, args.resources)
        except Unfollowed as exc:
            report_violation(f"instance '{inst.name}': {exc}; the pack cannot compute what reaches it and fails "
                             "closed", inst.urn)
            continue
        for problem in path.problems:
            report_violation(f"instance '{inst.name}': {problem}", inst.urn)
        for port, why in INBOUND.items():
            if not _reached(path, TCP, port, "INGRESS", WORLD):
                report_violation(f"instance '{inst.name}': the world does not reach TCP {port} ({why}) through the "
                                 "security lists on its subnet and the NSGs on its VNIC (a rule from 0.0.0.0/0, any "
                                 "source port; stateless only with its egress reply rule)", inst.urn)
        for what, protocol, port, dest in targets:
            if not _reached(path, protocol, port, "EGRESS", dest):
                report_violation(f"instance '{inst.name}': no egress rule on its subnet or VNIC lets it reach {what}"
                                 f"{'' if dest != WORLD else ' (to 0.0.0.0/0: the pack does not resolve names)'}",
                                 inst.urn)


reachability = stack_policy(
    "reachability",
    "Computed across the VCN, subnets, route tables, gateways, security lists, NSGs and the relay's VNIC: the "
    "world reaches TCP 25 and 80, the relay reaches the drain and DNS, every OCI resource is in the stack's "
    "ociRegion; links the pack cannot follow fail closed.",
    _reachability)
