"""MTA-STS (mtaSts testing|enforce): the policy, its TXT id and the TLS-RPT record. The pack's
area: policy/backup_mx_rules/mtasts.py (mta-sts, mta-sts-live-record)."""
from __future__ import annotations

import re
from typing import Optional

from ..grammar import email_problem, https_url_problem
from .model import MtaSts
from .reader import Reader

MTA_STS_MODES = ("off", "testing", "enforce")
MTA_STS_MAX_AGE = (86400, 31557600)  # a day .. RFC 8461's cap (about a year)
MTA_STS_KEYS = ("tlsRptRua", "cloudflareAccountId")
# RFC 8460 section 3: tlsrpt-rua = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri), where
# tlsrpt-uri is a URI (RFC 3986) of scheme mailto or https, with "," and ";" percent-encoded.
_TLS_RPT_SEP = re.compile(r"[ \t]*,[ \t]*")


def check(r: Reader, v: dict) -> Optional[MtaSts]:
    mode = v["mtaSts"]
    if mode not in MTA_STS_MODES:
        r.fail("mtaSts", f"{mode!r} is not allowed; allowed: {', '.join(MTA_STS_MODES)}")
        return None
    if mode == "off":
        for key in (*MTA_STS_KEYS, "mtaStsMaxAge"):
            if r.given(key):
                r.fail(key, "is set but mtaSts is off; set mtaSts: testing (then enforce), or remove it")
        return None
    errors = len(r.errors)
    low, high = MTA_STS_MAX_AGE
    if not low <= v["mtaStsMaxAge"] <= high:
        r.fail("mtaStsMaxAge", f"{v['mtaStsMaxAge']} is outside {low}..{high} seconds (a day .. RFC 8461's cap)")
    rua = v["tlsRptRua"]
    if not rua:
        r.fail("tlsRptRua", f"is required with mtaSts {mode}: where senders send TLS reports, e.g. "
                            "mailto:tls-reports@example.net")
    elif tls_rpt_rua_problem(rua):
        r.fail("tlsRptRua", f"{tls_rpt_rua_problem(rua)}; allowed: one or more mailto: addresses or https:// URLs "
                            "separated by commas, e.g. mailto:tls-reports@example.net")
    if not re.fullmatch(r"[0-9a-f]{32}", v["cloudflareAccountId"]):
        r.fail("cloudflareAccountId", f"{v['cloudflareAccountId']!r} is not a Cloudflare account id (32 hex digits); "
                                      f"required with mtaSts {mode}: the policy is served by a Worker in that account")
    if len(r.errors) > errors:
        return None
    return MtaSts(mode=mode, max_age=v["mtaStsMaxAge"], tls_rpt_rua=",".join(_TLS_RPT_SEP.split(rua.strip())),
                  account_id=v["cloudflareAccountId"])


def tls_rpt_rua_problem(rua: str) -> str:
    """'' when `rua` is the value part of an RFC 8460 rua field; else what is wrong."""
    for uri in _TLS_RPT_SEP.split(rua.strip(" \t")):
        if not uri:
            return f"{rua!r} has an empty entry (a leading, trailing or doubled comma)"
        mailto = uri.startswith("mailto:") and not email_problem(uri.removeprefix("mailto:"))
        https = uri.startswith("https://") and not https_url_problem(uri)
        if re.search(r"[\s;!]", uri) or not (mailto or https):
            return f"{uri!r} is not a mailto: address or an https:// URL (RFC 8460 section 3)"
    return ""
