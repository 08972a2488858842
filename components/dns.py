"""Cloudflare DNS for the relay: its unproxied A record and one MX per protected domain.

The primary's MX is never created or changed here. The zone's live record count is
looked up and recorded on this component so the policy pack can check the record budget.
"""
from __future__ import annotations

import pulumi
import pulumi_cloudflare as cloudflare

from .settings import Settings

MAX_LISTED_RECORDS = 3500  # the largest Cloudflare plan quota; list them all


def record_key(kind: str, name: str, content: str) -> str:
    return f"{kind} {name.lower().rstrip('.')} {content.lower().rstrip('.')}"


class Dns(pulumi.ComponentResource):
    mx_records: dict[str, dict]
    zone_record_counts: pulumi.Output[dict]

    def __init__(self, name: str, s: Settings, reserved_ip: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None):
        live = {z.domain: cloudflare.get_dns_records_output(zone_id=z.zone_id, max_items=MAX_LISTED_RECORDS)
                for z in s.zones}
        zones = [{
            "domain": z.domain, "zoneId": z.zone_id,
            "liveRecordCount": live[z.domain].results.apply(len),
            # What the zone holds now, so a second run never counts this stack's records twice.
            "liveRecordKeys": live[z.domain].results.apply(
                lambda rs: sorted(record_key(r.type, r.name, r.content or "") for r in rs)),
        } for z in s.zones]
        super().__init__("backupmx:index:Dns", name, {"zones": zones}, opts)
        child = pulumi.ResourceOptions(parent=self)

        cloudflare.DnsRecord(
            f"{name}-relay-a", zone_id=s.relay_zone.zone_id, name=s.relay_hostname, type="A",
            content=reserved_ip, ttl=300, proxied=False, comment="backup MX relay (managed by Pulumi)", opts=child)
        self.mx_records = {}
        for z in s.zones:
            cloudflare.DnsRecord(
                f"{name}-mx-{z.domain}", zone_id=z.zone_id, name=z.domain, type="MX",
                content=s.relay_hostname, priority=s.mx_preference, ttl=300,
                comment="backup MX (managed by Pulumi)", opts=child)
            self.mx_records[z.domain] = {"backup": {"host": s.relay_hostname, "preference": s.mx_preference},
                                         "primary": {"host": s.primary_mx_host, "preference": s.primary_mx_preference}}
        self.zone_record_counts = pulumi.Output.all(
            *[pulumi.Output.all(z["domain"], z["liveRecordCount"]) for z in zones]).apply(dict)
        self.register_outputs({"zones": zones, "zoneRecordCounts": self.zone_record_counts})
