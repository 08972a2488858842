"""Policies on MTA-STS (RFC 8461) and TLS-RPT (RFC 8460): a sender that enforces MTA-STS
delivers only to MX hosts the domain's policy lists, so a relay missing from it takes no
mail from such senders during an outage while every other check stays green.

The pack reads the policies where senders get them: the Worker script's one data line
(`const POLICIES = {json};`, policy host -> text), parsed as RFC 8461 section 3.2 does, and
the TXT records as the stack creates them. Its own copy of the id contract: the id is the
first 32 hex digits of the SHA-256 of the policy text.
"""
from __future__ import annotations

import hashlib
import json
import re

from pulumi_policy import EnforcementLevel

from . import environment
from .dns import record_name
from .environment import FactError
from .view import DNS_COMPONENT, DNS_RECORD, WORKER_DOMAIN, WORKER_SCRIPT, known, plain, stack_policy

MODES = ("off", "testing", "enforce")
MAX_AGE_CAP = 31557600
POLICIES_LINE = "const POLICIES = "


class PolicyError(ValueError):
    pass


def policy_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def parse_policy(text: str) -> dict:
    """RFC 8461 3.2: "key: value" lines ending in CRLF or LF; `mx` repeats; version first."""
    fields: dict = {"mx": []}
    lines = [line for line in re.split(r"\r?\n", text) if line != ""]
    for n, line in enumerate(lines):
        name, sep, value = line.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise PolicyError(f"line {line!r} is not key: value")
        value = value.strip(" \t")
        if name == "version" and n != 0:
            raise PolicyError("version is not the first line")
        if name == "mx":
            fields["mx"].append(value.lower())
        else:
            fields.setdefault(name, value)
    if fields.get("version") != "STSv1":
        raise PolicyError(f"version is {fields.get('version')!r}, not STSv1")
    if fields.get("mode") not in ("none", "testing", "enforce"):
        raise PolicyError(f"mode is {fields.get('mode')!r}")
    if not re.fullmatch(r"[0-9]{1,10}", fields.get("max_age", "")) or int(fields["max_age"]) > MAX_AGE_CAP:
        raise PolicyError(f"max_age is {fields.get('max_age')!r}, not 0..{MAX_AGE_CAP}")
    return fields


# The Worker the program renders, with its one data line replaced by TEMPLATE_DATA. Anything
# else in the script could change what it serves; tests/test_mta_sts.py keeps this equal to
# the rendered template and runs the Worker in Node against what the pack parsed.
TEMPLATE_DATA = "const POLICIES = <data>;"
TEMPLATE_SHA256 = "09712102b152281eed1245ba0b6d57e9ff8f5ef77d529ded428c4dc41eac4fed"


def matches(host: str, pattern: str) -> bool:
    """RFC 8461 4.1: an exact name, or "*." plus a suffix matching exactly one more label."""
    host, pattern = host.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return host == pattern


def worker_policies(args) -> tuple[dict[str, str], set[str]]:
    """(policy host -> text, the Worker script names) from every Worker script of the stack."""
    found: dict[str, str] = {}
    names = set()
    scripts = [r for r in args.resources if r.resource_type == WORKER_SCRIPT]
    if len(scripts) > 1:
        raise PolicyError(f"the stack has {len(scripts)} Worker scripts ({', '.join(r.name for r in scripts)}); the pack "
                          "models one, the rendered policy host, and cannot tell which one serves a policy host")
    for r in scripts:
        props = plain(r.props)
        names.add(str(props.get("scriptName")))
        content = props.get("content")
        lines = [line for line in str(content).splitlines() if line.startswith(POLICIES_LINE)]
        if not isinstance(content, str) or len(lines) != 1:
            raise PolicyError(f"Worker script '{r.name}' has no single `{POLICIES_LINE}{{...}};` line the pack can read")
        template = "\n".join(TEMPLATE_DATA if line.startswith(POLICIES_LINE) else line for line in content.split("\n"))
        if hashlib.sha256(template.encode()).hexdigest() != TEMPLATE_SHA256:
            raise PolicyError(f"Worker script '{r.name}' is not the reviewed policy-host template apart from its data "
                              "line, so what it serves cannot be read from that line (a later statement, a second "
                              "handler or an import could change it); render it with the program, or review the "
                              "template's new SHA-256 into TEMPLATE_SHA256 (policy/backup_mx_rules/mtasts.py)")
        try:
            data = json.loads(lines[0][len(POLICIES_LINE):].rstrip().rstrip(";"))
        except json.JSONDecodeError as exc:
            raise PolicyError(f"Worker script '{r.name}': its policies are not a JSON object ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise PolicyError(f"Worker script '{r.name}': its policies are not host -> text")
        found.update({k.lower(): v for k, v in data.items()})
    return found, names


def _txt(p: dict) -> str:
    return str(p.get("content", "")).strip().strip('"')




def _mta_sts(args, report_violation):
    try:
        mode = environment.fact("mtaSts")
        if mode not in MODES:
            raise FactError(f"stack config {environment.project()}:mtaSts = {mode!r} is not one of {', '.join(MODES)}")
        domains = environment.domains()
        hosts = [environment.primary_mx_host()] + [h for h, _ in environment.relays()]
    except FactError as exc:
        report_violation(f"{exc}; the pack fails closed")
        return
    records = [(r, plain(r.props)) for r in args.resources if r.resource_type == DNS_RECORD]
    if mode == "off":
        for r, p in records:
            if record_name(p).startswith("_mta-sts."):
                report_violation(f"DNS record '{r.name}' publishes MTA-STS although stack config mtaSts is off; "
                                 "set mtaSts so the pack checks that the policy lists every relay", r.urn)
        return
    try:
        policies, scripts = worker_policies(args)
    except PolicyError as exc:
        report_violation(f"{exc}; the pack fails closed")
        return
    custom = {str(p.get("hostname", "")).lower().rstrip("."): p for p in
              (plain(r.props) for r in args.resources if r.resource_type == WORKER_DOMAIN)}
    for domain in domains:
        # Every MX host this stack manages for the domain, plus the primary and every declared relay.
        managed = {str(p.get("content", "")).lower().rstrip(".") for _, p in records
                   if str(p.get("type")).upper() == "MX" and record_name(p) in (domain, "@")
                   and known(p.get("content"))}
        want = sorted(set(hosts) | managed)
        host = f"mta-sts.{domain}"
        text = policies.get(host)
        if text is None:
            report_violation(f"domain {domain}: no MTA-STS policy is served for {host} (the Worker's POLICIES has "
                             f"{sorted(policies)}); senders that enforce MTA-STS would find none")
            continue
        try:
            policy = parse_policy(text)
        except PolicyError as exc:
            report_violation(f"domain {domain}: the policy served at https://{host}/.well-known/mta-sts.txt is "
                             f"invalid ({exc}); senders ignore it")
            continue
        if policy["mode"] != mode:
            report_violation(f"domain {domain}: the policy's mode is {policy['mode']}, but stack config mtaSts is "
                             f"{mode}; render the policy from the stack")
        for mx in want:
            if not any(matches(mx, pattern) for pattern in policy["mx"]):
                report_violation(f"domain {domain}: the MTA-STS policy does not list the MX host {mx} (its mx: "
                                 f"{policy['mx']}); senders that enforce MTA-STS would never deliver to it. Add "
                                 f"`mx: {mx}` to the policy")
        site = custom.get(host)
        if site is None:
            report_violation(f"domain {domain}: no Worker custom domain serves {host}; the policy URL would not answer")
        elif known(site.get("service")) and str(site.get("service")) not in scripts:
            report_violation(f"domain {domain}: the custom domain {host} routes to Worker {site.get('service')!r}, "
                             f"which is not the one that carries the policies ({sorted(scripts)})")
        sts = [p for _, p in records if str(p.get("type")).upper() == "TXT" and record_name(p) == f"_mta-sts.{domain}"]
        if len(sts) != 1:
            report_violation(f"domain {domain}: {len(sts)} _mta-sts TXT records in the stack; exactly one "
                             "(v=STSv1; id=...) is needed, and two make senders ignore the policy")
        else:
            content = _txt(sts[0])
            found = sts_record_id(content) if known(content) else None
            if known(content) and not found:
                report_violation(f"domain {domain}: _mta-sts.{domain} is {content!r}, not `v=STSv1; id=<1..32 "
                                 "letters or digits>` (RFC 8461 section 3.1)")
            elif found and found != policy_id(text):
                report_violation(f"domain {domain}: the _mta-sts id {found} is not derived from the policy "
                                 f"text (expected {policy_id(text)}, the first 32 hex digits of its SHA-256): senders "
                                 "that cached an older policy would not refetch it. Derive the id from the text")
        rpt = [p for _, p in records if str(p.get("type")).upper() == "TXT"
               and record_name(p) == f"_smtp._tls.{domain}"]
        if not any(tls_rpt_record_ok(_txt(p)) for p in rpt):
            report_violation(f"domain {domain}: no _smtp._tls TXT record `v=TLSRPTv1; rua=...`; without TLS-RPT "
                             "nobody hears of senders that fail MTA-STS")


# RFC 8461 section 3.1 and RFC 8460 section 3, as ABNF: fields separated by *WSP ";" *WSP,
# an optional trailing separator, extensions allowed beside the named fields.
_SEP = re.compile(r"[ \t]*;[ \t]*")
_STS_ID = re.compile(r"id=([A-Za-z0-9]{1,32})")
_EXTENSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}=[\x21-\x3a\x3c\x3e-\x7e]+")
_URI = re.compile(r"(mailto:[^\s,;!@]+@[A-Za-z0-9.-]+|https://[^\s,;!]+)")


def _fields(record: str, version: str) -> list[str] | None:
    if not record.startswith(version):
        return None
    rest = record[len(version):]
    if not rest:
        return []
    parts = _SEP.split(rest)
    if parts[0] != "":  # the version must be followed by a separator
        return None
    parts = parts[1:]
    if parts and parts[-1] == "":
        parts = parts[:-1]  # [sts-sep] / [field-delim] at the end
    return parts


def sts_record_id(record: str) -> str | None:
    """The id of an RFC 8461 `_mta-sts` record (sts-version 1*(sts-sep sts-field) [sts-sep]),
    or None if the record does not parse or has no single id."""
    fields = _fields(record, "v=STSv1")
    if not fields:
        return None
    ids = [m.group(1) for f in fields if (m := _STS_ID.fullmatch(f))]
    if len(ids) != 1 or any(not _STS_ID.fullmatch(f) and not _EXTENSION.fullmatch(f) for f in fields):
        return None
    return ids[0]


def tls_rpt_record_ok(record: str) -> bool:
    """An RFC 8460 TLS-RPT record: v=TLSRPTv1, one rua field of URIs separated by
    *WSP "," *WSP, and extensions."""
    fields = _fields(record, "v=TLSRPTv1")
    if not fields:
        return False
    ruas = [f for f in fields if f.startswith("rua=")]
    if len(ruas) != 1:
        return False
    uris = re.split(r"[ \t]*,[ \t]*", ruas[0][len("rua="):])
    return all(_URI.fullmatch(u) for u in uris) and all(f in ruas or _EXTENSION.fullmatch(f) for f in fields)


mta_sts = stack_policy(
    "mta-sts",
    "With stack config mtaSts on, every protected domain's MTA-STS policy (served by the stack's Worker) lists "
    "every MX host (the primary and every relay), its mode is the stack's, its _mta-sts id is derived from the "
    "text, and a TLS-RPT record exists.",
    _mta_sts)


def _live_sts(args, report_violation):
    try:
        mode = environment.fact("mtaSts")
        domains = environment.domains()
        relays = [h for h, _ in environment.relays()]
    except FactError:
        return  # mta-sts reports it
    ours = {record_name(p): _txt(p) for p in (plain(r.props) for r in args.resources
                                                      if r.resource_type == DNS_RECORD)}
    for r in args.resources:
        if r.resource_type != DNS_COMPONENT:
            continue
        for zone in plain(r.props).get("zones") or []:
            for k in zone.get("liveRecordKeys") or [] if isinstance(zone, dict) else []:
                kind, _, rest = str(k).partition(" ")
                name, _, content = rest.partition(" ")
                name = name.lower().rstrip(".")
                if kind.lower() != "txt" or not name.startswith("_mta-sts.") or name[len("_mta-sts."):] not in domains:
                    continue
                if mode == "off":
                    report_violation(f"the live zone already publishes MTA-STS for {name[9:]} ({content}), which this "
                                     f"stack does not manage: its policy must list {', '.join(relays)}, or senders "
                                     "that enforce MTA-STS will never use the relay. Add them, or set mtaSts so the "
                                     "stack publishes the policy")
                elif content.strip('"') != ours.get(name, "").strip('"'):
                    report_violation(f"the live zone has {name} = {content}, and this stack publishes "
                                     f"{ours.get(name)}: unless the live one is this stack's previous record, "
                                     "delete it, as two STSv1 records make senders ignore the policy")


mta_sts_live_record = stack_policy(
    "mta-sts-live-record",
    "Warns when the live zone has an _mta-sts record this stack does not manage: its policy must list the relay.",
    _live_sts, level=EnforcementLevel.ADVISORY)
