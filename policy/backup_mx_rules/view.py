"""Plain views of what the analyzer hands a policy: unknowns made explicit, not raised."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy.proxy import _is_unknown  # the SDK's own sentinel test

INSTANCE = "oci:Core/instance:Instance"
PUBLIC_IP = "oci:Core/publicIp:PublicIp"
SECURITY_LIST = "oci:Core/securityList:SecurityList"
DEFAULT_SECURITY_LIST = "oci:Core/defaultSecurityList:DefaultSecurityList"
NSG_RULE = "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule"
SUBNET = "oci:Core/subnet:Subnet"
VOLUME = "oci:Core/volume:Volume"
BOOT_VOLUME = "oci:Core/bootVolume:BootVolume"
DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
DNS_COMPONENT = "backupmx:index:Dns"


class Unknown:
    """A value that cannot be known until `pulumi up` (first preview)."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = Unknown()


def plain(value: Any) -> Any:
    """Unwrap the SDK's unknown-checking proxies into dicts/lists, unknowns as UNKNOWN."""
    if isinstance(value, Mapping):
        target = value["__target"] if _has_target(value) else value
        return {k: plain(target[k]) for k in target}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        target = value["__target"] if _has_target(value) else value
        return [plain(v) for v in target]
    if _is_unknown(value):
        return UNKNOWN
    return value


def _has_target(value: Any) -> bool:
    try:
        value["__target"]
        return True
    except (KeyError, TypeError, IndexError):
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


def config(args: Any, defaults: dict) -> dict:
    """Policy config with schema defaults filled in (the SDK leaves that to the engine)."""
    given = dict(args.get_config() or {})
    return {**defaults, **{k: v for k, v in given.items() if v is not None}}


def guarded(name: str, validate):
    """Fail closed: a plan the policy cannot read is a violation, never an analyzer crash."""
    from pulumi_policy.proxy import UnknownValueError

    def run(args, report_violation):
        try:
            return validate(args, report_violation)
        except UnknownValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - any malformed input must still be reported
            report_violation(f"{name} could not evaluate this plan ({type(exc).__name__}: {exc}); "
                             "the resource does not have the shape the backup MX program produces")

    return run
