"""Settings in, MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) text out: per protected domain the
policy, its `_mta-sts` and `_smtp._tls` TXT records, and the Worker that serves every policy.

A policy lists every MX host of the domain (the primary and each relay): a sender that
enforces MTA-STS delivers to no MX host the policy leaves out, so a relay missing from it
would take no mail from such senders during an outage. The policy id is derived from the
policy text (the first 32 hex digits of its SHA-256), so it changes whenever the text does
and senders refetch.
"""
from __future__ import annotations

import hashlib
import json

from .settings import Settings

POLICY_PATH = "/.well-known/mta-sts.txt"
WORKER_MAIN = "worker.js"
WORKER_COMPATIBILITY_DATE = "2026-11-01"
POLICIES_LINE = "const POLICIES = "  # the worker's one data line: a JSON object, policy host -> text


def policy_host(domain: str) -> str:
    return f"mta-sts.{domain}"


def mx_hosts(s: Settings) -> list[str]:
    """Every MX host of a protected domain: the primary, then each relay."""
    return [s.primary_mx_host, *(r.hostname for r in s.relays)]


def policy_text(s: Settings) -> str:
    assert s.mta_sts is not None
    lines = ["version: STSv1", f"mode: {s.mta_sts.mode}", *(f"mx: {host}" for host in mx_hosts(s)),
             f"max_age: {s.mta_sts.max_age}"]
    return "".join(line + "\r\n" for line in lines)  # RFC 8461 3.2: CRLF-terminated lines


def policy_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def sts_record(text: str) -> str:
    return f"v=STSv1; id={policy_id(text)}"


def tls_rpt_record(s: Settings) -> str:
    assert s.mta_sts is not None
    return f"v=TLSRPTv1; rua={s.mta_sts.tls_rpt_rua}"


def policies(s: Settings) -> dict[str, str]:
    """Policy host -> policy text, one per protected domain (every domain has the same MX set)."""
    text = policy_text(s)
    return {policy_host(domain): text for domain in s.domains}


def worker_script(s: Settings) -> str:
    return (
        "// MTA-STS policy host (RFC 8461), rendered by the backup-mx stack: one policy per\n"
        f"// mta-sts.<domain> at {POLICY_PATH}, served as text/plain with status 200; anything else is 404.\n"
        f"{POLICIES_LINE}{json.dumps(policies(s), sort_keys=True)};\n"
        "export default {\n"
        "  async fetch(request) {\n"
        "    const url = new URL(request.url);\n"
        "    const policy = POLICIES[url.hostname.toLowerCase()];\n"
        f"    if (request.method !== \"GET\" || url.pathname !== \"{POLICY_PATH}\" || policy === undefined) {{\n"
        "      return new Response(\"not found\\n\", { status: 404, headers: { \"content-type\": \"text/plain\" } });\n"
        "    }\n"
        "    return new Response(policy, { headers: { \"content-type\": \"text/plain; charset=utf-8\" } });\n"
        "  },\n"
        "};\n")
