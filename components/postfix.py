"""Settings in, the relay's complete Postfix configuration out (main.cf, master.cf, maps).

Rendered in full, never patched: a patch guarded by `grep` once left postscreen off in
production because the grep matched Ubuntu's commented examples.
"""
from __future__ import annotations

from .facts import SIZE_HEADROOM, TLS_DIR
from .settings import RelaySpec, Settings

RELAY_RECIPIENTS = "/etc/postfix/relay_recipients"
TRANSPORT = "/etc/postfix/transport"
# A slowloris from many addresses holds one smtpd per session. With one session per client
# address (CLIENT_CONNECTIONS) an attacker needs more than PROCESS_LIMIT addresses to hold every
# smtpd; measured on Postfix 3.7 (lab/slowloris.py), a held session costs about 1.7 MB PSS in
# smtpd plus its cleanup, so 100 of them stay within a few hundred MB of the 1 GB VM.
PROCESS_LIMIT = 100
CLIENT_CONNECTIONS = 1
POSTSCREEN_CONNECTIONS = 10


DRAIN_ROUTE = {
    "nat": "Drain to the primary over the NAT port (Oracle blocks egress 25).",
    "wireguard": "Drain to the primary's tunnel address, port 25 inside WireGuard (no WAN mail port).",
}
# Why the drain's TLS is opportunistic, per drainTransport: stated in main.cf itself.
DRAIN_TLS = {
    "nat": ("Drain TLS is opportunistic: the primary's certificate names its MX host, and a failed\n"
            "# verification must defer, never hold mail hostage to a certificate problem."),
    "wireguard": ("Drain TLS is opportunistic: the WireGuard tunnel already encrypts the drain and\n"
                  "# authenticates the firewall by its key; the primary's certificate cannot match the\n"
                  "# tunnel address the relay dials, so verification would only defer every message."),
}


Param = tuple[str, str, str]  # name, value, the comment above it ("" for none)

RECIPIENTS = {
    "catchall": "Catch-all for the protected domains: every recipient is valid.",
    "list": ("Only the addresses in the synced list (recipients list, cloud-init/recipients.sh) are valid;\n"
             "# any other gets 450. Until the first sync the map is the catch-all below."),
    "verify": ("Every recipient of the protected domains is valid unless the primary refuses it: each new\n"
               "# address is probed at the primary through the drain (recipients verify, below)."),
}
VERIFY_STEP = {"catchall": (), "list": (), "verify": ("reject_unverified_recipient",)}


def _verification(s: Settings) -> list[Param]:
    """recipients verify: the primary's own answer decides, cached, and never 5xx.

    An address the primary refused (5xx to the probe) gets 450, so junk stays at its sender. A
    probe with no verdict within smtpd's poll window (about 6 s: the primary down, silent or
    deferring) answers 250: during an outage every address is taken, at the first attempt.
    Answers are cached (positive 31 days, negative 3 days; refreshed after 7 days and 3 hours)."""
    if s.recipients != "verify":
        return []
    return [
        ("unverified_recipient_reject_code", "450", "recipients verify: 450 for an address the primary refused."),
        ("unverified_recipient_defer_code", "250",
         "250 when the probe could not reach a verdict (the primary down): the outage rule."),
        ("unverified_recipient_tempfail_action", "defer_if_permit", ""),
        ("address_verify_sender", "<>", "Probes use the null sender, which every MTA must take."),
    ]


def _scope(s: Settings, relay: RelaySpec) -> list[Param]:
    """What the relay takes: the protected domains, for relay, from anyone; nothing local."""
    domains = " ".join(s.domains)
    return [
        ("compatibility_level", "3.6", ""),
        ("myhostname", relay.hostname, "Identity and scope: nothing is delivered locally."),
        ("myorigin", s.domains[0],
         "Unqualified addresses (SMTP requires taking <postmaster>) land in a protected domain."),
        ("mydestination", "", ""),
        ("local_recipient_maps", "", ""),
        ("alias_maps", "", ""),
        ("alias_database", "", ""),
        ("inet_interfaces", "all", ""),
        ("inet_protocols", "ipv4", ""),
        ("mynetworks", "127.0.0.1/32", "Loopback only: the relay is never an open relay."),
        ("relay_domains", domains, RECIPIENTS[s.recipients]),
        ("relay_recipient_maps", f"texthash:{RELAY_RECIPIENTS}", ""),
        ("transport_maps", f"texthash:{TRANSPORT}", DRAIN_ROUTE[s.drain_transport]),
        ("smtpd_relay_restrictions", "reject_unauth_destination",
         "No client relays, loopback included: only the protected domains are destinations."),
        ("smtpd_recipient_restrictions",
         ", ".join(["reject_non_fqdn_recipient", *VERIFY_STEP[s.recipients],
                    f"check_recipient_access {protected_domains_table(s)}", "reject"]),
         "Whitelist, so no other address class can be queued: an IP literal of the VM's own\n"
         "# addresses is 'local' to Postfix and would otherwise be taken and stranded."),
        *_verification(s),
        ("allow_percent_hack", "no", ""),
        ("swap_bangpath", "no", ""),
        ("smtpd_client_restrictions", "", ""),
        ("smtpd_helo_restrictions", "", ""),
        ("smtpd_sender_restrictions", "", ""),
        ("smtpd_data_restrictions", "", ""),
    ]


def _smtpd(s: Settings) -> list[Param]:
    """How the relay answers: never 5xx, no smuggling, its size limit, its queue."""
    return [
        ("smtpd_forbid_bare_newline", "normalize",
         "SMTP smuggling (CVE-2023-51764): DATA ends only at <CR><LF>.<CR><LF>, and a bare <LF>\n"
         "# is read as <CR><LF>, so no <LF>.<LF> can split one message into two. normalize never\n"
         "# rejects (reject would answer 550). Postfix >= 3.7.10 and 3.8.5; 3.9 makes it the default."),
        ("smtpd_forbid_bare_newline_exclusions", "127.0.0.1/32", "Loopback only, like mynetworks."),
        ("smtpd_forbid_unauth_pipelining", "no",
         "Not yes: Postfix documents it as disconnecting a client that pipelines without\n"
         "# PIPELINING with 554. normalize already closes smuggling; postscreen's pregreet test\n"
         "# catches clients that talk first."),
        ("smtpd_helo_required", "no", ""),
        ("disable_vrfy_command", "yes", ""),
        ("soft_bounce", "yes",
         "Never 5xx: every reject (restrictions, size, postscreen) becomes 4xx, and a 5xx from\n"
         "# the primary keeps mail queued instead of bouncing it."),
        ("unknown_relay_recipient_reject_code", "450", ""),
        ("maximal_queue_lifetime", s.queue_lifetime, "Store and forward."),
        ("bounce_queue_lifetime", s.bounce_lifetime, ""),
        ("delay_warning_time", "0", ""),
        ("message_size_limit", str(s.relay_message_size_limit),
         f"The primary's limit less {SIZE_HEADROOM} bytes for what the relay and the primary add\n"
         "# (Received headers, milter headers, envelope): whatever is accepted here fits there."),
        ("minimal_backoff_time", "600s",
         "Postfix's own retries: mail the primary refused with 5xx (kept by soft_bounce, e.g. a\n"
         "# dictionary attack's junk) after 10 minutes, then at doubling intervals up to hourly. Mail\n"
         "# the primary never answered is the drain watcher's: scheduled the moment the primary answers."),
        ("maximal_backoff_time", "3600s", ""),
        ("queue_run_delay", "60s", ""),
        ("notify_classes", "resource, software",
         "Postmaster notices go to the protected domain and drain like any other mail."),
        ("error_notice_recipient", f"postmaster@{s.domains[0]}", ""),
    ]


def _limits_tls_postscreen(s: Settings) -> list[Param]:
    """Slowloris limits, TLS both ways, and postscreen's triage."""
    return [
        ("default_process_limit", str(PROCESS_LIMIT),
         "Slowloris: enough smtpd processes that one session per client address cannot hold them all."),
        ("smtpd_client_connection_count_limit", str(CLIENT_CONNECTIONS),
         "smtpd sessions per client address (anvil; mynetworks exempt): beyond it 421, and a retry."),
        ("postscreen_client_connection_count_limit", str(POSTSCREEN_CONNECTIONS),
         "postscreen counts a connection until its close is seen, so a sender's next connection\n"
         "# may overlap the last one; it only triages, the smtpd limit above bounds what is held."),
        ("smtpd_timeout", "${stress?{10}:{60}}s",
         "A slow session is cut after 60 s without a complete command or line, 10 s under stress;\n"
         "# with per-request deadlines a trickled DATA must also keep smtpd_min_data_rate (500 B/s)."),
        ("smtpd_per_request_deadline", "yes", ""),
        ("smtpd_tls_security_level", "may", "TLS: certbot HTTP-01 certificate, copied by the deploy hook."),
        ("smtpd_tls_cert_file", f"{TLS_DIR}/fullchain.pem", ""),
        ("smtpd_tls_key_file", f"{TLS_DIR}/privkey.pem", ""),
        ("smtpd_tls_loglevel", "1", ""),
        ("smtpd_tls_received_header", "yes", ""),
        ("smtp_tls_security_level", "may", DRAIN_TLS[s.drain_transport]),
        ("smtp_tls_loglevel", "1", ""),
        ("postscreen_access_list", "permit_mynetworks",
         "postscreen: pregreet 'enforce' (450 under soft_bounce), conservative DNSBL (dnsblAction)."),
        ("postscreen_greet_action", "enforce", ""),
        ("postscreen_dnsbl_sites", ", ".join(s.dnsbl_sites), ""),
        ("postscreen_dnsbl_threshold", str(s.dnsbl_threshold), ""),
        ("postscreen_dnsbl_action", s.dnsbl_action, ""),
        ("postscreen_cache_map", "btree:$data_directory/postscreen_cache", ""),
    ]


def main_cf(s: Settings, relay: RelaySpec) -> str:
    params = _scope(s, relay) + _smtpd(s) + _limits_tls_postscreen(s)
    lines = ["# Rendered by backup-mx from the Pulumi stack config. Do not edit on the VM:",
             "# change the stack and rebuild (see docs/deploy.md, Rebuild).", ""]
    for key, value, comment in params:
        if comment:
            lines += ["", f"# {comment}"]
        lines.append(f"{key} = {value}".rstrip())
    return "\n".join(lines) + "\n"


# name, type, private, unpriv, chroot, wakeup, maxproc, command, options
_SERVICES = [
    ("smtp", "inet", "n", "-", "n", "-", "1", "postscreen", ()),
    ("smtpd", "pass", "-", "-", "n", "-", "-", "smtpd", ()),
    ("dnsblog", "unix", "-", "-", "n", "-", "0", "dnsblog", ()),
    ("tlsproxy", "unix", "-", "-", "n", "-", "0", "tlsproxy", ()),
    ("pickup", "unix", "n", "-", "n", "60", "1", "pickup", ()),
    ("cleanup", "unix", "n", "-", "n", "-", "0", "cleanup", ()),
    ("qmgr", "unix", "n", "-", "n", "300", "1", "qmgr", ()),
    ("tlsmgr", "unix", "-", "-", "n", "1000?", "1", "tlsmgr", ()),
    ("rewrite", "unix", "-", "-", "n", "-", "-", "trivial-rewrite", ()),
    ("bounce", "unix", "-", "-", "n", "-", "0", "bounce", ()),
    ("defer", "unix", "-", "-", "n", "-", "0", "bounce", ()),
    ("trace", "unix", "-", "-", "n", "-", "0", "bounce", ()),
    ("verify", "unix", "-", "-", "n", "-", "1", "verify", ()),
    ("flush", "unix", "n", "-", "n", "1000?", "0", "flush", ()),
    ("proxymap", "unix", "-", "-", "n", "-", "-", "proxymap", ()),
    ("proxywrite", "unix", "-", "-", "n", "-", "1", "proxymap", ()),
    ("smtp", "unix", "-", "-", "n", "-", "-", "smtp", ()),
    ("relay", "unix", "-", "-", "n", "-", "-", "smtp", ("syslog_name=postfix/$service_name",)),
    ("showq", "unix", "n", "-", "n", "-", "-", "showq", ()),
    ("error", "unix", "-", "-", "n", "-", "-", "error", ()),
    ("retry", "unix", "-", "-", "n", "-", "-", "error", ()),
    ("discard", "unix", "-", "-", "n", "-", "-", "discard", ()),
    ("anvil", "unix", "-", "-", "n", "-", "1", "anvil", ()),
    ("scache", "unix", "-", "-", "n", "-", "1", "scache", ()),
    ("postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd", ()),
]


def master_cf(s: Settings) -> str:  # same signature as every renderer
    lines = ["# Rendered by backup-mx. The SMTP port is served by postscreen; smtpd sits behind it.",
             "# No chroot: one purpose-built VM, and the same file runs unchanged in the lab.",
             "# service type  private unpriv  chroot  wakeup  maxproc command + args"]
    for name, kind, private, unpriv, chroot, wakeup, maxproc, command, options in _SERVICES:
        lines.append(f"{name:<10} {kind:<10} {private:<7} {unpriv:<7} {chroot:<7} {wakeup:<7} {maxproc:<7} {command}")
        lines += [f"  -o {o}" for o in options]
    return "\n".join(lines) + "\n"


def protected_domains_table(s: Settings) -> str:
    return "inline:{ " + ", ".join(f"{d}=OK" for d in s.domains) + " }"


def relay_recipients(s: Settings) -> str:
    return "".join(f"@{d} OK\n" for d in s.domains)


def transport(s: Settings) -> str:
    return "".join(f"{d} smtp:{s.drain_target}\n" for d in s.domains)


def files(s: Settings, relay: RelaySpec) -> dict[str, str]:
    """Every Postfix file the relay's VM receives, keyed by its path on the VM."""
    return {
        "/etc/postfix/main.cf": main_cf(s, relay),
        "/etc/postfix/master.cf": master_cf(s),
        RELAY_RECIPIENTS: relay_recipients(s),
        TRANSPORT: transport(s),
    }
