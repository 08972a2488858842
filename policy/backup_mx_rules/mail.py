"""Policies on the Postfix configuration the relay VM boots with (decoded from user_data)."""
from __future__ import annotations

import re

from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ResourceValidationPolicy,
                           StackValidationPolicy)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from . import mailconf
from .mailconf import POSTSCREEN_ACTIONS, MailConfig, Service, split_list
from .view import BACKUP_MX, INSTANCE, config, dig, guarded, known, plain

DEFAULT_PRIMARY_SIZE = 209715200
RESTRICTION_LISTS = ("smtpd_client_restrictions", "smtpd_helo_restrictions", "smtpd_sender_restrictions",
                     "smtpd_recipient_restrictions", "smtpd_relay_restrictions", "smtpd_data_restrictions",
                     "smtpd_end_of_data_restrictions")
# Restriction elements that only ever permit, defer (4xx), warn or are the allowed exception.
NON_REJECTING = re.compile(r"^(permit\w*|defer\w*|reject_unauth_destination|sleep|\d+)$")
CONTENT_CHECKS = ("header_checks", "body_checks", "mime_header_checks", "nested_header_checks",
                  "milter_header_checks")
POSTSCREEN_TESTS = {  # action parameter -> the parameter that enables its test (None: always on)
    "postscreen_greet_action": None,
    "postscreen_dnsbl_action": "postscreen_dnsbl_sites",
    "postscreen_blacklist_action": "postscreen_access_list",
    "postscreen_denylist_action": "postscreen_access_list",
    "postscreen_pipelining_action": "postscreen_pipelining_enable",
    "postscreen_non_smtp_command_action": "postscreen_non_smtp_command_enable",
    "postscreen_bare_newline_action": "postscreen_bare_newline_enable",
}


def mail_config(props: dict, where: str) -> MailConfig | None | str:
    """The instance's Postfix config, None if it writes none, or an error text."""
    value = dig(props, "metadata", "user_data")
    if value is None:
        return None
    if not known(value):
        raise UnknownValueError(UNKNOWN_STRING_VALUE, [where, "metadata", "user_data"])
    try:
        return mailconf.from_user_data(value)
    except (mailconf.UserDataError, ValueError, KeyError) as exc:
        return f"cannot read the relay's Postfix config from user_data ({exc})"


def _instance_policy(name: str, description: str, check, schema: PolicyConfigSchema | None = None,
                     defaults: dict | None = None) -> ResourceValidationPolicy:
    def validate(args, report_violation):
        if args.resource_type != INSTANCE:
            return
        mc = mail_config(plain(args.props), args.name)
        if mc is None:
            return
        if isinstance(mc, str):
            report_violation(f"instance '{args.name}': {mc}. Render user_data as a #cloud-config that "
                             "writes main.cf and master.cf.")
            return
        for problem in check(mc, config(args, defaults or {})):
            report_violation(f"instance '{args.name}': {problem}")

    return ResourceValidationPolicy(name=name, description=description, validate=guarded(name, validate),
                                    enforcement_level=EnforcementLevel.MANDATORY, config_schema=schema)


def _yes(value: str) -> bool:
    return value.strip().lower() in ("yes", "true", "1")


def _soft(mc: MailConfig, service: Service | None) -> bool:
    return _yes(mc.param("soft_bounce", service))


def never_5xx_problems(mc: MailConfig, cfg: dict) -> list[str]:
    problems = []
    fix = "set soft_bounce = yes in main.cf (or -o soft_bounce=yes on that service)"
    listeners = [s for s in mc.services if s.kind == "inet" and s.command in ("smtpd", "postscreen")]
    smtpds = [s for s in mc.services if s.command == "smtpd" and s.kind in ("inet", "pass")]
    for svc in (s for s in listeners if s.command == "postscreen"):
        for action, enabler in POSTSCREEN_TESTS.items():
            value = mc.param(action, svc).strip().lower()
            if value not in POSTSCREEN_ACTIONS:
                problems.append(f"{action} = {value!r} is not a postscreen action (allowed: "
                                f"{', '.join(POSTSCREEN_ACTIONS)}; there is no 'defer'): postscreen would die at "
                                "startup and the port would answer nothing")
                continue
            active = enabler is None or (_yes(mc.param(enabler, svc)) if enabler.endswith("_enable")
                                         else bool(mc.param(enabler, svc).strip()))
            if active and value in ("enforce", "drop") and not _soft(mc, svc):
                code = "550" if value == "enforce" else "521"
                problems.append(f"{action} = {value} answers {code} on service '{svc.name}'; {fix}")
        for site in split_list(mc.param("postscreen_dnsbl_sites", svc)):
            if "=" not in site.split("*")[0]:
                problems.append(f"postscreen DNSBL site {site!r} has no reply filter: resolvers that are refused "
                                "answer 127.255.255.254 and every client scores as listed; add one, e.g. "
                                "zen.spamhaus.org=127.0.0.[2..11]*3")
    for svc in smtpds:
        if _soft(mc, svc):
            continue
        where = f"on smtpd service '{svc.name}'"
        size = mc.param("message_size_limit", svc).strip()
        if size != "0":
            problems.append(f"an oversize message gets 552 {where}; {fix}")
        for name in RESTRICTION_LISTS:
            elements = split_list(mc.param(name, svc))
            for i, element in enumerate(elements):
                if element == "warn_if_reject" or (i and elements[i - 1] == "warn_if_reject"):
                    continue  # the next element only logs
                if not NON_REJECTING.match(element) and "." not in element and ":" not in element:
                    problems.append(f"{name} element {element!r} can answer 5xx {where}; {fix}, "
                                    "or use a defer_* / warn_if_reject form")
        maps = mc.param("relay_recipient_maps", svc).strip()
        if maps and _yes(mc.param("smtpd_reject_unlisted_recipient", svc)):
            domains = split_list(mc.param("relay_domains"))
            rows = {}
            for spec in split_list(maps):
                rows.update(mc.table(spec) or {})
            missing = [d for d in domains if rows.get("@" + d.lower(), "").upper() != "OK"]
            if missing:
                problems.append(f"relay_recipient_maps does not accept every recipient of {missing} "
                                f"(unlisted recipients get 550) {where}; add '@domain OK' or {fix}")
        for name in ("smtpd_milters", "smtpd_proxy_filter"):
            if mc.param(name, svc).strip():
                problems.append(f"{name} can answer 5xx {where}; {fix}, or remove it")
    if not _soft(mc, None):
        for name in CONTENT_CHECKS:
            if mc.param(name).strip():
                problems.append(f"{name} can REJECT (5xx) accepted mail; {fix}")
        if mc.param("non_smtpd_milters").strip() or mc.param("content_filter").strip():
            problems.append(f"a milter or content_filter can reject mail after acceptance; {fix}")
        drains = [s for s in mc.services if s.kind == "unix" and s.command == "smtp"]
        if any(not _soft(mc, s) for s in drains):
            problems.append("a 5xx from the primary would bounce drained mail, and this VM can never deliver "
                            f"the bounce, so the message is lost; {fix}")
    try:
        size = int(mc.param("message_size_limit"))
        primary = int(cfg["primaryMessageSizeLimit"])
        if size != 0 and size < primary:
            problems.append(f"message_size_limit = {size} is smaller than the primary's {primary}: mail the "
                            f"primary would take is refused here; set message_size_limit = {primary}")
    except ValueError:
        problems.append(f"message_size_limit = {mc.param('message_size_limit')!r} is not a number")
    return problems


def _lifetime(mc: MailConfig, name: str) -> tuple[int | None, str]:
    raw = mc.param(name).strip()
    try:
        return mailconf.seconds(raw), raw
    except ValueError:
        return None, raw


def _fmt(seconds: int) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def queue_lifetime_problems(mc: MailConfig, cfg: dict) -> list[str]:
    have, raw = _lifetime(mc, "maximal_queue_lifetime")
    want = mailconf.seconds(str(cfg["queueLifetime"]))
    if have is None:
        return [f"maximal_queue_lifetime = {raw!r} is not a Postfix time; set it to {cfg['queueLifetime']}"]
    problems = []
    if have > mailconf.LIFETIME_CAP_S:
        problems.append(f"maximal_queue_lifetime = {raw} exceeds Postfix's 100d cap (qmgr will not start); "
                        f"set it to {cfg['queueLifetime']}")
    if have != want:
        problems.append(f"maximal_queue_lifetime = {raw} ({_fmt(have)}) holds outage mail for the wrong time; "
                        f"set it to {cfg['queueLifetime']}")
    return problems


def bounce_lifetime_problems(mc: MailConfig, cfg: dict) -> list[str]:
    have, raw = _lifetime(mc, "bounce_queue_lifetime")
    want = mailconf.seconds(str(cfg["bounceLifetime"]))
    if have is None:
        return [f"bounce_queue_lifetime = {raw!r} is not a Postfix time; set it to {cfg['bounceLifetime']}"]
    problems = []
    if have != want:
        problems.append(f"bounce_queue_lifetime = {raw} ({_fmt(have)}); set it to {cfg['bounceLifetime']} "
                        "(the VM can never deliver a bounce, so it must not hold them long)")
    queue, _ = _lifetime(mc, "maximal_queue_lifetime")
    if queue is not None and have > queue:
        problems.append(f"bounce_queue_lifetime = {raw} exceeds maximal_queue_lifetime; "
                        f"set it to {cfg['bounceLifetime']}")
    return problems


def drain_port_problems(mc: MailConfig, cfg: dict) -> list[str]:  # noqa: ARG001
    problems = []
    rows: dict[str, str] = {}
    for spec in split_list(mc.param("transport_maps")):
        table = mc.table(spec)
        if table is None:
            problems.append(f"transport_maps {spec!r} cannot be read from user_data; write it as a file")
            continue
        rows.update(table)
    relayhost = mc.param("relayhost").strip()
    for domain in split_list(mc.param("relay_domains")):
        nexthop = rows.get(domain.lower()) or (f"smtp:{relayhost}" if relayhost else "")
        if not nexthop:
            problems.append(f"no transport for {domain}: it would be delivered by MX lookup to port 25, which "
                            "Oracle blocks; add '<domain> smtp:[drain host]:2526' to the transport map")
            continue
        match = re.fullmatch(r"(?:(\w[\w-]*):)?(\[[^\]]+\]|[^:\s]+)(?::(\d+))?", nexthop.strip())
        port = int(match.group(3)) if match and match.group(3) else 25
        if port == 25:
            problems.append(f"transport for {domain} is {nexthop!r}, which drains on port 25 (blocked for egress "
                            "by Oracle); use smtp:[drain host]:2526")
    return problems


LIFETIME_SCHEMA = PolicyConfigSchema(properties={
    "queueLifetime": {"type": "string", "default": "30d", "pattern": r"^\d+[smhdw]?$"},
    "bounceLifetime": {"type": "string", "default": "1d", "pattern": r"^\d+[smhdw]?$"},
})

never_5xx = _instance_policy(
    "never-5xx",
    "The relay never answers 5xx for a protected domain: soft_bounce covers every path that could reject "
    "(postscreen, restrictions, recipient validation, size, milters, filters); postscreen actions are valid; "
    "DNSBL sites have reply filters; message_size_limit is at least the primary's.",
    never_5xx_problems,
    PolicyConfigSchema(properties={"primaryMessageSizeLimit": {"type": "integer", "minimum": 0,
                                                               "default": DEFAULT_PRIMARY_SIZE}}),
    {"primaryMessageSizeLimit": DEFAULT_PRIMARY_SIZE})
queue_lifetime = _instance_policy(
    "queue-lifetime", "maximal_queue_lifetime equals the configured queue lifetime (default 30d) and is at most 100d.",
    queue_lifetime_problems, LIFETIME_SCHEMA, {"queueLifetime": "30d", "bounceLifetime": "1d"})
bounce_lifetime = _instance_policy(
    "bounce-lifetime", "bounce_queue_lifetime equals the configured bounce lifetime (default 1d) and never exceeds "
    "the queue lifetime.", bounce_lifetime_problems, LIFETIME_SCHEMA, {"queueLifetime": "30d", "bounceLifetime": "1d"})
drain_port = _instance_policy(
    "drain-port", "Every protected domain drains through an explicit transport on a port other than 25.",
    drain_port_problems)


def _relay_domains(args, report_violation):
    resources = [(r, plain(r.props)) for r in args.resources]
    intent = next((p for r, p in resources if r.resource_type == BACKUP_MX), None)
    if intent is None or not known(intent.get("domains", None)):
        return
    want = sorted(d.lower() for d in intent.get("domains") or [])
    for r, props in resources:
        if r.resource_type != INSTANCE:
            continue
        mc = mail_config(props, r.name)
        if not isinstance(mc, MailConfig):
            continue
        have = sorted(d.lower() for d in split_list(mc.param("relay_domains")))
        if have != want:
            report_violation(f"instance '{r.name}': relay_domains is {have} but the protected domains are "
                             f"{want}; set relay_domains = {' '.join(want)}", r.urn)
        if split_list(mc.param("mydestination")):
            report_violation(f"instance '{r.name}': mydestination = {mc.param('mydestination')!r} makes the relay "
                             "deliver locally (and reject unknown local users); set mydestination to empty", r.urn)
        relay = split_list(mc.param("smtpd_relay_restrictions"))
        if not any(e in ("reject_unauth_destination", "defer_unauth_destination") for e in relay):
            report_violation(f"instance '{r.name}': smtpd_relay_restrictions lacks reject_unauth_destination, so "
                             "the relay is open; set it to 'permit_mynetworks, reject_unauth_destination'", r.urn)


relay_domains = StackValidationPolicy(
    name="relay-domains",
    description="relay_domains equals the protected domains, mydestination is empty, and relaying is limited "
                "by reject_unauth_destination.",
    validate=guarded("relay-domains", _relay_domains), enforcement_level=EnforcementLevel.MANDATORY)
