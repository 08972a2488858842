"""Primary-side drain enablement, keyed to the relay's address: ready-to-paste text plus data.

The drained stream is exempted at each stage that would otherwise refuse or misjudge it:
FCrDNS/spoof checks (check_client_access), anvil rate limits, policyd-spf, and rspamd
(score the original sender's IP; never reject drained mail, which would force the relay to
emit backscatter it cannot deliver). The relay is never added to the primary's mynetworks.
"""
from __future__ import annotations

from .facts import SIZE_HEADROOM, SMTP_PORT
from .settings import Settings

CIDR_MAP = "/etc/postfix/backup_mx_clients.cidr"
RSPAMD_MAP = "/etc/rspamd/local.d/backup_mx_relays.map"


def _nat_rule(s: Settings, relays: list[tuple[str, str]]) -> dict:
    """One WAN port forward; with several relays its source is a host alias listing them."""
    rule = {
        "interface": "WAN",
        "protocol": "tcp",
        "source": f"{relays[0][1]}/32" if len(relays) == 1 else PFSENSE_ALIAS,
        "destinationPort": s.drain_port,
        "target": s.primary_mx_host,
        "targetPort": SMTP_PORT,
        "description": f"backup MX drain: {', '.join(host for host, _ in relays)} -> primary SMTP",
    }
    if len(relays) > 1:
        rule["alias"] = {"name": PFSENSE_ALIAS, "type": "host", "addresses": [ip for _, ip in relays],
                         "note": "Firewall > Aliases: one host alias with every relay's address"}
    return rule


def firewall_peer(s: Settings, relay_public_key: str) -> dict:
    """drainTransport wireguard: the relay as a peer of the homelab firewall, as data."""
    assert s.wireguard is not None
    return {
        "publicKey": relay_public_key,
        "allowedIps": f"{s.wireguard.relay_address}/32",
        "tunnelAddress": s.wireguard.relay_address,
        "primaryAddress": s.wireguard.primary_address,
        "persistentKeepalive": None,  # the relay keeps the path open; the firewall needs none
        "endpoint": None,  # road warrior: the relay dials in from Oracle's NAT
        "note": ("add this peer to the firewall's package configuration (pfSense: VPN > WireGuard > Peers), "
                 "not by hand to a generated file: the firewall regenerates its WireGuard config on reboot, "
                 "and a peer added outside the package is lost (post-mortem 2026-07-18)"),
    }


PFSENSE_ALIAS = "BACKUP_MX_RELAYS"


def enablement(s: Settings, relays: list[tuple[str, str]], relay_public_key: str = "") -> dict:
    """relays: (hostname, the address the primary sees) of every relay, the first first."""
    cidrs = [f"{ip}/32" for _, ip in relays]
    restriction = f"check_client_access cidr:{CIDR_MAP}"
    spf_skip = ",".join(["127.0.0.0/8,::ffff:127.0.0.0/104,::1", *cidrs])
    map_content = "".join(f"{cidr} OK\n" for cidr in cidrs)
    external_relay = (
        "# /etc/rspamd/local.d/external_relay.conf: score drained mail against the original sender's IP\n"
        "# (the ip_map strategy is newer than rspamd 3.4; the module ships disabled)\n"
        "enabled = true;\n"
        "rules {\n"
        "  BACKUP_MX {\n"
        '    strategy = "ip_map";\n'
        f'    ip_map = "{RSPAMD_MAP}";\n'
        "  }\n"
        "}\n")
    force_actions = (
        "# /etc/rspamd/local.d/force_actions.conf: drained spam is tagged and folded, never rejected\n"
        "rules {\n"
        "  BACKUP_MX_NO_REJECT {\n"
        '    action = "add header";\n'
        '    expression = "BACKUP_MX";\n'
        '    require_action = ["reject", "soft reject"];\n'
        '    message = "drained via the backup MX: tagged instead of rejected";\n'
        "  }\n"
        "}\n")
    return {
        "address": relays[0][1],  # the first relay, as before relayCount
        "addresses": [ip for _, ip in relays],
        "postfix": {
            "checkClientAccess": {
                "mapFile": CIDR_MAP,
                "mapContent": map_content,
                "restriction": restriction,
                "placement": ("first element of smtpd_sender_restrictions, the stage where "
                              "reject_unknown_client_hostname and the sender spoof check sit on the primary "
                              "(and of smtpd_client_restrictions if they sit there)"),
                "text": (f"# {CIDR_MAP}\n{map_content}\n# main.cf: prepend to the restriction list that holds "
                         f"reject_unknown_client_hostname\nsmtpd_sender_restrictions = {restriction}, <existing list>\n"),
            },
            "anvil": {
                "parameter": "smtpd_client_event_limit_exceptions",
                "value": " ".join(["$mynetworks", *cidrs]),
                "text": f"smtpd_client_event_limit_exceptions = {' '.join(['$mynetworks', *cidrs])}\n",
            },
        },
        "policydSpf": {
            "file": "/etc/postfix-policyd-spf-python/policyd-spf.conf",
            "skipAddresses": spf_skip,
            "text": f"skip_addresses = {spf_skip}\n",
        },
        "rspamd": {
            "externalRelayConf": external_relay,
            "forceActionsConf": force_actions,
            "relayMap": {"file": RSPAMD_MAP, "content": "".join(f"{ip}\n" for _, ip in relays)},
        },
        **({"wireguardPeer": firewall_peer(s, relay_public_key)} if s.wireguard else {"pfsense": _nat_rule(s, relays)}),
        "messageSize": {
            "parameter": "message_size_limit",
            "value": s.message_size_limit,
            "relayAccepts": s.relay_message_size_limit,
            "text": (f"message_size_limit = {s.message_size_limit}\n"
                     f"# at least this (stack config messageSizeLimit): the relay accepts at most "
                     f"{s.relay_message_size_limit} bytes, {SIZE_HEADROOM} below it, so what the relay and this "
                     "primary add to a message still fits\n"),
        },
        "neverMynetworks": True,
    }
