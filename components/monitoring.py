"""Settings (and each relay's reserved IP) in, Prometheus artifacts out: scrape jobs, blackbox
modules and alerting rules for the homelab Prometheus (the exporters allow only the homelab).

Every series carries a `relay` label (the scrape jobs set it). With one relay the names are as
they were before relayCount; with two, each relay gets its own blackbox modules and its own
rule group whose selectors match only its series, so an alert names the relay it is about."""
from __future__ import annotations

import yaml

from .facts import (
    HTTP_PORT,
    NODE_EXPORTER_PORT,
    POSTFIX_EXPORTER_PORT,
    RECIPIENT_LIST_STALE_S,
    RECLAMATION_ALERT_P95,
    RECLAMATION_P95,
    SMTP_PORT,
)
from .settings import RelaySpec, Settings

BLACKBOX = "blackbox-exporter:9115"  # the homelab's blackbox exporter, as Prometheus reaches it
DELAYED = ("While this fires, a failing mail roundtrip probe may mean mail is delayed via {relay} "
           "(queued there, drains when the primary answers), not lost.")


def _suffix(s: Settings, relay: RelaySpec) -> str:
    """Per-relay module name suffix: none with one relay (the names before relayCount)."""
    return "" if len(s.relays) == 1 else "_" + relay.hostname.replace(".", "_").replace("-", "_")


def _mx_module(domain: str, host: str, preference: int) -> dict:
    return {"prober": "dns", "timeout": "10s", "dns": {
        "query_name": domain, "query_type": "MX",
        "validate_answer_rrs": {"fail_if_none_matches_regexp": [
            rf".*\tIN\tMX\t{preference} {host.replace('.', '[.]')}[.]$"]}}}


def blackbox_modules(s: Settings) -> dict:
    modules: dict[str, dict] = {}
    for relay in s.relays:
        modules[f"backup_mx_smtp_starttls{_suffix(s, relay)}"] = {"prober": "tcp", "timeout": "15s", "tcp": {
            "query_response": [
                {"expect": f"^220 {relay.hostname} "}, {"send": "EHLO prometheus.invalid"},
                {"expect": "^250[ -]STARTTLS"}, {"send": "STARTTLS"}, {"expect": "^220"},
                {"starttls": True}, {"send": "QUIT"}],
            "tls_config": {"server_name": relay.hostname}}}
    modules["backup_mx_primary_smtp"] = {"prober": "tcp", "timeout": "10s",
                                         "tcp": {"query_response": [{"expect": "^220"}, {"send": "QUIT"}]}}
    for z in s.zones:
        domain = z.domain.replace('.', '_')
        for relay in s.relays:
            modules[f"backup_mx_mx_backup_{domain}{_suffix(s, relay)}"] = _mx_module(
                z.domain, relay.hostname, relay.mx_preference)
        modules[f"backup_mx_mx_primary_{domain}"] = _mx_module(z.domain, s.primary_mx_host, s.primary_mx_preference)
    return {"modules": modules}


def _probe_job(name: str, module: str, target: str, labels: dict) -> dict:
    return {"job_name": name, "metrics_path": "/probe", "params": {"module": [module]},
            "static_configs": [{"targets": [target], "labels": labels}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": BLACKBOX}]}


def scrape_configs(s: Settings, relays: list[tuple[RelaySpec, str]]) -> dict:
    """relays: each relay with its reserved IP. Every series is labelled with its relay."""
    def targets(port: int) -> list[dict]:
        return [{"targets": [f"{ip}:{port}"], "labels": {"relay": relay.hostname}} for relay, ip in relays]

    jobs = [{"job_name": "backup-mx-node", "static_configs": targets(NODE_EXPORTER_PORT)},
            {"job_name": "backup-mx-postfix", "static_configs": targets(POSTFIX_EXPORTER_PORT)}]
    for relay, ip in relays:
        labels = {"relay": relay.hostname}
        jobs.append(_probe_job("backup-mx-smtp", f"backup_mx_smtp_starttls{_suffix(s, relay)}", f"{ip}:{SMTP_PORT}",
                               labels))
        # The primary as each relay's drain sees it (one probe per relay, so each rule group has its own).
        jobs.append(_probe_job("backup-mx-primary", "backup_mx_primary_smtp", f"{s.primary_mx_host}:{SMTP_PORT}",
                               labels))
        for z in s.zones:
            domain = z.domain.replace('.', '_')
            for role, module in (("backup", f"backup_mx_mx_backup_{domain}{_suffix(s, relay)}"),
                                 ("primary", f"backup_mx_mx_primary_{domain}")):
                jobs.append(_probe_job("backup-mx-mx-set", module, "1.1.1.1",
                                       {**labels, "domain": z.domain, "mx": role}))
    return {"scrape_configs": jobs}


def alert_rules(s: Settings) -> dict:
    """One rule group with one relay; one per relay, each matching only its series, with two."""
    if len(s.relays) == 1:
        return {"groups": [{"name": "backup-mx", "rules": _rules(s, s.relays[0], "")}]}
    return {"groups": [{"name": f"backup-mx-{relay.hostname}", "rules": _rules(s, relay, f',relay="{relay.hostname}"')}
                       for relay in s.relays]}


def _narrowed(selector: str, only: str) -> str:
    """A selector with the relay's own matchers (`only`, e.g. ',relay="mx2..."') added."""
    return selector[:-1] + only + "}"


def _rules(s: Settings, relay: RelaySpec, only: str) -> list[dict]:
    """The rules for one relay; `only` narrows every selector to its series."""
    def series(selector: str) -> str:
        return _narrowed(selector, only)

    delayed = DELAYED.format(relay=relay.hostname)
    queue = series(QUEUE_SERIES)
    queued = f"sum({queue})"
    rules = [
        {"alert": "BackupMxDown",
         "expr": f'{series(UP_NODE)} == 0 or {series(UP_POSTFIX)} == 0 or {series(SMTP_PROBE)} == 0',
         "for": "10m", "labels": {"severity": "critical"},
         "annotations": {"summary": f"backup MX {relay.hostname} is down or unreachable on {SMTP_PORT}",
                         "description": "Mail relies on senders' retries until it is back. Check the OCI console "
                                        "(reclaimed instance?), the security list, the OS iptables REJECT and "
                                        f"Oracle's inbound-{SMTP_PORT} block (runbook: BackupMxDown). {delayed}"}},
        {"alert": "BackupMxQueueStuck",
         "expr": f'{queued} > 0 and on() min({series(PRIMARY_PROBE)}) == 1',
         "for": "2h", "labels": {"severity": "warning"},
         "annotations": {"summary": "mail has waited on the backup MX for 2h although the primary is healthy",
                         "description": f"The drain is failing: check {_drain_path(s)}, the "
                                        "primary's exemptions for the relay address and the drain watcher log "
                                        f"(runbook: BackupMxQueueStuck). {delayed}"}},
        {"alert": "BackupMxMxSetDrift",
         "expr": f'{series(MX_SET_PROBE)} == 0',
         "for": "15m", "labels": {"severity": "warning"},
         "annotations": {"summary": "MX record {{ $labels.mx }} for {{ $labels.domain }} is missing or has the wrong "
                                    "preference",
                         "description": f"Expected primary {s.primary_mx_host} at {s.primary_mx_preference} and backup "
                                        f"{relay.hostname} at {relay.mx_preference}. Run `pulumi up` or fix the zone "
                                        f"(runbook: BackupMxMxSetDrift). {delayed}"}},
        {"alert": "BackupMxCertExpiring",
         "expr": f'{series(CERT_EXPIRY)} - time() < 14 * 86400',
         "for": "1h", "labels": {"severity": "warning"},
         "annotations": {"summary": f"the STARTTLS certificate of {relay.hostname} expires within 14 days",
                         "description": f"certbot renewal is failing: port {HTTP_PORT} must be open for HTTP-01 "
                                        f"(runbook: BackupMxCertExpiring). {delayed}"}},
        {"alert": "BackupMxDrainNotReady",
         "expr": f'{series(CANARY_READY)} == 0 and on() min({series(PRIMARY_PROBE)}) == 1',
         "for": "10m", "labels": {"severity": "warning"},
         "annotations": {"summary": f"the primary would refuse or defer the drain stream from {relay.hostname}",
                         "description": "The drain readiness canary (EHLO, MAIL FROM a strict-SPF sender with a "
                                        "large SIZE, RCPT to postmaster, then RSET) was not accepted by "
                                        f"the drain target {s.drain_target} although the primary answers: the next outage "
                                        "would end with mail stuck on the relay. Read its replies "
                                        "(`journalctl -u backup-mx-drain-canary`) and re-apply the primary's "
                                        "exemptions for the relay (runbook: BackupMxDrainNotReady). " + delayed}},
        {"alert": "BackupMxMailNearExpiry",
         "expr": f"{series(OLDEST_MESSAGE)} > {series(QUEUE_LIFETIME)} - {NEAR_EXPIRY_S}",
         "for": "15m", "labels": {"severity": "critical"},
         "annotations": {"summary": f"mail on {relay.hostname} is within {NEAR_EXPIRY_S // 86400} days of "
                                    "its queue lifetime",
                         "description": "The oldest queued message will be returned to its sender when it reaches "
                                        f"queueLifetime ({s.queue_lifetime}). Restore the drain now (runbook: "
                                        "BackupMxMailNearExpiry); if it cannot be restored in time, copy the queue "
                                        "off the relay before it expires. " + delayed}},
    ]
    if s.account_mode == "free":
        rules += _idle_reclamation_rules(relay, only, delayed)
    if s.wireguard:
        rules.append(_peer_unreachable_rule(s, relay, only, delayed))
    if s.recipients == "list":
        rules.append(_list_stale_rule(s, relay, only))
    return rules


def _list_stale_rule(s: Settings, relay: RelaySpec, only: str) -> dict:
    """recipients list: the alert that the relay is answering from an old list (or the first
    boot's catch-all, never replaced)."""
    synced = _narrowed(LIST_SYNCED, only)
    return {
        "alert": "BackupMxRecipientListStale",
        "expr": f"time() - max({synced}) > {RECIPIENT_LIST_STALE_S}",
        "for": "30m", "labels": {"severity": "warning"},
        "annotations": {
            "summary": f"{relay.hostname} has not synced its valid-recipient list for over "
                       f"{RECIPIENT_LIST_STALE_S // 3600} hours",
            "description": f"The relay answers from its last good list (or, if it never synced, the catch-all): "
                           f"an address added on the primary since then gets 450 from the relay while the primary "
                           f"is down, and its sender retries. Check that {s.recipient_list_url} answers with the "
                           "list, and `journalctl -u backup-mx-recipients` on the relay "
                           "(runbook: BackupMxRecipientListStale)."}}


def _idle_reclamation_rules(relay: RelaySpec, only: str, delayed: str) -> list[dict]:
    """accountMode free: the alert that Oracle would see the relay as idle."""
    def narrow(name: str) -> str:  # a recorded series, which has no other matchers
        return name + "{" + only[1:] + "}" if only else name
    # Oracle judges the p95 of 1-minute CPU utilization over 7 days. "p95 < X" is "fewer than
    # 5 % of the minutes reach X": each minute is marked busy or not, the last hour's busy
    # fraction is recorded, and the mean of its hourly values over 7 days is compared with 5 %
    # (168 samples per evaluation instead of 10,080, within promtool's limit too).
    idle = _narrowed(IDLE_CPU, only)
    return [
        {"record": BUSY_MINUTE,
         "expr": f"(1 - avg by (relay) (rate({idle}[2m]))) >= bool {RECLAMATION_ALERT_P95}"},
        {"record": BUSY_FRACTION, "expr": f"avg_over_time({narrow(BUSY_MINUTE)}[1h])"},
        {"alert": "BackupMxIdleReclamationRisk",
         "expr": f"avg_over_time({narrow(BUSY_FRACTION)}[7d:1h]) < 0.05",
         "for": "2h", "labels": {"severity": "warning"},
         "annotations": {
             "summary": f"{relay.hostname} looks idle to Oracle: 7-day CPU p95 under "
                        f"{RECLAMATION_ALERT_P95:.0%}",
             "description": f"Oracle reclaims a free-tier Always-Free instance whose 7-day CPU p95 stays under "
                            f"{RECLAMATION_P95:.0%}, and a reclaimed VM loses its queue. Check "
                            "`systemctl status backup-mx-keepalive` on the relay; log in to the OCI console "
                            f"(runbook: BackupMxIdleReclamationRisk). {delayed}"}}]


def _peer_unreachable_rule(s: Settings, relay: RelaySpec, only: str, delayed: str) -> dict:
    """drainTransport wireguard: the alert that the tunnel is down while mail piles up."""
    assert s.wireguard is not None
    handshake, queue = _narrowed(HANDSHAKE, only), _narrowed(QUEUE_SERIES, only)
    return {
        "alert": "BackupMxDrainPeerUnreachable",
        "expr": f"(time() - max({handshake}) > {PEER_UNREACHABLE_S}) and on() (sum(delta({queue}[30m])) > 0)",
        "for": "10m", "labels": {"severity": "warning"},
        "annotations": {
            "summary": f"the WireGuard drain peer is unreachable from {relay.hostname} while its queue grows",
            "description": f"No handshake with the homelab firewall for over {PEER_UNREACHABLE_S // 60} minutes "
                           "and mail is piling up on the relay. Check that the firewall still has the relay as a "
                           "package peer (a regenerated config drops hand-added peers), its endpoint "
                           f"{s.wireguard.endpoint}, and `wg show` on the relay "
                           f"(runbook: BackupMxDrainPeerUnreachable). {delayed}"}}


BUSY_MINUTE = "backup_mx:cpu_busy_minute"  # 1 when the minute's CPU utilization reached the alert level
BUSY_FRACTION = "backup_mx:cpu_busy_fraction:1h"
IDLE_CPU = 'node_cpu_seconds_total{job="backup-mx-node",mode="idle"}'
PEER_UNREACHABLE_S = 300  # WireGuard rekeys every 120 s: five minutes without a handshake is an outage
UP_NODE, UP_POSTFIX = 'up{job="backup-mx-node"}', 'up{job="backup-mx-postfix"}'
SMTP_PROBE, PRIMARY_PROBE = 'probe_success{job="backup-mx-smtp"}', 'probe_success{job="backup-mx-primary"}'
MX_SET_PROBE = 'probe_success{job="backup-mx-mx-set"}'
CERT_EXPIRY = 'probe_ssl_earliest_cert_expiry{job="backup-mx-smtp"}'
HANDSHAKE = 'backup_mx_wireguard_latest_handshake_timestamp_seconds{job="backup-mx-node"}'
LIST_SYNCED = 'backup_mx_recipients_last_sync_timestamp_seconds{job="backup-mx-node"}'
CANARY_READY = 'backup_mx_drain_canary_ready{job="backup-mx-node"}'
OLDEST_MESSAGE = 'backup_mx_queue_oldest_message_age_seconds{job="backup-mx-node"}'
QUEUE_LIFETIME = 'backup_mx_queue_lifetime_seconds{job="backup-mx-node"}'
NEAR_EXPIRY_S = 3 * 86400  # BackupMxMailNearExpiry: this long before queueLifetime
QUEUE_SERIES = 'postfix_showq_message_size_bytes_count{job="backup-mx-postfix",queue=~"active|deferred"}'


def _drain_path(s: Settings) -> str:
    if s.wireguard:
        return f"the WireGuard tunnel to {s.wireguard.primary_address} (`wg show`; the firewall's peer entry)"
    return f"the pfSense NAT rule for {s.drain_port}"


def files(s: Settings, relays: list[tuple[RelaySpec, str]]) -> dict[str, str]:
    def dump(doc: dict) -> str:
        return yaml.safe_dump(doc, sort_keys=False, width=1000)

    return {"prometheus-scrape.yml": dump(scrape_configs(s, relays)), "blackbox.yml": dump(blackbox_modules(s)),
            "backup-mx-rules.yml": dump(alert_rules(s))}
