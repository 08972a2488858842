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
POSTSCREEN_MAP = "/etc/postfix/backup_mx_postscreen.cidr"
# Where each kind of primary keeps what the snippets change. mailcow: its documented
# overrides, data/conf/postfix/extra.cf for main.cf and custom_postscreen_whitelist.cidr,
# which its postscreen_access_list already reads (mailcow's docs, "Postscreen whitelist").
PLACEMENT = {
    "debian": {
        "mainCf": "/etc/postfix/main.cf (postconf -e, or edit it)",
        "maps": "/etc/postfix/ (cidr tables need no postmap)",
        "postscreen": f"{POSTSCREEN_MAP}, named in postscreen_access_list right after permit_mynetworks",
        "reload": "postfix reload",
    },
    "mailcow": {
        "mainCf": "data/conf/postfix/extra.cf (the checkClientAccess and anvil lines; map paths /opt/postfix/conf/...)",
        "maps": "data/conf/postfix/ (seen as /opt/postfix/conf/ inside the postfix-mailcow container)",
        "postscreen": "append the postscreen mapContent rows to data/conf/postfix/custom_postscreen_whitelist.cidr; "
                      "mailcow's postscreen_access_list already reads that file",
        "reload": "docker compose exec postfix-mailcow postfix reload",
    },
}


# A port forward's target is an address on the LAN, which the stack cannot know: the user
# fills it in (the Linux rule reads it from $PRIMARY_LAN).
LAN_TARGET = "<the primary's LAN address>"


def _nat_rule(s: Settings, relays: list[tuple[str, str]]) -> dict:
    """pfSense: one WAN port forward; with several relays its source is a host alias listing them."""
    rule = {
        "interface": "WAN",
        "protocol": "tcp",
        "source": f"{relays[0][1]}/32" if len(relays) == 1 else PFSENSE_ALIAS,
        "destinationPort": s.drain_port,
        "target": LAN_TARGET,
        "targetPort": SMTP_PORT,
        "description": f"backup MX drain: {', '.join(host for host, _ in relays)} -> primary SMTP",
        "menu": "Firewall > NAT > Port Forward (with the associated filter rule)",
    }
    if len(relays) > 1:
        rule["alias"] = {"name": PFSENSE_ALIAS, "type": "host", "addresses": [ip for _, ip in relays],
                         "note": "Firewall > Aliases: one host alias with every relay's address"}
    return rule


def _opnsense_rule(s: Settings, relays: list[tuple[str, str]]) -> dict:
    """OPNsense: the same forward, in its own field names."""
    rule = {
        "interface": "WAN", "protocol": "TCP", "source": [f"{ip}/32" for _, ip in relays],
        "destination": "WAN address", "destinationPort": s.drain_port,
        "redirectTargetIp": LAN_TARGET, "redirectTargetPort": SMTP_PORT,
        "description": f"backup MX drain: {', '.join(host for host, _ in relays)} -> primary SMTP",
        "menu": "Firewall > NAT > Port Forward, Filter rule association: Add associated filter rule",
    }
    if len(relays) > 1:
        rule["source"] = PFSENSE_ALIAS
        rule["alias"] = {"name": PFSENSE_ALIAS, "type": "Host(s)", "content": [ip for _, ip in relays],
                         "note": "Firewall > Aliases"}
    return rule


def linux_nat(s: Settings, relays: list[tuple[str, str]]) -> str:
    """A plain Linux router (iptables, on Debian 12 its nftables backend): DNAT of the drain
    port from the relays only to the primary's port 25, and the forward that lets it through."""
    lines = ["# Linux router: WAN is the WAN interface, PRIMARY_LAN the primary's LAN address.",
             ': "${WAN:?set WAN to the WAN interface}" "${PRIMARY_LAN:?set PRIMARY_LAN to the LAN address of the primary}"']
    for host, ip in relays:
        lines += [f"# {host}",
                  f'iptables -t nat -A PREROUTING -i "$WAN" -p tcp -s {ip}/32 --dport {s.drain_port} '
                  f'-j DNAT --to-destination "$PRIMARY_LAN:{SMTP_PORT}"',
                  # DNAT: only flows this forward rewrote, never a packet sent to the LAN address itself
                  f'iptables -A FORWARD -i "$WAN" -p tcp -s {ip}/32 -d "$PRIMARY_LAN" --dport {SMTP_PORT} '
                  "-m conntrack --ctstate DNAT -j ACCEPT"]
    lines.append("iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")
    return "\n".join(lines) + "\n"


def nat_rules(s: Settings, relays: list[tuple[str, str]]) -> dict:
    return {"pfsense": _nat_rule(s, relays), "opnsense": _opnsense_rule(s, relays),
            "linux": {"iptables": linux_nat(s, relays),
                      "note": "persist with iptables-save > /etc/iptables/rules.v4 (iptables-persistent)"}}


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


# rspamd on the primary: score drained mail against the original sender, never reject it.
EXTERNAL_RELAY_CONF = (
    "# /etc/rspamd/local.d/external_relay.conf: score drained mail against the original sender's IP\n"
    "# (the ip_map strategy is newer than rspamd 3.4; the module ships disabled)\n"
    "enabled = true;\n"
    "rules {\n"
    "  BACKUP_MX {\n"
    '    strategy = "ip_map";\n'
    f'    ip_map = "{RSPAMD_MAP}";\n'
    "  }\n"
    "}\n")
FORCE_ACTIONS_CONF = (
    "# /etc/rspamd/local.d/force_actions.conf: drained spam is tagged and folded, never rejected\n"
    "rules {\n"
    "  BACKUP_MX_NO_REJECT {\n"
    '    action = "add header";\n'
    '    expression = "BACKUP_MX";\n'
    '    require_action = ["reject", "soft reject"];\n'
    '    message = "drained via the backup MX: tagged instead of rejected";\n'
    "  }\n"
    "}\n")


def _postfix_exemptions(cidrs: list[str]) -> dict:
    """The primary's Postfix stages that must pass the relay: its own restrictions, postscreen
    (where it runs one) and anvil's rate limits. Never mynetworks."""
    restriction = f"check_client_access cidr:{CIDR_MAP}"
    map_content = "".join(f"{cidr} OK\n" for cidr in cidrs)
    return {
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
        "postscreen": {
            "parameter": "postscreen_access_list",
            "mapFile": POSTSCREEN_MAP,
            "mapContent": "".join(f"{cidr} permit\n" for cidr in cidrs),
            "value": f"permit_mynetworks, cidr:{POSTSCREEN_MAP}",
            "placement": ("only on a primary that runs postscreen (mailcow, docker-mailserver, a postscreen "
                          "master.cf): right after permit_mynetworks, so the relay skips the DNSBL and "
                          "greeting tests; a DNSBL that lists an Oracle address otherwise defers every drain"),
            "text": (f"# {POSTSCREEN_MAP}\n" + "".join(f"{cidr} permit\n" for cidr in cidrs) +
                     f"\n# main.cf: after permit_mynetworks, before the rest of the list\n"
                     f"postscreen_access_list = permit_mynetworks, cidr:{POSTSCREEN_MAP}, <rest of the list>\n"),
        },
        "anvil": {
            "parameter": "smtpd_client_event_limit_exceptions",
            "value": " ".join(["$mynetworks", *cidrs]),
            "text": f"smtpd_client_event_limit_exceptions = {' '.join(['$mynetworks', *cidrs])}\n",
        },
    }


def enablement(s: Settings, relays: list[tuple[str, str]], relay_public_key: str = "") -> dict:
    """relays: (hostname, the address the primary sees) of every relay, the first first."""
    cidrs = [f"{ip}/32" for _, ip in relays]
    spf_skip = ",".join(["127.0.0.0/8,::ffff:127.0.0.0/104,::1", *cidrs])
    return {
        "address": relays[0][1],  # the first relay (the one a single-relay stack has)
        "addresses": [ip for _, ip in relays],
        "postfix": _postfix_exemptions(cidrs),
        "placement": PLACEMENT,
        "policydSpf": {
            "file": "/etc/postfix-policyd-spf-python/policyd-spf.conf",
            "skipAddresses": spf_skip,
            "text": f"skip_addresses = {spf_skip}\n",
        },
        "rspamd": {
            "externalRelayConf": EXTERNAL_RELAY_CONF,
            "forceActionsConf": FORCE_ACTIONS_CONF,
            "relayMap": {"file": RSPAMD_MAP, "content": "".join(f"{ip}\n" for _, ip in relays)},
        },
        **({"wireguardPeer": firewall_peer(s, relay_public_key)} if s.wireguard else {
            "pfsense": _nat_rule(s, relays), "natRules": nat_rules(s, relays)}),
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
