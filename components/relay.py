"""The relay VM: Always-Free instance from the rendered cloud-init, with a reserved public IP."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_oci as oci

# The VM holds the queue, so nothing may replace it by surprise. protect=True makes `pulumi
# preview` refuse any change that forces a replacement (availabilityDomainIndex, vcnCidr, ...).
# user_data and the image are ignored outright: a new image would replace the boot volume in
# place (pulumi-oci updates source_details that way), and user_data only runs at first boot.
# Rebuild deliberately once the queue is empty (docs/deploy.md, Rebuild).
IGNORED_ON_UPDATE = ["metadata", "sourceDetails"]


@dataclass(frozen=True)
class RelayVmArgs:
    compartment_id: str
    subnet_id: pulumi.Input[str]
    shape: str
    hostname: str  # FQDN; its first label is the VNIC hostname
    private_ip: str
    boot_volume_size_gb: int
    availability_domain_index: int
    fault_domain: str | None  # None: OCI picks one
    user_data: pulumi.Input[str]  # base64 cloud-config, a secret (it carries the preauth key)


class RelayVm(pulumi.ComponentResource):
    """The instance and its reserved IP. The OCI provider comes from the parent's or the
    caller's `providers`; every child and invoke is parented here and inherits it."""
    instance_id: pulumi.Output[str]
    availability_domain: pulumi.Output[str]
    reserved_ip: pulumi.Output[str]

    def __init__(self, name: str, args: RelayVmArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("backupmx:index:RelayVm", name, {"shape": args.shape}, opts)
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOptions(parent=self)
        compartment = args.compartment_id
        ads = oci.identity.get_availability_domains_output(compartment_id=compartment, opts=invoke)
        availability_domain = ads.availability_domains.apply(
            lambda found: _pick_ad(found, args.availability_domain_index))
        images = oci.core.get_images_output(
            compartment_id=compartment, operating_system="Canonical Ubuntu",
            operating_system_version="24.04", shape=args.shape, sort_by="TIMECREATED", sort_order="DESC",
            opts=invoke)
        image_id = images.images.apply(_newest_image)

        instance = oci.core.Instance(
            f"{name}-instance", compartment_id=compartment, availability_domain=availability_domain,
            shape=args.shape, display_name=args.hostname, preserve_boot_volume=True, fault_domain=args.fault_domain,
            create_vnic_details=oci.core.InstanceCreateVnicDetailsArgs(
                subnet_id=args.subnet_id, assign_public_ip="false", private_ip=args.private_ip,
                hostname_label=args.hostname.split(".")[0]),
            source_details=oci.core.InstanceSourceDetailsArgs(
                source_type="image", source_id=image_id, boot_volume_size_in_gbs=str(args.boot_volume_size_gb)),
            metadata={"user_data": pulumi.Output.secret(args.user_data)},
            # user_data (with the preauth key) stays readable from the VM through the metadata
            # service; the v1 endpoints answer any process without the v2 header. cloud-init's
            # Oracle datasource uses v2.
            instance_options=oci.core.InstanceInstanceOptionsArgs(are_legacy_imds_endpoints_disabled=True),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                protect=True, ignore_changes=IGNORED_ON_UPDATE, additional_secret_outputs=["metadata"])))

        vnics = oci.core.get_vnic_attachments_output(
            compartment_id=compartment, instance_id=instance.id, opts=invoke)
        private_ips = oci.core.get_private_ips_output(
            vnic_id=vnics.vnic_attachments.apply(lambda a: a[0].vnic_id), opts=invoke)
        primary_private_ip_id = private_ips.private_ips.apply(lambda ips: next(ip.id for ip in ips if ip.is_primary))
        # The reserved IP is the relay's identity: the A record and the primary's /32
        # exemptions are keyed to it, so it outlives any rebuild of the instance.
        public_ip = oci.core.PublicIp(
            f"{name}-reserved-ip", compartment_id=compartment, lifetime="RESERVED",
            private_ip_id=primary_private_ip_id, display_name=f"{args.hostname} reserved",
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(protect=True)))

        self.instance_id = instance.id
        self.availability_domain = availability_domain
        self.reserved_ip = public_ip.ip_address
        self.register_outputs({"instanceId": instance.id, "reservedIp": public_ip.ip_address,
                               "availabilityDomain": availability_domain})


def _pick_ad(found: list, index: int) -> str:
    names = sorted(ad.name for ad in found)
    if index >= len(names):
        raise ValueError(f"backup-mx:availabilityDomainIndex: {index} is out of range; "
                         f"this region has {len(names)} availability domain(s): {names}")
    return names[index]


def _newest_image(images: list) -> str:
    if not images:
        raise ValueError("no Canonical Ubuntu 24.04 image is published for this shape in this region")
    return images[0].id
