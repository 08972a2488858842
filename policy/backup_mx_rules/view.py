"""Plain views of what the analyzer hands a policy: unknowns made explicit, not raised."""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import EnforcementLevel, PolicyConfigSchema, ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.policy import _NotApplicableError as NotApplicable  # raised by args.not_applicable()
from pulumi_policy.proxy import UnknownValueError

from .metadata import metadata

INSTANCE = "oci:Core/instance:Instance"
PUBLIC_IP = "oci:Core/publicIp:PublicIp"
SECURITY_LIST = "oci:Core/securityList:SecurityList"
DEFAULT_SECURITY_LIST = "oci:Core/defaultSecurityList:DefaultSecurityList"
NSG_RULE = "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule"
SUBNET = "oci:Core/subnet:Subnet"
VCN = "oci:Core/vcn:Vcn"
INTERNET_GATEWAY = "oci:Core/internetGateway:InternetGateway"
ROUTE_TABLE = "oci:Core/routeTable:RouteTable"
NSG = "oci:Core/networkSecurityGroup:NetworkSecurityGroup"
OCI_PROVIDER = "pulumi:providers:oci"
VOLUME = "oci:Core/volume:Volume"
BOOT_VOLUME = "oci:Core/bootVolume:BootVolume"
DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
WORKER_SCRIPT = "cloudflare:index/workersScript:WorkersScript"
# A Worker custom domain adds a record for its hostname to the zone.
WORKER_DOMAIN = "cloudflare:index/workersCustomDomain:WorkersCustomDomain"
DNS_COMPONENT = "backupmx:index:Dns"


class Unknown:
    """A value that cannot be known until `pulumi up` (first preview)."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = Unknown()


def plain(value: Any) -> Any:
    """The analyzer's props as plain dicts and lists, with every value the engine marked
    unknown replaced by UNKNOWN. Read through the proxies' public Mapping/Sequence interface:
    reading an unknown raises UnknownValueError, which becomes UNKNOWN here, so a policy sees
    the unknown instead of being skipped by it."""
    if isinstance(value, Mapping):
        return {k: _read(value, k) for k in value}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_read(value, i) for i in range(len(value))]
    return value


def _read(container: Any, key: Any) -> Any:
    try:
        return plain(container[key])
    except UnknownValueError:
        return UNKNOWN


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def inside(net: Network, nets: list[Network]) -> bool:
    """net lies wholly inside one of nets of its own IP version."""
    for other in nets:
        if isinstance(net, ipaddress.IPv4Network) and isinstance(other, ipaddress.IPv4Network) \
                and net.subnet_of(other):
            return True
        if isinstance(net, ipaddress.IPv6Network) and isinstance(other, ipaddress.IPv6Network) \
                and net.subnet_of(other):
            return True
    return False


def known(value: Any) -> bool:
    return not isinstance(value, Unknown)


def dig(props: dict, *path: str, default: Any = None) -> Any:
    for key in path:
        if isinstance(props, Unknown):
            return UNKNOWN
        if not isinstance(props, dict) or key not in props:
            return default
        props = props[key]
    return props


def as_bool(value: Any) -> Any:
    """pulumi-oci sends some booleans as strings."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value


def as_int(value: Any) -> Any:
    if isinstance(value, Unknown) or value is None:
        return value
    return int(float(value))


def config(args: Any, schema: PolicyConfigSchema | None) -> dict:
    """Policy config over its schema's defaults (the SDK leaves defaults to the engine), so
    each default is written once, in the schema the engine validates against."""
    defaults = {k: v["default"] for k, v in (schema.properties if schema else {}).items() if "default" in v}
    given = dict(args.get_config() or {})
    return {**defaults, **{k: v for k, v in given.items() if v is not None}}


def guarded(name: str, validate):
    """Fail closed: a plan the policy cannot read is a violation, never an analyzer crash."""
    def run(args, report_violation):
        try:
            return validate(args, report_violation)
        except (UnknownValueError, NotApplicable):
            raise  # the SDK's own outcomes: deferred to pulumi up, or not applicable to this shape
        except Exception as exc:  # any malformed input must still be reported
            report_violation(f"{name} could not evaluate this plan ({type(exc).__name__}: {exc}); "
                             "the resource does not have the shape the backup MX program produces")

    return run


def stack_policy(name: str, description: str, validate, level: EnforcementLevel = EnforcementLevel.MANDATORY,
                 schema: PolicyConfigSchema | None = None) -> StackValidationPolicy:
    """Every stack policy is declared this way: guarded (fails closed), mandatory unless said."""
    return StackValidationPolicy(name=name, description=description, validate=guarded(name, validate),
                                 enforcement_level=level, config_schema=schema, **metadata(name))


def resource_policy(name: str, description: str, validate, level: EnforcementLevel = EnforcementLevel.MANDATORY,
                    schema: PolicyConfigSchema | None = None) -> ResourceValidationPolicy:
    """Every resource policy is declared this way: guarded (fails closed), mandatory unless said."""
    return ResourceValidationPolicy(name=name, description=description, validate=guarded(name, validate),
                                    enforcement_level=level, config_schema=schema, **metadata(name))

