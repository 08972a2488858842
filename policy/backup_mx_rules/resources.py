"""modeled-resources and relay-instance-inputs: the stack holds only what the pack models.

Every resource type in the stack is one some policy judges (or a component or provider of
this program); any other type fails closed with the type named, since the pack cannot say
what it costs or what it does to the relay (an InstancePool is billed and is not counted as
an instance; a VolumeBackupPolicy can exceed the free backups; pulumi-cloudflare's older
`Record` type and a Workers route escape the DNS and MTA-STS policies).

Each relay instance sets only the inputs the pack models, and none that stops it, bills it or
discards its boot volume: no `state` other than RUNNING, an availabilityConfig that restores
the instance after maintenance, and preserveBootVolume true (the queue lives on it).
"""
from __future__ import annotations

from .view import (
    BOOT_VOLUME,
    DEFAULT_SECURITY_LIST,
    DNS_COMPONENT,
    DNS_RECORD,
    INSTANCE,
    NSG_RULE,
    PUBLIC_IP,
    SECURITY_LIST,
    SUBNET,
    VOLUME,
    WORKER_DOMAIN,
    WORKER_SCRIPT,
    as_bool,
    dig,
    known,
    plain,
    resource_policy,
    stack_policy,
)

# The types some policy judges, and the plumbing around them that holds no mail, opens no
# port and costs nothing on Always-Free (VCN, gateway, route table, NSG container).
MODELED_TYPES = {
    INSTANCE, PUBLIC_IP, SECURITY_LIST, DEFAULT_SECURITY_LIST, NSG_RULE, SUBNET, VOLUME, BOOT_VOLUME,
    DNS_RECORD, WORKER_SCRIPT, WORKER_DOMAIN, DNS_COMPONENT,
    "oci:Core/vcn:Vcn", "oci:Core/internetGateway:InternetGateway", "oci:Core/routeTable:RouteTable",
    "oci:Core/networkSecurityGroup:NetworkSecurityGroup",
    "backupmx:index:BackupMx", "backupmx:index:Network", "backupmx:index:RelayVm",
    "pulumi:providers:oci", "pulumi:providers:cloudflare", "pulumi:pulumi:Stack",
}
# Instance inputs the pack models; anything else (preemptibleInstanceConfig, a dedicated VM
# host, extendedMetadata, launch volume attachments, ...) fails closed.
INSTANCE_INPUTS = {
    "availabilityDomain", "compartmentId", "createVnicDetails", "displayName", "faultDomain", "instanceOptions",
    "metadata", "preserveBootVolume", "shape", "shapeConfig", "sourceDetails", "state", "availabilityConfig",
    "freeformTags", "definedTags",
}
METADATA_KEYS = {"user_data"}  # OCI's ssh_authorized_keys would bypass the cloud-config's keys
RUNNING = "RUNNING"
RESTORE = "RESTORE_INSTANCE"  # OCI's default recovery action after infrastructure maintenance


def _modeled_resources(args, report_violation):
    for r in args.resources:
        if r.resource_type not in MODELED_TYPES:
            report_violation(f"resource '{r.name}' has type {r.resource_type}, which the pack does not model (its cost "
                             "and its effect on the relay are unknown); it fails closed. Remove it, or model it in "
                             "the pack first", r.urn)


def instance_problems(props: dict) -> list[str]:
    problems = [f"sets input {key!r}, which the pack does not model (it could stop, bill or replace the relay)"
                for key in sorted(set(props) - INSTANCE_INPUTS)]
    state = props.get("state")
    if state is not None and known(state) and str(state).upper() != RUNNING:
        problems.append(f"state is {state!r}: the relay would not run and takes no mail; leave state unset "
                        f"(or {RUNNING})")
    action = dig(props, "availabilityConfig", "recoveryAction")
    if action is not None and known(action) and str(action).upper() != RESTORE:
        problems.append(f"availabilityConfig.recoveryAction is {action!r}: after infrastructure maintenance OCI "
                        f"would leave the relay stopped; use {RESTORE} (the default)")
    if as_bool(props.get("preserveBootVolume")) is not True:
        problems.append(f"preserveBootVolume is {props.get('preserveBootVolume')!r}: terminating the instance "
                        "would delete the boot volume and the queued mail on it; set it to true")
    metadata = props.get("metadata")
    if isinstance(metadata, dict):
        extra = sorted(set(metadata) - METADATA_KEYS)
        if extra:
            problems.append(f"metadata sets {extra}; only user_data is modeled (OCI's ssh_authorized_keys would add "
                            "logins the cloud-config does not list)")
    return problems


def _relay_instance_inputs(args, report_violation):
    if args.resource_type != INSTANCE:
        return
    for problem in instance_problems(plain(args.props)):
        report_violation(f"instance '{args.name}': {problem}")


modeled_resources = stack_policy(
    "modeled-resources",
    "Every resource in the stack has a type the pack models (the program's OCI and Cloudflare types, its components "
    "and providers); anything else fails closed with its type named.",
    _modeled_resources)

relay_instance_inputs = resource_policy(
    "relay-instance-inputs",
    "Each relay instance sets only modeled inputs: state unset or RUNNING, availabilityConfig.recoveryAction "
    "RESTORE_INSTANCE, preserveBootVolume true, metadata user_data only.",
    _relay_instance_inputs)
