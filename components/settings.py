"""The stack config, read once into one typed, validated object.

Key names, types and defaults come from the `config:` block of Pulumi.yaml, so the
project file is the single declaration; this module adds the rules Pulumi's types
cannot express and fails with every bad key named at once.
"""
from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import yaml

from .facts import SIZE_HEADROOM, SMTP_PORT
from .grammar import ssh_key_problem

PROJECT_FILE = Path(__file__).resolve().parent.parent / "Pulumi.yaml"
ALWAYS_FREE_SHAPES = ("VM.Standard.E2.1.Micro",)
# postscreen_dnsbl_action values; the pack's never-5xx allows the same. drop's documented 521
# is 421 under soft_bounce (tests/test_relay_lab.py proves both on real Postfix).
DNSBL_ACTIONS = ("enforce", "drop", "ignore")
ACCOUNT_MODES = ("payg", "free")
# How the relay is managed: joins headscale, joins Tailscale's hosted tailnet, or neither
# (SSH only with breakGlassSsh, else the OCI console).
TAILNETS = ("headscale", "tailscale", "none")
BOOT_VOLUME_MIN_GB, ALWAYS_FREE_STORAGE_GB = 50, 200
POSTFIX_LIFETIME_CAP_S = 100 * 86400  # qmgr refuses to start above 100d
QUEUE_LIFETIME_FLOOR_S, BOUNCE_LIFETIME_S = 30 * 86400, 86400  # the pack's queue-lifetime and bounce-lifetime
RELAY_HOST_NUMBER = 10  # the first relay's fixed private address inside the subnet; the second takes the next
RELAY_COUNTS = (1, 2)  # Always-Free allows two E2.1.Micro instances per tenancy
FAULT_DOMAINS = ("FAULT-DOMAIN-1", "FAULT-DOMAIN-2", "FAULT-DOMAIN-3")  # every OCI availability domain has three

_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class ConfigError(ValueError):
    """Invalid stack config. The message lists every bad key with what is allowed."""


class AmbiguousNumber(ValueError):
    pass


def _decimal(text: str) -> int:
    """A plain decimal integer. The CLI passes a stack file's scalar through as its text, so
    `020` reaches the program as "020"; YAML 1.1 readers (and many people) take it as octal 16.
    Forms that readers disagree on are refused rather than guessed."""
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", text.strip()):
        return int(text)
    if re.fullmatch(r"[-+]?0[0-9_]+", text.strip()):
        raise AmbiguousNumber(f"{text!r} has a leading zero, which YAML readers disagree on (octal or decimal); "
                              f"write it without the zero, e.g. {int(text.replace('_', '')):d}")
    raise ValueError(text)


@dataclass(frozen=True)
class SecretConfig:
    """A secret config value as the program sees it: its text, and whether the stack stores it
    encrypted. Checked without ever echoing the text."""
    text: Optional[str]
    secret: bool


PreauthKey = SecretConfig  # the headscale preauth key's name in callers and tests


@dataclass(frozen=True)
class WireGuard:
    """drainTransport wireguard: the relay is a road-warrior peer of the homelab firewall."""
    peer_public_key: str
    endpoint: str  # host:port
    relay_address: str
    primary_address: str
    interface: str = "wg0"

    @property
    def allowed_ips(self) -> str:
        return f"{self.primary_address}/32"


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
class MtaSts:
    """mtaSts testing|enforce: what the stack publishes for every protected domain."""
    mode: str
    max_age: int
    tls_rpt_rua: str
    account_id: str


@dataclass(frozen=True)
class RelaySpec:
    """What differs between relays: name, address, MX preference, placement."""
    hostname: str
    private_ip: str
    mx_preference: int
    zone: Zone  # the zone that holds its A record
    fault_domain: Optional[str]  # None: OCI picks (one relay: no fault domain to keep apart from)


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
    dnsbl_action: str
    oci_compartment_id: str
    oci_region: str
    availability_domain_index: int
    shape: str
    boot_volume_size_gb: int
    vcn_cidr: str
    relay_private_ip: str
    homelab_cidr: str
    break_glass_ssh: bool
    certbot_email: str
    headscale_login_server: str  # "" unless tailnet headscale
    tailnet_tag: str
    ssh_authorized_keys: tuple[str, ...]
    drain_source_address: str
    drain_transport: str = "nat"
    tailnet: str = "headscale"
    account_mode: str = "payg"
    wireguard: Optional[WireGuard] = None
    relays: tuple[RelaySpec, ...] = ()  # every relay; the relay_* fields above are the first one's
    mta_sts: Optional[MtaSts] = None  # None: mtaSts off
    # The WireGuard private key, like the preauth key, stays what the caller passed.
    wireguard_private_key: Any = field(repr=False, compare=False, default=None)
    # The preauth key stays whatever the caller passed (a pulumi secret Output in the program).
    headscale_preauth_key: Any = field(repr=False, compare=False, default=None)

    def for_relay(self, relay: RelaySpec) -> "Settings":
        """The settings one relay's VM is rendered from: its own name, address and preference."""
        return replace(self, relay_hostname=relay.hostname, relay_private_ip=relay.private_ip,
                       mx_preference=relay.mx_preference, relay_zone=relay.zone)

    @property
    def vcn_dns_label(self) -> str:
        """OCI DNS label: letters and digits of the relay's first label, at most 15."""
        return "".join(c for c in self.relay_hostname.split(".")[0] if c.isalnum())[:15] or "backupmx"

    @property
    def relay_message_size_limit(self) -> int:
        """The largest message the relay accepts: the primary's limit less the headroom."""
        return self.message_size_limit - SIZE_HEADROOM

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
            "relays": [{"hostname": r.hostname, "privateIp": r.private_ip, "mxPreference": r.mx_preference,
                        "faultDomain": r.fault_domain} for r in self.relays],
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
            "breakGlassSsh": self.break_glass_ssh,
            "accountMode": self.account_mode,
            "relayPrivateIp": self.relay_private_ip,
            "tailnet": self.tailnet,
            "tailnetTag": self.tailnet_tag,
            "mtaSts": self.mta_sts.mode if self.mta_sts else "off",
        }


class _Reader:
    """Typed access to raw config strings (as Pulumi passes them), collecting errors."""

    def __init__(self, project: str, raw: Callable[[str], Optional[str]], decls: dict[str, dict]):
        self.project, self.raw, self.decls = project, raw, decls
        self.errors: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.errors.append(f"{self.project}:{key}: {message}")

    def given(self, key: str) -> bool:
        """Whether the stack sets the key to something other than its declared default. The
        CLI merges Pulumi.yaml's defaults into the config before the program runs
        (pkg/workspace/config.go mergeConfig), so an unset key arrives as its default's text."""
        text = self.raw(key)
        if text is None:
            return False
        if "default" not in self.decls[key]:
            return True
        default = self.decls[key]["default"]
        if isinstance(default, (list, dict)):
            try:
                return json.loads(text) != default
            except ValueError:
                return True
        return text != (str(default).lower() if isinstance(default, bool) else str(default))

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
                return _decimal(text)
            if kind == "boolean":
                return {"true": True, "false": False}[text.lower()]
            if kind == "array":
                items = json.loads(text)
                if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                    raise ValueError
                return items
        except AmbiguousNumber as exc:
            self.fail(key, str(exc))
            return None
        except (ValueError, KeyError):
            self.fail(key, f"{text!r} is not a valid {kind}")
            return None
        return text


SECRET_KEYS = ("headscalePreauthKey", "wireguardPrivateKey")


def required_secrets(tailnet: str, drain_transport: str) -> tuple[str, ...]:
    """The secret keys a shape needs: the tailnet key unless tailnet none, the WireGuard key
    with drainTransport wireguard. (The offline preview stands in a placeholder for these.)"""
    return tuple(key for key, needed in (("headscalePreauthKey", tailnet != "none"),
                                         ("wireguardPrivateKey", drain_transport == "wireguard")) if needed)


def load(project: str, raw: Callable[[str], Optional[str]], preauth_key: Any = None,
         decls: Optional[dict[str, dict]] = None, preauth: Optional[SecretConfig] = None,
         wireguard_key: Optional[SecretConfig] = None, wireguard_private_key: Any = None,
         keys: Iterable[str] = ()) -> Settings:
    """Build Settings from raw config strings; raise ConfigError naming every bad key.
    `preauth` and `wireguard_key` (the program passes them) are checked without ever echoing
    them; `preauth_key` and `wireguard_private_key` are what the renderers get (secret Outputs
    in the program). `keys` are the names the stack sets in the project's namespace."""
    r = _Reader(project, raw, decls or declarations())
    for key in sorted(set(keys) - set(r.decls)):
        close = difflib.get_close_matches(key, list(r.decls), n=1)
        r.fail(key, "is not declared in Pulumi.yaml, so nothing reads it (the Pulumi CLI passes it through); "
                    + (f"did you mean {close[0]}?" if close else f"known keys: {', '.join(sorted(r.decls))}"))
    v = {key: r.value(key) for key in r.decls if key not in SECRET_KEYS}
    if preauth is not None:
        _check_preauth(r, preauth, v["tailnet"])
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
        elif domain in zone_ids:
            r.fail("cloudflareZoneIds", f"lists {domain!r} twice; keep one {domain}=<zone id> entry")
        else:
            zone_ids[domain] = zone_id.strip()
    for d in domains:
        if d not in zone_ids and not any(e.startswith(d + "=") for e in v["cloudflareZoneIds"]):
            r.fail("cloudflareZoneIds", f"has no entry for {d!r}; allowed form: {d}=<zone id>")
    for zone_id in sorted(set(zone_ids.values())):
        # One Cloudflare zone holds one domain (its apex) and that domain's subdomains.
        shared = sorted((d for d, z in zone_ids.items() if z == zone_id), key=len)
        if any(not d.endswith("." + shared[0]) for d in shared[1:]):
            r.fail("cloudflareZoneIds", f"gives zone {zone_id} to {', '.join(shared)}; one Cloudflare zone holds one "
                                        "domain and its subdomains, so give each other domain its own zone id")
    zones = tuple(Zone(d, zone_ids.get(d, "")) for d in domains)

    relay = (v["relayHostname"] or (f"mx2.{domains[0]}" if domains else "")).lower().rstrip(".")
    relay_zone = _zone_of(relay, zones)
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
    if v["drainTransport"] == "wireguard":
        pass  # drainHost, drainPort: see _wireguard
    elif v["drainPort"] == SMTP_PORT:
        r.fail("drainPort", f"{SMTP_PORT} is blocked for egress by Oracle tenancy-wide; allowed: 1..65535 except "
                            f"{SMTP_PORT} (default {r.decls['drainPort']['default']})")
    elif not 1 <= v["drainPort"] <= 65535:
        r.fail("drainPort", f"{v['drainPort']} is outside 1..65535")

    if not MESSAGE_SIZE_MIN <= v["messageSizeLimit"] <= MESSAGE_SIZE_MAX:
        r.fail("messageSizeLimit", f"{v['messageSizeLimit']} is outside {MESSAGE_SIZE_MIN}..{MESSAGE_SIZE_MAX} "
                                   "(10 MB..1 GiB: smtpd wants 1.5 times this free before it takes any message); "
                                   "set the primary's value")

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
    # The pack's invariants, stated where the value is read: the policies refuse the rest.
    if lifetimes.get("queueLifetime", QUEUE_LIFETIME_FLOOR_S) < QUEUE_LIFETIME_FLOOR_S:
        r.fail("queueLifetime", f"{v['queueLifetime']!r} is shorter than 30d, which the pack's mandatory queue-lifetime "
                                "policy refuses (outage mail would expire); allowed: 30d..100d")
    elif lifetimes.get("bounceLifetime", BOUNCE_LIFETIME_S) != BOUNCE_LIFETIME_S:
        r.fail("bounceLifetime", f"{v['bounceLifetime']!r} is not 1d, which the pack's mandatory bounce-lifetime policy "
                                 "requires (the VM can never deliver a bounce, so it must not hold them long); "
                                 "allowed: 1d (also written 24h or 86400s)")

    weights = []
    for site in v["dnsblSites"]:
        problem = dnsbl_site_problem(site)
        if problem:
            r.fail("dnsblSites", f"{site!r}: {problem}; allowed form: zen.spamhaus.org=127.0.0.[2..11]*3")
        else:
            weights.append(_dnsbl_weight(site))
    reachable = sum(w for w in weights if w > 0)
    if v["dnsblThreshold"] < 1:
        r.fail("dnsblThreshold", "must be at least 1")
    elif weights and v["dnsblThreshold"] > reachable:
        r.fail("dnsblThreshold", f"{v['dnsblThreshold']} can never be reached: the dnsblSites weights add up to "
                                 f"{reachable}, so DNSBL would be silently off; allowed: 1..{reachable}")

    if v["accountMode"] not in ACCOUNT_MODES:
        r.fail("accountMode", f"{v['accountMode']!r} is not allowed; allowed: {', '.join(ACCOUNT_MODES)}")
    if v["dnsblAction"] not in DNSBL_ACTIONS:
        r.fail("dnsblAction", f"{v['dnsblAction']!r} is not allowed; allowed: {', '.join(DNSBL_ACTIONS)}")

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
        private = isinstance(vcn, ipaddress.IPv4Network) and any(vcn.subnet_of(n) for n in RFC1918)
        if not private or not 16 <= vcn.prefixlen <= 28:
            r.fail("vcnCidr", f"{v['vcnCidr']!r} must be a private (RFC 1918: 10/8, 172.16/12, 192.168/16) "
                              "IPv4 block between /16 and /28")
        else:
            relay_private_ip = str(vcn.network_address + RELAY_HOST_NUMBER)
    except ValueError:
        r.fail("vcnCidr", f"{v['vcnCidr']!r} is not a CIDR (allowed: e.g. 10.42.0.0/24)")

    try:
        homelab = ipaddress.ip_network(v["homelabCidr"])
        widest = HOMELAB_WIDEST_PUBLIC if homelab.is_global else HOMELAB_WIDEST_PRIVATE
        if homelab.version != 4 or homelab.prefixlen < widest or homelab.is_unspecified or homelab.is_loopback \
                or homelab.is_link_local or homelab.is_multicast or homelab.network_address.is_unspecified:
            r.fail("homelabCidr", f"{v['homelabCidr']!r} must be the homelab's own IPv4 block: a public block of "
                                  f"/{HOMELAB_WIDEST_PUBLIC} or narrower (the exporters open to every host in it), "
                                  f"or a private one of /{HOMELAB_WIDEST_PRIVATE} or narrower")
    except ValueError:
        r.fail("homelabCidr", f"{v['homelabCidr']!r} is not a CIDR (allowed: e.g. 198.51.100.7/32)")

    local, _, email_domain = v["certbotEmail"].rpartition("@")
    if not (re.fullmatch(r"[A-Za-z0-9._+-]{1,64}", local) and _HOSTNAME.match(email_domain.lower())):
        r.fail("certbotEmail", f"{v['certbotEmail']!r} is not a plain e-mail address "
                               "(letters, digits and . _ + - before the @, a domain name after it)")
    _tailnet(r, v)
    if not re.fullmatch(r"tag:[a-z0-9-]+", v["tailnetTag"]):
        r.fail("tailnetTag", f"{v['tailnetTag']!r} must look like tag:backup-mx")
    for key in v["sshAuthorizedKeys"]:
        problem = ssh_key_problem(key)
        if problem:
            r.fail("sshAuthorizedKeys", f"{key[:30]!r}... {problem}")
    if v["drainSourceAddress"] and not _is_ip(v["drainSourceAddress"]):
        r.fail("drainSourceAddress", f"{v['drainSourceAddress']!r} is not an IPv4 address (or empty)")

    wireguard = None
    drain_source = v["drainSourceAddress"]
    if v["drainTransport"] not in DRAIN_TRANSPORTS:
        r.fail("drainTransport", f"{v['drainTransport']!r} is not allowed; allowed: {', '.join(DRAIN_TRANSPORTS)}")
    elif v["drainTransport"] == "wireguard":
        wireguard = _wireguard(r, v, mynetworks, wireguard_key)
        if wireguard is not None:
            drain_host, drain_source = wireguard.primary_address, wireguard.relay_address
    else:
        for key in WIREGUARD_KEYS:
            if v.get(key) or (key == "wireguardPrivateKey" and wireguard_key and wireguard_key.text):
                r.fail(key, "is set but drainTransport is nat; set drainTransport: wireguard, or remove it")

    relays = _relays(r, v, domains, zones, relay, relay_zone, primary, relay_private_ip)
    _drains_somewhere(r, v, relays, drain_host, wireguard)
    mta_sts = _mta_sts(r, v)

    if r.errors:
        raise ConfigError("invalid stack config:\n  " + "\n  ".join(r.errors))
    assert relay_zone is not None  # else relayHostname failed above
    return Settings(
        project=project, domains=tuple(domains), zones=zones, relay_hostname=relay, relay_zone=relay_zone,
        mx_preference=v["mxPreference"], primary_mx_host=primary, primary_mx_preference=v["primaryMxPreference"],
        primary_mynetworks=tuple(mynetworks), drain_host=drain_host,
        drain_port=SMTP_PORT if wireguard else v["drainPort"],
        message_size_limit=v["messageSizeLimit"], queue_lifetime=v["queueLifetime"],
        bounce_lifetime=v["bounceLifetime"], dnsbl_sites=tuple(v["dnsblSites"]),
        dnsbl_threshold=v["dnsblThreshold"], dnsbl_action=v["dnsblAction"], oci_compartment_id=v["ociCompartmentId"],
        oci_region=v["ociRegion"], availability_domain_index=v["availabilityDomainIndex"], shape=v["shape"],
        boot_volume_size_gb=v["bootVolumeSizeGb"], vcn_cidr=v["vcnCidr"], relay_private_ip=relay_private_ip,
        homelab_cidr=str(ipaddress.ip_network(v["homelabCidr"])), break_glass_ssh=v["breakGlassSsh"],
        certbot_email=v["certbotEmail"],
        headscale_login_server=v["headscaleLoginServer"], tailnet_tag=v["tailnetTag"],
        ssh_authorized_keys=tuple(v["sshAuthorizedKeys"]), drain_source_address=drain_source,
        drain_transport=v["drainTransport"], tailnet=v["tailnet"], account_mode=v["accountMode"],
        wireguard=wireguard, relays=relays,
        mta_sts=mta_sts,
        wireguard_private_key=wireguard_private_key,
        headscale_preauth_key=preauth_key,
    )


MESSAGE_SIZE_MIN, MESSAGE_SIZE_MAX = 10 * 1024 * 1024, 1024 * 1024 * 1024
RFC1918 = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
HOMELAB_WIDEST_PUBLIC, HOMELAB_WIDEST_PRIVATE = 24, 16
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_OCTET_PATTERN = re.compile(rf"{_OCTET}|\[{_OCTET}(\.\.{_OCTET})?(;{_OCTET}(\.\.{_OCTET})?)*\]")


def dnsbl_site_problem(site: str) -> str:
    """postscreen_dnsbl_sites entry: domain[=filter][*weight], filter as in Postfix's ip_match
    (four octet patterns, each a number or [n..m;k] list). '' when valid."""
    rest, star, weight = site.partition("*")
    if star and not re.fullmatch(r"-?[0-9]{1,6}", weight):
        return f"weight {weight!r} is not a whole number"
    domain, eq, reply_filter = rest.partition("=")
    if not _HOSTNAME.match(domain.lower()):
        return f"{domain!r} is not a DNSBL domain name"
    if not eq:
        return "has no reply filter, so a resolver's refusal answer (127.255.255.254) would list everyone"
    pattern = _OCTET_PATTERN.pattern
    if not re.fullmatch(rf"({pattern})\.({pattern})\.({pattern})\.({pattern})", reply_filter):
        return f"reply filter {reply_filter!r} is not four octet patterns (n or [n..m;k], each 0..255)"
    for low, high in re.findall(r"(\d+)\.\.(\d+)", reply_filter):
        if int(low) > int(high):
            return f"range {low}..{high} is empty"
    return ""


def _dnsbl_weight(site: str) -> int:
    _, star, weight = site.partition("*")
    return int(weight) if star else 1


def login_server_problem(url: str) -> str:
    from urllib.parse import urlsplit
    if any(c.isspace() or not c.isprintable() for c in url):
        return "contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme != "https":
        return "must use https://"
    if parts.username or parts.password or parts.query or parts.fragment:
        return "must not carry credentials, a query or a fragment"
    if not parts.hostname or not (_HOSTNAME.match(parts.hostname) or _is_ip(parts.hostname)):
        return "has no valid host name"
    if port is not None and not 1 <= port <= 65535:
        return f"has port {port}, outside 1..65535"
    if re.search(r"[\"'`$;&|<>\\]", url):
        return "contains shell or quoting metacharacters"
    return ""


def _routable_drain(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip == ipaddress.ip_address("255.255.255.255"))


DRAIN_TRANSPORTS = ("nat", "wireguard")
WIREGUARD_KEYS = ("wireguardPrivateKey", "wireguardPeerPublicKey", "wireguardEndpoint", "wireguardRelayAddress",
                  "wireguardPrimaryAddress")
_ENDPOINT = re.compile(r"^(?P<host>[^:\s]+):(?P<port>[0-9]{1,5})$")
TUNNEL_RANGES = RFC1918 + [ipaddress.IPv4Network("100.64.0.0/10")]


def _wg_key_problem(text: str) -> str:
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raw = b""
    if len(text) == 44 and len(raw) == 32:
        return ""
    return "is not a WireGuard key (44 characters of base64, as wg genkey/wg pubkey print)"


def _wireguard(r: "_Reader", v: dict, mynetworks: list[str], key: Optional[SecretConfig]) -> Optional[WireGuard]:
    """drainTransport wireguard: every tunnel key present and sane; the WAN-drain keys unset."""
    errors = len(r.errors)
    how = "set it with `pulumi config set --secret wireguardPrivateKey <key>` (from wg genkey)"
    if key is None or key.text is None or not key.text:
        r.fail("wireguardPrivateKey", f"is required with drainTransport wireguard; {how}")
    elif not key.secret:
        r.fail("wireguardPrivateKey", "is stored in plain text in the stack file; remove it there and " + how)
    elif _wg_key_problem(key.text):
        r.fail("wireguardPrivateKey", f"{_wg_key_problem(key.text)}; {how}")
    peer = v["wireguardPeerPublicKey"]
    if not peer:
        r.fail("wireguardPeerPublicKey", "is required with drainTransport wireguard (the firewall's public key)")
    elif _wg_key_problem(peer):
        r.fail("wireguardPeerPublicKey", f"{peer!r} {_wg_key_problem(peer)}")
    endpoint = _ENDPOINT.match(v["wireguardEndpoint"])
    if not endpoint or not (_HOSTNAME.match(endpoint["host"].lower()) or _is_ip(endpoint["host"])) \
            or not 1 <= int(endpoint["port"]) <= 65535:
        r.fail("wireguardEndpoint", f"{v['wireguardEndpoint']!r} is not host:port (allowed: e.g. "
                                    "home.example.net:51820 or 198.51.100.7:51820)")
    addresses = {}
    for name in ("wireguardRelayAddress", "wireguardPrimaryAddress"):
        text = v[name]
        if not _is_ip(text) or not any(ipaddress.IPv4Address(text) in n for n in TUNNEL_RANGES):
            r.fail(name, f"{text!r} is not a private IPv4 tunnel address (allowed: RFC 1918 or 100.64.0.0/10, "
                         "e.g. 10.253.0.20)")
        else:
            addresses[name] = ipaddress.IPv4Address(text)
    relay, primary = addresses.get("wireguardRelayAddress"), addresses.get("wireguardPrimaryAddress")
    if relay and primary and relay == primary:
        r.fail("wireguardRelayAddress", "equals wireguardPrimaryAddress; the relay and the primary need their own")
    if relay and any(relay in ipaddress.ip_network(n) for n in mynetworks):
        r.fail("wireguardRelayAddress", f"{relay} lies inside primaryMynetworks; the primary must see the relay as "
                                        "a stranger with per-stage exemptions, never as mynetworks")
    if relay and _is_cidr(v["vcnCidr"]) and relay in ipaddress.ip_network(v["vcnCidr"], strict=False):
        r.fail("wireguardRelayAddress", f"{relay} lies inside vcnCidr {v['vcnCidr']}; pick a tunnel address "
                                        "outside the VCN")
    for name in ("drainHost", "drainSourceAddress"):
        if r.given(name):
            r.fail(name, "applies to drainTransport nat only; with wireguard the relay drains to "
                         "wireguardPrimaryAddress and the primary sees wireguardRelayAddress. Remove it")
    if r.given("drainPort"):
        r.fail("drainPort", f"applies to drainTransport nat only; with wireguard the drain is port {SMTP_PORT} "
                            "inside the tunnel. Remove it")
    if len(r.errors) > errors or relay is None or primary is None or endpoint is None:
        return None
    return WireGuard(peer_public_key=peer, endpoint=v["wireguardEndpoint"], relay_address=str(relay),
                     primary_address=str(primary))


def _drains_somewhere(r: _Reader, v: dict, relays: tuple[RelaySpec, ...], drain_host: str,
                      wireguard: Optional[WireGuard]) -> None:
    """The drain target, over NAT or the tunnel, is never loopback, never a relay (by any of
    its names or addresses), and never inside the relay's VCN, where only relays live: any of
    those holds every message until it expires. The WireGuard endpoint likewise, and never an
    address inside the tunnel, which can only be reached through the tunnel itself."""
    names = {x.hostname for x in relays} | {"localhost"}
    addresses = {x.private_ip for x in relays}
    vcn = ipaddress.ip_network(v["vcnCidr"], strict=False) if _is_cidr(v["vcnCidr"]) else None

    def problem(host: str) -> str:
        host = host.lower().rstrip(".")
        if host in names or host.endswith(".localhost"):
            return f"{host!r} is a relay of this stack (or localhost), not the primary"
        if _is_ip(host):
            ip = ipaddress.IPv4Address(host)
            if str(ip) in addresses or (vcn is not None and ip in vcn):
                return f"{host} lies inside vcnCidr {v['vcnCidr']}, where only the relays live"
            if not _routable_drain(ip):
                return f"{host} is no host at all (loopback, unspecified, link-local, multicast)"
        return ""

    if wireguard is None:
        why = problem(drain_host)
        if why and v["drainTransport"] == "nat":
            r.fail("drainHost", f"{why}: the relay would drain to itself or nowhere until every message expires; allowed: "
                                "the primary's public name or address, or its tailnet address")
        return
    endpoint = wireguard.endpoint.rpartition(":")[0]
    tunnel = {wireguard.primary_address, wireguard.relay_address}
    why = problem(endpoint) or (f"{endpoint} is inside the tunnel (AllowedIPs {wireguard.allowed_ips}), "
                                "which only the tunnel itself reaches" if endpoint in tunnel else "")
    if why:
        r.fail("wireguardEndpoint", f"{why}; allowed: the firewall's public name or address and its WireGuard "
                                    "port, e.g. home.example.net:51820")
    why = problem(wireguard.primary_address)
    if why:
        r.fail("wireguardPrimaryAddress", f"{why}: the relay would drain to itself; allowed: the primary's "
                                          "address inside the tunnel, outside vcnCidr")


def _zone_of(host: str, zones: tuple[Zone, ...]) -> Optional[Zone]:
    """The most specific protected zone the host lies in (its A record goes there)."""
    return next((z for z in sorted(zones, key=lambda z: -len(z.domain)) if host.endswith("." + z.domain)), None)


MTA_STS_MODES = ("off", "testing", "enforce")
MTA_STS_MAX_AGE = (86400, 31557600)  # a day .. RFC 8461's cap (about a year)
MTA_STS_KEYS = ("tlsRptRua", "cloudflareAccountId")


def _mta_sts(r: _Reader, v: dict) -> Optional[MtaSts]:
    mode = v["mtaSts"]
    if mode not in MTA_STS_MODES:
        r.fail("mtaSts", f"{mode!r} is not allowed; allowed: {', '.join(MTA_STS_MODES)}")
        return None
    if mode == "off":
        for key in (*MTA_STS_KEYS, "mtaStsMaxAge"):
            if r.given(key):
                r.fail(key, "is set but mtaSts is off; set mtaSts: testing (then enforce), or remove it")
        return None
    errors = len(r.errors)
    low, high = MTA_STS_MAX_AGE
    if not low <= v["mtaStsMaxAge"] <= high:
        r.fail("mtaStsMaxAge", f"{v['mtaStsMaxAge']} is outside {low}..{high} seconds (a day .. RFC 8461's cap)")
    rua = v["tlsRptRua"]
    if not rua:
        r.fail("tlsRptRua", f"is required with mtaSts {mode}: where senders send TLS reports, e.g. "
                            "mailto:tls-reports@example.net")
    if rua:
        problem = tls_rpt_rua_problem(rua)
        if problem:
            r.fail("tlsRptRua", f"{problem}; allowed: one or more mailto: addresses or https:// URLs "
                                "separated by commas, e.g. mailto:tls-reports@example.net")
    if not re.fullmatch(r"[0-9a-f]{32}", v["cloudflareAccountId"]):
        r.fail("cloudflareAccountId", f"{v['cloudflareAccountId']!r} is not a Cloudflare account id (32 hex digits); "
                                      f"required with mtaSts {mode}: the policy is served by a Worker in that account")
    if len(r.errors) > errors:
        return None
    return MtaSts(mode=mode, max_age=v["mtaStsMaxAge"], tls_rpt_rua=",".join(_TLS_RPT_SEP.split(rua.strip())),
                  account_id=v["cloudflareAccountId"])


# RFC 8460 section 3: tlsrpt-rua = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri), where
# tlsrpt-uri is a URI (RFC 3986) of scheme mailto or https, with "," and ";" percent-encoded.
_TLS_RPT_SEP = re.compile(r"[ \t]*,[ \t]*")


def tls_rpt_rua_problem(rua: str) -> str:
    """'' when `rua` is the value part of an RFC 8460 rua field; else what is wrong."""
    for uri in _TLS_RPT_SEP.split(rua.strip(" \t")):
        if not uri:
            return f"{rua!r} has an empty entry (a leading, trailing or doubled comma)"
        if re.search(r"[\s;!]", uri) or not (_mailto_ok(uri) or (uri.startswith("https://")
                                                                 and not login_server_problem(uri))):
            return f"{uri!r} is not a mailto: address or an https:// URL (RFC 8460 section 3)"
    return ""


def _mailto_ok(uri: str) -> bool:
    local, _, domain = uri.removeprefix("mailto:").rpartition("@")
    return uri.startswith("mailto:") and bool(re.fullmatch(r"[A-Za-z0-9._+-]{1,64}", local)) \
        and bool(_HOSTNAME.match(domain.lower()))


SECOND_RELAY_KEYS = ("secondRelayHostname", "secondMxPreference")


def _relays(r: _Reader, v: dict, domains: list[str], zones: tuple[Zone, ...], first: str,
            first_zone: Optional[Zone], primary: str, first_ip: str) -> tuple[RelaySpec, ...]:
    """relayCount: one relay (as before), or two on separate fault domains with their own names."""
    count = v["relayCount"]
    if count not in RELAY_COUNTS:
        r.fail("relayCount", f"{count} is not allowed; allowed: 1, 2 (Always-Free allows two E2.1.Micro instances)")
        return ()
    if first_zone is None or not first_ip:
        return ()  # relayHostname or vcnCidr failed; named above
    if count == 1:
        for key in SECOND_RELAY_KEYS:
            if r.given(key):
                r.fail(key, "is set but relayCount is 1; set relayCount: 2, or remove it")
        return (RelaySpec(first, first_ip, v["mxPreference"], first_zone, None),)
    errors = len(r.errors)
    second = (v["secondRelayHostname"] or (f"mx3.{domains[0]}" if domains else "")).lower().rstrip(".")
    second_zone = _zone_of(second, zones)
    if not _HOSTNAME.match(second):
        r.fail("secondRelayHostname", f"{second!r} is not a host name")
    elif second_zone is None:
        r.fail("secondRelayHostname", f"{second!r} must lie inside one of domains {domains} (its A record goes there)")
    elif second in (first, primary):
        r.fail("secondRelayHostname", f"{second!r} is already {'relayHostname' if second == first else 'primaryMxHost'}"
                                      "; each relay needs its own name (e.g. mx3.<domain>)")
    preference = v["secondMxPreference"] or v["mxPreference"]
    if not 0 <= preference <= 65535:
        r.fail("secondMxPreference", f"{preference} is outside 1..65535 (0 means equal to mxPreference)")
    elif preference <= v["primaryMxPreference"]:
        r.fail("secondMxPreference", f"{preference} must be greater than primaryMxPreference "
                                     f"({v['primaryMxPreference']}) so senders try the primary first")
    if v["bootVolumeSizeGb"] * count > ALWAYS_FREE_STORAGE_GB:
        r.fail("bootVolumeSizeGb", f"{v['bootVolumeSizeGb']} GB per relay is {v['bootVolumeSizeGb'] * count} GB for "
                                   f"{count} relays, over Always-Free's {ALWAYS_FREE_STORAGE_GB} GB; allowed with "
                                   f"relayCount {count}: {BOOT_VOLUME_MIN_GB}..{ALWAYS_FREE_STORAGE_GB // count}")
    if v["drainTransport"] != "nat":
        r.fail("relayCount", "2 works with drainTransport nat only (each relay would need its own WireGuard key and "
                             "tunnel address, which this version does not render); allowed with wireguard: 1")
    if v["drainSourceAddress"]:
        r.fail("drainSourceAddress", "names one address, but with relayCount 2 each relay drains from its own "
                                     "reserved IP; remove it")
    if len(r.errors) > errors or second_zone is None:
        return ()
    second_ip = str(ipaddress.IPv4Address(first_ip) + 1)
    return (RelaySpec(first, first_ip, v["mxPreference"], first_zone, FAULT_DOMAINS[0]),
            RelaySpec(second, second_ip, preference, second_zone, FAULT_DOMAINS[1]))


def _is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
        return True
    except ValueError:
        return False


def _tailnet(r: _Reader, v: dict) -> None:
    """headscale needs its login server; tailscale and none take none (Tailscale's own control
    server is the client's default)."""
    tailnet, server = v["tailnet"], v["headscaleLoginServer"]
    if tailnet not in TAILNETS:
        r.fail("tailnet", f"{tailnet!r} is not allowed; allowed: {', '.join(TAILNETS)}")
    elif tailnet == "headscale" and not server:
        r.fail("headscaleLoginServer", "is required with tailnet headscale: the https URL of your headscale server "
                                       "(or set tailnet: tailscale, or none)")
    elif tailnet == "headscale" and login_server_problem(server):
        r.fail("headscaleLoginServer", f"{server!r} {login_server_problem(server)}; allowed: https://host[:port][/path]")
    elif tailnet != "headscale" and server:
        r.fail("headscaleLoginServer", f"is set but tailnet is {tailnet}; set tailnet: headscale, or remove it")


def _check_preauth(r: _Reader, key: SecretConfig, tailnet: str) -> None:
    how = "set it with `pulumi config set --secret headscalePreauthKey <key>`"
    if tailnet not in TAILNETS:
        return  # tailnet is named above
    if tailnet == "none":
        if key.text:
            r.fail("headscalePreauthKey", "is set but tailnet is none, so nothing would use it; remove it with "
                                          "`pulumi config rm headscalePreauthKey`, or set tailnet: headscale or "
                                          "tailscale")
        return
    kind = "a headscale preauth key" if tailnet == "headscale" else "a Tailscale auth key tagged with tailnetTag"
    if not key.text and not key.secret:
        r.fail("headscalePreauthKey", f"is required with tailnet {tailnet} ({kind}); {how}, or set tailnet: none")
    elif not key.secret:
        r.fail("headscalePreauthKey", "is stored in plain text in the stack file; remove it there and " + how)
    elif not key.text:
        r.fail("headscalePreauthKey", f"is empty; {how} (a single-use key that expires within a day)")
    elif any(c.isspace() or not c.isprintable() for c in key.text):
        r.fail("headscalePreauthKey", f"contains whitespace or control characters (a paste error?); {how}")


def _is_ip(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False
