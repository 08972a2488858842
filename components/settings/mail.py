"""Mail: the message size limit, the queue and bounce lifetimes, and postscreen's DNSBL. The
pack's area: policy/backup_mx_rules/mail.py (never-5xx, queue-lifetime, bounce-lifetime).

The lifetimes are the pack's invariants stated where the value is read: a value the settings
accept is one the mandatory policies pass, and the refusal names the policy."""
from __future__ import annotations

from ..grammar import https_url_problem
from ..postfix_grammar import LIFETIME_CAP_S, dnsbl_site_problem, dnsbl_weight, postfix_seconds
from .reader import Reader

MESSAGE_SIZE_MIN, MESSAGE_SIZE_MAX = 10 * 1024 * 1024, 1024 * 1024 * 1024
QUEUE_LIFETIME_FLOOR_S, BOUNCE_LIFETIME_S = 30 * 86400, 86400  # the pack's queue-lifetime and bounce-lifetime
# postscreen_dnsbl_action values; the pack's never-5xx allows the same. drop's documented 521
# is 421 under soft_bounce (tests/test_relay_lab.py proves both on real Postfix). postscreen
# reads the value with name_code(), which compares without case (util/name_code.c), and the
# config parser drops surrounding blanks: "ENFORCE" is enforce, so it is accepted as enforce.
DNSBL_ACTIONS = ("enforce", "drop", "ignore")
# Recipient handling; the pack's never-5xx and relay-user-data read the same key. catchall takes
# every address; list takes the synced list's (cloud-init/recipients.sh); verify probes the
# primary (components/postfix.py::_verification).
RECIPIENT_MODES = ("catchall", "list", "verify")
ALLOWED = {"queueLifetime": "30d..100d", "bounceLifetime": "1d (also written 24h or 86400s)"}


def check(r: Reader, v: dict) -> str:
    """The mail keys; returns postscreen's DNSBL action in its canonical form."""
    if v["recipients"] not in RECIPIENT_MODES:
        r.fail("recipients", f"{v['recipients']!r} is not allowed; allowed: {', '.join(RECIPIENT_MODES)}")
    url = v["recipientListUrl"]
    if v["recipients"] == "list" and not url:
        r.fail("recipientListUrl", "is required with recipients list: the https URL of the valid-recipient list")
    elif v["recipients"] == "list" and https_url_problem(url):
        r.fail("recipientListUrl", f"{url!r} {https_url_problem(url)}; allowed: https://host[:port][/path]")
    elif url and v["recipients"] != "list":
        r.fail("recipientListUrl", f"is set but recipients is {v['recipients']}; set recipients: list, or remove it")
    if not MESSAGE_SIZE_MIN <= v["messageSizeLimit"] <= MESSAGE_SIZE_MAX:
        r.fail("messageSizeLimit", f"{v['messageSizeLimit']} is outside {MESSAGE_SIZE_MIN}..{MESSAGE_SIZE_MAX} "
                                   "(10 MB..1 GiB: smtpd wants 1.5 times this free before it takes any message); "
                                   "set the primary's value")
    _lifetimes(r, v)
    return _dnsbl(r, v)


LIFETIME_POLICIES = {"queueLifetime": "queue-lifetime", "bounceLifetime": "bounce-lifetime"}


def _lifetimes(r: Reader, v: dict) -> None:
    seconds = {}
    for key, policy in LIFETIME_POLICIES.items():
        try:
            seconds[key] = postfix_seconds(v[key])
        except ValueError as exc:
            r.fail(key, str(exc))
            continue
        if seconds[key] > LIFETIME_CAP_S:
            r.fail(key, f"{v[key]!r} exceeds Postfix's 100d cap (qmgr would not start, and the pack's mandatory "
                        f"{policy} policy refuses it); allowed: {ALLOWED[key]}")
        elif seconds[key] == 0:
            r.fail(key, f"0 would bounce or drop mail at the first deferral (the pack's mandatory {policy} policy "
                        f"refuses it); allowed: {ALLOWED[key]}")
    if seconds.get("queueLifetime", QUEUE_LIFETIME_FLOOR_S) < QUEUE_LIFETIME_FLOOR_S:
        r.fail("queueLifetime", f"{v['queueLifetime']!r} is shorter than 30d, which the pack's mandatory queue-lifetime "
                                f"policy refuses (outage mail would expire); allowed: {ALLOWED['queueLifetime']}")
    elif seconds.get("bounceLifetime", BOUNCE_LIFETIME_S) != BOUNCE_LIFETIME_S:
        r.fail("bounceLifetime", f"{v['bounceLifetime']!r} is not 1d, which the pack's mandatory bounce-lifetime policy "
                                 "requires (the VM can never deliver a bounce, so it must not hold them long); "
                                 f"allowed: {ALLOWED['bounceLifetime']}")


def _dnsbl(r: Reader, v: dict) -> str:
    weights = []
    for site in v["dnsblSites"]:
        problem = dnsbl_site_problem(site)
        if problem:
            r.fail("dnsblSites", f"{site!r}: {problem}; allowed form: zen.spamhaus.org=127.0.0.[2..11]*3")
        else:
            weights.append(dnsbl_weight(site))
    reachable = sum(w for w in weights if w > 0)
    if v["dnsblThreshold"] < 1:
        r.fail("dnsblThreshold", "must be at least 1")
    elif weights and v["dnsblThreshold"] > reachable:
        r.fail("dnsblThreshold", f"{v['dnsblThreshold']} can never be reached: the dnsblSites weights add up to "
                                 f"{reachable}, so DNSBL would be silently off; allowed: 1..{reachable}")
    action = v["dnsblAction"].strip(" \t").lower()
    if action not in DNSBL_ACTIONS:
        r.fail("dnsblAction", f"{v['dnsblAction']!r} is not allowed (postscreen would not start, which the pack's "
                              f"mandatory never-5xx policy refuses); allowed: {', '.join(DNSBL_ACTIONS)}")
    return action
