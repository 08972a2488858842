"""The settings model: frozen dataclasses, built once by load() and read by every renderer.

Per-relay facts (name, private address, MX preference, zone, fault domain) live on RelaySpec
only: a renderer of one relay's files takes (settings, relay). The first relay is relays[0].
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..facts import SIZE_HEADROOM


@dataclass(frozen=True)
class SecretConfig:
    """A secret config value as the program sees it: its text and whether the stack stores it
    encrypted (both checked, never echoed), and the value the renderers get (a secret Output in
    the program; the text itself when None)."""
    text: Optional[str]
    secret: bool
    value: Any = field(default=None, repr=False, compare=False)

    @property
    def rendered(self) -> Any:
        return self.text if self.value is None else self.value


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
    recipients: str = "catchall"
    recipient_list_url: str = ""  # recipients list only
    wireguard: Optional[WireGuard] = None
    relays: tuple[RelaySpec, ...] = ()  # every relay, the first first (never empty once loaded)
    mta_sts: Optional[MtaSts] = None  # None: mtaSts off
    # What the renderers get for the two secrets (secret Outputs in the program), never compared.
    wireguard_private_key: Any = field(repr=False, compare=False, default=None)
    headscale_preauth_key: Any = field(repr=False, compare=False, default=None)

    @property
    def vcn_dns_label(self) -> str:
        """OCI DNS label: letters and digits of the first relay's first label, at most 15."""
        return "".join(c for c in self.relays[0].hostname.split(".")[0] if c.isalnum())[:15] or "backupmx"

    @property
    def relay_message_size_limit(self) -> int:
        """The largest message the relay accepts: the primary's limit less the headroom."""
        return self.message_size_limit - SIZE_HEADROOM

    @property
    def drain_target(self) -> str:
        return f"[{self.drain_host}]:{self.drain_port}"

    def public_props(self) -> dict[str, Any]:
        """The resolved settings as component props (wire names; no secrets). The relay's own
        keys are the first relay's."""
        first = self.relays[0]
        return {
            "domains": list(self.domains),
            "zones": [{"domain": z.domain, "zoneId": z.zone_id} for z in self.zones],
            "relayHostname": first.hostname,
            "mxPreference": first.mx_preference,
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
            "relayPrivateIp": first.private_ip,
            "tailnet": self.tailnet,
            "tailnetTag": self.tailnet_tag,
            "mtaSts": self.mta_sts.mode if self.mta_sts else "off",
        }
