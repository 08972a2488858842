"""The pack's network area (policy/backup_mx_rules/network.py): vm-not-in-mynetworks, reserved-
public-ip, always-free, security-list, no-silent-replace. Each mutation of the example plan,
through the real analyzer, is reported by its policy and by no other. The area's mutations on
other shapes sit with those shapes' proofs (tests/test_two_relays.py, and the WireGuard and MTA-
STS modules)."""
import copy

import pytest

from offline import program
from tests.helpers import (
    DELETE,
    add_resource,
    reported,
    resource,
    run_stack,
    set_config,
    set_prop,
)
from tests.pack_mutations import (
    UNKNOWN,
    add_ingress,
    add_relay_copy,
    assert_reported_only,
    edit_ingress,
    set_dependencies,
    set_option,
)

MUTATIONS = {
    # vm-not-in-mynetworks
    "private IP inside the primary's mynetworks": (
        lambda p: set_config(p, "primaryMynetworks", ["10.42.0.0/24"]), "vm-not-in-mynetworks"),
    "drain source inside the primary's mynetworks": (
        lambda p: set_config(p, "drainSourceAddress", "192.168.1.40"), "vm-not-in-mynetworks"),
    "primary mynetworks entry with a stray space is not dropped": (
        lambda p: set_config(p, "primaryMynetworks", ["127.0.0.0/8", "10.42.0.0 /24"]), "vm-not-in-mynetworks"),
    "an ingress rule whose source is unknown at preview": (
        lambda p: add_ingress(p, {"protocol": "6", "source": UNKNOWN, "tcpOptions": {"min": 25, "max": 25}}),
        "security-list"),
    # reserved-public-ip
    "ephemeral public IP": (lambda p: set_prop(p, "publicIp:PublicIp", ["lifetime"], "EPHEMERAL"),
                            "reserved-public-ip"),
    "reserved IP attached to nothing": (lambda p: set_prop(p, "publicIp:PublicIp", ["privateIpId"], DELETE),
                                        "reserved-public-ip"),
    "reserved IP attached to the private IP of another VNIC": (
        lambda p: set_dependencies(set_prop(p, "publicIp:PublicIp", ["privateIpId"],
                                            "ocid1.privateip.oc1.eu-frankfurt-1.other"), "publicIp:PublicIp", []),
        "reserved-public-ip"),
    "reserved IP not protected": (lambda p: set_option(p, "publicIp:PublicIp", "protect", False),
                                  "reserved-public-ip"),
    "instance assigns a public IP": (
        lambda p: set_prop(p, "instance:Instance", ["createVnicDetails", "assignPublicIp"], "true"),
        "reserved-public-ip"),
    "assignPublicIp left to the subnet default": (
        lambda p: set_prop(p, "instance:Instance", ["createVnicDetails", "assignPublicIp"], DELETE),
        "reserved-public-ip"),
    # always-free
    "paid shape": (lambda p: set_prop(p, "instance:Instance", ["shape"], "VM.Standard.E4.Flex"), "always-free"),
    "boot volume over the free 200 GB": (
        lambda p: set_prop(p, "instance:Instance", ["sourceDetails", "bootVolumeSizeInGbs"], "250"), "always-free"),
    "boot volume below OCI's minimum": (
        lambda p: set_prop(p, "instance:Instance", ["sourceDetails", "bootVolumeSizeInGbs"], "30"), "always-free"),
    "a block volume past the 200 GB total": (
        lambda p: add_resource(p, "oci:Core/volume:Volume", "data", {"sizeInGbs": "160"}), "always-free"),
    "a block volume of OCI's default size": (
        lambda p: add_resource(p, "oci:Core/volume:Volume", "data", {}), "always-free"),
    "three E2.1.Micro instances": (
        lambda p: add_relay_copy(add_relay_copy(p, "-b"), "-c"), "always-free"),
    "A1 totals past 4 OCPUs": (lambda p: add_relay_copy(add_relay_copy(
        p, "-a1", shape="VM.Standard.A1.Flex", shapeConfig={"ocpus": "3", "memoryInGbs": "6"}), "-a2",
        shape="VM.Standard.A1.Flex", shapeConfig={"ocpus": "3", "memoryInGbs": "6"}), "always-free"),
    # security-list
    "world-open SSH": (lambda p: add_ingress(p, {"protocol": "6", "source": "0.0.0.0/0", "sourceType": "CIDR_BLOCK",
                                                  "tcpOptions": {"min": 22, "max": 22}}), "security-list"),
    "SSH from the homelab without breakGlassSsh": (lambda p: add_ingress(p, {
        "protocol": "6", "source": "198.51.100.7/32", "sourceType": "CIDR_BLOCK", "tcpOptions": {"min": 22, "max": 22}}),
        "security-list"),
    # A config value the env file also carries: the rendered env no longer matches it either.
    "breakGlassSsh that is not a boolean": (lambda p: set_config(p, "breakGlassSsh", "yes"),
                                            {"security-list", "relay-user-data"}),
    "exporter open to the world": (lambda p: edit_ingress(p, 9100, source="0.0.0.0/0"), "security-list"),
    "all protocols from the world": (lambda p: add_ingress(p, {"protocol": "all", "source": "0.0.0.0/0"}),
                                     "security-list"),
    "port 25 closed": (lambda p: edit_ingress(p, 25, source="198.51.100.7/32"), "reachability"),
    "SSH open through a network security group": (
        lambda p: add_resource(p, "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule", "ssh",
                               {"direction": "INGRESS", "protocol": "6", "source": "0.0.0.0/0",
                                "sourceType": "CIDR_BLOCK", "networkSecurityGroupId": "ocid1.nsg.oc1..x",
                                "tcpOptions": {"destinationPortRange": {"min": 22, "max": 22}}}), "security-list"),
    "exporter open through a network security group": (
        lambda p: add_resource(p, "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule", "exp",
                               {"direction": "INGRESS", "protocol": "6", "source": "0.0.0.0/0",
                                "networkSecurityGroupId": "ocid1.nsg.oc1..x",
                                "tcpOptions": {"destinationPortRange": {"min": 9000, "max": 9200}}}), "security-list"),
    "the VCN's default security list opens SSH": (
        lambda p: add_resource(p, "oci:Core/defaultSecurityList:DefaultSecurityList", "default", {
            "manageDefaultResourceId": "ocid1.securitylist.oc1..x", "ingressSecurityRules": [
                {"protocol": "6", "source": "0.0.0.0/0", "tcpOptions": {"min": 22, "max": 22}}]}), "security-list"),
    "subnet falls back to the default security list": (
        lambda p: set_prop(p, "subnet:Subnet", ["securityListIds"], DELETE), "reachability"),
    "exporters open to a homelab CIDR the stack does not have": (
        lambda p: set_config(p, "homelabCidr", "192.0.2.0/24"), {"security-list", "relay-user-data"}),
    "homelab CIDR with a stray space": (lambda p: set_config(p, "homelabCidr", "198.51.100.7 /32"),
                                        {"security-list", "relay-user-data"}),
    # the firewall is an allow-list: every port but the relay's is open nowhere
    "a database port open to the world": (lambda p: add_ingress(p, {
        "protocol": "6", "source": "0.0.0.0/0", "tcpOptions": {"min": 3306, "max": 3306}}), "security-list"),
    "a TCP range from the homelab": (lambda p: add_ingress(p, {
        "protocol": "6", "source": "198.51.100.7/32", "tcpOptions": {"min": 1024, "max": 65535}}), "security-list"),
    "UDP from the world": (lambda p: add_ingress(p, {
        "protocol": "17", "source": "0.0.0.0/0", "udpOptions": {"min": 51820, "max": 51820}}), "security-list"),
    "an unserved port through a network security group": (
        lambda p: add_resource(p, "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule", "rdp",
                               {"direction": "INGRESS", "protocol": "6", "source": "0.0.0.0/0",
                                "networkSecurityGroupId": "ocid1.nsg.oc1..x",
                                "tcpOptions": {"destinationPortRange": {"min": 3389, "max": 3389}}}), "security-list"),
    "ICMP echo from the world": (lambda p: add_ingress(p, {
        "protocol": "1", "source": "0.0.0.0/0", "icmpOptions": {"type": 8}}), "security-list"),
    # no-silent-replace
    "no ignoreChanges": (lambda p: set_option(p, "instance:Instance", "ignoreChanges", []), "no-silent-replace"),
    "image drift replaces the boot volume": (
        lambda p: set_option(p, "instance:Instance", "ignoreChanges", ["metadata"]), "no-silent-replace"),
    "user_data drift": (lambda p: set_option(p, "instance:Instance", "ignoreChanges", ["sourceDetails"]),
                        "no-silent-replace"),
    "unprotected: an AD or VCN change replaces the VM": (
        lambda p: set_option(p, "instance:Instance", "protect", False), "no-silent-replace"),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_mutation_is_reported_by_its_policy_only(policies, example_plan, case):
    assert_reported_only(policies, example_plan, *MUTATIONS[case])


def _split_world(port, halves):
    """The port's world rule narrowed to the first half, and a rule per further half added."""
    def mutate(plan):
        plan = edit_ingress(plan, port, source=halves[0])
        rule = next(r for r in resource(plan, "SecurityList")["props"]["ingressSecurityRules"]
                    if r.get("tcpOptions", {}).get("min") == port)
        for half in halves[1:]:
            plan = add_ingress(plan, {**copy.deepcopy(rule), "source": half})
        return plan
    return mutate


def test_two_halves_of_the_world_are_the_world(policies, example_plan):
    plan = _split_world(25, ["0.0.0.0/1", "128.0.0.0/1"])(_split_world(80, ["0.0.0.0/1", "128.0.0.0/1"])(example_plan))
    violations = policies.check(plan)
    assert reported(violations, "mandatory") == set(), [v.message for v in violations]


def test_half_of_the_world_is_not_the_world(policies, example_plan):
    assert_reported_only(policies, example_plan, _split_world(25, ["0.0.0.0/1"]), "reachability")


# Cost beyond the instance (always-free): a volume's inputs are on an allow-list, with its limits.
def _volume(kind, **props):
    return lambda p: add_resource(p, f"oci:Core/{kind[0].lower() + kind[1:]}:{kind}", "data",
                                  {"sizeInGbs": "50", **props})


COST_MUTATIONS = {
    "a block volume at Higher Performance": _volume("Volume", vpusPerGb="20"),
    "a boot volume at Ultra High Performance": _volume("BootVolume", vpusPerGb="120"),
    "auto-tune raising the tier": _volume("Volume", isAutoTuneEnabled=True),
    "a cross-region replica": _volume("Volume", blockVolumeReplicas=[{"availabilityDomain": "x:EU-PARIS-1-AD-1"}]),
    "a boot volume replica": _volume("BootVolume", bootVolumeReplicas=[{"availabilityDomain": "x:AD-1"}]),
    "a backup policy on a volume": _volume("Volume", backupPolicyId="ocid1.volumebackuppolicy.oc1..gold"),
    "the relay's boot volume at Higher Performance": lambda p: set_prop(
        p, "instance:Instance", ["sourceDetails", "bootVolumeVpusPerGb"], "20"),
}


@pytest.mark.parametrize("case", sorted(COST_MUTATIONS))
def test_a_billed_volume_option_is_reported(policies, example_plan, case):
    assert_reported_only(policies, example_plan, COST_MUTATIONS[case], "always-free")


@pytest.mark.parametrize("mutate", [_volume("Volume", vpusPerGb="10"), _volume("Volume", vpusPerGb="0"),
                                    _volume("Volume", displayName="data", isAutoTuneEnabled=False)],
                         ids=["Balanced", "Lower Cost", "auto-tune off"])
def test_a_free_volume_passes(policies, example_plan, mutate):
    violations = policies.check(mutate(example_plan))
    assert reported(violations, "mandatory") == set(), [v.message for v in violations]


def test_a_bare_homelab_address_is_its_32_for_the_pack_too(policies):
    """The settings render homelabCidr 198.51.100.23 as 198.51.100.23/32 in the env file; the pack
    reads the stack config the same way (it once reported the rendered file as edited)."""
    plan = program.plan(run_stack(overrides={"homelabCidr": "198.51.100.23"}), redacted=False)
    violations = policies.check(plan)
    assert reported(violations, "mandatory") == set(), [v.message for v in violations]
