"""BackupMx: the whole backup MX (network, relay VM, DNS) as one component.

The settings are read once (components/settings/); this is the one place that turns them
into each child's typed args and calls the pure renderers. The OCI provider is passed one
way, as `providers` on the children that use it.
"""
from __future__ import annotations

import pulumi
import pulumi_oci as oci

from . import cloudinit, monitoring, mtasts, primary, wireguard
from .dns import Dns, DnsArgs, MtaStsArgs, RelayRecordArgs, live_zones
from .facts import NODE_EXPORTER_PORT, POSTFIX_EXPORTER_PORT, SMTP_PORT
from .network import Network, NetworkArgs
from .relay import RelayVm, RelayVmArgs
from .settings import RelaySpec, Settings


def _renderer(s: Settings, relay: RelaySpec):
    """One relay's user-data from the two secrets (bound here, not in a loop's late-binding lambda)."""
    return lambda k: cloudinit.user_data_b64(s, relay, k[0], k[1])


def _mta_sts_args(name: str, s: Settings) -> MtaStsArgs | None:
    if s.mta_sts is None:
        return None
    text = mtasts.policy_text(s)
    return MtaStsArgs(
        account_id=s.mta_sts.account_id, worker_name=f"{name}-mta-sts", worker_script=mtasts.worker_script(s),
        main_module=mtasts.WORKER_MAIN, compatibility_date=mtasts.WORKER_COMPATIBILITY_DATE,
        policy_hosts={d: mtasts.policy_host(d) for d in s.domains},
        sts_records={d: mtasts.sts_record(text) for d in s.domains}, tls_rpt_record=mtasts.tls_rpt_record(s))


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
        relays = []
        for number, spec in enumerate(s.relays, start=1):  # each VM rendered with its own name and address
            vm = RelayVm(f"{name}-relay" + ("" if number == 1 else f"-{number}"), RelayVmArgs(
                compartment_id=s.oci_compartment_id, subnet_id=network.subnet_id, shape=s.shape,
                hostname=spec.hostname, private_ip=spec.private_ip, boot_volume_size_gb=s.boot_volume_size_gb,
                availability_domain_index=s.availability_domain_index, fault_domain=spec.fault_domain,
                user_data=keys.apply(_renderer(s, spec))), opts=with_oci)
            relays.append((spec, vm))
        # The relay's public key is not secret: the firewall's peer entry needs it.
        public_key = pulumi.Output.unsecret(keys.apply(lambda k: wireguard.public_key(k[1]) if k[1] else ""))

        dns = Dns(f"{name}-dns", DnsArgs(
            zones=live_zones([(z.domain, z.zone_id) for z in s.zones], pulumi.InvokeOptions(parent=self)),
            relays=[RelayRecordArgs(hostname=spec.hostname, zone_id=spec.zone.zone_id, reserved_ip=vm.reserved_ip,
                                    mx_preference=spec.mx_preference) for spec, vm in relays],
            primary_mx_host=s.primary_mx_host, primary_mx_preference=s.primary_mx_preference,
            mta_sts=_mta_sts_args(name, s)), opts=pulumi.ResourceOptions(parent=self))

        # The address the primary sees from each relay: its drain identity there.
        sources = [pulumi.Output.from_input(s.drain_source_address or vm.reserved_ip) for _, vm in relays]
        described = [self._relay_outputs(spec, s, vm, source)
                     for (spec, vm), source in zip(relays, sources, strict=True)]
        first = described[0]
        self.outputs = {
            # The first relay's facts at the top level (the runbook reads them there); every relay under "relays".
            **{key: first[key] for key in ("relayHostname", "reservedIp", "relayPrivateIp", "instanceId")},
            "region": s.oci_region,
            "availabilityDomain": first["availabilityDomain"],
            "drainTarget": {"host": s.drain_host, "port": s.drain_port, "postfix": f"smtp:{s.drain_target}"},
            "drainSourceAddress": first["drainSourceAddress"],
            "domains": list(s.domains),
            "mxRecords": dns.mx_records,
            "zoneRecordCounts": dns.zone_record_counts,
            **{key: first[key] for key in ("scrapeTargets", "consoleConnectionCommand")},
            # Digest of the user-data: shows drift between the stack and the running VM, which
            # ignores user_data changes until an explicit rebuild. Secret, as it derives from the keys.
            "userDataSha256": keys.apply(lambda k: cloudinit.sha256(s, s.relays[0], k[0], k[1])),
            "relays": described,
            # Ready-to-paste exemptions for the primary, keyed to the addresses it sees (never mynetworks).
            "primaryEnablement": pulumi.Output.all(public_key, *sources).apply(
                lambda a: primary.enablement(s, [(spec.hostname, ip) for (spec, _), ip in zip(relays, a[1:], strict=True)],
                                             a[0])),
            "monitoring": pulumi.Output.all(*[vm.reserved_ip for _, vm in relays]).apply(
                lambda ips: monitoring.files(s, list(zip(s.relays, ips, strict=True)))),
        }
        if len(relays) > 1:
            self.outputs["relayUserDataSha256"] = keys.apply(
                lambda k: {spec.hostname: cloudinit.sha256(s, spec, k[0], k[1]) for spec, _ in relays})
        if s.mta_sts:
            text = mtasts.policy_text(s)
            self.outputs["mtaSts"] = {
                "mode": s.mta_sts.mode, "policy": text, "id": mtasts.policy_id(text), "mx": mtasts.mx_hosts(s),
                "urls": [f"https://{mtasts.policy_host(d)}{mtasts.POLICY_PATH}" for d in s.domains],
                "records": {d: {f"_mta-sts.{d}": mtasts.sts_record(text), f"_smtp._tls.{d}": mtasts.tls_rpt_record(s)}
                            for d in s.domains}}
        if s.wireguard:
            self.outputs["wireguardPeer"] = public_key.apply(lambda k: primary.firewall_peer(s, k))
        self.register_outputs({**settings.public_props(), **self.outputs})

    @staticmethod
    def _relay_outputs(spec: RelaySpec, s: Settings, vm: RelayVm, source: pulumi.Output[str]) -> dict:
        return {
            "relayHostname": spec.hostname,
            "reservedIp": vm.reserved_ip,
            "relayPrivateIp": spec.private_ip,
            "instanceId": vm.instance_id,
            "availabilityDomain": vm.availability_domain,
            "faultDomain": spec.fault_domain or "",
            "mxPreference": spec.mx_preference,
            "drainSourceAddress": source,
            "scrapeTargets": vm.reserved_ip.apply(lambda ip: {
                "node": f"{ip}:{NODE_EXPORTER_PORT}", "postfix": f"{ip}:{POSTFIX_EXPORTER_PORT}",
                "smtp": f"{ip}:{SMTP_PORT}"}),
            "consoleConnectionCommand": vm.instance_id.apply(lambda i: (
                f"oci compute instance-console-connection create --instance-id {i} "
                f"--ssh-public-key-file ~/.ssh/id_ed25519.pub --region {s.oci_region}")),
        }
