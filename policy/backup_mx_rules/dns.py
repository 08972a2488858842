"""Policies on the Cloudflare records: MX set, unproxied relay host, zone record budget."""
from __future__ import annotations

from typing import Any

from pulumi_policy import EnforcementLevel, PolicyConfigSchema
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from . import environment
from .environment import FactError
from .view import (
    DNS_COMPONENT,
    DNS_RECORD,
    PUBLIC_IP,
    WORKER_DOMAIN,
    as_bool,
    as_int,
    config,
    known,
    plain,
    resource_policy,
    stack_policy,
)

DEFAULT_BUDGET, DEFAULT_SLACK = 200, 10
# A Worker custom domain's record is the address record Cloudflare keeps at its host name; an
# address or CNAME record there is that record (or one that blocks the domain). A TXT, MX or
# any other type at the host is a record of its own and takes its own slot.
WORKER_HOST_TYPES = ("A", "AAAA", "CNAME")


def key(kind, name, content, priority=None) -> str:
    """A record as the zone holds it (the Dns component's liveRecordKeys): type, name and
    content, case-blind except TXT data (case-sensitive, RFC 1035 character-strings), and an
    MX record's priority, so an MX at another priority is another record."""
    kind = str(kind).upper()
    text = str(content) if kind == "TXT" else str(content).lower().rstrip(".")
    out = f"{kind} {str(name).lower().rstrip('.')} {text}"
    if kind == "MX" and priority is not None:
        number = as_int(priority)
        out += f" {number}" if isinstance(number, int) else f" {priority}"
    return out


def normalized(live_key: str) -> str:
    """A live key in key()'s form, whatever case the program wrote it in."""
    kind, _, rest = live_key.partition(" ")
    name, _, content = rest.partition(" ")
    if kind.upper() == "MX":
        host, _, priority = content.partition(" ")
        return key(kind, name, host, priority or None)
    return key(kind, name, content)


def _zones(resources) -> list[dict]:
    """Per zone: the live count and record keys the program looked up (Dns component)."""
    out = []
    for r in resources:
        if r.resource_type == DNS_COMPONENT:
            zones = plain(r.props).get("zones")
            if isinstance(zones, list):
                out += [z for z in zones if isinstance(z, dict)]
    return out


def _records(resources) -> list[tuple[Any, dict]]:
    return [(r, plain(r.props)) for r in resources if r.resource_type == DNS_RECORD]


def _zone_entries(resources) -> list[tuple[Any, dict]]:
    """Everything of this stack that takes a record slot in a zone: DNS records, and Worker
    custom domains (Cloudflare adds a record for the hostname)."""
    return [(r, plain(r.props)) for r in resources if r.resource_type in (DNS_RECORD, WORKER_DOMAIN)]


class ZoneDataError(ValueError):
    """The zone data the budget needs is missing or unreadable."""


def _usage(args) -> list[tuple[str, int, int, int]]:
    """(zone, live, added, total) per protected zone, never counting this stack's existing
    records twice. Missing or unreadable zone data fails closed."""
    records = _zone_entries(args.resources)
    zones = {z.get("zoneId"): z for z in _zones(args.resources)}
    expected = environment.zone_ids()
    problems = []
    for domain, zone_id in expected.items():
        if zone_id not in zones:
            problems.append(f"zone {domain} ({zone_id}, stack config cloudflareZoneIds) has no live record count in "
                            "the Dns component, so its record budget cannot be checked")
    for r, p in records:
        record_zone = p.get("zoneId")
        if r.resource_type == WORKER_DOMAIN and not (known(record_zone) and record_zone):
            problems.append(f"Worker custom domain '{r.name}' names no zone_id, so the zone its record takes a slot "
                            "in cannot be told; set zone_id")
        elif known(record_zone) and record_zone not in zones:
            problems.append(f"DNS record '{r.name}' is in zone {record_zone!r}, which the Dns component does not list, "
                            "so that zone's record budget cannot be checked")
    if problems:
        raise ZoneDataError("; ".join(problems))
    result = []
    for listed_id, zone in zones.items():
        if not known(zone.get("liveRecordCount")):
            continue
        try:
            live = as_int(zone.get("liveRecordCount"))
        except (TypeError, ValueError):
            live = None
        keys = zone.get("liveRecordKeys")
        if not isinstance(live, int) or not isinstance(keys, list):
            raise ZoneDataError(f"zone {zone.get('domain') or listed_id}: live record data is unreadable "
                                f"(count {zone.get('liveRecordCount')!r})")
        if live != len(keys):
            raise ZoneDataError(f"zone {zone.get('domain') or listed_id}: the Dns component's liveRecordCount {live} "
                                f"disagrees with its {len(keys)} liveRecordKeys, both read from the same lookup of "
                                "the zone's records")
        live_keys = set(normalized(k) for k in keys if isinstance(k, str) and " " in k)
        added = 0
        worker_hosts = {k.split(" ")[1] for k in live_keys if k.split(" ")[0] in WORKER_HOST_TYPES}
        for r, p in records:
            if p.get("zoneId") != listed_id:
                continue
            if r.resource_type == WORKER_DOMAIN:
                if str(p.get("hostname", "")).lower().rstrip(".") in worker_hosts:
                    continue  # its record is live already
            elif all(known(p.get(f)) for f in ("type", "name", "content", "priority")) \
                    and key(p["type"], record_name(p), p["content"], p.get("priority")) in live_keys:
                continue  # already live: counted in liveRecordCount
            added += 1
        result.append((str(zone.get("domain") or listed_id), live, added, live + added))
    return result


BUDGET = {"type": "integer", "minimum": 1, "default": DEFAULT_BUDGET,
          "description": "Records a zone may hold (may only be lowered)."}
BUDGET_SCHEMA = PolicyConfigSchema(properties={"budget": BUDGET})
HEADROOM_SCHEMA = PolicyConfigSchema(properties={
    "budget": BUDGET,
    "warnBelowSlots": {"type": "integer", "minimum": 0, "default": DEFAULT_SLACK,
                       "description": "Warn when fewer free record slots than this would remain."},
})


def _slots(n: int) -> str:
    return f"{n} record slot" + ("" if n == 1 else "s")


def _budget(args, report_violation):
    cfg = config(args, BUDGET_SCHEMA)
    budget = int(cfg["budget"])  # the engine hands JSON numbers over as floats
    if budget > DEFAULT_BUDGET:
        report_violation(f"policy config budget = {budget} loosens the {DEFAULT_BUDGET}-record invariant; "
                         "policy config may only tighten it")
    try:
        usage = _usage(args)
    except (ZoneDataError, FactError) as exc:
        report_violation(f"{exc}; the pack fails closed")
        return
    for zone, live, added, total in usage:
        if total >= budget:
            report_violation(f"zone {zone}: {live} live records + {added} from this stack = {total}, not under the "
                             f"budget of {budget} (Cloudflare Free quota); delete at least "
                             f"{total - budget + 1} unused records first, or raise the budget if the plan "
                             "allows more")


def _headroom(args, report_violation):
    cfg = config(args, HEADROOM_SCHEMA)
    try:
        usage = _usage(args)
    except (ZoneDataError, FactError):
        return  # zone-record-budget reports it
    budget = int(cfg["budget"])
    for zone, _live, _added, total in usage:
        left = budget - total
        if 0 < left < int(cfg["warnBelowSlots"]):
            report_violation(f"zone {zone}: only {_slots(left)} left after this stack ({total}/{budget}); "
                             "schedule a record purge before the next change needs them")


zone_record_budget = stack_policy(
    "zone-record-budget",
    "Each Cloudflare zone's live records plus this stack's new records stay under the record budget.",
    _budget, schema=BUDGET_SCHEMA)
zone_record_headroom = stack_policy(
    "zone-record-headroom",
    "Warns when fewer than warnBelowSlots record slots would remain in a zone.",
    _headroom, level=EnforcementLevel.ADVISORY, schema=HEADROOM_SCHEMA)


def record_name(p: dict) -> str:
    """A record's FQDN as Cloudflare stores it: '@' is the zone apex, and a name that does not
    end in its zone's name gets the zone appended (a bare label 'mx3' is mx3.<zone>). Names are
    case-blind (RFC 4343). A record whose zone the stack config does not list keeps its name;
    zone-record-budget reports that zone."""
    name = str(p.get("name", "")).lower().rstrip(".")
    try:
        # A zone holds its apex and the apex's subdomains: several protected domains may share it.
        held = sorted((d for d, z in environment.zone_ids().items() if z == str(p.get("zoneId", ""))), key=len)
    except FactError:
        held = []
    if not held:
        return name
    if name in ("", "@"):
        return held[0]
    return name if any(name == d or name.endswith("." + d) for d in held) else f"{name}.{held[0]}"




def _mx_preference(args, report_violation):
    try:
        domains = environment.domains()
        relays, primary = environment.relays(), environment.primary_mx_host()
        primary_pref = environment.fact("primaryMxPreference")
        zone_ids = environment.zone_ids()
    except FactError as exc:
        report_violation(str(exc))
        return
    hosts = [host for host, _ in relays]
    for host, backup_pref in relays:
        key = "mxPreference" if host == hosts[0] else "secondMxPreference"
        if backup_pref <= primary_pref:
            report_violation(f"backup MX preference {backup_pref} of {host} (stack config {key}) is not greater than "
                             f"the primary's {primary_pref}: senders would prefer the relay; set {key} above "
                             "primaryMxPreference")
    zones = {z.get("domain"): z for z in _zones(args.resources)}
    records = _records(args.resources)
    for r, p in records:
        fields = ("type", "name") + (("content", "priority") if str(p.get("type")).upper() == "MX" else ())
        unknown = [f for f in fields if not known(p.get(f))]
        if unknown:
            # A real stack writes these as literals; left unknown, the record would exist before
            # any later check could see where it sends mail.
            report_violation(f"DNS record '{r.name}': {', '.join(unknown)} unknown at preview, so the pack cannot tell "
                             "whether it is an MX of a protected domain or where it points; it fails closed. Write "
                             "them as literals", r.urn)
    for domain in domains:
        mx = [(r, p) for r, p in records if str(p.get("type")).upper() == "MX" and record_name(p) in (domain, "@")
              and p.get("zoneId") == zone_ids.get(domain, p.get("zoneId"))]
        for host, backup_pref in relays:
            backup = [(r, p) for r, p in mx if str(p.get("content", "")).lower().rstrip(".") == host]
            if not backup:
                report_violation(f"domain {domain}: no MX record for the relay {host}; add one at the apex with "
                                 f"priority {backup_pref}")
            for r, p in backup:
                priority = as_int(p.get("priority"))
                if isinstance(priority, int) and priority <= primary_pref:
                    report_violation(f"MX record '{r.name}': priority {priority} is not greater than the primary's "
                                     f"{primary_pref}; set it to {backup_pref}", r.urn)
                elif isinstance(priority, int) and priority != backup_pref:
                    report_violation(f"MX record '{r.name}': priority {priority} differs from the configured "
                                     f"{backup_pref} for {host}; set it to {backup_pref}", r.urn)
        for r, p in mx:
            content = str(p.get("content", "")).lower().rstrip(".")
            if content == primary:
                report_violation(f"MX record '{r.name}' manages the primary's MX; this stack must never create or "
                                 "change it, remove the record from the program", r.urn)
            elif known(p.get("content")) and content not in hosts:
                report_violation(f"MX record '{r.name}' sends {domain} mail to {content}, which is neither the "
                                 f"primary {primary} nor a relay ({', '.join(hosts)}); remove it", r.urn)
        if domain in zones:
            _live_mx_problems(domain, zones[domain], primary, primary_pref, relays, report_violation)


def _live_mx(zone: dict, domain: str) -> list[tuple[str, int | None]]:
    """The live zone's apex MX records as (host, priority); None where no priority is listed."""
    found = []
    for k in zone.get("liveRecordKeys") or []:
        if not (isinstance(k, str) and k.count(" ") >= 2):
            continue
        kind, name, rest = normalized(k).split(" ", 2)
        if kind == "MX" and name == domain:
            host, _, priority = rest.partition(" ")
            number = as_int(priority) if priority else None
            found.append((host, number if isinstance(number, int) else None))
    return found


def _live_mx_problems(domain, zone, primary, primary_pref, relays, report_violation) -> None:
    """The live zone decides: the primary's real preference is the one the relays must exceed
    and primaryMxPreference must state; a relay-host MX at another priority is not ours."""
    live = _live_mx(zone, domain)
    keys = {host: ("mxPreference" if i == 0 else "secondMxPreference") for i, (host, _) in enumerate(relays)}
    primary_live = [p for host, p in live if host == primary]
    if not primary_live:
        report_violation(f"domain {domain}: the primary MX {primary} is not in the live zone; the relay would "
                         "become the only MX. Restore the primary's MX record before deploying")
    if any(p is None for _, p in live):
        report_violation(f"domain {domain}: the live MX records carry no priority, so the primary's real "
                         "preference cannot be compared with the relays'; the pack fails closed")
        return
    if primary_live:
        live_pref = min(p for p in primary_live if p is not None)
        if live_pref != primary_pref:
            report_violation(f"domain {domain}: the live zone publishes the primary {primary} at preference "
                             f"{live_pref}, but stack config primaryMxPreference is {primary_pref}; set "
                             f"primaryMxPreference: {live_pref}")
        for host, pref in relays:
            if pref <= live_pref:
                report_violation(f"domain {domain}: relay {host} at preference {pref} (stack config {keys[host]}) "
                                 f"does not come after the live primary MX at {live_pref}: senders would hand it "
                                 f"mail while the primary is up; set {keys[host]} above {live_pref}")
    own = set(relays)
    for host, priority in live:
        if host in keys and (host, priority) not in own:
            report_violation(f"domain {domain}: the live zone has an MX for the relay {host} at priority {priority}, "
                             f"which this stack does not manage (it publishes {dict(relays)[host]}); delete that "
                             "record in the dashboard, then run pulumi up --refresh")
        elif host not in keys and host != primary:
            report_violation(f"domain {domain}: the live zone has an MX for {host}, which is neither the "
                             f"primary nor a relay; senders may hand it mail. Delete that record")


def _relay_a_record(args, report_violation):
    try:
        hosts = [host for host, _ in environment.relays()]
    except FactError as exc:
        report_violation(str(exc))
        return
    zones = {z.get("domain"): z for z in _zones(args.resources)}
    records = _records(args.resources)
    for r, p in records:
        if str(p.get("type")).upper() == "AAAA" and record_name(p) in hosts:
            report_violation(f"AAAA record '{r.name}' for the relay host {record_name(p)}: the relay listens on IPv4 only, "
                             "so IPv6 senders would fail to connect; remove it", r.urn)
    for z in zones.values():
        for k in z.get("liveRecordKeys") or []:
            for host in hosts:
                if isinstance(k, str) and k.lower().startswith(f"aaaa {host} "):
                    report_violation(f"the live zone has an AAAA record for the relay host {host}; the relay "
                                     "listens on IPv4 only, delete it")
    a_records = {host: [(r, p) for r, p in records if str(p.get("type")).upper() == "A" and record_name(p) == host]
                 for host in hosts}
    for host, found in a_records.items():
        if not found:
            report_violation(f"no A record for the relay host {host}; add one pointing at its reserved IP")
    addresses = [plain(r.props).get("ipAddress") for r in args.resources if r.resource_type == PUBLIC_IP]
    reserved = {ip for ip in addresses if isinstance(ip, str) and known(ip) and ip}
    if any(a_records.values()) and not reserved:
        # Everything else was checked; the A record's target waits for the reserved IP (`pulumi up`).
        public_ip = next(r.name for r in args.resources if r.resource_type == PUBLIC_IP) if addresses else "reserved IP"
        raise UnknownValueError(UNKNOWN_STRING_VALUE, [public_ip, "ipAddress"])
    pointed: dict[str, str] = {}
    for host, found in a_records.items():
        for r, p in found:
            content = p.get("content")
            if not (isinstance(content, str) and known(content)):
                continue
            if reserved and content not in reserved:
                report_violation(f"A record '{r.name}' points {host} at {content}, not at a reserved IP "
                                 f"({', '.join(sorted(reserved))}); senders would hand mail to the wrong host. Point "
                                 "it at the reserved IP's ip_address output", r.urn)
            elif content in pointed and pointed[content] != host:
                report_violation(f"A record '{r.name}' points {host} at {content}, the address of {pointed[content]}: "
                                 "both names would reach one relay, so the second is no fallback. Point each relay "
                                 "name at its own reserved IP", r.urn)
            pointed.setdefault(content, host)


mx_preference = stack_policy(
    "mx-preference",
    "Every protected domain has the primary MX (live) and the backup MX (this stack) at a strictly "
    "greater preference, no other MX, and the primary's MX is never managed here.",
    _mx_preference)
relay_a_record = stack_policy(
    "relay-a-record",
    "Each relay host has an A record pointing at its own reserved IP, and no AAAA record (stack or live).",
    _relay_a_record)


def _dns_records(args, report_violation):
    """Every record the stack creates is one the mail flow needs and another policy judges."""
    try:
        domains = environment.domains()
        hosts = [host for host, _ in environment.relays()]
    except FactError as exc:
        report_violation(str(exc))
        return
    # judged by mx-preference (the MX set), relay-a-record (a relay's A, and no AAAA) and mta-sts
    # (its TXT records, in any mode)
    allowed = {("MX", d) for d in domains} | {(kind, h) for h in hosts for kind in ("A", "AAAA")}
    allowed |= {("TXT", f"_mta-sts.{d}") for d in domains} | {("TXT", f"_smtp._tls.{d}") for d in domains}
    for r, p in _records(args.resources):
        kind, name = str(p.get("type", "")).upper(), record_name(p)
        if (kind, name) in allowed:
            continue
        why = RECORD_RISK.get(kind, "the pack does not model it")
        report_violation(f"record '{r.name}' ({kind} {name}) is not one the mail flow needs (an MX at a protected "
                         f"domain, a relay's address record, and the _mta-sts and _smtp._tls TXT records); {why}; it "
                         "fails closed. Remove it", r.urn)


RECORD_RISK = {"A": "senders or the drain would connect elsewhere", "AAAA": "senders or the drain would connect elsewhere",
               "CNAME": "the name would follow another's records",
               "CAA": "it decides which certificate authority may issue for the relay",
               "NS": "it delegates names away from the zone"}


dns_records = stack_policy(
    "dns-records",
    "Every Cloudflare record the stack creates is one the mail flow needs and another policy judges: an MX at a "
    "protected domain (mx-preference), a relay host's address record (relay-a-record), and the _mta-sts and "
    "_smtp._tls TXT records (mta-sts). Any other record (an A or AAAA for the primary or the drain "
    "host, a CAA, a CNAME) fails closed.",
    _dns_records)


def _unproxied(args, report_violation):
    if args.resource_type != DNS_RECORD:
        return
    props = plain(args.props)
    if str(props.get("type", "")).upper() in ("A", "AAAA", "CNAME") and as_bool(props.get("proxied")) is True:
        report_violation(f"DNS record '{args.name}' ({props.get('name')}) is proxied: Cloudflare's proxy does not carry "
                         "SMTP, so the MX target would be unreachable; set proxied=False")


relay_a_unproxied = resource_policy(
    "relay-a-unproxied",
    "The relay's A record (every address record of this stack) is DNS-only, never proxied.",
    _unproxied)
