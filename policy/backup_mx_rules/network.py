"""Policies on the relay's addresses, firewall, shape and lifecycle (OCI resources)."""
from __future__ import annotations

import ipaddress
from typing import Any

from pulumi_policy import PolicyConfigSchema
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from . import environment
from .environment import FactError
from .view import (
    BOOT_VOLUME,
    DEFAULT_SECURITY_LIST,
    INSTANCE,
    NSG_RULE,
    PUBLIC_IP,
    SECURITY_LIST,
    VOLUME,
    Network,
    as_bool,
    as_int,
    config,
    dig,
    inside,
    known,
    plain,
    resource_policy,
    stack_policy,
)

ALWAYS_FREE = ("VM.Standard.E2.1.Micro", "VM.Standard.A1.Flex")
MAX_MICRO, A1_MAX_OCPUS, A1_MAX_GB = 2, 4, 24
FREE_STORAGE_GB, MIN_BOOT_GB, OCI_DEFAULT_VOLUME_GB = 200, 50, 1024
# The pack's own copy of the relay's ports, independent of the program's components/facts.py
# by design: the pack judges what the program emits, so it must not share its numbers.
SMTP, HTTP, SSH = 25, 80, 22
# Sources that can only be inside a VCN (RFC 1918). Not ipaddress's is_private, which also
# counts documentation and other special-purpose ranges that are routable sources here.
VCN_PRIVATE: list[Network] = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
EXPORTER_PORTS = (9100, 9154)  # node_exporter, postfix_exporter: the homelab only
# Instance inputs that force a replacement (and so destroy the queue), as pulumi-oci 5.x's
# upstream marks them ForceNew: oracle/terraform-provider-oci v8.28.0,
# internal/service/core/core_instance_resource.go. Wire names.
REPLACE_FORCING = (
    "availabilityDomain", "clusterPlacementGroupId", "computeClusterId", "hostnameLabel", "image",
    "instanceConfigurationId", "ipxeScript", "isPvEncryptionInTransitEnabled", "subnetId",
    "createVnicDetails.assignIpv6ip", "createVnicDetails.assignPrivateDnsRecord", "createVnicDetails.privateIp",
    "createVnicDetails.privateIpId", "createVnicDetails.subnetCidr", "createVnicDetails.subnetId",
    "createVnicDetails.vlanId", "createVnicDetails.securityAttributes",
    "launchOptions", "placementConstraintDetails", "platformConfig", "preemptibleInstanceConfig",
    "sourceDetails.bootVolumeVpusPerGb", "sourceDetails.instanceSourceImageFilterDetails",
)
# Inputs that change the VM in place but still destroy the queue or never reach it:
# a new source_id replaces the boot volume (UpdateInstanceSourceDetails), and user_data only
# runs at first boot.
ALWAYS_IGNORED = ("metadata", "sourceDetails")


def _addresses_problem(what: str, address: str, primary: list, urn: str = "") -> list[tuple[str, str]]:
    out = []
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return [(f"{what} {address!r} is not an IP address, so it cannot be checked against the primary's "
                 "mynetworks; fix the resource", urn)]
    for net in primary:
        if ip.version == net.version and ip in net:
            out.append((f"{what} {ip} lies inside the primary's mynetworks {net}: a compromised relay could relay "
                        "through the primary; remove it from mynetworks and use the per-stage exemptions "
                        "(check_client_access, anvil, policyd-spf, rspamd) instead", urn))
    return out


MYNETWORKS_SCHEMA = PolicyConfigSchema(properties={
    "primaryMynetworks": {"type": "array", "items": {"type": "string"}, "default": [],
                          "description": "Extra networks to treat as the primary's mynetworks."}})


def _vm_not_in_mynetworks(args, report_violation):
    cfg = config(args, MYNETWORKS_SCHEMA)
    try:
        primary = environment.networks("primaryMynetworks")
        primary += [environment.network("policy config primaryMynetworks", n) for n in cfg["primaryMynetworks"]]
        source = environment.fact("drainSourceAddress")
        if environment.drain_transport() == "wireguard":
            source = environment.tunnel_address("wireguardRelayAddress")
    except FactError as exc:
        report_violation(str(exc))
        return
    unknown_paths = []
    found: list[tuple[str, str]] = []
    for r in args.resources:
        props = plain(r.props)
        if r.resource_type == PUBLIC_IP:
            ip = props.get("ipAddress")
            if isinstance(ip, str) and known(ip) and ip:
                found += _addresses_problem(f"reserved IP of '{r.name}'", ip, primary, r.urn)
            else:
                unknown_paths.append([r.name, "ipAddress"])
        elif r.resource_type == INSTANCE:
            for ip in (dig(props, "createVnicDetails", "privateIp"), props.get("privateIp"), props.get("publicIp")):
                if isinstance(ip, str) and known(ip) and ip:
                    found += _addresses_problem(f"address of instance '{r.name}'", ip, primary, r.urn)
    if source:
        found += _addresses_problem("drain source address (stack config drainSourceAddress, or "
                                    "wireguardRelayAddress with drainTransport wireguard)", source, primary)
    for message, urn in dict.fromkeys(found):
        report_violation(message, urn or None)
    if unknown_paths:
        # Everything known was checked; say precisely what waits for `pulumi up`.
        raise UnknownValueError(UNKNOWN_STRING_VALUE, unknown_paths[0])


vm_not_in_mynetworks = stack_policy(
    "vm-not-in-mynetworks",
    "No address of the relay (reserved IP, private IP, drain source) is in the primary's mynetworks "
    "(stack config primaryMynetworks, plus any policy config entries).",
    _vm_not_in_mynetworks, schema=MYNETWORKS_SCHEMA)


def _reserved_public_ip(args, report_violation):
    instances, reserved = [], []
    for r in args.resources:
        props = plain(r.props)
        if r.resource_type == INSTANCE:
            instances.append(r)
            assign = dig(props, "createVnicDetails", "assignPublicIp")
            if not known(assign):
                continue
            if assign is None or as_bool(assign) is not False:
                report_violation(f"instance '{r.name}': createVnicDetails.assignPublicIp is {assign!r}; an ephemeral "
                                 "public IP changes on every rebuild and breaks the A record and the primary's "
                                 "exemptions; set assign_public_ip=\"false\" and attach a RESERVED PublicIp", r.urn)
        elif r.resource_type == PUBLIC_IP:
            lifetime = props.get("lifetime")
            if known(lifetime) and str(lifetime).upper() != "RESERVED":
                report_violation(f"public IP '{r.name}': lifetime is {lifetime!r}; set lifetime=\"RESERVED\" so the "
                                 "address survives rebuilds", r.urn)
                continue
            reserved.append(r)
            target = props.get("privateIpId")
            if target is None or (known(target) and not str(target).strip()):
                report_violation(f"public IP '{r.name}' is not attached to a private IP: the relay would have no "
                                 "public address; set private_ip_id to the instance's primary private IP", r.urn)
            if not r.opts.protect:
                report_violation(f"public IP '{r.name}' is not protected: deleting it loses the address the A record "
                                 "and the primary's exemptions are keyed to; set protect=True", r.urn)
    owners: dict[str, list[str]] = {i.urn: [] for i in instances}
    for r in reserved:
        if not known(plain(r.props).get("privateIpId")):
            continue  # first preview: the VNIC does not exist yet; judged again after up, from state
        # The program derives privateIpId from the instance's own primary VNIC (invokes on the
        # instance's id), so the engine records the instance as a dependency of the address.
        mine = [d.urn for d in (r.dependencies or []) if d.resource_type == INSTANCE]
        if len(mine) != 1:
            report_violation(f"public IP '{r.name}': its private IP is not derived from exactly one relay instance "
                             f"(it depends on {len(mine)}), so the pack cannot tell it is attached to a relay's "
                             "primary VNIC; set private_ip_id from the instance's VNIC attachment", r.urn)
        else:
            owners[mine[0]].append(r.name)
    for urn, names in owners.items():
        if len(names) > 1:
            report_violation(f"instance '{urn.rsplit('::', 1)[-1]}' has {len(names)} reserved IPs ({', '.join(names)}); "
                             "each relay has one, which its A record names")
    if len(reserved) < len(instances):
        report_violation(f"{len(instances)} relay instance(s) but {len(reserved)} RESERVED oci.core.PublicIp; attach "
                         "one to each instance's primary private IP")


reserved_public_ip = stack_policy(
    "reserved-public-ip",
    "Each relay has a protected RESERVED PublicIp attached to a private IP, and no ephemeral public IP.",
    _reserved_public_ip)


def _size(value, default: int):
    size = as_int(value)
    return default if size is None else size


FREE_VPUS_PER_GB = 10  # Balanced; Higher and Ultra High Performance are billed per VPU
# Volume and BootVolume inputs whose cost the pack models (pulumi-oci's wire names); any other
# (backupPolicyId, blockVolumeReplicas, bootVolumeReplicas, autotunePolicies, kmsKeyId, ...)
# can bill the tenancy and fails closed.
VOLUME_INPUTS = {"availabilityDomain", "compartmentId", "displayName", "freeformTags", "definedTags", "sizeInGbs",
                 "sourceDetails", "volumeBackupId", "vpusPerGb", "isAutoTuneEnabled"}


def _volume_cost(props: dict) -> list[str]:
    problems = [f"input {name!r} is one the pack does not model (backups beyond the free five, a replica in "
                "another region or a key vault are billed); it fails closed. Remove it"
                for name in sorted(set(props) - VOLUME_INPUTS) if props[name] not in (None, [], {})]
    vpus = props.get("vpusPerGb")
    if known(vpus) and vpus is not None and as_int(vpus) > FREE_VPUS_PER_GB:
        problems.append(f"vpusPerGb = {vpus} is a billed performance tier (Always-Free is up to {FREE_VPUS_PER_GB}, "
                        "Balanced)")
    if known(props.get("isAutoTuneEnabled")) and as_bool(props.get("isAutoTuneEnabled")):
        problems.append("isAutoTuneEnabled raises the performance tier, which is billed")
    return problems


def _always_free(args, report_violation):
    total, micro, ocpus_total, memory_total = 0, 0, 0, 0
    unknown = None
    for r in args.resources:
        props = plain(r.props)
        if r.resource_type == INSTANCE:
            shape = props.get("shape")
            if not known(shape):
                unknown = [r.name, "shape"]
                continue
            if shape not in ALWAYS_FREE:
                report_violation(f"instance '{r.name}': shape {shape!r} is not Always-Free; use "
                                 "VM.Standard.E2.1.Micro", r.urn)
            if shape == "VM.Standard.E2.1.Micro":
                micro += 1
            if shape == "VM.Standard.A1.Flex":
                ocpus, memory = as_int(dig(props, "shapeConfig", "ocpus")), as_int(dig(props, "shapeConfig", "memoryInGbs"))
                if not (isinstance(ocpus, int) and isinstance(memory, int)):
                    report_violation(f"instance '{r.name}': A1.Flex needs explicit shapeConfig ocpus and memoryInGbs "
                                     "to be judged against the free tier", r.urn)
                else:
                    ocpus_total, memory_total = ocpus_total + ocpus, memory_total + memory
            vpus = dig(props, "sourceDetails", "bootVolumeVpusPerGb")
            if known(vpus) and vpus is not None and as_int(vpus) > FREE_VPUS_PER_GB:
                report_violation(f"instance '{r.name}': sourceDetails.bootVolumeVpusPerGb = {vpus} is a billed "
                                 f"performance tier (Always-Free block storage is up to {FREE_VPUS_PER_GB}, Balanced); "
                                 "remove it", r.urn)
            if dig(props, "sourceDetails", "sourceType") in ("bootVolume", "BOOT_VOLUME"):
                continue  # an existing boot volume: counted by its own resource
            size = _size(dig(props, "sourceDetails", "bootVolumeSizeInGbs"), MIN_BOOT_GB)
            if not known(size):
                unknown = [r.name, "sourceDetails", "bootVolumeSizeInGbs"]
                continue
            if size < MIN_BOOT_GB:
                report_violation(f"instance '{r.name}': boot volume {size} GB is below OCI's {MIN_BOOT_GB} GB "
                                 "minimum; set boot_volume_size_in_gbs to 50", r.urn)
            total += size
        elif r.resource_type in (VOLUME, BOOT_VOLUME):
            for problem in _volume_cost(props):
                report_violation(f"{r.resource_type.rsplit(':', 1)[-1]} '{r.name}': {problem}", r.urn)
            size = _size(props.get("sizeInGbs"), OCI_DEFAULT_VOLUME_GB if r.resource_type == VOLUME else MIN_BOOT_GB)
            if not known(size):
                unknown = [r.name, "sizeInGbs"]
                continue
            total += size
    if micro > MAX_MICRO:
        report_violation(f"{micro} VM.Standard.E2.1.Micro instances; Always-Free allows {MAX_MICRO} per tenancy")
    if ocpus_total > A1_MAX_OCPUS or memory_total > A1_MAX_GB:
        report_violation(f"A1.Flex instances total {ocpus_total} OCPUs / {memory_total} GB; Always-Free allows "
                         f"{A1_MAX_OCPUS} OCPUs and {A1_MAX_GB} GB in all")
    if total > FREE_STORAGE_GB:
        report_violation(f"boot and block volumes total {total} GB; Always-Free block storage is {FREE_STORAGE_GB} GB "
                         "in all (boot volumes included); lower bootVolumeSizeGb or remove volumes")
    if unknown:
        raise UnknownValueError(UNKNOWN_STRING_VALUE, unknown)


always_free = stack_policy(
    "always-free",
    "Every instance is an Always-Free shape, and the stack's totals stay inside the free tier: at "
    "most 2 E2.1.Micro, A1 within 4 OCPUs / 24 GB, boot and block volumes within 200 GB.",
    _always_free)


def _port_range(options) -> tuple[int, int] | None:
    """None: every port. Raises ValueError on text the pack cannot read."""
    if not isinstance(options, dict) or not options:
        return None
    rng = options.get("destinationPortRange", options)
    if not isinstance(rng, dict) or not rng:
        return None
    low, high = rng.get("min", 1), rng.get("max", 65535)
    low, high = int(float(low)), int(float(high))
    return low, high


def _covers(rule: dict, port: int, protocol: str = "6") -> bool:
    proto = str(rule.get("protocol", "")).lower()
    if proto == "all":
        return True
    if proto != protocol:
        return False
    rng = _port_range(rule.get("tcpOptions") if protocol == "6" else rule.get("udpOptions"))
    return rng is None or rng[0] <= port <= rng[1]


def _ingress_rules(args) -> list[tuple[str, Any, dict]]:
    """(what, resource, rule) for every ingress rule of every security list and NSG rule."""
    rules = []
    for r in args.resources:
        props = plain(r.props)
        if r.resource_type in (SECURITY_LIST, DEFAULT_SECURITY_LIST):
            for rule in props.get("ingressSecurityRules") or []:
                if isinstance(rule, dict):
                    rules.append((f"security list '{r.name}'", r, rule))
        elif r.resource_type == NSG_RULE:
            if str(props.get("direction", "")).upper() == "INGRESS":
                rules.append((f"network security group rule '{r.name}'", r, props))
    return rules


SERVED = {SMTP, HTTP, SSH, *EXPORTER_PORTS}  # every other port is open nowhere
PATH_MTU = 3  # ICMP destination unreachable (type 3, code 4 is "fragmentation needed")


def _unserved(rule: dict, net, inside_homelab: bool, break_glass: bool) -> list[str]:
    """The allow-list: TCP to the relay's ports only (22 and the exporters judged above),
    ICMP destination-unreachable only, nothing else from anywhere."""
    proto = str(rule.get("protocol", "")).lower()
    if proto == "6":
        low, high = _port_range(rule.get("tcpOptions")) or (1, 65535)
        extra = [p for p in (low, high) if p not in SERVED] if high - low < 2 else []
        if high - low >= 2 and not set(range(low, high + 1)) <= SERVED:
            return [f"opens TCP {low}-{high} to {net}; only {', '.join(map(str, sorted(SERVED)))} are served, every "
                    "other port stays closed: open single ports"]
        return [f"opens TCP {p} to {net}, which the relay does not serve; remove the rule" for p in extra]
    if proto == "1":
        icmp = rule.get("icmpOptions")
        if isinstance(icmp, dict) and as_int(icmp.get("type")) == PATH_MTU:  # the engine sends numbers as floats
            return []
        return [f"allows ICMP {icmp or 'of every type'} from {net}; only type {PATH_MTU} (path MTU discovery) is "
                "modeled"]
    return [f"allows protocol {proto or 'unset'} from {net}; the relay serves TCP only (the pack fails closed on "
            "other protocols)"]


def _security_list(args, report_violation):
    try:
        homelab = environment.networks("homelabCidr")
        break_glass = environment.fact("breakGlassSsh")
    except FactError as exc:
        report_violation(str(exc))
        return
    homelab_text = ", ".join(map(str, homelab))
    for what, r, rule in _ingress_rules(args):
        source = rule.get("source")
        kind = str(rule.get("sourceType") or "CIDR_BLOCK").upper()
        if kind == "NETWORK_SECURITY_GROUP":
            continue  # VNICs of this tenancy, never a public source
        if not known(source):
            # A real stack writes its sources as literal CIDRs; an unknown one is never judged later.
            report_violation(f"{what}: an ingress rule's source is unknown at preview, so the pack cannot judge which "
                             "ports it opens to whom; it fails closed. Write the source as a literal CIDR", r.urn)
            continue
        try:
            net = ipaddress.ip_network(str(source), strict=False)
            _covers(rule, SSH)
        except ValueError:
            report_violation(f"{what}: ingress rule from {source!r} cannot be read (source or ports); the pack "
                             "fails closed. Use a CIDR source and numeric ports", r.urn)
            continue
        inside_homelab = inside(net, homelab)
        if _covers(rule, SSH) and not inside(net, VCN_PRIVATE):
            if not break_glass:
                report_violation(f"{what}: TCP {SSH} is open to {net}; SSH is tailnet-only, remove the rule (or "
                                 f"declare breakGlassSsh: true for SSH from homelabCidr {homelab_text} only)", r.urn)
            elif not inside_homelab:
                report_violation(f"{what}: TCP {SSH} is open to {net}, wider than homelabCidr {homelab_text}; "
                                 "breakGlassSsh allows SSH from the homelab CIDR only, narrow the rule's source",
                                 r.urn)
        for port in EXPORTER_PORTS:
            if _covers(rule, port) and not inside_homelab:
                report_violation(f"{what}: exporter port {port} is open to {net}; allow it from the homelab CIDR "
                                 f"({homelab_text}, stack config homelabCidr) only", r.urn)
        for problem in _unserved(rule, net, inside_homelab, break_glass):
            report_violation(f"{what}: {problem}", r.urn)


security_list = stack_policy(
    "security-list",
    "Across every security list, default security list and NSG rule, attached or not: only the relay's ports "
    "are opened, the exporter ports only from the homelab CIDR (stack config homelabCidr), 22 never from a "
    "public source (with stack config breakGlassSsh: from homelabCidr only). What actually reaches the relay "
    "is the reachability policy's.",
    _security_list)


def _ignored(opts) -> set[str]:
    return {i.replace('["', ".").replace('"]', "").replace("[", ".").replace("]", "") for i in (opts.ignore_changes or [])}


def _covered(path: str, ignored: set[str]) -> bool:
    parts = path.split(".")
    return any(".".join(parts[:n]) in ignored for n in range(1, len(parts) + 1))


def _set_paths(props: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in props.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, dict):
            out |= _set_paths(value, path + ".")
    return out


def _no_silent_replace(args, report_violation):
    if args.resource_type != INSTANCE:
        return
    ignored = _ignored(args.opts)
    rebuild = ("rebuild deliberately once the queue is empty: `postqueue -p` on the relay, then "
               "`pulumi state unprotect <instance urn>` and `pulumi up --replace <instance urn>` (README, Rebuild)")
    for path in ALWAYS_IGNORED:
        if not (_covered(path, ignored) or any(i.startswith(path + ".") for i in ignored)):
            what = ("a changed user_data would be applied by a rebuild the operator did not ask for"
                    if path == "metadata" else
                    "a newer image would replace the boot volume in place and destroy queued mail")
            report_violation(f"instance '{args.name}': {what}; add \"{path}\" to ignore_changes, and {rebuild}")
    if args.opts.protect:
        return
    present = _set_paths(plain(args.props))
    exposed = sorted(p for p in REPLACE_FORCING if (p in present or any(x.startswith(p + ".") for x in present))
                     and not _covered(p, ignored))
    if exposed:
        report_violation(f"instance '{args.name}': a change to {', '.join(exposed)} (e.g. availabilityDomainIndex or "
                         "vcnCidr) forces a replacement that destroys queued mail, and nothing stops it at preview; "
                         f"set protect=True on the instance so `pulumi preview` refuses it, and {rebuild}")


no_silent_replace = resource_policy(
    "no-silent-replace",
    "No config change replaces the relay VM (and its queue) by surprise: the instance is protected or "
    "ignores every replace-forcing input, and always ignores user_data and image changes.",
    _no_silent_replace)


def _fault_domains(args, report_violation):
    try:
        declared = len(environment.relays())
    except FactError as exc:
        report_violation(str(exc))
        return
    if declared < 2:
        args.not_applicable("one relay (stack config relayCount 1): OCI's placement is fine")
    instances = [(r, plain(r.props)) for r in args.resources if r.resource_type == INSTANCE]
    placed: dict[tuple[str, str], str] = {}
    for r, props in instances:
        fault_domain, ad = props.get("faultDomain"), props.get("availabilityDomain")
        if not known(fault_domain):
            raise UnknownValueError(UNKNOWN_STRING_VALUE, [r.name, "faultDomain"])
        if not isinstance(fault_domain, str) or not fault_domain:
            report_violation(f"instance '{r.name}' has no faultDomain: with {len(instances)} relays OCI may place them "
                             "on the same hardware, and one fault takes both; set fault_domain (FAULT-DOMAIN-1..3), "
                             "a different one per relay", r.urn)
            continue
        where = (str(ad) if known(ad) else "", fault_domain.upper())
        if where in placed:
            report_violation(f"instance '{r.name}' shares {fault_domain} with '{placed[where]}': one hardware fault "
                             "would take both relays; give each relay its own fault domain", r.urn)
        placed.setdefault(where, r.name)


relay_fault_domains = stack_policy(
    "relay-fault-domains",
    "With two relays (stack config relayCount), each instance has an explicit fault domain of its own, so one "
    "hardware fault cannot take both.",
    _fault_domains)
