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
        "rspamd": "the relay as a mailcow forwarding host with its spam filter on (the admin UI's Forwarding "
                  "hosts, kept in redis as WHITELISTED_FWD_HOST): mailcow's own force_actions.conf then tags "
                  "what it would reject from that host and lets through what it would greylist; no rspamd "
                  "file of mailcow's is replaced, and the Debian rspamd files are not used",
        # extra.cf is appended to main.cf when the container starts; a reload does not read it
        "reload": "docker compose restart postfix-mailcow",
    },
}
# mailcow's forwarding hosts: a redis hash of host -> source, and KEEP_SPAM for hosts whose mail
# skips the filter (mailcow's functions.fwdhost.inc.php). The relay is kept out of KEEP_SPAM.
MAILCOW_FWD_HOSTS, MAILCOW_KEEP_SPAM = "WHITELISTED_FWD_HOST", "KEEP_SPAM"
MAILCOW_CONF, MAILCOW_CONTAINER_CONF = "data/conf/postfix", "/opt/postfix/conf"
# The restriction lists that can defer drained mail: the sender stage (FCrDNS, spoof and
# sender-domain checks) and the recipient stage (mailcow has shipped
# reject_unknown_reverse_client_hostname there). Each gets the exemption as its first element.
EXEMPTED_LISTS = ("smtpd_sender_restrictions", "smtpd_recipient_restrictions")
# An OK at the recipient stage must not open the relay: Postfix checks smtpd_relay_restrictions
# first, and it has to end relaying with reject_ or defer_unauth_destination.
RELAY_GUARD = (
    'case "$relay" in *_unauth_destination*) ;; *) echo "smtpd_relay_restrictions has no '
    'reject_unauth_destination: add it there before exempting the backup MX" >&2; exit 1 ;; esac\n')


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
                          "(and of smtpd_client_restrictions if they sit there), and of smtpd_recipient_restrictions "
                          "where that list holds reject_unknown_reverse_client_hostname, as mailcow's has; "
                          "postfix.script does every stage"),
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


def _rows(cidrs: list[str], action: str) -> str:
    return "".join(f"{cidr} {action}\\n" for cidr in cidrs)


def debian_script(cidrs: list[str]) -> str:
    """Debian/Ubuntu Postfix: every exemption, read from and written to the live main.cf with
    postconf; safe to run twice. Never mynetworks."""
    return (
        "# Debian/Ubuntu Postfix, as root: exempt the backup MX at every stage that could defer its drain.\n"
        "set -eu\n"
        f"relay=$(postconf -h smtpd_relay_restrictions)\n{RELAY_GUARD}"
        f"printf '{_rows(cidrs, 'OK')}' > {CIDR_MAP}\n"
        f"for p in {' '.join(EXEMPTED_LISTS)}; do\n"
        '  v=$(postconf -h "$p")\n'
        f'  case "$v" in *"cidr:{CIDR_MAP}"*) ;; *) postconf -e "$p = check_client_access cidr:{CIDR_MAP}${{v:+, $v}}" ;; esac\n'
        "done\n"
        f"postconf -e 'smtpd_client_event_limit_exceptions = {' '.join(['$mynetworks', *cidrs])}'\n"
        "if postconf -M | grep -qE '^[^ ]+ +inet .* postscreen$'; then  # an SMTP listener runs postscreen\n"
        f"  printf '{_rows(cidrs, 'permit')}' > {POSTSCREEN_MAP}\n"
        '  v=$(postconf -h postscreen_access_list)\n'
        f'  case "$v" in *"cidr:{POSTSCREEN_MAP}"*) ;; *) '
        f'postconf -e "postscreen_access_list = cidr:{POSTSCREEN_MAP}${{v:+, $v}}" ;; esac\n'
        "fi\n"
        "postfix reload\n")


def mailcow_script(cidrs: list[str]) -> str:
    """mailcow-dockerized: the live lists read from the postfix-mailcow container, restated in
    extra.cf with the exemption first (extra.cf is appended to main.cf at the container's
    start, so a list can only be replaced there), the relay added to mailcow's postscreen
    whitelist and to its forwarding hosts (rspamd), then the container restarted. Safe to run
    twice."""
    in_container = "docker compose exec -T postfix-mailcow postconf -h"
    client_map = f"{MAILCOW_CONTAINER_CONF}/backup_mx_clients.cidr"
    ips = [cidr.removesuffix("/32") for cidr in cidrs]
    return (
        "# mailcow, in the mailcow-dockerized directory: exempt the backup MX at every stage that could defer its drain.\n"
        "set -eu\n"
        "[ -f mailcow.conf ] || { echo 'no mailcow.conf here: run this in the mailcow-dockerized directory' >&2; exit 1; }\n"
        f"relay=$({in_container} smtpd_relay_restrictions)\n{RELAY_GUARD}"
        # rspamd first, so that a redis that refuses leaves every file as it was: each relay a
        # forwarding host, as the admin UI adds one with its spam filter on
        "pass=$(sed -n 's/^REDISPASS=//p' mailcow.conf)\n"
        # redis-cli exits 0 on an error reply (NOAUTH, WRONGPASS): HSET and HDEL answer a count
        + 'redis() {\n'
        + '  out=$(docker compose exec -T redis-mailcow redis-cli ${pass:+-a "$pass" --no-auth-warning} "$@" 2>&1)\n'
        + '  case "$out" in ""|*[!0-9]*) echo "redis-mailcow refused $1 $2: $out" >&2; exit 1 ;; esac\n'
        + '}\n'
        + "".join(f"redis HSET {MAILCOW_FWD_HOSTS} {ip} backup-mx\nredis HDEL {MAILCOW_KEEP_SPAM} {ip}\n" for ip in ips)
        + f"printf '{_rows(cidrs, 'OK')}' > {MAILCOW_CONF}/backup_mx_clients.cidr\n"
        f"touch {MAILCOW_CONF}/extra.cf {MAILCOW_CONF}/custom_postscreen_whitelist.cidr\n"
        f"for p in {' '.join(EXEMPTED_LISTS)}; do\n"
        f'  v=$({in_container} "$p")\n'
        f'  case "$v" in *"cidr:{client_map}"*) ;; *) printf \'%s = %s%s\\n\' "$p" '
        f'"check_client_access cidr:{client_map}" "${{v:+, $v}}" >> {MAILCOW_CONF}/extra.cf ;; esac\n'
        "done\n"
        f"grep -q '^smtpd_client_event_limit_exceptions' {MAILCOW_CONF}/extra.cf || "
        f"echo 'smtpd_client_event_limit_exceptions = {' '.join(['$mynetworks', *cidrs])}' >> {MAILCOW_CONF}/extra.cf\n"
        + "".join(f"grep -qxF '{cidr} permit' {MAILCOW_CONF}/custom_postscreen_whitelist.cidr || "
                  f"echo '{cidr} permit' >> {MAILCOW_CONF}/custom_postscreen_whitelist.cidr\n" for cidr in cidrs)
        + f"{PLACEMENT['mailcow']['reload']}\n")


def enablement(s: Settings, relays: list[tuple[str, str]], relay_public_key: str = "") -> dict:
    """relays: (hostname, the address the primary sees) of every relay, the first first."""
    cidrs = [f"{ip}/32" for _, ip in relays]
    spf_skip = ",".join(["127.0.0.0/8,::ffff:127.0.0.0/104,::1", *cidrs])
    return {
        "address": relays[0][1],  # the first relay (the one a single-relay stack has)
        "addresses": [ip for _, ip in relays],
        "postfix": {**_postfix_exemptions(cidrs),
                    "script": {"debian": debian_script(cidrs), "mailcow": mailcow_script(cidrs)}},
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
