"""Cloudflare DNS for the relay: its unproxied A record and one MX per protected domain.

The primary's MX is never created or changed here. Each zone's live records are looked up
by the caller (`live_zones`) and recorded on this component, so the policy pack can check
the record budget.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_cloudflare as cloudflare

MAX_LISTED_RECORDS = 3500  # the largest Cloudflare plan quota; list them all


def record_key(kind: str, name: str, content: str, priority: float | None = None) -> str:
    """One record as the zone holds it: type, name (case-blind), content (case-blind except
    TXT data, which is case-sensitive), and an MX record's priority."""
    kind = kind.upper()
    text = content if kind == "TXT" else content.lower().rstrip(".")
    key = f"{kind} {name.lower().rstrip('.')} {text}"
    return f"{key} {int(priority)}" if kind == "MX" and priority is not None else key


@dataclass(frozen=True)
class ZoneArgs:
    domain: str
    zone_id: str
    live_record_count: pulumi.Input[int]
    live_record_keys: pulumi.Input[list[str]]  # what the zone holds now, as record_key()s (MX with priority)


@dataclass(frozen=True)
class RelayRecordArgs:
    hostname: str
    zone_id: str  # the zone that holds its A record
    reserved_ip: pulumi.Input[str]
    mx_preference: int


@dataclass(frozen=True)
class MtaStsArgs:
    """mtaSts on: the Worker that serves every policy, and per domain its policy host and records."""
    account_id: str
    worker_name: str
    worker_script: str
    main_module: str
    compatibility_date: str
    policy_hosts: dict[str, str]  # domain -> mta-sts.<domain>
    sts_records: dict[str, str]  # domain -> "v=STSv1; id=..."
    tls_rpt_record: str


@dataclass(frozen=True)
class DnsArgs:
    zones: Sequence[ZoneArgs]
    relays: Sequence[RelayRecordArgs]  # the first keeps the resource names from before relayCount
    primary_mx_host: str  # reported only; never managed here
    primary_mx_preference: int
    mta_sts: MtaStsArgs | None = None


def live_zones(zones: Sequence[tuple[str, str]], opts: pulumi.InvokeOptions) -> list[ZoneArgs]:
    """Look up what each (domain, zone id) holds now, so a second run never counts this
    stack's own records twice."""
    found = []
    for domain, zone_id in zones:
        live = cloudflare.get_dns_records_output(zone_id=zone_id, max_items=MAX_LISTED_RECORDS, opts=opts)
        found.append(ZoneArgs(
            domain=domain, zone_id=zone_id, live_record_count=live.results.apply(len),
            live_record_keys=live.results.apply(
                lambda rs: sorted(record_key(r.type, r.name, r.content or "", r.priority) for r in rs))))
    return found


class Dns(pulumi.ComponentResource):
    mx_records: dict[str, dict]
    zone_record_counts: pulumi.Output[dict]

    def __init__(self, name: str, args: DnsArgs, opts: pulumi.ResourceOptions | None = None):
        zones = [{"domain": z.domain, "zoneId": z.zone_id, "liveRecordCount": z.live_record_count,
                  "liveRecordKeys": z.live_record_keys} for z in args.zones]
        super().__init__("backupmx:index:Dns", name, {"zones": zones}, opts)
        child = pulumi.ResourceOptions(parent=self)

        backups = [{"host": r.hostname, "preference": r.mx_preference} for r in args.relays]
        # "backup" is the first relay (one relay's stack reads it); "backups" lists every relay.
        self.mx_records = {z.domain: {
            "backup": backups[0], "backups": backups,
            "primary": {"host": args.primary_mx_host, "preference": args.primary_mx_preference}} for z in args.zones}
        for number, relay in enumerate(args.relays, start=1):
            suffix = "" if number == 1 else f"-{number}"
            cloudflare.DnsRecord(
                f"{name}-relay{suffix}-a", zone_id=relay.zone_id, name=relay.hostname, type="A",
                content=relay.reserved_ip, ttl=300, proxied=False, comment="backup MX relay (managed by Pulumi)",
                opts=child)
            for z in args.zones:
                cloudflare.DnsRecord(
                    f"{name}-mx{suffix}-{z.domain}", zone_id=z.zone_id, name=z.domain, type="MX",
                    content=relay.hostname, priority=relay.mx_preference, ttl=300,
                    comment="backup MX (managed by Pulumi)", opts=child)
        if args.mta_sts:
            self._mta_sts(name, args.mta_sts, args.zones, child)
        self.zone_record_counts = pulumi.Output.all(
            *[pulumi.Output.all(z.domain, z.live_record_count) for z in args.zones]).apply(dict)
        self.register_outputs({"zones": zones, "zoneRecordCounts": self.zone_record_counts})

    @staticmethod
    def _mta_sts(name: str, m: MtaStsArgs, zones: Sequence[ZoneArgs], child: pulumi.ResourceOptions) -> None:
        worker = cloudflare.WorkersScript(
            f"{name}-mta-sts-worker", account_id=m.account_id, script_name=m.worker_name, content=m.worker_script,
            main_module=m.main_module, compatibility_date=m.compatibility_date, opts=child)
        for z in zones:
            # The custom domain adds the policy host's record to the zone (counted in its budget).
            cloudflare.WorkersCustomDomain(
                f"{name}-mta-sts-host-{z.domain}", account_id=m.account_id, hostname=m.policy_hosts[z.domain],
                service=worker.script_name, zone_id=z.zone_id, opts=child)
            cloudflare.DnsRecord(
                f"{name}-mta-sts-{z.domain}", zone_id=z.zone_id, name=f"_mta-sts.{z.domain}", type="TXT",
                content=f'"{m.sts_records[z.domain]}"', ttl=300, comment="MTA-STS policy id (managed by Pulumi)",
                opts=child)
            cloudflare.DnsRecord(
                f"{name}-tls-rpt-{z.domain}", zone_id=z.zone_id, name=f"_smtp._tls.{z.domain}", type="TXT",
                content=f'"{m.tls_rpt_record}"', ttl=300, comment="TLS-RPT (managed by Pulumi)", opts=child)
