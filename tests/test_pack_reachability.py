"""The pack's reachability policy (policy/backup_mx_rules/reachability.py): what reaches the relay
and what it reaches, computed from every OCI network resource of the plan and the engine's
property dependencies. Each evasion leaves every single security rule the old policies looked at
intact, and still cuts senders or the drain off (or bills the tenancy); each is reported by
reachability alone. Each equivalent form is clean."""
import copy

import pytest

from tests.helpers import DELETE, add_resource, reported, resource, set_prop
from tests.pack_mutations import UNKNOWN, assert_reported_only

NSG = "oci:Core/networkSecurityGroup:NetworkSecurityGroup"
NSG_RULE = "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule"
SL = "oci:Core/securityList:SecurityList"
WORLD_TCP = {"protocol": "6", "source": "0.0.0.0/0", "sourceType": "CIDR_BLOCK"}


def urn(plan, type_suffix):
    return resource(plan, type_suffix)["urn"]


def set_deps(plan, type_suffix, key, urns):
    plan = copy.deepcopy(plan)
    deps = resource(plan, type_suffix).setdefault("propertyDependencies", {})
    if urns is None:
        deps.pop(key, None)
    else:
        deps[key] = list(urns)
    return plan


def edit_rules(plan, key, edit):
    """`edit(rules) -> rules` on the stack's security list's ingress or egress rules."""
    plan = copy.deepcopy(plan)
    r = resource(plan, "SecurityList")
    for w in ("props", "outputs"):
        r[w][key] = edit(copy.deepcopy(r[w][key]))
    return plan


def on_port(port, **changes):
    def edit(rules):
        for rule in rules:
            if rule.get("tcpOptions", {}).get("min") == port:
                rule.update(changes)
        return rules
    return edit


def without_ports(*ports):
    return lambda rules: [r for r in rules if r.get("tcpOptions", {}).get("min") not in ports]


def attach_lists(plan, *urns):
    plan = set_prop(plan, "subnet:Subnet", ["securityListIds"], [UNKNOWN] * len(urns))
    return set_deps(plan, "subnet:Subnet", "securityListIds", urns)


def add_list(plan, name, ingress=(), egress=()):
    return add_resource(plan, SL, name, {"vcnId": UNKNOWN, "ingressSecurityRules": list(ingress),
                                         "egressSecurityRules": list(egress)},
                        property_dependencies={"vcnId": [urn(plan, "vcn:Vcn")]})


def add_nsg(plan, name, ports, attach):
    """An NSG with a world rule per port, on the relay's VNIC when `attach`."""
    plan = add_resource(plan, NSG, name, {"vcnId": UNKNOWN}, property_dependencies={"vcnId": [urn(plan, "vcn:Vcn")]})
    nsg = f"urn:pulumi:example::backup-mx::{NSG}::{name}"
    for port in ports:
        plan = add_resource(plan, NSG_RULE, f"{name}-{port}", {
            "networkSecurityGroupId": UNKNOWN, "direction": "INGRESS", **WORLD_TCP,
            "tcpOptions": {"destinationPortRange": {"min": port, "max": port}}},
            property_dependencies={"networkSecurityGroupId": [nsg]})
    if attach:
        plan = set_prop(plan, "instance:Instance", ["createVnicDetails", "nsgIds"], [UNKNOWN])
        deps = resource(plan, "instance:Instance")["propertyDependencies"]["createVnicDetails"]
        plan = set_deps(plan, "instance:Instance", "createVnicDetails", deps + [nsg])
    return plan


def narrow_egress(*rules):
    return lambda p: edit_rules(p, "egressSecurityRules", lambda _: list(rules))


DRAIN = {"protocol": "6", "destination": "0.0.0.0/0", "tcpOptions": {"min": 2526, "max": 2526}}
DNS = {"protocol": "17", "destination": "169.254.169.254/32", "udpOptions": {"min": 53, "max": 53}}


def other_region(plan):
    plan = copy.deepcopy(plan)
    p = resource(plan, "providers:oci")
    for w in ("props", "outputs"):
        p[w]["region"] = "us-ashburn-1"
    return plan


def default_provider(plan):
    plan = copy.deepcopy(plan)
    resource(plan, "vcn:Vcn")["provider"] = ""
    return plan


EVASIONS = {
    # routes and gateways
    "an empty route table": lambda p: set_deps(set_prop(p, "routeTable:RouteTable", ["routeRules"], []),
                                               "routeTable:RouteTable", "routeRules", None),
    "the internet gateway disabled": lambda p: set_prop(p, "internetGateway:InternetGateway", ["enabled"], False),
    "the subnet on the VCN's default route table": lambda p: set_deps(
        set_prop(p, "subnet:Subnet", ["routeTableId"], DELETE), "subnet:Subnet", "routeTableId", None),
    "a route table outside the stack": lambda p: set_deps(
        set_prop(p, "subnet:Subnet", ["routeTableId"], "ocid1.routetable.oc1..other"), "subnet:Subnet",
        "routeTableId", None),
    "the drain host's address routed into the VCN": lambda p: set_prop(p, "routeTable:RouteTable", ["routeRules"], [
        {"networkEntityId": UNKNOWN, "destination": "0.0.0.0/0", "destinationType": "CIDR_BLOCK"},
        {"networkEntityId": "ocid1.privateip.oc1..inside", "destination": "198.51.100.7/32",
         "destinationType": "CIDR_BLOCK"}]),
    "the internet gateway with its own route table": lambda p: set_prop(
        p, "internetGateway:InternetGateway", ["routeTableId"], "ocid1.routetable.oc1..transit"),
    # what is attached, not what exists
    "a new empty list attached, the old one left in the stack": lambda p: attach_lists(
        add_list(p, "empty"), "urn:pulumi:example::backup-mx::" + SL + "::empty"),
    "the VCN's default security list attached beside ours": lambda p: attach_lists(
        p, urn(p, "SecurityList"), urn(p, "vcn:Vcn")),
    "a security list outside the stack attached beside ours": lambda p: set_prop(
        p, "subnet:Subnet", ["securityListIds"], [UNKNOWN, "ocid1.securitylist.oc1..other"]),
    "25 and 80 moved to an NSG no VNIC uses": lambda p: add_nsg(
        edit_rules(p, "ingressSecurityRules", without_ports(25, 80)), "mail", (25, 80), attach=False),
    "an NSG outside the stack on the VNIC": lambda p: set_prop(
        p, "instance:Instance", ["createVnicDetails", "nsgIds"], ["ocid1.networksecuritygroup.oc1..other"]),
    "the VNIC in a subnet outside the stack": lambda p: set_deps(
        set_prop(p, "instance:Instance", ["createVnicDetails", "subnetId"], "ocid1.subnet.oc1..other"),
        "instance:Instance", "createVnicDetails", []),
    "the subnet prohibits public IPs": lambda p: set_prop(p, "subnet:Subnet", ["prohibitPublicIpOnVnic"], True),
    "the subnet with its own DHCP options": lambda p: set_prop(
        p, "subnet:Subnet", ["dhcpOptionsId"], "ocid1.dhcpoptions.oc1..custom"),
    # the rules' own columns
    "no egress rules": narrow_egress(),
    "egress without DNS": narrow_egress(DRAIN),
    "egress without the drain port": narrow_egress(DNS, {**DRAIN, "tcpOptions": {"min": 443, "max": 443}}),
    "SMTP only from source port 25": lambda p: edit_rules(p, "ingressSecurityRules", on_port(
        25, tcpOptions={"min": 25, "max": 25, "sourcePortRange": {"min": 25, "max": 25}})),
    "a stateless SMTP rule with narrowed egress": lambda p: narrow_egress(DRAIN, DNS)(
        edit_rules(p, "ingressSecurityRules", on_port(25, stateless=True))),
    "HTTP only from half the world": lambda p: edit_rules(p, "ingressSecurityRules", on_port(80, source="0.0.0.0/1")),
    # where
    "the provider pointed at another region": other_region,
    "an OCI resource on the default provider": default_provider,
}


@pytest.mark.parametrize("case", sorted(EVASIONS))
def test_an_evasion_is_reported_by_reachability_only(policies, example_plan, case):
    assert_reported_only(policies, example_plan, EVASIONS[case], "reachability")


def _world_halves(rules):
    out = []
    for rule in rules:
        if rule.get("source") == "0.0.0.0/0" and rule.get("protocol") == "6":
            out += [{**rule, "source": "0.0.0.0/1"}, {**rule, "source": "128.0.0.0/1"}]
        else:
            out.append(rule)
    return out


EQUIVALENTS = {
    "25 and 80 on an NSG on the VNIC": lambda p: add_nsg(
        edit_rules(p, "ingressSecurityRules", without_ports(25, 80)), "mail", (25, 80), attach=True),
    "the world in two halves": lambda p: edit_rules(p, "ingressSecurityRules", _world_halves),
    "a stateless SMTP rule with egress open": lambda p: edit_rules(p, "ingressSecurityRules",
                                                                   on_port(25, stateless=True)),
    "a source port range of every port": lambda p: edit_rules(p, "ingressSecurityRules", on_port(
        25, tcpOptions={"min": 25, "max": 25, "sourcePortRange": {"min": 1, "max": 65535}})),
    "egress narrowed to the drain and DNS": narrow_egress(DRAIN, DNS),
    "a second list attached, from the stack": lambda p: attach_lists(
        add_list(p, "extra"), urn(p, "SecurityList"), "urn:pulumi:example::backup-mx::" + SL + "::extra"),
    "an extra route to the internet gateway": lambda p: set_prop(p, "routeTable:RouteTable", ["routeRules"], [
        {"networkEntityId": UNKNOWN, "destination": "0.0.0.0/0", "destinationType": "CIDR_BLOCK"},
        {"networkEntityId": UNKNOWN, "destination": "198.51.100.0/24", "destinationType": "CIDR_BLOCK"}]),
}


@pytest.mark.parametrize("case", sorted(EQUIVALENTS))
def test_an_equivalent_network_is_clean(policies, example_plan, case):
    violations = policies.check(EQUIVALENTS[case](example_plan))
    assert reported(violations, "mandatory") == set(), [v.message for v in violations]


@pytest.mark.parametrize("case", ["the internet gateway disabled", "egress without DNS",
                                  "a new empty list attached, the old one left in the stack"])
def test_an_evasion_is_reported_after_up_too(policies, example_plan, case):
    """After `pulumi up` the pack reads state (ids known): the same links, the same verdict."""
    violations = policies.check(EVASIONS[case](example_plan), dry_run=False)
    assert reported(violations, "mandatory") == {"reachability"}, [v.message for v in violations]
