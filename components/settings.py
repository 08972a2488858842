"""The stack config, read once into one typed, validated object.

Key names, types and defaults come from the `config:` block of Pulumi.yaml, so the
project file is the single declaration; this module adds the rules Pulumi's types
cannot express and fails with every bad key named at once.
"""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

PROJECT_FILE = Path(__file__).resolve().parent.parent / "Pulumi.yaml"
ALWAYS_FREE_SHAPES = ("VM.Standard.E2.1.Micro",)
BOOT_VOLUME_MIN_GB, ALWAYS_FREE_STORAGE_GB = 50, 200
POSTFIX_LIFETIME_CAP_S = 100 * 86400  # qmgr refuses to start above 100d
RELAY_HOST_NUMBER = 10  # the relay's fixed private address inside the subnet

_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_DNSBL_SITE = re.compile(r"^[a-z0-9.-]+=[0-9.\[\];]+(\*-?\d+)?$")


class ConfigError(ValueError):
    """Invalid stack config. The message lists every bad key with what is allowed."""


def declarations(path: Path = PROJECT_FILE) -> dict[str, dict]:
    return yaml.safe_load(path.read_text())["config"]


def postfix_seconds(value: str, default_unit: str = "d") -> int:
    """Postfix time value to seconds; a bare number takes the parameter's default unit."""
    match = re.fullmatch(r"(\d+)([smhdw]?)", value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a Postfix time (a number with optional unit s, m, h, d or w)")
    return int(match.group(1)) * _TIME_UNITS[match.group(2) or default_unit]


@dataclass(frozen=True)
class Zone:
    domain: str
    zone_id: str


@dataclass(frozen=True)
class Settings:
    project: str
    domains: tuple[str, ...]
    zones: tuple[Zone, ...]
    relay_hostname: str
    relay_zone: Zone
    mx_preference: int
    primary_mx_host: str
    primary_mx_preference: int
    primary_mynetworks: tuple[str, ...]
    drain_host: str
    drain_port: int
    message_size_limit: int
    queue_lifetime: str
    bounce_lifetime: str
    dnsbl_sites: tuple[str, ...]
    dnsbl_threshold: int
    oci_compartment_id: str
    oci_region: str
    availability_domain_index: int
    shape: str
    boot_volume_size_gb: int
    vcn_cidr: str
    relay_private_ip: str
    homelab_cidr: str
    certbot_email: str
    headscale_login_server: str
    tailnet_tag: str
    ssh_authorized_keys: tuple[str, ...]
    drain_source_address: str
    # The preauth key stays whatever the caller passed (a pulumi secret Output in the program).
    headscale_preauth_key: Any = field(repr=False, compare=False, default=None)

    @property
    def drain_target(self) -> str:
        return f"[{self.drain_host}]:{self.drain_port}"

    def public_props(self) -> dict[str, Any]:
        """The resolved settings as component props (wire names; no secrets)."""
        return {
            "domains": list(self.domains),
            "zones": [{"domain": z.domain, "zoneId": z.zone_id} for z in self.zones],
            "relayHostname": self.relay_hostname,
            "mxPreference": self.mx_preference,
            "primaryMxHost": self.primary_mx_host,
            "primaryMxPreference": self.primary_mx_preference,
            "primaryMynetworks": list(self.primary_mynetworks),
            "drainHost": self.drain_host,
            "drainPort": self.drain_port,
            "messageSizeLimit": self.message_size_limit,
            "queueLifetime": self.queue_lifetime,
            "bounceLifetime": self.bounce_lifetime,
            "shape": self.shape,
            "bootVolumeSizeGb": self.boot_volume_size_gb,
            "homelabCidr": self.homelab_cidr,
            "relayPrivateIp": self.relay_private_ip,
            "tailnetTag": self.tailnet_tag,
        }


class _Reader:
    """Typed access to raw config strings (as Pulumi passes them), collecting errors."""

    def __init__(self, project: str, raw: Callable[[str], Optional[str]], decls: dict[str, dict]):
        self.project, self.raw, self.decls, self.errors = project, raw, decls, []

    def fail(self, key: str, message: str) -> None:
        self.errors.append(f"{self.project}:{key}: {message}")

    def value(self, key: str) -> Any:
        decl = self.decls[key]
        text = self.raw(key)
        if text is None:
            if "default" not in decl:
                self.fail(key, "is required but not set (" + decl.get("description", "") + ")")
                return None
            return decl["default"]
        kind = decl["type"]
        try:
            if kind == "integer":
                return int(text)
            if kind == "boolean":
                return {"true": True, "false": False}[text.lower()]
            if kind == "array":
                items = json.loads(text)
                if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                    raise ValueError
                return items
        except (ValueError, KeyError):
            self.fail(key, f"{text!r} is not a valid {kind}")
            return None
        return text


def load(project: str, raw: Callable[[str], Optional[str]], preauth_key: Any = None,
         decls: Optional[dict[str, dict]] = None) -> Settings:
    """Build Settings from raw config strings; raise ConfigError naming every bad key."""
    r = _Reader(project, raw, decls or declarations())
    v = {key: r.value(key) for key in r.decls if key != "headscalePreauthKey"}
    if r.errors:
        raise ConfigError("invalid stack config:\n  " + "\n  ".join(r.errors))

    domains = [d.lower().rstrip(".") for d in v["domains"]]
    if not domains:
        r.fail("domains", "must list at least one protected domain")
    for d in domains:
        if not _HOSTNAME.match(d):
            r.fail("domains", f"{d!r} is not a domain name")
    if len(set(domains)) != len(domains):
        r.fail("domains", "lists a domain twice")

    zone_ids: dict[str, str] = {}
    for entry in v["cloudflareZoneIds"]:
        domain, sep, zone_id = entry.partition("=")
        domain = domain.strip().lower()
        if not sep or not re.fullmatch(r"[0-9a-f]{32}", zone_id.strip()):
            r.fail("cloudflareZoneIds", f"{entry!r} must be domain=<32 hex digit zone id>")
        elif domain not in domains:
            r.fail("cloudflareZoneIds", f"{domain!r} is not one of domains {domains}")
        else:
            zone_ids[domain] = zone_id.strip()
    for d in domains:
        if d not in zone_ids and not any(e.startswith(d + "=") for e in v["cloudflareZoneIds"]):
            r.fail("cloudflareZoneIds", f"has no entry for {d!r}; allowed form: {d}=<zone id>")
    zones = tuple(Zone(d, zone_ids.get(d, "")) for d in domains)

    relay = (v["relayHostname"] or (f"mx2.{domains[0]}" if domains else "")).lower().rstrip(".")
    relay_zone = next((z for z in sorted(zones, key=lambda z: -len(z.domain))
                       if relay.endswith("." + z.domain)), None)
    if not _HOSTNAME.match(relay):
        r.fail("relayHostname", f"{relay!r} is not a host name")
    elif relay_zone is None:
        r.fail("relayHostname", f"{relay!r} must lie inside one of domains {domains} (its A record goes there)")

    primary = v["primaryMxHost"].lower().rstrip(".")
    if not _HOSTNAME.match(primary):
        r.fail("primaryMxHost", f"{primary!r} is not a host name")
    elif primary == relay:
        r.fail("primaryMxHost", "must differ from relayHostname")
    for key in ("mxPreference", "primaryMxPreference"):
        if not 0 <= v[key] <= 65535:
            r.fail(key, f"{v[key]} is outside 0..65535")
    if v["mxPreference"] <= v["primaryMxPreference"]:
        r.fail("mxPreference", f"{v['mxPreference']} must be greater than primaryMxPreference "
                               f"({v['primaryMxPreference']}) so senders try the primary first")

    mynetworks = []
    for cidr in v["primaryMynetworks"]:
        try:
            mynetworks.append(str(ipaddress.ip_network(cidr, strict=False)))
        except ValueError:
            r.fail("primaryMynetworks", f"{cidr!r} is not a CIDR (allowed: e.g. 192.168.1.0/24)")

    drain_host = (v["drainHost"] or primary).lower().rstrip(".")
    if not (_HOSTNAME.match(drain_host) or _is_ip(drain_host)):
        r.fail("drainHost", f"{drain_host!r} is not a host name or IPv4 address")
    if v["drainPort"] == 25:
        r.fail("drainPort", "25 is blocked for egress by Oracle tenancy-wide; allowed: 1..65535 except 25 (default 2526)")
    elif not 1 <= v["drainPort"] <= 65535:
        r.fail("drainPort", f"{v['drainPort']} is outside 1..65535")

    if v["messageSizeLimit"] < 10 * 1024 * 1024:
        r.fail("messageSizeLimit", f"{v['messageSizeLimit']} is below 10485760 (10 MB); set the primary's value")

    lifetimes = {}
    for key in ("queueLifetime", "bounceLifetime"):
        try:
            lifetimes[key] = postfix_seconds(v[key])
        except ValueError as exc:
            r.fail(key, str(exc))
            continue
        if lifetimes[key] > POSTFIX_LIFETIME_CAP_S:
            r.fail(key, f"{v[key]!r} exceeds Postfix's 100d cap (qmgr would not start); allowed: 1s..100d")
        elif lifetimes[key] == 0:
            r.fail(key, "0 would bounce or drop mail at the first deferral; allowed: 1s..100d")
    if len(lifetimes) == 2 and lifetimes["bounceLifetime"] > lifetimes["queueLifetime"]:
        r.fail("bounceLifetime", f"{v['bounceLifetime']!r} is longer than queueLifetime {v['queueLifetime']!r}")

    for site in v["dnsblSites"]:
        if not _DNSBL_SITE.match(site):
            r.fail("dnsblSites", f"{site!r} needs a reply filter, e.g. zen.spamhaus.org=127.0.0.[2..11]*3")
    if v["dnsblThreshold"] < 1:
        r.fail("dnsblThreshold", "must be at least 1")

    if v["shape"] not in ALWAYS_FREE_SHAPES:
        r.fail("shape", f"{v['shape']!r} is not an Always-Free shape; allowed: {', '.join(ALWAYS_FREE_SHAPES)}")
    if not BOOT_VOLUME_MIN_GB <= v["bootVolumeSizeGb"] <= ALWAYS_FREE_STORAGE_GB:
        r.fail("bootVolumeSizeGb", f"{v['bootVolumeSizeGb']} is outside {BOOT_VOLUME_MIN_GB}..{ALWAYS_FREE_STORAGE_GB}")
    if not 0 <= v["availabilityDomainIndex"] <= 2:
        r.fail("availabilityDomainIndex", f"{v['availabilityDomainIndex']} is outside 0..2")
    if not re.fullmatch(r"ocid1\.(compartment|tenancy)\.oc\d+\.\.[a-z0-9]+", v["ociCompartmentId"]):
        r.fail("ociCompartmentId", f"{v['ociCompartmentId']!r} is not a compartment or tenancy OCID")
    if not re.fullmatch(r"[a-z]+-[a-z]+-\d", v["ociRegion"]):
        r.fail("ociRegion", f"{v['ociRegion']!r} is not an OCI region identifier such as eu-frankfurt-1")

    relay_private_ip = ""
    try:
        vcn = ipaddress.ip_network(v["vcnCidr"])
        if vcn.version != 4 or not vcn.is_private or not 16 <= vcn.prefixlen <= 28:
            r.fail("vcnCidr", f"{v['vcnCidr']!r} must be a private IPv4 block between /16 and /28")
        else:
            relay_private_ip = str(vcn.network_address + RELAY_HOST_NUMBER)
    except ValueError:
        r.fail("vcnCidr", f"{v['vcnCidr']!r} is not a CIDR (allowed: e.g. 10.42.0.0/24)")

    try:
        homelab = ipaddress.ip_network(v["homelabCidr"])
        if homelab.version != 4 or homelab.prefixlen < 16:
            r.fail("homelabCidr", f"{v['homelabCidr']!r} must be an IPv4 block of /16 or narrower")
    except ValueError:
        r.fail("homelabCidr", f"{v['homelabCidr']!r} is not a CIDR (allowed: e.g. 198.51.100.7/32)")

    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", v["certbotEmail"]):
        r.fail("certbotEmail", f"{v['certbotEmail']!r} is not an e-mail address")
    if not re.fullmatch(r"https://[a-z0-9.-]+(:\d+)?(/\S*)?", v["headscaleLoginServer"]):
        r.fail("headscaleLoginServer", f"{v['headscaleLoginServer']!r} must be an https:// URL")
    if not re.fullmatch(r"tag:[a-z0-9-]+", v["tailnetTag"]):
        r.fail("tailnetTag", f"{v['tailnetTag']!r} must look like tag:backup-mx")
    for key in v["sshAuthorizedKeys"]:
        if not re.match(r"(ssh-(ed25519|rsa)|ecdsa-sha2-nistp\d+|sk-\S+) [A-Za-z0-9+/=]+", key):
            r.fail("sshAuthorizedKeys", f"{key[:30]!r}... is not an SSH public key")
    if v["drainSourceAddress"] and not _is_ip(v["drainSourceAddress"]):
        r.fail("drainSourceAddress", f"{v['drainSourceAddress']!r} is not an IPv4 address (or empty)")

    if r.errors:
        raise ConfigError("invalid stack config:\n  " + "\n  ".join(r.errors))
    return Settings(
        project=project, domains=tuple(domains), zones=zones, relay_hostname=relay, relay_zone=relay_zone,
        mx_preference=v["mxPreference"], primary_mx_host=primary, primary_mx_preference=v["primaryMxPreference"],
        primary_mynetworks=tuple(mynetworks), drain_host=drain_host, drain_port=v["drainPort"],
        message_size_limit=v["messageSizeLimit"], queue_lifetime=v["queueLifetime"],
        bounce_lifetime=v["bounceLifetime"], dnsbl_sites=tuple(v["dnsblSites"]),
        dnsbl_threshold=v["dnsblThreshold"], oci_compartment_id=v["ociCompartmentId"],
        oci_region=v["ociRegion"], availability_domain_index=v["availabilityDomainIndex"], shape=v["shape"],
        boot_volume_size_gb=v["bootVolumeSizeGb"], vcn_cidr=v["vcnCidr"], relay_private_ip=relay_private_ip,
        homelab_cidr=str(ipaddress.ip_network(v["homelabCidr"])), certbot_email=v["certbotEmail"],
        headscale_login_server=v["headscaleLoginServer"], tailnet_tag=v["tailnetTag"],
        ssh_authorized_keys=tuple(v["sshAuthorizedKeys"]), drain_source_address=v["drainSourceAddress"],
        headscale_preauth_key=preauth_key,
    )


def _is_ip(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False
