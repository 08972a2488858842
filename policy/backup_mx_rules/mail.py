"""Policies on the Postfix configuration the relay VM runs (decoded from user_data).

Each policy judges a parameter in the daemon that uses it: soft_bounce in every smtpd,
postscreen and delivery agent; the lifetimes in qmgr; the transport in trivial-rewrite
and the delivery agent it names; mynetworks in smtpd and postscreen. A value Postfix
would refuse is reported as "the relay would not start"; a config the pack cannot
model is reported too (fail closed).
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator

from pulumi_policy import PolicyConfigSchema, ResourceValidationPolicy
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from . import environment, mailconf
from .environment import SIZE_HEADROOM, FactError
from .mailconf import (
    POSTSCREEN_ACTIONS,
    MailConfig,
    Service,
    TableUnusable,
    Unmodeled,
    UserDataError,
    WouldNotStart,
    split_list_maps,
)
from .postfix import LIFETIME_MAX, boolean, dnsbl_site, ip_match, long_value, split_list, time_value
from .view import INSTANCE, Network, config, dig, inside, known, plain, resource_policy

QUEUE_FLOOR, BOUNCE_LIFETIME = "30d", "1d"  # the owner's invariants (ADR-0019)
DELIVERY_AGENTS = ("smtp", "lmtp", "local", "virtual", "pipe", "error")
POSTSCREEN_TESTS = {  # action parameter -> the parameter that enables its test (None: always on)
    "postscreen_greet_action": None,
    "postscreen_dnsbl_action": "postscreen_dnsbl_sites",
    "postscreen_denylist_action": "postscreen_access_list",
    "postscreen_pipelining_action": "postscreen_pipelining_enable",
    "postscreen_non_smtp_command_action": "postscreen_non_smtp_command_enable",
    "postscreen_bare_newline_action": "postscreen_bare_newline_enable",
}
DIVERSIONS = ("content_filter", "header_checks", "body_checks", "mime_header_checks", "nested_header_checks",
              "milter_header_checks", "smtpd_milters", "non_smtpd_milters", "smtpd_proxy_filter",
              "always_bcc", "recipient_bcc_maps", "sender_bcc_maps",
              "virtual_alias_maps", "recipient_canonical_maps", "canonical_maps",
              "sender_dependent_default_transport_maps", "sender_dependent_relayhost_maps")
STARTS = "the relay would not start"


class Problem(Exception):
    """A finding that ends a policy's evaluation of this config."""


def load(props: dict, where: str) -> MailConfig:
    value = dig(props, "metadata", "user_data")
    if value is not None and not known(value):
        raise UnknownValueError(UNKNOWN_STRING_VALUE, [where, "metadata", "user_data"])
    return mailconf.from_user_data(value)


def _instance_policy(name: str, description: str, check: Callable[[MailConfig, dict], Iterator[str]],
                     schema: PolicyConfigSchema | None = None) -> ResourceValidationPolicy:

    def validate(args, report_violation):
        if args.resource_type != INSTANCE:
            return
        cfg = config(args, schema)
        try:
            mc = load(plain(args.props), args.name)
            problems = list(check(mc, cfg))
        except UnknownValueError:
            raise
        except WouldNotStart as exc:
            problems = [f"{STARTS}: {exc}. Fix the rendered Postfix config"]
        except TableUnusable as exc:
            problems = [str(exc)]
        except (UserDataError, Unmodeled) as exc:
            problems = [f"cannot determine the relay's effective Postfix config ({exc}); the pack fails closed. "
                        "Render user_data as a #cloud-config whose write_files stage main.cf, master.cf and "
                        "the maps, and edit nothing after rendering"]
        except FactError as exc:
            problems = [str(exc)]
        for problem in problems:
            report_violation(f"instance '{args.name}': {problem}")

    return resource_policy(name, description, validate, schema=schema)


def _soft_bounce(mc: MailConfig, svc: Service | None) -> bool:
    return boolean("soft_bounce", mc.param("soft_bounce", svc))


def _where(svc: Service) -> str:
    return f"service '{svc.key}' ({svc.command})"


# --- never-5xx -------------------------------------------------------------------------

def never_5xx_problems(mc: MailConfig, cfg: dict) -> Iterator[str]:
    fix = "set soft_bounce = yes in main.cf and drop any -o soft_bounce=no from master.cf"
    _soft_bounce(mc, None)  # every daemon validates it at startup
    listeners = mc.services_running("smtpd", "postscreen")
    if not mc.services_running("smtpd", "postscreen", kind="inet"):
        yield "master.cf has no inet service running postscreen or smtpd: the relay would not answer SMTP"
    for svc in listeners:
        if not _soft_bounce(mc, svc):
            yield f"soft_bounce is off in {_where(svc)}, so it answers 5xx (rejects, size, protocol errors); {fix}"
    for svc in mc.services_running("postscreen"):
        for action in POSTSCREEN_TESTS:
            value = mc.param(action, svc).strip().lower()
            if value not in POSTSCREEN_ACTIONS:
                yield (f"{STARTS}: {action} = {value!r} in {_where(svc)} is not a postscreen action (allowed: "
                       f"{', '.join(POSTSCREEN_ACTIONS)}; there is no 'defer'), so postscreen exits at startup and "
                       "port 25 answers nothing")
        yield from _postscreen_access_problems(mc, svc)
        for site in split_list(mc.param("postscreen_dnsbl_sites", svc)):
            why = _dnsbl_filter_problem(site)
            if why:
                yield (f"postscreen DNSBL site {site!r} {why}: resolvers that are refused answer "
                       "127.255.255.254 and every client scores as listed; add one, e.g. "
                       "zen.spamhaus.org=127.0.0.[2..11]*3")
    for svc in mc.services_running("smtpd"):
        for name, element, arg, _ in restrictions(mc, svc):
            why = _dnsbl_filter_problem(arg) if element in DNS_ELEMENTS and arg else ""
            if element in DNS_ELEMENTS and (why or not arg):
                yield (f"{name} element {element} {arg or ''} in {_where(svc)} {why or 'has no DNS domain'}: a "
                       "refused resolver's answer would defer every sender, whose mail expires at its end; use "
                       "a filter such as zen.spamhaus.org=127.0.0.[2..11], or postscreen's DNSBL")
    for svc in mc.services:
        if svc.kind == "unix" and svc.command in DELIVERY_AGENTS and not _soft_bounce(mc, svc):
            yield (f"soft_bounce is off in delivery {_where(svc)}: a 5xx from the primary would bounce drained "
                   f"mail, and this VM can never deliver the bounce, so the message is lost; {fix}")
    primary, stack = int(cfg["primaryMessageSizeLimit"]), environment.fact("messageSizeLimit")
    long_value("message_size_limit", mc.param("message_size_limit"))
    for svc in mc.services_running("smtpd", "cleanup"):
        size = long_value("message_size_limit", mc.param("message_size_limit", svc))
        ceiling, floor = stack - SIZE_HEADROOM, primary - SIZE_HEADROOM
        if size == 0 or size > ceiling:
            yield (f"message_size_limit = {size or 'unlimited'} in {_where(svc)} leaves less than {SIZE_HEADROOM} "
                   f"bytes below the primary's {stack}: a message near it is taken here, then refused by the primary "
                   f"once the headers are added, and held for the whole queue lifetime; set message_size_limit = "
                   f"{ceiling}")
        elif size < floor:
            yield (f"message_size_limit = {size} in {_where(svc)} is below the primary's {primary} less the "
                   f"{SIZE_HEADROOM}-byte headroom: mail the primary would take is refused here; set "
                   f"message_size_limit = {floor}")
    for svc in mc.services_running("smtpd"):
        maps = mc.param("relay_recipient_maps", svc).strip()
        if maps and boolean("smtpd_reject_unlisted_recipient", mc.param("smtpd_reject_unlisted_recipient", svc)):
            missing = [d for d in environment.domains() if mc.lookup_first(maps, "@" + d) is None]
            if missing:
                yield (f"relay_recipient_maps in {_where(svc)} has no catch-all for {missing}: their recipients "
                       "are refused forever; add '@<domain> OK' for each protected domain")
    yield from verification_problems(mc)


# --- restriction lists: every element, and what each access map can answer -----------------

RESTRICTION_LISTS = ("smtpd_relay_restrictions", "smtpd_recipient_restrictions")
# smtpd(8) restrictions the pack models in these lists: what each does is judged where it matters
# (relay-domains walks permits, never-5xx the verification and DNS lists); any other fails closed.
PLAIN_ELEMENTS = {
    "reject_non_fqdn_recipient", "reject_non_fqdn_sender", "reject_non_fqdn_helo_hostname",
    "reject_unauth_destination", "defer_unauth_destination", "reject_unlisted_recipient",
    "reject_unlisted_sender", "reject_unauth_pipelining", "permit_mynetworks", "permit_auth_destination",
    "reject", "defer", "defer_if_permit", "defer_if_reject", "permit", "dunno", "warn_if_reject",
    "reject_unverified_recipient", "reject_unverified_sender", "permit_sasl_authenticated",
    "permit_tls_clientcerts", "permit_tls_all_clientcerts", "permit_mx_backup", "permit_inet_interfaces",
    # refusals only (4xx under soft_bounce), from DNS or the session: a liveness choice, never a diversion
    "reject_unknown_sender_domain", "reject_unknown_recipient_domain", "reject_unknown_client_hostname",
    "reject_unknown_reverse_client_hostname", "reject_unknown_forward_client_hostname", "reject_unknown_client",
    "reject_invalid_helo_hostname", "reject_invalid_hostname", "reject_unknown_helo_hostname",
    "reject_unknown_hostname", "reject_non_fqdn_hostname", "reject_multi_recipient_bounce",
    "reject_plaintext_session", "reject_sender_login_mismatch", "reject_known_sender_login_mismatch",
    "reject_authenticated_sender_login_mismatch", "reject_unauthenticated_sender_login_mismatch",
}
TABLE_ELEMENTS = {"check_recipient_access", "check_client_access", "check_sender_access", "check_helo_access",
                  "check_reverse_client_hostname_access", "check_client_hostname_access"}
DNS_ELEMENTS = {"reject_rbl_client", "reject_rhsbl_client", "reject_rhsbl_sender", "reject_rhsbl_recipient",
                "reject_rhsbl_helo", "reject_rhsbl_reverse_client"}
# access(5) actions: these answer (soft_bounce makes every refusal 4xx) or only log;
# DIVERTING ones take mail elsewhere or drop it after the 250.
ANSWERS = {"ok", "dunno", "reject", "defer", "defer_if_reject", "defer_if_permit", "warn", "info"}
DIVERTING = {"discard", "hold", "redirect", "filter", "bcc", "prepend"}
# A DNSBL's answers for a refused or misused query (Spamhaus: typo, public resolver, excessive
# queries): a filter that matches one scores every client as listed.
DNSBL_ERRORS = ("127.255.255.252", "127.255.255.254", "127.255.255.255")


def restrictions(mc: MailConfig, svc: Service) -> Iterator[tuple[str, str, str | None, list[str]]]:
    """(list, element, its argument, the access map's actions) for each element of the two
    recipient-stage lists; smtpd_check.c parses them with mystrtokq(CHARS_BRACE)."""
    for name in RESTRICTION_LISTS:
        elements = split_list_maps(mc.param(name, svc))
        i = 0
        while i < len(elements):
            element = elements[i].lower()
            arg = elements[i + 1] if element in TABLE_ELEMENTS | DNS_ELEMENTS and i + 1 < len(elements) else None
            actions = [v.split()[0].lower() for _, v in mc.table(arg) if v.split()] \
                if arg is not None and element in TABLE_ELEMENTS else []
            yield name, element, arg, actions
            i += 2 if arg is not None else 1


POSTSCREEN_ACCESS = {"permit", "reject", "dunno"}  # postconf(5) postscreen_access_list: the only actions


def _postscreen_access_problems(mc: MailConfig, svc: Service) -> Iterator[str]:
    """postscreen_access_list is permit_mynetworks and lookup tables of the client address
    (postscreen_access.c). A reject row refuses the clients it names when
    postscreen_denylist_action is not ignore: one address is a choice, a static: reject
    (or a table the pack cannot read) may be every client, each deferred until it gives up."""
    enforced = mc.param("postscreen_denylist_action", svc).strip().lower() != "ignore"
    for element in split_list_maps(mc.param("postscreen_access_list", svc)):
        if element.lower() == "permit_mynetworks":
            continue
        if ":" not in element:
            raise WouldNotStart(f"postscreen_access_list element {element!r} in {_where(svc)} is neither "
                                "permit_mynetworks nor a lookup table: postscreen exits at startup")
        kind = element.strip().partition(":")[0].lower()
        for key, value in mc.table(element):
            action = (value.split() or [""])[0].lower()
            if action not in POSTSCREEN_ACCESS:
                yield (f"postscreen_access_list table {element!r} answers {value!r} for {key!r} in {_where(svc)}: "
                       f"postscreen knows only {', '.join(sorted(POSTSCREEN_ACCESS))}, and the pack fails closed")
            elif action == "reject" and enforced and kind == "static":
                yield (f"postscreen_access_list {element!r} in {_where(svc)} rejects every client: with "
                       f"postscreen_denylist_action {mc.param('postscreen_denylist_action', svc)!r} each sender is "
                       "deferred until its queue gives up, and the mail is lost; list single addresses only")


def _dnsbl_filter_problem(site: str) -> str:
    _, pattern, _ = dnsbl_site(site)
    if pattern is None:
        return "has no reply filter"
    hit = next((a for a in DNSBL_ERRORS if ip_match(pattern, a, site)), None)
    return f"has a reply filter that matches {hit}, a DNSBL's error answer" if hit else ""


# --- recipients verify: the primary's answer to a probe, never 5xx, and the outage rule ------

VERIFY_RCPT, VERIFY_SENDER = "reject_unverified_recipient", "reject_unverified_sender"
VERIFY_PARAMS = {  # parameter -> (allowed effective values, why)
    "unverified_recipient_reject_code": (("450",), "an address the primary refused gets 450 and stays at its sender"),
    "unverified_recipient_defer_code": (("250",), "a probe that cannot reach the primary (an outage) must take the "
                                                  "mail; a 4xx defers outage mail to every address not yet cached"),
    "unverified_recipient_tempfail_action": (("defer_if_permit", "defer"), "a probe still running defers once"),
}


def _restriction_words(mc: MailConfig, svc: Service) -> list[str]:
    """Every element of the two recipient-stage lists, with each access map's actions."""
    return [w for _, element, _, actions in restrictions(mc, svc) for w in (element, *actions)]


def verification_problems(mc: MailConfig) -> Iterator[str]:
    mode = environment.recipients()
    for svc in mc.services_running("smtpd"):
        words = _restriction_words(mc, svc)
        if VERIFY_SENDER in words:
            yield (f"{_where(svc)} uses {VERIFY_SENDER}: the probe goes to the sender's MX on port 25, which Oracle "
                   "blocks, so every sender stays unverified and every message is deferred; remove it")
        if VERIFY_RCPT not in words:
            continue
        if mode != "verify":
            yield (f"{_where(svc)} uses {VERIFY_RCPT} but stack config recipients is {mode!r}: set recipients "
                   "verify and render the relay with the program, or remove it")
        for name, (allowed, why) in VERIFY_PARAMS.items():
            value = mc.param(name, svc).strip().lower()
            if value not in allowed:
                yield (f"{name} = {value!r} in {_where(svc)}; with {VERIFY_RCPT} it must be "
                       f"{' or '.join(allowed)} ({why})")


def _primary_size(cfg: dict) -> int:
    stack = environment.fact("messageSizeLimit")
    return max(int(cfg.get("primaryMessageSizeLimit") or 0), stack)


never_5xx = _instance_policy(
    "never-5xx",
    "The relay never answers 5xx for a protected domain and never bounces drained mail: soft_bounce = yes in "
    "every smtpd, postscreen and delivery agent; valid postscreen actions; DNSBL sites with valid reply "
    "filters; message_size_limit exactly the primary's (stack config messageSizeLimit) less the SIZE_HEADROOM "
    "the relay's and the primary's headers need; a catch-all "
    "recipient map; recipient verification only with stack config recipients verify, 450 for a refused address "
    "and 250 when the probe cannot reach the primary; no sender verification.",
    lambda mc, cfg: never_5xx_problems(mc, {**cfg, "primaryMessageSizeLimit": _primary_size(cfg)}),
    PolicyConfigSchema(properties={"primaryMessageSizeLimit": {
        "type": "integer", "minimum": 0, "default": 0,
        "description": "Raise the size floor above the stack's messageSizeLimit."}}))


# --- lifetimes -------------------------------------------------------------------------

def _qmgr_seconds(mc: MailConfig, name: str) -> tuple[int, str]:
    qmgr = mc.daemon("queue_service_name", ("qmgr", "oqmgr"))
    raw = mc.param(name, qmgr)
    return time_value(name, raw, "d", 0, LIFETIME_MAX), raw


def _fmt(seconds: int) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _config_seconds(value: str, key: str) -> int:
    try:
        return time_value(key, str(value), "d")
    except WouldNotStart:
        raise FactError(f"policy config {key} = {value!r} is not a Postfix time") from None


def queue_lifetime_problems(mc: MailConfig, cfg: dict) -> Iterator[str]:
    floor = _config_seconds(QUEUE_FLOOR, "queueLifetime")
    want = _config_seconds(cfg["queueLifetime"], "queueLifetime")
    if want < floor:
        yield (f"policy config queueLifetime = {cfg['queueLifetime']} loosens the {QUEUE_FLOOR} invariant; "
               "policy config may only tighten it")
        want = floor
    have, raw = _qmgr_seconds(mc, "maximal_queue_lifetime")
    if have < want:
        yield (f"maximal_queue_lifetime = {raw} ({_fmt(have)}) in qmgr is shorter than {_fmt(want)}: outage mail "
               f"would expire and be lost; set it to {_fmt(want)}")


def bounce_lifetime_problems(mc: MailConfig, cfg: dict) -> Iterator[str]:
    ceiling = _config_seconds(BOUNCE_LIFETIME, "bounceLifetime")
    want = _config_seconds(cfg["bounceLifetime"], "bounceLifetime")
    if want > ceiling:
        yield (f"policy config bounceLifetime = {cfg['bounceLifetime']} loosens the {BOUNCE_LIFETIME} invariant; "
               "policy config may only tighten it")
        want = ceiling
    # qmgr caps it at maximal_queue_lifetime; a queue lifetime below its own floor is
    # queue-lifetime's finding, so this policy judges the setting itself.
    have, raw = _qmgr_seconds(mc, "bounce_queue_lifetime")
    if have != want:
        yield (f"bounce_queue_lifetime = {raw} ({_fmt(have)}) in qmgr; set it to {_fmt(want)} (the VM can never "
               "deliver a bounce, so it must not hold them long)")


POSTFIX_TIME = r"^\d+[smhdw]?$"
queue_lifetime = _instance_policy(
    "queue-lifetime", "qmgr's maximal_queue_lifetime is at least 30d (policy config may raise the floor) and is "
    "a time Postfix accepts (at most 100d).", queue_lifetime_problems,
    PolicyConfigSchema(properties={"queueLifetime": {
        "type": "string", "default": QUEUE_FLOOR, "pattern": POSTFIX_TIME,
        "description": "Minimum maximal_queue_lifetime (may only be raised)."}}))
bounce_lifetime = _instance_policy(
    "bounce-lifetime", "qmgr's bounce_queue_lifetime is 1d in effect (policy config may lower it).",
    bounce_lifetime_problems,
    PolicyConfigSchema(properties={"bounceLifetime": {
        "type": "string", "default": BOUNCE_LIFETIME, "pattern": POSTFIX_TIME,
        "description": "Exact bounce_queue_lifetime (may only be lowered)."}}))


# --- drain-port: where mail for a protected domain actually goes --------------------------

SERVICE_PORTS = {"smtp": 25}  # the one service name the pack resolves; any other fails closed
_NEXTHOP = re.compile(r"^(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>[^:]*))?$")


def _split_transport(value: str) -> tuple[str, str]:
    kind, sep, nexthop = value.partition(":")
    return (kind.strip(), nexthop.strip()) if sep else (value.strip(), "")


def drain_problems(mc: MailConfig, cfg: dict) -> Iterator[str]:  # same signature as every check
    host, port, host_key = environment.drain_target()
    want = f"smtp:[{host}]:{port}"
    if port == 25 and environment.drain_transport() == "nat":
        yield "stack config drainPort is 25, which Oracle blocks for egress; the drain needs another port"
    rewrite = mc.daemon("rewrite_service_name", ("trivial-rewrite",))
    for name in DIVERSIONS:
        for svc in [None, rewrite, *mc.services_running("smtpd", "cleanup", "pickup", "qmgr")]:
            if mc.param(name, svc).strip():
                where = f"in {_where(svc)}" if svc else "in main.cf"
                yield (f"{name} = {mc.param(name, svc).strip()!r} {where} can divert, rewrite or discard mail before "
                       f"it drains; the relay must forward mail unchanged to {want}, so remove it")
                break
    for svc in mc.services_running("smtpd"):
        for name, element, arg, actions in restrictions(mc, svc):
            diverting = sorted(set(actions) & DIVERTING)
            if diverting:
                yield (f"{name} element {element} {arg} in {_where(svc)} can answer {', '.join(diverting).upper()}, "
                       f"which drops, parks, rewrites or sends elsewhere mail taken with 250; the relay must forward "
                       f"mail unchanged to {want}, so remove those entries")
    maps = mc.param("transport_maps", rewrite)
    rows = _transport_rows(mc, maps)
    parent = "transport_maps" in split_list(mc.param("parent_domain_matches_subdomains", rewrite))
    for domain in environment.domains():
        keys = [domain] + _parents(domain, parent) + ["*"]
        found = next(((k, rows[k]) for k in keys if k in rows), None)
        routes = [(f"transport_maps entry {k!r}", v) for k, v in rows.items() if k.endswith("@" + domain)]
        if found:
            routes.append((f"transport_maps entry {found[0]!r}", found[1]))
        else:
            routes.append((f"relay_transport (no transport_maps entry for {domain})", ""))
        for what, value in routes:
            problem = _route_problem(mc, rewrite, domain, what, value, host, port, host_key)
            if problem:
                yield problem + f"; route {domain} with '{domain} {want}' in the transport map"


def _transport_rows(mc: MailConfig, maps: str) -> dict[str, str]:
    rows: dict[str, str] = {}
    for spec in mailconf.split_list_maps(maps):
        for key, value in mc.table(spec):
            rows.setdefault(key, value)  # first map wins; first duplicate within a table wins
    return rows


def _parents(domain: str, plain_parent: bool) -> list[str]:
    labels = domain.split(".")
    out = []
    for n in range(1, len(labels)):
        suffix = ".".join(labels[n:])
        out += [suffix] if plain_parent else []
        out.append("." + suffix)
    return out


def _route_problem(mc: MailConfig, rewrite: Service, domain: str, what: str, value: str, host: str,
                   port: int, host_key: str = "drainHost") -> str:
    kind, nexthop = _split_transport(value)
    default_kind, default_hop = _split_transport(mc.param("relay_transport", rewrite))
    kind, nexthop = kind or default_kind, nexthop or default_hop or mc.param("relayhost", rewrite).strip()
    svc = mc.service(kind, "unix")
    if svc is None:
        return f"{what} names transport {kind!r}, which has no 'unix' service in master.cf: mail is deferred forever"
    if svc.command != "smtp":
        return (f"{what} sends {domain} to '{kind}' ({svc.command}), not to an smtp client: the mail never reaches "
                "the primary")
    if svc.operands:
        return (f"{STARTS}: {_where(svc)} has the argument {svc.operands[0]!r} after its options, which the smtp "
                "client rejects at startup ('unknown attribute name'), so mail would stay queued")
    fallback = mc.param("smtp_fallback_relay", svc).strip()
    if fallback:
        return f"{_where(svc)} has smtp_fallback_relay = {fallback!r}, which diverts mail when the primary is down"
    m = _NEXTHOP.match(nexthop)
    if not nexthop or not m:
        return f"{what} gives no next hop for {domain}: it would be delivered by MX lookup to port 25 (blocked)"
    got_host, got_port = m.group("host"), m.group("port")
    if not got_host.startswith("["):
        return (f"{what} next hop {nexthop!r} is not bracketed, so Postfix looks up MX records instead of "
                f"connecting to [{host}]")
    if got_host[1:-1].lower().rstrip(".") != host:
        return f"{what} sends {domain} to {got_host}, not to the drain host [{host}] (stack config {host_key})"
    # No port is the smtp service, 25 (services(5)); other service names are not modelled.
    number = int(got_port) if got_port and got_port.isdigit() else SERVICE_PORTS.get(got_port or "smtp")
    if number != port:
        shown = got_port or "25 (no port given)"
        return (f"{what} drains {domain} on port {shown}, not on the drain port {port} "
                f"({'inside the WireGuard tunnel' if host_key != 'drainHost' else 'Oracle blocks egress 25'})")
    return ""


drain_port = _instance_policy(
    "drain-port", "Every recipient of a protected domain drains, unchanged, through an smtp client to "
    "[drainHost]:drainPort from the stack config (never port 25), or with drainTransport wireguard to "
    "[wireguardPrimaryAddress]:25 inside the tunnel: transport_maps as trivial-rewrite reads them "
    "(first map and first duplicate win), no content filter, milter, header check or rewrite that could divert it.",
    drain_problems)


# --- relay-domains: what the relay accepts, and never an open relay ---------------------------

OPEN_ELEMENTS = {"permit", "permit_tls_clientcerts", "permit_tls_all_clientcerts", "permit_mx_backup",
                 "permit_inet_interfaces", "permit_rhsbl_client", "permit_dnswl_client", "check_relay_domains"}
STOP_ELEMENTS = {"reject_unauth_destination", "defer_unauth_destination", "reject", "defer", "defer_if_permit"}
# smtpd_check.c smtpd_check_init(): smtpd exits unless one of these "works" in either list.
REQUIRED_ELEMENTS = STOP_ELEMENTS | {"check_relay_domains"}


def _has_required(elements: list[str]) -> bool:
    """smtpd_check.c has_required(): warn_if_reject skips the next element, and nothing after
    a plain `permit` counts."""
    i = 0
    while i < len(elements):
        element = elements[i].lower()
        if element == "warn_if_reject" and i + 1 < len(elements):
            i += 2
            continue
        if element == "permit":
            return False
        if element in REQUIRED_ELEMENTS:
            return True
        i += 1
    return False


def relay_domains_problems(mc: MailConfig, cfg: dict) -> Iterator[str]:
    want = sorted(environment.domains())
    rewrite = mc.daemon("rewrite_service_name", ("trivial-rewrite",))
    have = sorted(d.lower().rstrip(".") for d in split_list(mc.param("relay_domains", rewrite)))
    if any(":" in d or d.startswith("/") for d in have):
        yield f"relay_domains = {mc.param('relay_domains', rewrite)!r} uses a table the pack cannot check; list the domains"
    elif have != want:
        yield (f"relay_domains is {have} in trivial-rewrite but the protected domains are {want}; "
               f"set relay_domains = {' '.join(want)}")
    for name in ("mydestination", "virtual_alias_domains", "virtual_mailbox_domains"):
        if mc.param(name, rewrite).strip():
            yield (f"{name} = {mc.param(name, rewrite).strip()!r} makes the relay the final destination for those "
                   f"domains (local delivery, which this relay has none of); set {name} to empty")
    for svc in mc.services_running("smtpd"):
        verdict = _relay_verdict(mc, svc)
        if verdict:
            yield f"{_where(svc)}: {verdict}"
        yield from _unmodelled_restrictions(mc, svc)


def _unmodelled_restrictions(mc: MailConfig, svc: Service) -> Iterator[str]:
    known = PLAIN_ELEMENTS | TABLE_ELEMENTS | DNS_ELEMENTS
    for name, element, arg, actions in restrictions(mc, svc):
        if element not in known:
            yield (f"{name} in {_where(svc)} has {element!r}, a restriction the pack does not model; it fails "
                   "closed. Remove it")
        if (element in TABLE_ELEMENTS | DNS_ELEMENTS) and arg is None:
            yield f"{name} in {_where(svc)} ends with {element} and no argument: smtpd refuses the list at startup"
        for action in actions:
            # a restriction named as an action runs without its own argument being judged here
            if not (action in ANSWERS | DIVERTING | PLAIN_ELEMENTS or re.fullmatch(r"[45]\d\d|\d+", action)):
                yield (f"{name} element {element} {arg} in {_where(svc)} can answer {action!r}, an action the pack "
                       "does not model; it fails closed")


def _relay_verdict(mc: MailConfig, svc: Service) -> str:
    """smtpd's own startup rule first, then each restriction list walked as a stranger. smtpd
    evaluates smtpd_relay_restrictions and smtpd_recipient_restrictions one after the other and
    the recipient is refused when either list refuses it, so one refusing list is enough.

    Two strangers are walked: one sending to a foreign domain, and one sending to an IP literal
    of the VM's own address, which Postfix resolves as local (reject_unauth_destination lets it
    through) and, with no local delivery here, would strand in the queue."""
    # smtpd_check.c parses restriction lists with mystrtokq(CHARS_BRACE): inline:{..} is one token.
    lists = {n: split_list_maps(mc.param(n, svc)) for n in ("smtpd_relay_restrictions", "smtpd_recipient_restrictions")}
    if not any(_has_required(elements) for elements in lists.values()):
        raise WouldNotStart(f"{_where(svc)} exits at startup: in parameter smtpd_relay_restrictions or "
                            "smtpd_recipient_restrictions, specify at least one working instance of "
                            "reject_unauth_destination (none is listed, or it comes after a plain permit)")
    sasl = boolean("smtpd_sasl_auth_enable", mc.param("smtpd_sasl_auth_enable", svc))
    foreign = {n: _lets_through(mc, elements, sasl, STOP_ELEMENTS) for n, elements in lists.items()}
    if all(foreign.values()):
        return "; ".join(f"{n} element {e!r} can let a stranger relay to a foreign domain"
                         for n, e in foreign.items()) + (
            "; set smtpd_relay_restrictions = reject_unauth_destination")
    literal = {n: _lets_through(mc, elements, sasl, LOCAL_STOP_ELEMENTS) for n, elements in lists.items()}
    if all(literal.values()):
        domains = ", ".join(f"{d}=OK" for d in sorted(environment.domains()))
        return ("a stranger's RCPT TO:<x@[the VM's own IP]> is taken (Postfix resolves its own IP literals as "
                "local, which reject_unauth_destination permits) and stranded, for want of local delivery; "
                f"set smtpd_recipient_restrictions = reject_non_fqdn_recipient, check_recipient_access "
                f"inline:{{ {domains} }}, reject")
    return ""


# For a recipient that resolves as local, the *_unauth_destination elements permit (it is
# an authorized destination); only an unconditional refusal stops it.
LOCAL_STOP_ELEMENTS = {"reject", "defer"}
PASSIVE_ACCESS_ACTIONS = ("reject", "defer", "defer_if_permit", "dunno", "4", "5")


def _lets_through(mc: MailConfig, elements: list[str], sasl: bool, stops: set[str]) -> str:
    """The element that may let the stranger through, '' when the list refuses it first; the
    end of a list permits (smtpd's default)."""
    i = 0
    while i < len(elements):
        element = elements[i].lower()
        if element in stops:
            return ""
        if element == "check_recipient_access" and i + 1 < len(elements) \
                and _protected_only(mc.table(elements[i + 1])):
            i += 2
            continue
        if element in OPEN_ELEMENTS or (element == "permit_sasl_authenticated" and sasl) \
                or element.startswith("check_") or element in STOP_ELEMENTS:
            return element
        i += 1
    return "(end of list)"


def _protected_only(rows: list[tuple[str, str]]) -> bool:
    """An access table that can only say OK for addresses in a protected domain (or below one:
    parent_domain_matches_subdomains includes smtpd_access_maps) never helps a stranger."""
    protected = environment.domains()
    for key, action in rows:
        if action.lower().startswith(PASSIVE_ACCESS_ACTIONS):
            continue
        domain = key.rpartition("@")[2].lstrip(".")
        if not key or key.endswith("@") or not any(domain == d or domain.endswith("." + d) for d in protected):
            return False
    return True


relay_domains = _instance_policy(
    "relay-domains", "trivial-rewrite's relay_domains equals the protected domains (stack config domains), "
    "nothing is a local destination, and every smtpd refuses strangers relaying elsewhere "
    "(reject_unauth_destination before anything that could permit them).", relay_domains_problems)


# --- relay-mynetworks: who may relay through the relay itself ------------------------------

LOOPBACK: list[Network] = [ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv6Network("::1/128")]


def relay_mynetworks_problems(mc: MailConfig) -> Iterator[str]:
    for svc in mc.services_running("smtpd", "postscreen"):
        if not mc.is_set("mynetworks", svc):
            yield (f"mynetworks is not set for {_where(svc)}, so Postfix derives it from mynetworks_style = "
                   f"{mc.param('mynetworks_style', svc)}; set mynetworks = 127.0.0.1/32")
            continue
        for entry in split_list(mc.param("mynetworks", svc)):
            text = entry.replace("[", "").replace("]", "")
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                yield (f"mynetworks entry {entry!r} in {_where(svc)} is not a literal address (a table, host name "
                       "or negation cannot be checked); list loopback addresses only")
                continue
            if not inside(net, LOOPBACK):
                yield (f"mynetworks entry {entry} in {_where(svc)} is not loopback: clients there may relay "
                       "anywhere through the backup MX; set mynetworks = 127.0.0.1/32")


relay_mynetworks = _instance_policy(
    "relay-mynetworks", "The relay's own mynetworks is loopback only in every smtpd and postscreen, so no "
    "client but the VM itself may relay through it.", lambda mc, cfg: relay_mynetworks_problems(mc))


# --- SMTP smuggling --------------------------------------------------------------------

# smtpd_forbid_bare_newline values that close smuggling without a reject: Postfix 3.7.10+ and
# 3.8.5+ read yes as an alias of normalize; reject answers smtpd_forbid_bare_newline_reject_code
# (550) and disconnects; no (3.7/3.8's default) ends DATA at a bare <LF>.<LF>.
BARE_NEWLINE_SAFE = ("normalize", "yes")


def smtp_smuggling_problems(mc: MailConfig) -> Iterator[str]:
    fix = "set smtpd_forbid_bare_newline = normalize and smtpd_forbid_bare_newline_exclusions = 127.0.0.1/32"
    for svc in mc.services_running("smtpd"):
        value = mc.param("smtpd_forbid_bare_newline", svc).strip().lower()
        if value not in BARE_NEWLINE_SAFE:
            why = ("answers 550 and disconnects" if value == "reject" else
                   "ends DATA at a bare <LF>.<LF>, so one message can carry a second, forged one (CVE-2023-51764)"
                   if value in ("no", "") else "is not a value this pack models")
            yield f"smtpd_forbid_bare_newline = {value!r} in {_where(svc)} {why}; {fix}"
        for entry in split_list(mc.param("smtpd_forbid_bare_newline_exclusions", svc)):
            try:
                net = ipaddress.ip_network(entry.replace("[", "").replace("]", ""), strict=False)
            except ValueError:
                yield (f"smtpd_forbid_bare_newline_exclusions entry {entry!r} in {_where(svc)} is not a literal "
                       f"address (a table or name cannot be checked); {fix}")
                continue
            if not inside(net, LOOPBACK):
                yield (f"smtpd_forbid_bare_newline_exclusions entry {entry} in {_where(svc)} exempts clients "
                       f"beyond loopback from the smuggling protection; {fix}")
        if boolean("smtpd_forbid_unauth_pipelining", mc.param("smtpd_forbid_unauth_pipelining", svc)):
            yield (f"smtpd_forbid_unauth_pipelining = yes in {_where(svc)} disconnects a client that pipelines "
                   "early with 554, outside soft_bounce's reach; set it to no (normalize closes smuggling)")


smtp_smuggling = _instance_policy(
    "smtp-smuggling", "Every smtpd ends DATA only at <CR><LF>.<CR><LF> (smtpd_forbid_bare_newline = normalize), "
    "exempts only loopback, and never disconnects early pipelining with a 554.",
    lambda mc, cfg: smtp_smuggling_problems(mc))


__all__ = ["never_5xx", "queue_lifetime", "bounce_lifetime", "drain_port", "relay_domains", "relay_mynetworks",
           "smtp_smuggling"]
