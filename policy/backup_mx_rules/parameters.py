"""postfix-parameters: every Postfix parameter the relay sets is one the pack models.

Each main.cf parameter and each master.cf `-o` is in exactly one list:
- JUDGED: another policy reads it in the daemon that uses it (named here);
- RULES: a rule of its own, for the parameters that can stop reception or delivery without
  touching an invariant (listen addresses and protocols, the bind address, TLS levels a drain
  target may not meet, master_service_disable, proxy protocols, restriction lists that could
  refuse every sender, the retry schedule), and for the inert rest.
A parameter in neither list is a violation that names it: the pack fails closed. The relay
also listens once, on the SMTP port, on every address, with postscreen or smtpd.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from . import environment
from .mail import DIVERSIONS, POSTSCREEN_TESTS, VERIFY_PARAMS, _instance_policy
from .mailconf import MailConfig, Service
from .postfix import WouldNotStart, boolean, time_value

JUDGED = {
    **dict.fromkeys(("soft_bounce", "message_size_limit", "relay_recipient_maps", "postscreen_dnsbl_sites",
                     "postscreen_access_list", *POSTSCREEN_TESTS, *VERIFY_PARAMS), "never-5xx"),
    "maximal_queue_lifetime": "queue-lifetime", "bounce_queue_lifetime": "bounce-lifetime",
    "mynetworks": "relay-mynetworks",
    **dict.fromkeys(("relay_domains", "mydestination", "virtual_alias_domains", "virtual_mailbox_domains",
                     "smtpd_relay_restrictions", "smtpd_recipient_restrictions", "smtpd_reject_unlisted_recipient",
                     "smtpd_sasl_auth_enable"), "relay-domains"),
    **dict.fromkeys(("transport_maps", "relay_transport", "relayhost", "smtp_fallback_relay",
                     "parent_domain_matches_subdomains", *DIVERSIONS), "drain-port"),
    **dict.fromkeys(("smtpd_forbid_bare_newline", "smtpd_forbid_bare_newline_exclusions",
                     "smtpd_forbid_unauth_pipelining"), "smtp-smuggling"),
}
TLS_LEVELS = ("", "none", "may")  # any other level needs what the drain target or a sender may lack
SMTP_LISTEN = ("smtp", "25", "*:smtp", "*:25", "0.0.0.0:smtp", "0.0.0.0:25")
NOTIFY_CLASSES = {"bounce", "2bounce", "data", "delay", "policy", "protocol", "resource", "software"}
BACKOFF_MAX = 3600  # seconds: a longer retry interval leaves the queue waiting after the primary is back
LOGLEVELS = {"0", "1", "2", "3", "4"}


def _one_of(*allowed: str, why: str) -> Callable[[str], str]:
    return lambda v: "" if v.strip() in allowed else f"must be {' or '.join(repr(a) for a in allowed)} ({why})"


def _integer(low: int, why: str) -> Callable[[str], str]:
    return lambda v: "" if re.fullmatch(r"\d+", v.strip()) and int(v) >= low else f"must be an integer >= {low} ({why})"


def _time(name: str, low: int, high: int, why: str) -> Callable[[str], str]:
    def check(v: str) -> str:
        try:
            seconds = time_value(name, v.strip(), "s")
        except WouldNotStart as exc:
            return str(exc)
        return "" if low <= seconds <= high else f"is {seconds}s, outside {low}s..{high}s ({why})"
    return check


def _boolean(name: str) -> Callable[[str], str]:
    def check(v: str) -> str:
        try:
            boolean(name, v)
        except WouldNotStart as exc:
            return str(exc)
        return ""
    return check


def _bind_address(v: str) -> str:
    if not v.strip():
        return ""
    if environment.drain_transport() == "wireguard" and v.strip() == environment.tunnel_address(
            "wireguardRelayAddress"):
        return ""
    # src/smtp/smtp_connect.c smtp_connect_addr(): a failed bind() is only a warning and the
    # client connects from the kernel's choice; a bind that succeeds fixes the source address.
    return ("must be unset (with the WireGuard drain: wireguardRelayAddress): the pack cannot tell which "
            "addresses the VM has, and a source outside the tunnel's AllowedIPs or the VCN makes every drained "
            "packet unroutable; it fails closed")


def _empty(why: str) -> Callable[[str], str]:
    return lambda v: "" if not v.strip() else f"must be empty ({why})"


def _notify(v: str) -> str:
    words = set(re.split(r"[\s,]+", v.strip())) - {""}
    return "" if words <= NOTIFY_CLASSES else f"names unknown classes {sorted(words - NOTIFY_CLASSES)}"


def _hostname(v: str) -> str:
    names = [h for h, _ in environment.relays()]
    return "" if v.strip().lower() in names else f"must be a relay this stack declares ({', '.join(names)})"


NO_REFUSAL = "a reject here would refuse senders before any recipient is judged"
RULES: dict[str, Callable[[str], str]] = {
    # listening and reception
    "inet_interfaces": _one_of("all", why="the relay must listen on its VCN address; loopback-only takes no mail"),
    "inet_protocols": _one_of("ipv4", "all", why="the VCN is IPv4-only; ipv6 alone takes no mail"),
    "master_service_disable": _empty("it switches off master.cf services such as the SMTP listener"),
    "postscreen_upstream_proxy_protocol": _empty("no sender speaks a proxy protocol to an MX"),
    "smtpd_upstream_proxy_protocol": _empty("no sender speaks a proxy protocol to an MX"),
    "smtpd_client_restrictions": _empty(NO_REFUSAL), "smtpd_helo_restrictions": _empty(NO_REFUSAL),
    "smtpd_sender_restrictions": _empty(NO_REFUSAL), "smtpd_data_restrictions": _empty(NO_REFUSAL),
    "smtpd_helo_required": _boolean("smtpd_helo_required"),
    "smtpd_tls_security_level": _one_of(*TLS_LEVELS, why="encrypt would refuse every sender without STARTTLS"),
    "smtpd_tls_cert_file": _one_of("/etc/postfix/tls/fullchain.pem", why="where the bootstrap and certbot put it"),
    "smtpd_tls_key_file": _one_of("/etc/postfix/tls/privkey.pem", why="where the bootstrap and certbot put it"),
    "smtpd_tls_loglevel": _one_of(*sorted(LOGLEVELS), why="Postfix's TLS log levels"),
    "smtpd_tls_received_header": _boolean("smtpd_tls_received_header"),
    "myhostname": _hostname,
    "unknown_relay_recipient_reject_code": _one_of("450", why="a 4xx code; soft_bounce also turns a 5xx to 4xx"),
    "smtpd_timeout": lambda v: "" if v.strip() == "${stress?{10}:{60}}s" else _time(
        "smtpd_timeout", 10, 300, "a slow sender needs time")(v),
    "smtpd_per_request_deadline": _boolean("smtpd_per_request_deadline"),
    "default_process_limit": _integer(1, "0 would start no smtpd"),
    "smtpd_client_connection_count_limit": _integer(0, "0 means no limit"),
    "postscreen_client_connection_count_limit": _integer(0, "0 means no limit"),
    "postscreen_dnsbl_threshold": _integer(1, "0 would count every client as listed"),
    "postscreen_cache_map": _one_of("btree:$data_directory/postscreen_cache", why="the package's cache"),
    "disable_vrfy_command": _boolean("disable_vrfy_command"),
    "allow_percent_hack": _one_of("no", why="user%domain@relay would otherwise be rewritten"),
    "swap_bangpath": _one_of("no", why="domain!user@relay would otherwise be rewritten"),
    # delivery to the primary
    "smtp_bind_address": _bind_address,
    "smtp_bind_address6": _empty("the VCN is IPv4-only"),
    "smtp_tls_security_level": _one_of(*TLS_LEVELS, why="the drain target may offer no STARTTLS or a certificate "
                                                        "that does not verify: the queue would never drain"),
    "smtp_tls_loglevel": _one_of(*sorted(LOGLEVELS), why="Postfix's TLS log levels"),
    "minimal_backoff_time": _time("minimal_backoff_time", 1, BACKOFF_MAX, "the drain retries within the hour"),
    "maximal_backoff_time": _time("maximal_backoff_time", 1, BACKOFF_MAX, "the drain retries within the hour"),
    "queue_run_delay": _time("queue_run_delay", 1, BACKOFF_MAX, "the drain retries within the hour"),
    "delay_warning_time": _time("delay_warning_time", 0, 0, "senders get no delay warnings from a backup MX"),
    # inert
    "compatibility_level": _one_of("3.6", why="the defaults the pack models (postfix_defaults.json)"),
    "myorigin": lambda v: "" if v.strip().lower() in environment.domains() else "must be a protected domain",
    "local_recipient_maps": _empty("no local recipients"), "alias_maps": _empty("no local delivery"),
    "alias_database": _empty("no local delivery"),
    "notify_classes": _notify,
    "error_notice_recipient": lambda v: "" if re.fullmatch(r"[^@\s]+@[^@\s]+", v.strip()) else "is not an address",
    "syslog_name": lambda v: "",
    "address_verify_sender": _one_of("<>", "", why="probes use the null sender, which the primary must take"),
}


def problems(mc: MailConfig, cfg: dict) -> Iterator[str]:  # same signature as every check
    places: list[tuple[str, Service | None, list[str]]] = [("main.cf", None, list(mc.main))]
    places += [(f"master.cf service '{s.key}' (-o)", s, list(s.options)) for s in mc.services]
    for where, svc, names in places:
        for name in names:
            if name in JUDGED:
                continue
            rule = RULES.get(name)
            if rule is None:
                yield (f"{where} sets {name}, which the pack does not model; it fails closed. Remove it, or add a "
                       "rule for it to policy/backup_mx_rules/parameters.py")
                continue
            value = mc.raw(name, svc) or ""
            why = rule(value)
            if why and "$" in value:  # judged as written first, then as Postfix expands it
                value = mc.param(name, svc)
                why = rule(value)
            if why:
                yield f"{where}: {name} = {value!r} {why}"
    yield from _listeners(mc)
    yield from _service_table(mc)


# master.cf as a table: every unix, pass and unix-dgram service the relay runs, with its columns
# (private, unpriv, chroot, wakeup, maxproc, command) as Postfix reads them: "-" is the
# default (master/master_ent.c: private y, unpriv y, chroot n since Postfix 3.0, wakeup 0,
# maxproc $default_process_limit). The pack's own copy of the rendered table; a service not in
# it, a column that differs, or a missing service fails closed.
PROCESS_LIMIT = "$default_process_limit"
SERVICES: dict[tuple[str, str], tuple[str, str, str, str, str, str]] = {
    ("smtpd", "pass"): ("y", "y", "n", "0", PROCESS_LIMIT, "smtpd"),
    ("dnsblog", "unix"): ("y", "y", "n", "0", "0", "dnsblog"),
    ("tlsproxy", "unix"): ("y", "y", "n", "0", "0", "tlsproxy"),
    ("pickup", "unix"): ("n", "y", "n", "60", "1", "pickup"),
    ("cleanup", "unix"): ("n", "y", "n", "0", "0", "cleanup"),
    ("qmgr", "unix"): ("n", "y", "n", "300", "1", "qmgr"),
    ("tlsmgr", "unix"): ("y", "y", "n", "1000?", "1", "tlsmgr"),
    ("rewrite", "unix"): ("y", "y", "n", "0", PROCESS_LIMIT, "trivial-rewrite"),
    ("bounce", "unix"): ("y", "y", "n", "0", "0", "bounce"),
    ("defer", "unix"): ("y", "y", "n", "0", "0", "bounce"),
    ("trace", "unix"): ("y", "y", "n", "0", "0", "bounce"),
    ("verify", "unix"): ("y", "y", "n", "0", "1", "verify"),
    ("flush", "unix"): ("n", "y", "n", "1000?", "0", "flush"),
    ("proxymap", "unix"): ("y", "y", "n", "0", PROCESS_LIMIT, "proxymap"),
    ("proxywrite", "unix"): ("y", "y", "n", "0", "1", "proxymap"),
    ("smtp", "unix"): ("y", "y", "n", "0", PROCESS_LIMIT, "smtp"),
    ("relay", "unix"): ("y", "y", "n", "0", PROCESS_LIMIT, "smtp"),
    ("showq", "unix"): ("n", "y", "n", "0", PROCESS_LIMIT, "showq"),
    ("error", "unix"): ("y", "y", "n", "0", PROCESS_LIMIT, "error"),
    ("retry", "unix"): ("y", "y", "n", "0", PROCESS_LIMIT, "error"),
    ("discard", "unix"): ("y", "y", "n", "0", PROCESS_LIMIT, "discard"),
    ("anvil", "unix"): ("y", "y", "n", "0", "1", "anvil"),
    ("scache", "unix"): ("y", "y", "n", "0", "1", "scache"),
    ("postlog", "unix-dgram"): ("n", "y", "n", "0", "1", "postlogd"),
}
# The SMTP listener (any name _listeners accepts): postscreen is one process for every client.
LISTENERS = {"postscreen": ("n", "y", "n", "0", "1"), "smtpd": ("n", "y", "n", "0", PROCESS_LIMIT)}
COLUMNS = ("private", "unpriv", "chroot", "wakeup", "maxproc", "command")
DASH = {"private": "y", "unpriv": "y", "chroot": "n", "wakeup": "0", "maxproc": PROCESS_LIMIT}


def _columns(mc: MailConfig, svc: Service) -> tuple[str, ...]:
    limit = mc.param("default_process_limit").strip()
    out = {c: getattr(svc, c) for c in COLUMNS}
    out = {c: DASH.get(c, v) if v == "-" else v for c, v in out.items()}
    if out["maxproc"] == limit:
        out["maxproc"] = PROCESS_LIMIT
    return tuple(out[c] for c in COLUMNS)


def _service_table(mc: MailConfig) -> Iterator[str]:
    fix = "restore the rendered master.cf row"
    for svc in mc.services:
        have = _columns(mc, svc)
        if svc.kind == "inet":
            want = LISTENERS.get(svc.command)
            if want is not None and svc.name in SMTP_LISTEN and have[:5] != want:
                yield (f"master.cf service '{svc.key}' ({svc.command}) has columns {_shown(have[:5])}, not "
                       f"{_shown(want)}: the pack models the SMTP listener only as rendered; {fix}")
            continue
        want_row = SERVICES.get((svc.name, svc.kind))
        if want_row is None:
            yield (f"master.cf service '{svc.key}' ({svc.command}) is not one the pack models (a second qmgr, "
                   "cleanup or delivery agent changes what happens to queued mail); it fails closed. Remove it")
        elif have != want_row:
            yield (f"master.cf service '{svc.key}' has {_shown(have)}, not {_shown(want_row)} (a changed "
                   f"process limit, socket place, chroot or command changes how mail is queued or delivered); {fix}")
    present = {(s.name, s.kind) for s in mc.services}
    for (name, kind), row in SERVICES.items():
        if (name, kind) not in present:
            yield f"master.cf has no '{name}/{kind}' service ({row[-1]}), which the relay's Postfix uses; {fix}"


def _shown(values: tuple[str, ...]) -> str:
    return ", ".join(f"{c} {v}" for c, v in zip(COLUMNS, values, strict=False))


def _listeners(mc: MailConfig) -> Iterator[str]:
    inet = [s for s in mc.services if s.kind == "inet"]
    smtp = [s for s in inet if s.name in SMTP_LISTEN and s.command in ("postscreen", "smtpd")]
    if len(smtp) != 1:
        yield (f"master.cf has {len(smtp)} SMTP listeners on every address (smtp inet, postscreen or smtpd); the "
               "relay needs exactly one, or it takes no mail")
    for s in inet:
        if s not in smtp:
            yield (f"master.cf service '{s.key}' ({s.command}) listens on {s.name}; the relay listens only on the "
                   "SMTP port, on every address (the pack fails closed on other listeners)")


postfix_parameters = _instance_policy(
    "postfix-parameters",
    "Every main.cf parameter and master.cf -o the relay sets is modeled: judged by its own policy, or by a rule "
    "here (listen on every IPv4 address, no master_service_disable or proxy protocol, no bind address outside the "
    "tunnel, TLS levels none or may, empty client/helo/sender/data restrictions, retries within the hour); one "
    "SMTP listener; master.cf's services and their columns as rendered; anything else fails closed.",
    problems)
