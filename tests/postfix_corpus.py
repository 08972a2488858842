"""Postfix-config variants of the rendered relay files, for the differential tests.

Each variant edits the exact files the VM receives (main.cf, master.cf, the maps) the way a
careless operator or an attacker might: per-service overrides, getopt forms, odd line
breaks, values Postfix refuses, map order. The tests never say what a variant should do;
real Postfix (postconf, postmap, the daemons) decides, and the pack must agree.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

Files = dict[str, str]


@dataclass(frozen=True)
class Variant:
    id: str
    edit: Callable[[Files], Files]
    # "postconf": postconf -n/-P/-M is the oracle. "daemon": postconf's own master.cf
    # normalizer reads this form differently from the daemons' getopt, so the running
    # daemon is the oracle (test_daemons_apply_options_as_the_pack_reads_them).
    oracle: str = "postconf"


def _with(files: Files, **changes: str) -> Files:
    return {**files, **changes}


def main_set(name: str, value: str | None, raw: str | None = None):
    """Replace a main.cf parameter's line (or drop it with value None, or write `raw`)."""
    def edit(files: Files) -> Files:
        lines = [ln for ln in files["main.cf"].split("\n") if not re.match(rf"{re.escape(name)}\s*=", ln)]
        if value is not None:
            lines.append(raw if raw is not None else f"{name} = {value}")
        return _with(files, **{"main.cf": "\n".join(lines).rstrip("\n") + "\n"})
    return edit


def file_text(name: str, transform: Callable[[str], str]):
    return lambda files: _with(files, **{name: transform(files[name])})


def main_text(transform: Callable[[str], str]):
    return file_text("main.cf", transform)


def master_option(service: str, option_text: str, kind: str = "unix"):
    """Append option text to one master.cf entry's line (same physical line)."""
    def edit(files: Files) -> Files:
        out = []
        for line in files["master.cf"].split("\n"):
            fields = line.split()
            if len(fields) >= 8 and fields[0] == service and fields[1] == kind:
                line = f"{line} {option_text}"
            out.append(line)
        return _with(files, **{"master.cf": "\n".join(out)})
    return edit


def master_text(transform: Callable[[str], str]):
    return file_text("master.cf", transform)


map_text = file_text


def chain(*edits):
    def edit(files: Files) -> Files:
        for e in edits:
            files = e(files)
        return files
    return edit


DRAIN = "smtp:[mail.viktorbarzin.me]:2526"
D = "viktorbarzin.me"

VARIANTS: list[Variant] = [
    Variant("rendered", lambda f: f),
    # 1. per-service overrides
    *[Variant(f"soft_bounce=no on {svc}/{kind}", master_option(svc, "-o soft_bounce=no", kind))
      for svc, kind in (("smtp", "unix"), ("relay", "unix"), ("smtpd", "pass"), ("smtp", "inet"), ("error", "unix"),
                        ("cleanup", "unix"))],
    Variant("maximal_queue_lifetime=9s on qmgr", master_option("qmgr", "-o maximal_queue_lifetime=9s")),
    Variant("bounce_queue_lifetime=9s on qmgr", master_option("qmgr", "-o bounce_queue_lifetime=9s")),
    Variant("lifetimes on smtpd only (harmless)", master_option("smtpd", "-o maximal_queue_lifetime=1h", "pass")),
    Variant("transport_maps emptied on rewrite", master_option("rewrite", "-o transport_maps=")),
    Variant("relay_domains widened on rewrite", master_option("rewrite", "-o relay_domains=viktorbarzin.me,example.com")),
    Variant("mydestination on rewrite", master_option("rewrite", "-o mydestination=$myhostname")),
    Variant("mynetworks 0/0 on smtpd", master_option("smtpd", "-o mynetworks=0.0.0.0/0", "pass")),
    Variant("mynetworks on postscreen", master_option("smtp", "-o mynetworks=10.0.0.0/8", "inet")),
    Variant("content_filter on smtpd", master_option("smtpd", "-o content_filter=discard:", "pass")),
    Variant("content_filter on cleanup", master_option("cleanup", "-o content_filter=error:")),
    Variant("smtpd_relay_restrictions=permit on smtpd", master_option("smtpd", "-o smtpd_relay_restrictions=permit", "pass")),
    Variant("message_size_limit small on cleanup", master_option("cleanup", "-o message_size_limit=1024000")),
    Variant("smtp_fallback_relay on smtp", master_option("smtp", "-o smtp_fallback_relay=[192.0.2.9]:2526")),
    Variant("postscreen_dnsbl_action=defer on postscreen", master_option("smtp", "-o postscreen_dnsbl_action=defer", "inet")),
    # 2. getopt forms (postconf reads these as the daemons do)
    Variant("clustered -vo", master_option("smtp", "-vo soft_bounce=no")),
    Variant("separate -v -o", master_option("smtp", "-v -o soft_bounce=no")),
    Variant("braced -o { } with spaces", master_option("smtp", "-o { soft_bounce = no }")),
    Variant("braced then plain: plain last", master_option("smtp", "-o { soft_bounce = no } -o soft_bounce=yes")),
    Variant("plain then braced: braced last", master_option("smtp", "-o soft_bounce=yes -o { soft_bounce = no }")),
    Variant("-o after a non-option argument is an argument", master_option("smtp", "extra -o soft_bounce=no")),
    Variant("-- ends the options", master_option("smtp", "-- -o soft_bounce=no")),
    Variant("-o on a continuation line", master_text(lambda t: t.replace(
        "smtp       unix       -       -       n       -       -       smtp",
        "smtp       unix       -       -       n       -       -       smtp\n  -o soft_bounce=no"))),
    Variant("-o after a comment inside the entry", master_text(lambda t: t.replace(
        "smtp       unix       -       -       n       -       -       smtp",
        "smtp       unix       -       -       n       -       -       smtp\n# note\n  -o soft_bounce=no"))),
    Variant("commented-out -o", master_text(lambda t: t.replace(
        "smtp       unix       -       -       n       -       -       smtp",
        "smtp       unix       -       -       n       -       -       smtp\n#  -o soft_bounce=no"))),
    Variant("-o value with $expansion", chain(main_set("drain_soft", "no"), master_option("smtp", "-o soft_bounce=$drain_soft"))),
    Variant("tab-separated entry", master_text(lambda t: t.replace(
        "qmgr       unix       n       -       n       300     1       qmgr",
        "qmgr\tunix\tn\t-\tn\t300\t1\tqmgr\t-o\tmaximal_queue_lifetime=2d"))),
    # getopt forms postconf mangles (its normalizer splits at every 'o'): the daemons decide
    Variant("attached -osoft_bounce=no", master_option("smtp", "-osoft_bounce=no"), oracle="daemon"),
    Variant("clustered attached -vosoft_bounce=no", master_option("smtp", "-vosoft_bounce=no"), oracle="daemon"),
    Variant("attached -omaximal_queue_lifetime on qmgr", master_option("qmgr", "-omaximal_queue_lifetime=9s"),
            oracle="daemon"),
    # 2. main.cf line syntax
    Variant("indented first line is dropped", main_text(lambda t: "  soft_bounce = no\n" + t)),
    Variant("indented first line with a continuation", main_text(lambda t: "  soft_bounce = no\n  more\n" + t)),
    Variant("continuation after a blank line", main_text(lambda t: t.replace("relay_domains = viktorbarzin.me",
                                                                           "relay_domains = viktorbarzin.me\n\n  example.com"))),
    Variant("continuation after a comment line", main_text(lambda t: t.replace(
        "relay_domains = viktorbarzin.me", "relay_domains = viktorbarzin.me\n# x\n  example.com"))),
    Variant("carriage return does not end a line", main_text(lambda t: t.replace(
        "soft_bounce = yes", "soft_bounce = yes\rsoft_bounce = no"))),
    Variant("CRLF line ends", main_text(lambda t: t.replace("\n", "\r\n"))),
    Variant("vertical tab does not end a line", main_text(lambda t: t.replace(
        "maximal_queue_lifetime = 30d", "maximal_queue_lifetime = 30d\x0bbounce_queue_lifetime = 9s"))),
    Variant("form feed starts a continuation", main_text(lambda t: t.replace(
        "relay_domains = viktorbarzin.me", "relay_domains = viktorbarzin.me\n\x0cexample.com"))),
    Variant("NEL does not end a line", main_text(lambda t: t.replace(
        "mydestination =", "mydestination =\x85soft_bounce = no"))),
    Variant("U+2028 does not end a line", main_text(lambda t: t.replace(
        "mydestination =", "mydestination =\u2028soft_bounce = no"))),
    Variant("duplicate parameter: last wins", main_set("soft_bounce", "no", raw="soft_bounce = yes\nsoft_bounce = no")),
    Variant("duplicate parameter: last wins (yes)", main_text(lambda t: "soft_bounce = no\n" + t)),
    Variant("no spaces around =", main_set("maximal_queue_lifetime", None, raw="maximal_queue_lifetime=5d")),
    Variant("spaces before =", main_set("maximal_queue_lifetime", None, raw="maximal_queue_lifetime   =   5d   ")),
    Variant("a trailing comment is part of the value", main_set("soft_bounce", None, raw="soft_bounce = yes # safe")),
    Variant("a line without =", main_text(lambda t: t + "soft_bounce yes\n")),
    Variant("$name expansion", chain(main_set("lifetime", "30d"), main_set("maximal_queue_lifetime", "$lifetime"))),
    Variant("${name} expansion of an unset name", main_set("maximal_queue_lifetime", "${nonesuch}")),
    Variant("${name?value}", chain(main_set("x_flag", "1"), main_set("soft_bounce", "${x_flag?yes}"))),
    Variant("${name:value}", main_set("soft_bounce", "${nonesuch:no}")),
    # 2. booleans and numbers
    *[Variant(f"soft_bounce = {v!r}", main_set("soft_bounce", v)) for v in ("true", "YES", "Yes", "No", "1", "")],
    *[Variant(f"maximal_queue_lifetime = {v!r}", main_set("maximal_queue_lifetime", v))
      for v in ("720h", "30", "4w", "30D", "30 d", "d", "+30d", "30dx", "101d", "-1d", "0", "8640000s", "8640001s",
                "99999999999d")],
    *[Variant(f"bounce_queue_lifetime = {v!r}", main_set("bounce_queue_lifetime", v))
      for v in ("24h", "1", "86400", "40d", "2")],
    *[Variant(f"message_size_limit = {v!r}", main_set("message_size_limit", v))
      for v in ("+209715200", "0209715200", "209715200 ", "200M", "9223372036854775807", "9223372036854775808",
                "-1", "0")],
    # 2. DNSBL reply filters
    *[Variant(f"dnsbl site {v!r}", main_set("postscreen_dnsbl_sites", v))
      for v in ("zen.spamhaus.org=127.0.0.[2..11]*3", "zen.spamhaus.org=127.0.0.[2..11", "zen.spamhaus.org=127.0.0.2",
                "zen.spamhaus.org*3", "zen.spamhaus.org=127.0.0.[2;4;6]", "zen.spamhaus.org=127.0.0.[11..2]",
                "zen.spamhaus.org=127.0.0.256", "zen.spamhaus.org=127.0.0", "zen.spamhaus.org=127.0.0.2*x",
                "zen.spamhaus.org=[127.0.0.2]", "-bad-.example=127.0.0.2", "zen.spamhaus.org=127.0.0.2.5")],
    *[Variant(f"postscreen_greet_action = {v!r}", main_set("postscreen_greet_action", v))
      for v in ("ENFORCE", "drop", "ignore", "reject")],
    # 3. maps
    Variant("transport: duplicate key, first wins",
            map_text("transport", lambda t: t + f"{D} discard:\n")),
    Variant("transport: duplicate key, discard first",
            map_text("transport", lambda t: f"{D} discard:\n" + t)),
    Variant("transport: a per-user row", map_text("transport", lambda t: t + f"alice@{D} error:gone\n")),
    # access-map actions inside the allowed recipient list: taken with 250, then not drained
    *[Variant(f"recipient access action {action}", main_set(
        "smtpd_recipient_restrictions", f"reject_non_fqdn_recipient, check_recipient_access inline:{{ {D}={action} }}, "
                                        f"check_recipient_access inline:{{ {D}=OK }}, reject"))
      for action in ("DISCARD", "HOLD")],
    Variant("transport: wildcard only", map_text("transport", lambda t: f"* {DRAIN}\n")),
    Variant("transport: parent-domain row only", map_text("transport", lambda t: f".me {DRAIN}\n")),
    Variant("transport: foreign host", map_text("transport", lambda t: t.replace("mail.viktorbarzin.me", "mx.evil.example"))),
    Variant("transport: unbracketed next hop",
            map_text("transport", lambda t: t.replace("[mail.viktorbarzin.me]", "mail.viktorbarzin.me"))),
    Variant("transport: relay: transport", map_text("transport", lambda t: t.replace("smtp:", "relay:"))),
    Variant("transport: lmtp", map_text("transport", lambda t: t.replace("smtp:", "lmtp:"))),
    Variant("transport: continuation line", map_text("transport", lambda t: t.replace(" smtp:", "\n  smtp:"))),
    Variant("transport: upper-case key", map_text(
        "transport", lambda t: t.upper().replace("SMTP:[MAIL.VIKTORBARZIN.ME]", "smtp:[mail.viktorbarzin.me]"))),
    Variant("two transport maps, first wins", chain(
        main_set("transport_maps", "inline:{ viktorbarzin.me=discard: }, texthash:/etc/postfix/transport"))),
    Variant("two transport maps, rendered first", chain(
        main_set("transport_maps", "texthash:/etc/postfix/transport, inline:{ viktorbarzin.me=discard: }"))),
    Variant("relay_recipient_maps without the catch-all", map_text("relay_recipients", lambda t: "alice@viktorbarzin.me OK\n")),
    Variant("relay_recipient_maps duplicate catch-all", map_text("relay_recipients", lambda t: t + t)),
    Variant("relay_transport discard with no transport map", chain(main_set("transport_maps", ""),
                                                                   main_set("relay_transport", "discard:"))),
    Variant("relayhost with no transport map", chain(main_set("transport_maps", ""),
                                                     main_set("relayhost", "[mail.viktorbarzin.me]:2526"))),
    Variant("open relay: permit first", main_set("smtpd_relay_restrictions", "permit, reject_unauth_destination")),
    Variant("open relay: no restriction", chain(main_set("smtpd_relay_restrictions", ""),
                                                main_set("smtpd_recipient_restrictions", "permit_mynetworks"))),
    Variant("relay restrictions in the recipient list", chain(
        main_set("smtpd_relay_restrictions", ""),
        main_set("smtpd_recipient_restrictions", "permit_mynetworks, reject_unauth_destination"))),
    Variant("whitelist alone in the recipient list", chain(
        main_set("smtpd_relay_restrictions", ""),
        main_set("smtpd_recipient_restrictions", "check_recipient_access inline:{ viktorbarzin.me=OK }, reject"))),
    Variant("open relay: foreign domain allowed in both lists", chain(
        main_set("smtpd_relay_restrictions", "check_recipient_access inline:{ example.org=OK }, reject_unauth_destination"),
        main_set("smtpd_recipient_restrictions",
                 "check_recipient_access inline:{ example.org=OK, viktorbarzin.me=OK }, reject"))),
    # Liveness: parameters that stop delivery or reception without touching an invariant.
    Variant("liveness: drain bound to an address the VM lacks", main_set("smtp_bind_address", "192.0.2.77")),
    Variant("liveness: drain TLS encrypt", main_set("smtp_tls_security_level", "encrypt")),
    Variant("liveness: drain TLS none", main_set("smtp_tls_security_level", "none")),
    Variant("liveness: drain TLS encrypt on the smtp service", master_option("smtp", "-o smtp_tls_security_level=encrypt")),
    Variant("liveness: client restrictions refuse everyone", main_set("smtpd_client_restrictions", "reject")),
    Variant("liveness: postscreen proxy protocol", main_set("postscreen_upstream_proxy_protocol", "haproxy")),
    Variant("liveness: master_service_disable inet", main_set("master_service_disable", "inet")),
]
