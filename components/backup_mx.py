"""BackupMx: the whole backup MX (network, relay VM, DNS) as one component.

The settings are read once (components/settings.py); this is the one place that turns them
into each child's typed args and calls the pure renderers. The OCI provider is passed one
way, as `providers` on the children that use it.
"""
from __future__ import annotations

import pulumi
import pulumi_oci as oci

from . import cloudinit, monitoring, primary, wireguard
from .dns import Dns, DnsArgs, live_zones
from .facts import NODE_EXPORTER_PORT, POSTFIX_EXPORTER_PORT, SMTP_PORT
from .network import Network, NetworkArgs
from .relay import RelayVm, RelayVmArgs
from .settings import Settings


class BackupMx(pulumi.ComponentResource):
    outputs: dict[str, object]

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None):
        # The resolved settings are the component's props: policies read the declared intent here.
        super().__init__("backupmx:index:BackupMx", name, settings.public_props(), opts)
        s = settings
        provider = oci.Provider(f"{name}-oci", region=s.oci_region, opts=pulumi.ResourceOptions(parent=self))
        with_oci = pulumi.ResourceOptions(parent=self, providers={"oci": provider})

        network = Network(f"{name}-network", NetworkArgs(
            compartment_id=s.oci_compartment_id, vcn_cidr=s.vcn_cidr, vcn_dns_label=s.vcn_dns_label,
            homelab_cidr=s.homelab_cidr, break_glass_ssh=s.break_glass_ssh), opts=with_oci)

        # Both secrets reach only the renderer; what comes back (user_data) is secret too.
        keys = pulumi.Output.all(pulumi.Output.secret(s.headscale_preauth_key),
                                 pulumi.Output.secret(s.wireguard_private_key or ""))
        relay = RelayVm(f"{name}-relay", RelayVmArgs(
            compartment_id=s.oci_compartment_id, subnet_id=network.subnet_id, shape=s.shape,
            hostname=s.relay_hostname, private_ip=s.relay_private_ip, boot_volume_size_gb=s.boot_volume_size_gb,
            availability_domain_index=s.availability_domain_index,
            user_data=keys.apply(lambda k: cloudinit.user_data_b64(s, k[0], k[1]))), opts=with_oci)
        # The relay's public key is not secret: the firewall's peer entry needs it.
        public_key = pulumi.Output.unsecret(keys.apply(lambda k: wireguard.public_key(k[1]) if k[1] else ""))

        dns = Dns(f"{name}-dns", DnsArgs(
            zones=live_zones([(z.domain, z.zone_id) for z in s.zones], pulumi.InvokeOptions(parent=self)),
            relay_hostname=s.relay_hostname, relay_zone_id=s.relay_zone.zone_id, reserved_ip=relay.reserved_ip,
            mx_preference=s.mx_preference, primary_mx_host=s.primary_mx_host,
            primary_mx_preference=s.primary_mx_preference), opts=pulumi.ResourceOptions(parent=self))

        drain_source = pulumi.Output.from_input(s.drain_source_address or relay.reserved_ip)
        self.outputs = {
            "relayHostname": s.relay_hostname,
            "reservedIp": relay.reserved_ip,
            "relayPrivateIp": s.relay_private_ip,
            "instanceId": relay.instance_id,
            "region": s.oci_region,
            "availabilityDomain": relay.availability_domain,
            "drainTarget": {"host": s.drain_host, "port": s.drain_port, "postfix": f"smtp:{s.drain_target}"},
            "drainSourceAddress": drain_source,
            "domains": list(s.domains),
            "mxRecords": dns.mx_records,
            "zoneRecordCounts": dns.zone_record_counts,
            "scrapeTargets": relay.reserved_ip.apply(lambda ip: {
                "node": f"{ip}:{NODE_EXPORTER_PORT}", "postfix": f"{ip}:{POSTFIX_EXPORTER_PORT}",
                "smtp": f"{ip}:{SMTP_PORT}"}),
            "consoleConnectionCommand": relay.instance_id.apply(lambda i: (
                f"oci compute instance-console-connection create --instance-id {i} "
                f"--ssh-public-key-file ~/.ssh/id_ed25519.pub --region {s.oci_region}")),
            # Digest of the user-data: shows drift between the stack and the running VM, which
            # ignores user_data changes until an explicit rebuild.
            "userDataSha256": keys.apply(lambda k: cloudinit.sha256(s, k[0], k[1])),
            # Ready-to-paste exemptions for the primary, keyed to the address it sees (never mynetworks).
            "primaryEnablement": pulumi.Output.all(drain_source, public_key).apply(
                lambda a: primary.enablement(s, a[0], a[1])),
            "monitoring": relay.reserved_ip.apply(lambda ip: monitoring.files(s, ip)),
        }
        if s.wireguard:
            self.outputs["wireguardPeer"] = public_key.apply(lambda k: primary.firewall_peer(s, k))
        self.register_outputs({**settings.public_props(), **self.outputs})
