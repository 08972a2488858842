"""Postfix's value grammars the settings check stack values against: time values and
postscreen_dnsbl_sites entries. Nothing here imports the rest of components/.

- A time value is a number with an optional unit s, m, h, d or w; a bare number takes the
  parameter's default unit (conf_time in Postfix's util/conv_time.c). qmgr refuses to start
  when a queue lifetime exceeds 100d.
- A postscreen_dnsbl_sites entry is domain[=filter][*weight], the filter four octet patterns,
  each a number or a [n..m;k] list (postscreen_dnsbl.c, via ip_match.c).
"""
from __future__ import annotations

import re

from .grammar import HOSTNAME

TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
LIFETIME_CAP_S = 100 * 86400  # qmgr refuses to start above 100d
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_OCTET_PATTERN = re.compile(rf"{_OCTET}|\[{_OCTET}(\.\.{_OCTET})?(;{_OCTET}(\.\.{_OCTET})?)*\]")


def postfix_seconds(value: str, default_unit: str = "d") -> int:
    """Postfix time value to seconds; a bare number takes the parameter's default unit."""
    match = re.fullmatch(r"(\d+)([smhdw]?)", value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a Postfix time (a number with optional unit s, m, h, d or w)")
    return int(match.group(1)) * TIME_UNITS[match.group(2) or default_unit]


def dnsbl_site_problem(site: str) -> str:
    """'' when `site` is a valid postscreen_dnsbl_sites entry with a reply filter; else what is
    wrong. An entry without a filter is refused: a resolver's refusal answer would list everyone."""
    rest, star, weight = site.partition("*")
    if star and not re.fullmatch(r"-?[0-9]{1,6}", weight):
        return f"weight {weight!r} is not a whole number"
    domain, eq, reply_filter = rest.partition("=")
    if not HOSTNAME.match(domain.lower()):
        return f"{domain!r} is not a DNSBL domain name"
    if not eq:
        return "has no reply filter, so a resolver's refusal answer (127.255.255.254) would list everyone"
    pattern = _OCTET_PATTERN.pattern
    if not re.fullmatch(rf"({pattern})\.({pattern})\.({pattern})\.({pattern})", reply_filter):
        return f"reply filter {reply_filter!r} is not four octet patterns (n or [n..m;k], each 0..255)"
    for low, high in re.findall(r"(\d+)\.\.(\d+)", reply_filter):
        if int(low) > int(high):
            return f"range {low}..{high} is empty"
    return ""


def dnsbl_weight(site: str) -> int:
    """An entry's weight: its *N, else 1."""
    _, star, weight = site.partition("*")
    return int(weight) if star else 1
