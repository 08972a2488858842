"""The stack config, read once into one typed, validated object.

Key names, types and defaults come from the `config:` block of Pulumi.yaml, so the project
file is the single declaration; these modules add the rules Pulumi's types cannot express and
fail with every bad key named at once. The layers, each importing only those below it:

- components/grammar.py, components/postfix_grammar.py: value grammars (host names, URLs,
  SSH keys; Postfix times and DNSBL entries);
- reader.py: the config as the Pulumi CLI hands it to the program, typed, errors collected;
- model.py: the frozen dataclasses the renderers read;
- one checker per area, as the pack is split: dns.py (relays and DNS), network.py, mail.py,
  tunnel.py, mtasts.py, access.py;
- this module: load(), which only assembles.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

from ..facts import SMTP_PORT
from ..postfix_grammar import postfix_seconds
from . import access, dns, mail, mtasts, network, tunnel
from .access import SECRET_KEYS, TAILNETS, required_secrets
from .mail import DNSBL_ACTIONS, MESSAGE_SIZE_MAX, MESSAGE_SIZE_MIN, RECIPIENT_MODES
from .model import MtaSts, RelaySpec, SecretConfig, Settings, WireGuard, Zone
from .reader import PROJECT_FILE, ConfigError, Reader, declarations

__all__ = ["ConfigError", "DNSBL_ACTIONS", "MESSAGE_SIZE_MAX", "MESSAGE_SIZE_MIN", "MtaSts", "PROJECT_FILE",
           "RECIPIENT_MODES",
           "RelaySpec", "SECRET_KEYS", "SecretConfig", "Settings", "TAILNETS", "WireGuard", "Zone",
           "declarations", "load", "postfix_seconds", "required_secrets"]


def load(project: str, raw: Callable[[str], Optional[str]], *, keys: Iterable[str] = (),
         decls: Optional[dict[str, dict]] = None, tailnet_key: Optional[SecretConfig] = None,
         tailnet_key_alias: Optional[SecretConfig] = None, wireguard_key: Optional[SecretConfig] = None) -> Settings:
    """Build Settings from raw config strings; raise ConfigError naming every bad key. `keys`
    are the names the stack sets in the project's namespace. The two secrets are checked
    without ever being echoed, and the renderers get their `rendered` value (a secret Output in
    the program)."""
    r = Reader(project, raw, decls or declarations())
    r.undeclared(keys)
    v = r.values(skip=SECRET_KEYS)
    key_name, tailnet_key = access.tailnet_key(r, tailnet_key, tailnet_key_alias)
    access.check_tailnet_key(r, tailnet_key, v["tailnet"], key_name)
    r.stop_if_failed()

    domains, zones = dns.domains_and_zones(r, v)
    relay, relay_zone, primary = dns.names(r, v, domains, zones)
    net = network.check(r, v, primary)
    dnsbl_action = mail.check(r, v)
    access.check(r, v)
    wireguard = tunnel.check(r, v, net.mynetworks, wireguard_key)
    relays = dns.relays(r, v, domains, zones, relay, relay_zone, primary, net.relay_private_ip)
    drain_host = wireguard.primary_address if wireguard else net.drain_host
    network.drains_somewhere(r, v, relays, drain_host, wireguard)
    mta_sts = mtasts.check(r, v)
    r.stop_if_failed()
    assert relays  # else relayHostname, vcnCidr or relayCount failed above

    return Settings(
        project=project, domains=tuple(domains), zones=zones,
        primary_mx_host=primary, primary_mx_preference=v["primaryMxPreference"],
        primary_mynetworks=net.mynetworks, drain_host=drain_host,
        drain_port=SMTP_PORT if wireguard else v["drainPort"],
        message_size_limit=v["messageSizeLimit"], queue_lifetime=v["queueLifetime"],
        bounce_lifetime=v["bounceLifetime"], dnsbl_sites=tuple(v["dnsblSites"]),
        dnsbl_threshold=v["dnsblThreshold"], dnsbl_action=dnsbl_action, oci_compartment_id=v["ociCompartmentId"],
        oci_region=v["ociRegion"], availability_domain_index=v["availabilityDomainIndex"], shape=v["shape"],
        boot_volume_size_gb=v["bootVolumeSizeGb"], vcn_cidr=v["vcnCidr"],
        homelab_cidr=net.homelab_cidr, break_glass_ssh=v["breakGlassSsh"], certbot_email=v["certbotEmail"],
        headscale_login_server=v["headscaleLoginServer"], tailnet_tag=v["tailnetTag"],
        ssh_authorized_keys=tuple(v["sshAuthorizedKeys"]),
        drain_source_address=wireguard.relay_address if wireguard else v["drainSourceAddress"],
        drain_transport=v["drainTransport"], tailnet=v["tailnet"], account_mode=v["accountMode"],
        recipients=v["recipients"], recipient_list_url=v["recipientListUrl"],
        wireguard=wireguard, relays=relays, mta_sts=mta_sts,
        wireguard_private_key=wireguard_key.rendered if wireguard_key else None,
        headscale_preauth_key=tailnet_key.rendered if tailnet_key else None,
    )
