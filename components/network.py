"""The relay's OCI network: VCN, internet gateway, default route, security list, subnet."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_oci as oci

from .facts import EXPORTER_PORTS, PUBLIC_TCP_PORTS, SSH_PORT

WORLD = "0.0.0.0/0"


@dataclass(frozen=True)
class NetworkArgs:
    compartment_id: str
    vcn_cidr: str  # the subnet is the whole block
    vcn_dns_label: str
    homelab_cidr: str  # the only source of the exporter ports
    break_glass_ssh: bool = False  # SSH from homelab_cidr too


def _tcp_in(source: str, port: int, what: str) -> oci.core.SecurityListIngressSecurityRuleArgs:
    return oci.core.SecurityListIngressSecurityRuleArgs(
        protocol="6", source=source, source_type="CIDR_BLOCK", description=what,
        tcp_options=oci.core.SecurityListIngressSecurityRuleTcpOptionsArgs(min=port, max=port))


class Network(pulumi.ComponentResource):
    subnet_id: pulumi.Output[str]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("backupmx:index:Network", name, {"vcnCidr": args.vcn_cidr}, opts)
        child = pulumi.ResourceOptions(parent=self)
        compartment = args.compartment_id
        vcn = oci.core.Vcn(f"{name}-vcn", compartment_id=compartment, cidr_blocks=[args.vcn_cidr],
                           display_name=f"{name}-vcn", dns_label=args.vcn_dns_label, opts=child)
        igw = oci.core.InternetGateway(f"{name}-igw", compartment_id=compartment, vcn_id=vcn.id,
                                       enabled=True, display_name=f"{name}-igw", opts=child)
        routes = oci.core.RouteTable(
            f"{name}-routes", compartment_id=compartment, vcn_id=vcn.id, display_name=f"{name}-routes",
            route_rules=[oci.core.RouteTableRouteRuleArgs(
                network_entity_id=igw.id, destination=WORLD, destination_type="CIDR_BLOCK")],
            opts=child)
        ingress = [_tcp_in(WORLD, p, f"tcp/{p} from anywhere") for p in PUBLIC_TCP_PORTS]
        ingress += [_tcp_in(args.homelab_cidr, p, f"exporter tcp/{p} from the homelab") for p in EXPORTER_PORTS]
        if args.break_glass_ssh:
            ingress.append(_tcp_in(args.homelab_cidr, SSH_PORT, f"break-glass ssh tcp/{SSH_PORT} from the homelab"))
        ingress.append(oci.core.SecurityListIngressSecurityRuleArgs(
            protocol="1", source=WORLD, source_type="CIDR_BLOCK", description="path MTU discovery",
            icmp_options=oci.core.SecurityListIngressSecurityRuleIcmpOptionsArgs(type=3, code=4)))
        security = oci.core.SecurityList(
            f"{name}-security", compartment_id=compartment, vcn_id=vcn.id,
            display_name=f"{name}-security", ingress_security_rules=ingress,
            egress_security_rules=[oci.core.SecurityListEgressSecurityRuleArgs(
                protocol="all", destination=WORLD, destination_type="CIDR_BLOCK")],
            opts=child)
        subnet = oci.core.Subnet(
            f"{name}-subnet", compartment_id=compartment, vcn_id=vcn.id, cidr_block=args.vcn_cidr,
            route_table_id=routes.id, security_list_ids=[security.id], prohibit_public_ip_on_vnic=False,
            display_name=f"{name}-subnet", dns_label="relay", opts=child)
        self.subnet_id = subnet.id
        self.register_outputs({"subnetId": subnet.id, "vcnId": vcn.id})
