"""BackupMx: the whole backup MX (network, relay VM, DNS) as one component."""
from __future__ import annotations

import pulumi
import pulumi_oci as oci

from . import monitoring, primary
from .dns import Dns
from .network import Network
from .relay import RelayVm
from .settings import Settings


class BackupMx(pulumi.ComponentResource):
    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None):
        # The resolved settings are the component's props: policies read the declared intent here.
        super().__init__("backupmx:index:BackupMx", name, settings.public_props(), opts)
        s = settings
        provider = oci.Provider(f"{name}-oci", region=s.oci_region, opts=pulumi.ResourceOptions(parent=self))
        network = Network(f"{name}-network", s, opts=pulumi.ResourceOptions(parent=self, providers=[provider]))
        relay = RelayVm(f"{name}-relay", s, network.subnet_id, provider, opts=pulumi.ResourceOptions(parent=self))
        dns = Dns(f"{name}-dns", s, relay.reserved_ip, opts=pulumi.ResourceOptions(parent=self))

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
                "node": f"{ip}:9100", "postfix": f"{ip}:9154", "smtp": f"{ip}:25"}),
            "consoleConnectionCommand": relay.instance_id.apply(lambda i: (
                f"oci compute instance-console-connection create --instance-id {i} "
                f"--ssh-public-key-file ~/.ssh/id_ed25519.pub --region {s.oci_region}")),
            "userDataSha256": relay.user_data_sha256,
            # Ready-to-paste exemptions for the primary, keyed to the address it sees (never mynetworks).
            "primaryEnablement": drain_source.apply(lambda ip: primary.enablement(s, ip)),
            "monitoring": relay.reserved_ip.apply(lambda ip: monitoring.files(s, ip)),
        }
        self.register_outputs({**settings.public_props(), **self.outputs})
