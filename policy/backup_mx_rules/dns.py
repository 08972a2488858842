"""Policies on the Cloudflare records: MX set, unproxied relay host, zone record budget."""
from __future__ import annotations

from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ResourceValidationPolicy,
                           StackValidationPolicy)

from .view import BACKUP_MX, DNS_COMPONENT, DNS_RECORD, PUBLIC_IP, as_bool, as_int, config, guarded, known, plain

DEFAULT_BUDGET, DEFAULT_SLACK = 200, 10


def key(kind, name, content) -> str:
    return f"{str(kind).upper()} {str(name).lower().rstrip('.')} {str(content).lower().rstrip('.')}"


def _zones(resources) -> list[dict]:
    """Per zone: the live count and record keys the program looked up (Dns component)."""
    out = []
    for r in resources:
        if r.resource_type == DNS_COMPONENT:
            zones = plain(r.props).get("zones")
            if isinstance(zones, list):
                out += [z for z in zones if isinstance(z, dict)]
    return out


def _records(resources) -> list[tuple[object, dict]]:
    return [(r, plain(r.props)) for r in resources if r.resource_type == DNS_RECORD]


def _usage(args) -> list[tuple[str, int, int, int]]:
    """(zone, live, added, total) per zone, never counting this stack's existing records twice."""
    records = _records(args.resources)
    result = []
    for zone in _zones(args.resources):
        zone_id, live = zone.get("zoneId"), as_int(zone.get("liveRecordCount"))
        live_keys = set(k.upper().split(" ", 1)[0] + " " + k.split(" ", 1)[1].lower()
                        for k in zone.get("liveRecordKeys") or [] if isinstance(k, str) and " " in k)
        if not isinstance(live, int):
            continue
        mine = [p for _, p in records if p.get("zoneId") == zone_id]
        added = 0
        for p in mine:
            if all(known(p.get(f)) for f in ("type", "name", "content")):
                k = key(p["type"], p["name"], p["content"])
                if k in live_keys:
                    continue  # already live: counted in liveRecordCount
            added += 1
        result.append((zone.get("domain") or zone_id, live, added, live + added))
    return result


BUDGET_SCHEMA = PolicyConfigSchema(properties={
    "budget": {"type": "integer", "minimum": 1, "default": DEFAULT_BUDGET},
    "warnBelowSlots": {"type": "integer", "minimum": 0, "default": DEFAULT_SLACK},
})


def _budget(args, report_violation):
    cfg = config(args, {"budget": DEFAULT_BUDGET})
    for zone, live, added, total in _usage(args):
        if total >= int(cfg["budget"]):
            report_violation(f"zone {zone}: {live} live records + {added} from this stack = {total}, not under the "
                             f"budget of {cfg['budget']} (Cloudflare Free quota); delete at least "
                             f"{total - int(cfg['budget']) + 1} unused records first, or raise the budget if the plan "
                             "allows more")


def _headroom(args, report_violation):
    cfg = config(args, {"budget": DEFAULT_BUDGET, "warnBelowSlots": DEFAULT_SLACK})
    for zone, live, added, total in _usage(args):
        left = int(cfg["budget"]) - total
        if 0 < left < int(cfg["warnBelowSlots"]):
            report_violation(f"zone {zone}: only {left} record slots left after this stack ({total}/{cfg['budget']}); "
                             "schedule a record purge before the next change needs them")


zone_record_budget = StackValidationPolicy(
    name="zone-record-budget",
    description="Each Cloudflare zone's live records plus this stack's new records stay under the record budget.",
    validate=guarded("zone-record-budget", _budget), enforcement_level=EnforcementLevel.MANDATORY,
    config_schema=BUDGET_SCHEMA)
zone_record_headroom = StackValidationPolicy(
    name="zone-record-headroom",
    description="Warns when fewer than warnBelowSlots record slots would remain in a zone.",
    validate=guarded("zone-record-headroom", _headroom), enforcement_level=EnforcementLevel.ADVISORY,
    config_schema=BUDGET_SCHEMA)


def _mx_preference(args, report_violation):
    intent = next((plain(r.props) for r in args.resources if r.resource_type == BACKUP_MX), None)
    if not intent:
        report_violation("no BackupMx component in the stack: the MX intent cannot be checked; build the stack "
                         "through components.backup_mx.BackupMx")
        return
    relay, primary = str(intent.get("relayHostname", "")).lower(), str(intent.get("primaryMxHost", "")).lower()
    backup_pref, primary_pref = as_int(intent.get("mxPreference")), as_int(intent.get("primaryMxPreference"))
    if isinstance(backup_pref, int) and isinstance(primary_pref, int) and backup_pref <= primary_pref:
        report_violation(f"backup MX preference {backup_pref} is not greater than the primary's {primary_pref}: "
                         "senders would prefer the relay; set mxPreference above primaryMxPreference")
    zones = {z.get("domain"): z for z in _zones(args.resources)}
    records = _records(args.resources)
    for domain in intent.get("domains") or []:
        mx = [(r, p) for r, p in records if str(p.get("type")).upper() == "MX"
              and str(p.get("name", "")).lower().rstrip(".") in (domain, "@")
              and p.get("zoneId") == (zones.get(domain) or {}).get("zoneId", p.get("zoneId"))]
        backup = [(r, p) for r, p in mx if str(p.get("content", "")).lower().rstrip(".") == relay]
        if not backup:
            report_violation(f"domain {domain}: no MX record for the relay {relay}; add one at the apex with "
                             f"priority {backup_pref}")
        for r, p in backup:
            priority = as_int(p.get("priority"))
            if isinstance(priority, int) and isinstance(primary_pref, int) and priority <= primary_pref:
                report_violation(f"MX record '{r.name}': priority {priority} is not greater than the primary's "
                                 f"{primary_pref}; set it to {backup_pref}", r.urn)
            elif isinstance(priority, int) and priority != backup_pref:
                report_violation(f"MX record '{r.name}': priority {priority} differs from mxPreference "
                                 f"{backup_pref}; set it to {backup_pref}", r.urn)
        for r, p in mx:
            if str(p.get("content", "")).lower().rstrip(".") == primary:
                report_violation(f"MX record '{r.name}' manages the primary's MX; this stack must never create or "
                                 "change it, remove the record from the program", r.urn)
        live = [k.lower() for k in (zones.get(domain) or {}).get("liveRecordKeys") or [] if isinstance(k, str)]
        if domain in zones and not any(k.startswith(f"mx {domain} {primary}") for k in live):
            report_violation(f"domain {domain}: the primary MX {primary} is not in the live zone; the relay would "
                             "become the only MX. Restore the primary's MX record before deploying")
    a_records = [(r, p) for r, p in records
                 if str(p.get("type")).upper() == "A" and str(p.get("name", "")).lower().rstrip(".") == relay]
    if relay and not a_records:
        report_violation(f"no A record for the relay host {relay}; add one pointing at the reserved IP")
    reserved = {plain(r.props).get("ipAddress") for r in args.resources if r.resource_type == PUBLIC_IP}
    reserved = {ip for ip in reserved if isinstance(ip, str) and known(ip)}
    for r, p in a_records:
        content = p.get("content")
        if reserved and isinstance(content, str) and known(content) and content not in reserved:
            report_violation(f"A record '{r.name}' points {relay} at {content}, not at the reserved IP "
                             f"{sorted(reserved)[0]}; senders would hand mail to the wrong host. Point it at the "
                             "reserved IP's ip_address output", r.urn)


mx_preference = StackValidationPolicy(
    name="mx-preference",
    description="Every protected domain has the primary MX (live) and the backup MX (this stack) at a strictly "
                "greater preference; the relay host's A record points at the reserved IP; the primary's MX is never "
                "managed here.",
    validate=guarded("mx-preference", _mx_preference), enforcement_level=EnforcementLevel.MANDATORY)


def _unproxied(args, report_violation):
    if args.resource_type != DNS_RECORD:
        return
    props = plain(args.props)
    if str(props.get("type", "")).upper() in ("A", "AAAA", "CNAME") and as_bool(props.get("proxied")) is True:
        report_violation(f"DNS record '{args.name}' ({props.get('name')}) is proxied: Cloudflare's proxy does not carry "
                         "SMTP, so the MX target would be unreachable; set proxied=False")


relay_a_unproxied = ResourceValidationPolicy(
    name="relay-a-unproxied",
    description="The relay's A record (every address record of this stack) is DNS-only, never proxied.",
    validate=guarded("relay-a-unproxied", _unproxied), enforcement_level=EnforcementLevel.MANDATORY)
