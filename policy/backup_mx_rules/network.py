"""Policies on the relay's addresses, firewall, shape and lifecycle."""
from __future__ import annotations

import ipaddress

from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ResourceValidationPolicy,
                           StackValidationPolicy)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from .mail import mail_config
from .mailconf import MailConfig, split_list
from .view import (BACKUP_MX, INSTANCE, PUBLIC_IP, SECURITY_LIST, as_bool, as_int, config, dig, guarded, known,
                   networks, plain)

ALWAYS_FREE = ("VM.Standard.E2.1.Micro", "VM.Standard.A1.Flex")
MAX_MICRO, A1_MAX_OCPUS, A1_MAX_GB = 2, 4, 24
FREE_STORAGE_GB, MIN_BOOT_GB = 200, 50
EXPORTER_PORTS = (9100, 9154)
LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


def _intent(resources) -> dict:
    return next((plain(r.props) for r in resources if r.resource_type == BACKUP_MX), {})


def _mynetworks_problems(mc: MailConfig) -> list[str]:
    if "mynetworks" not in mc.main:
        return [f"mynetworks is not set, so Postfix derives it from mynetworks_style = "
                f"{mc.param('mynetworks_style')}; set mynetworks = 127.0.0.1/32"]
    problems = []
    for entry in split_list(mc.param("mynetworks")):
        try:
            net = ipaddress.ip_network(entry.strip("[]").replace("]/", "/"), strict=False)
        except ValueError:
            problems.append(f"mynetworks entry {entry!r} is not a literal address (a table or host name cannot "
                            "be checked); list loopback addresses only")
            continue
        if not any(net.subnet_of(lo) for lo in LOOPBACK if lo.version == net.version):
            problems.append(f"mynetworks entry {entry} is not loopback: clients there may relay anywhere "
                            "through the backup MX; set mynetworks = 127.0.0.1/32")
    return problems


def _vm_not_in_mynetworks(args, report_violation):
    cfg = config(args, {"primaryMynetworks": []})
    intent = _intent(args.resources)
    declared = intent.get("primaryMynetworks") if known(intent.get("primaryMynetworks", [])) else []
    primary = networks(list(declared or []) + list(cfg["primaryMynetworks"]))
    unknown_paths = []
    addresses: list[tuple[str, str, str]] = []  # (what, address, urn)
    for r in args.resources:
        props = plain(r.props)
        if r.resource_type == PUBLIC_IP:
            ip = props.get("ipAddress")
            if ip is None:
                continue
            if known(ip):
                addresses.append((f"reserved IP of '{r.name}'", ip, r.urn))
            else:
                unknown_paths.append([r.name, "ipAddress"])
        elif r.resource_type == INSTANCE:
            for ip in (dig(props, "createVnicDetails", "privateIp"), props.get("privateIp"),
                       props.get("publicIp")):
                if isinstance(ip, str) and ip:
                    addresses.append((f"address of instance '{r.name}'", ip, r.urn))
            mc = mail_config(props, r.name)
            if isinstance(mc, MailConfig):
                for problem in _mynetworks_problems(mc):
                    report_violation(f"instance '{r.name}': {problem}", r.urn)
    source = intent.get("drainSourceAddress")
    if isinstance(source, str) and known(source) and source:
        addresses.append(("drain source address", source, ""))
    for what, address, urn in dict.fromkeys(addresses):
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue
        for net in primary:
            if ip.version == net.version and ip in net:
                report_violation(f"{what} {ip} lies inside the primary's mynetworks {net}: a compromised relay could "
                                 "relay through the primary; remove it from mynetworks and use the per-stage "
                                 "exemptions (check_client_access, anvil, policyd-spf, rspamd) instead", urn)
    if unknown_paths:
        # Everything known was checked; say precisely what waits for `pulumi up`.
        raise UnknownValueError(UNKNOWN_STRING_VALUE, unknown_paths[0])


vm_not_in_mynetworks = StackValidationPolicy(
    name="vm-not-in-mynetworks",
    description="No address of the relay (reserved IP, private IP, drain source) is in the primary's mynetworks, "
                "and the relay's own mynetworks is loopback only.",
    validate=guarded("vm-not-in-mynetworks", _vm_not_in_mynetworks), enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={
        "primaryMynetworks": {"type": "array", "items": {"type": "string"}, "default": []}}))


def _reserved_public_ip(args, report_violation):
    reserved = 0
    instances = 0
    for r in args.resources:
        props = plain(r.props)
        if r.resource_type == INSTANCE:
            instances += 1
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
            elif known(lifetime):
                reserved += 1
    if instances and not reserved:
        report_violation("the stack has a relay instance but no RESERVED oci.core.PublicIp; add one attached to the "
                         "instance's primary private IP")


reserved_public_ip = StackValidationPolicy(
    name="reserved-public-ip",
    description="The relay's public IP is a RESERVED PublicIp and no ephemeral public IP is assigned.",
    validate=guarded("reserved-public-ip", _reserved_public_ip), enforcement_level=EnforcementLevel.MANDATORY)


def _always_free(args, report_violation):
    total, micro = 0, 0
    for r in args.resources:
        if r.resource_type != INSTANCE:
            continue
        props = plain(r.props)
        shape = props.get("shape")
        if known(shape) and shape not in ALWAYS_FREE:
            report_violation(f"instance '{r.name}': shape {shape!r} is not Always-Free; use VM.Standard.E2.1.Micro",
                             r.urn)
        if shape == "VM.Standard.E2.1.Micro":
            micro += 1
        if shape == "VM.Standard.A1.Flex":
            ocpus = as_int(dig(props, "shapeConfig", "ocpus"))
            memory = as_int(dig(props, "shapeConfig", "memoryInGbs"))
            if not (isinstance(ocpus, int) and ocpus <= A1_MAX_OCPUS and isinstance(memory, int)
                    and memory <= A1_MAX_GB):
                report_violation(f"instance '{r.name}': A1.Flex needs shapeConfig within {A1_MAX_OCPUS} OCPUs / "
                                 f"{A1_MAX_GB} GB to stay free", r.urn)
        size = as_int(dig(props, "sourceDetails", "bootVolumeSizeInGbs"))
        if size is None:
            size = MIN_BOOT_GB  # OCI's default boot volume
        if isinstance(size, int):
            if size < MIN_BOOT_GB:
                report_violation(f"instance '{r.name}': boot volume {size} GB is below OCI's {MIN_BOOT_GB} GB "
                                 "minimum; set boot_volume_size_in_gbs to 50", r.urn)
            total += size
    if micro > MAX_MICRO:
        report_violation(f"{micro} VM.Standard.E2.1.Micro instances; Always-Free allows {MAX_MICRO} per tenancy")
    if total > FREE_STORAGE_GB:
        report_violation(f"boot volumes total {total} GB; Always-Free block storage is {FREE_STORAGE_GB} GB in all "
                         "(boot volumes included); lower bootVolumeSizeGb")


always_free = StackValidationPolicy(
    name="always-free",
    description="The relay's shape and total boot volume size stay inside Oracle's Always-Free limits.",
    validate=guarded("always-free", _always_free), enforcement_level=EnforcementLevel.MANDATORY)


def _covers(rule: dict, port: int) -> bool:
    protocol = str(rule.get("protocol", "")).lower()
    if protocol == "all":
        return True
    if protocol != "6":
        return False
    tcp = rule.get("tcpOptions")
    if not isinstance(tcp, dict) or not tcp:
        return True
    low, high = as_int(tcp.get("min", 1)), as_int(tcp.get("max", 65535))
    return isinstance(low, int) and isinstance(high, int) and low <= port <= high


def _security_list(args, report_violation):
    cfg = config(args, {"homelabCidr": ""})
    homelab_text = cfg["homelabCidr"] or _intent(args.resources).get("homelabCidr") or ""
    homelab = networks([homelab_text]) if known(homelab_text) else []
    for r in args.resources:
        if r.resource_type != SECURITY_LIST:
            continue
        rules = plain(r.props).get("ingressSecurityRules") or []
        if not isinstance(rules, list):
            continue
        for rule in rules:
            if not isinstance(rule, dict):
                continue
            source = networks([rule.get("source", "")])
            if not source:
                continue
            net = source[0]
            if _covers(rule, 22) and not net.is_private:
                report_violation(f"security list '{r.name}': TCP 22 is open to {net}; SSH is tailnet-only, remove "
                                 "the rule", r.urn)
            for port in EXPORTER_PORTS:
                if _covers(rule, port) and not any(net.version == h.version and net.subnet_of(h) for h in homelab):
                    report_violation(f"security list '{r.name}': exporter port {port} is open to {net}; allow it "
                                     f"from the homelab CIDR ({homelab_text or 'set homelabCidr'}) only", r.urn)
        world = [rule for rule in rules if isinstance(rule, dict) and str(rule.get("source")) == "0.0.0.0/0"]
        for port in (25, 80):
            if not any(_covers(rule, port) for rule in world):
                report_violation(f"security list '{r.name}': TCP {port} is not open from 0.0.0.0/0; the relay needs "
                                 f"{'SMTP from every sender' if port == 25 else 'HTTP-01 for certbot'}", r.urn)


security_list = StackValidationPolicy(
    name="security-list",
    description="The security list opens 25 and 80 to the world, the exporter ports to the homelab CIDR only, "
                "and never opens 22 to a public source.",
    validate=guarded("security-list", _security_list), enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=PolicyConfigSchema(properties={"homelabCidr": {"type": "string", "default": ""}}))


def _no_silent_replace(args, report_violation):
    if args.resource_type != INSTANCE:
        return
    opts = args.opts
    if opts.protect:
        return
    ignored = {i.replace('["', ".").replace('"]', "") for i in (opts.ignore_changes or [])}
    if not ignored & {"metadata", "metadata.user_data", "metadata.userData"}:
        report_violation(f"instance '{args.name}': a user_data change would replace the VM and destroy queued mail; "
                         "add ignore_changes=[\"metadata\", \"sourceDetails\"] (or protect=True) and rebuild "
                         "explicitly with `pulumi up --replace`")
    if not ignored & {"sourceDetails", "sourceDetails.sourceId"}:
        report_violation(f"instance '{args.name}': a newer Ubuntu image would replace the VM and destroy queued "
                         "mail; add \"sourceDetails\" to ignore_changes (or protect=True)")


no_silent_replace = ResourceValidationPolicy(
    name="no-silent-replace",
    description="A changed user_data or image never replaces the relay VM by surprise (ignore_changes or protect).",
    validate=guarded("no-silent-replace", _no_silent_replace), enforcement_level=EnforcementLevel.MANDATORY)
