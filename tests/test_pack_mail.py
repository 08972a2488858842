"""The pack's mail area (policy/backup_mx_rules/mail.py and parameters.py): never-5xx, the
lifetimes, drain-port, relay-domains, relay-mynetworks, smtp-smuggling and postfix-parameters.
Each mutation of the example plan, through the real analyzer, is reported by its policy and by
no other. The area's mutations on other shapes sit with those shapes' proofs
(tests/test_two_relays.py, and the WireGuard and MTA-STS modules)."""
import re

import pytest

from tests.helpers import (
    edit_file,
    reported,
    set_main_cf,
)
from tests.pack_mutations import (
    TRANSPORT,
    assert_reported_only,
    master_option,
)

MUTATIONS = {
    # never-5xx
    "soft_bounce off": (lambda p: set_main_cf(p, "soft_bounce", "no"), "never-5xx"),
    "soft_bounce unset (default no)": (lambda p: set_main_cf(p, "soft_bounce", None), "never-5xx"),
    "postscreen action 'defer' does not exist": (lambda p: set_main_cf(p, "postscreen_dnsbl_action", "defer"),
                                                 "never-5xx"),
    "size limit equal to the primary's (no headroom)": (
        lambda p: set_main_cf(p, "message_size_limit", "209715200"), "never-5xx"),
    "size limit unlimited": (lambda p: set_main_cf(p, "message_size_limit", "0"), "never-5xx"),
    "size limit 1 byte over the headroom": (lambda p: set_main_cf(p, "message_size_limit", "208666625"), "never-5xx"),
    "smaller size limit than the primary": (lambda p: set_main_cf(p, "message_size_limit", "10240000"),
                                            "never-5xx"),
    "DNSBL without a reply filter": (lambda p: set_main_cf(p, "postscreen_dnsbl_sites", "zen.spamhaus.org*3"),
                                     "never-5xx"),
    "soft_bounce=no on the postscreen service": (
        lambda p: edit_file(p, "/master.cf", master_option("smtp ", "soft_bounce=no")), "never-5xx"),
    "soft_bounce=no on the smtpd behind postscreen": (
        lambda p: edit_file(p, "/master.cf", master_option("smtpd ", "soft_bounce=no")), "never-5xx"),
    # bounce-lifetime
    "bounce lifetime 5d": (lambda p: set_main_cf(p, "bounce_queue_lifetime", "5d"), "bounce-lifetime"),
    "bounce lifetime unset (default 5d)": (lambda p: set_main_cf(p, "bounce_queue_lifetime", None),
                                           "bounce-lifetime"),
    "bounce lifetime 40d beyond the queue": (lambda p: set_main_cf(p, "bounce_queue_lifetime", "40d"),
                                             "bounce-lifetime"),
    "bounce lifetime bare 2 means 2 days": (lambda p: set_main_cf(p, "bounce_queue_lifetime", "2"),
                                            "bounce-lifetime"),
    # queue-lifetime
    "queue 5d": (lambda p: set_main_cf(p, "maximal_queue_lifetime", "5d"), "queue-lifetime"),
    "queue over the 100d cap": (lambda p: set_main_cf(p, "maximal_queue_lifetime", "101d"), "queue-lifetime"),
    "queue 30h is not 30d": (lambda p: set_main_cf(p, "maximal_queue_lifetime", "30h"), "queue-lifetime"),
    "queue unset (default 5d)": (lambda p: set_main_cf(p, "maximal_queue_lifetime", None), "queue-lifetime"),
    # relay-mynetworks
    "relay mynetworks open to the world": (lambda p: set_main_cf(p, "mynetworks", "0.0.0.0/0"),
                                           "relay-mynetworks"),
    "relay mynetworks a private LAN": (lambda p: set_main_cf(p, "mynetworks", "127.0.0.0/8 10.0.0.0/8"),
                                       "relay-mynetworks"),
    "relay mynetworks unset": (lambda p: set_main_cf(p, "mynetworks", None), "relay-mynetworks"),
    # smtp-smuggling
    "bare newline setting dropped (Debian 12's default no)": (
        lambda p: set_main_cf(p, "smtpd_forbid_bare_newline", None), "smtp-smuggling"),
    "bare newline reject (550)": (lambda p: set_main_cf(p, "smtpd_forbid_bare_newline", "reject"), "smtp-smuggling"),
    "bare newline exclusions beyond loopback": (
        lambda p: set_main_cf(p, "smtpd_forbid_bare_newline_exclusions", "127.0.0.1/32, 0.0.0.0/0"), "smtp-smuggling"),
    "bare newline exclusions as a table": (
        lambda p: set_main_cf(p, "smtpd_forbid_bare_newline_exclusions", "hash:/etc/postfix/x"), "smtp-smuggling"),
    "bare newline no for the smtpd service only (master.cf -o)": (lambda p: edit_file(p, "/master.cf", lambda t: t.replace(
        " smtpd\n", " smtpd\n  -o smtpd_forbid_bare_newline=no\n", 1)), "smtp-smuggling"),
    "unauth pipelining disconnect (554)": (
        lambda p: set_main_cf(p, "smtpd_forbid_unauth_pipelining", "yes"), "smtp-smuggling"),
    # postfix-parameters: liveness, and what the pack does not model
    "listens on loopback only": (lambda p: set_main_cf(p, "inet_interfaces", "loopback-only"), "postfix-parameters"),
    "IPv6 only in an IPv4-only VCN": (lambda p: set_main_cf(p, "inet_protocols", "ipv6"), "postfix-parameters"),
    "the SMTP listener disabled": (lambda p: set_main_cf(p, "master_service_disable", "inet"), "postfix-parameters"),
    "a proxy protocol no sender speaks": (
        lambda p: set_main_cf(p, "postscreen_upstream_proxy_protocol", "haproxy"), "postfix-parameters"),
    "the drain binds to an address the VM lacks": (
        lambda p: set_main_cf(p, "smtp_bind_address", "192.0.2.77"), "postfix-parameters"),
    "a drain TLS level the primary may not meet": (
        lambda p: set_main_cf(p, "smtp_tls_security_level", "verify"), "postfix-parameters"),
    "a drain TLS level on the smtp service only": (
        lambda p: edit_file(p, "/master.cf", lambda t: re.sub(r"(?m)^(smtp\s+unix\s.*)$",
                                                              r"\1\n  -o smtp_tls_security_level=encrypt", t, count=1)),
        "postfix-parameters"),
    "inbound TLS required": (lambda p: set_main_cf(p, "smtpd_tls_security_level", "encrypt"), "postfix-parameters"),
    "a client restriction that refuses everyone": (
        lambda p: set_main_cf(p, "smtpd_client_restrictions", "reject"), "postfix-parameters"),
    "retries once a week": (lambda p: set_main_cf(p, "maximal_backoff_time", "7d"), "postfix-parameters"),
    "a parameter the pack does not model": (
        lambda p: set_main_cf(p, "smtp_tls_policy_maps", "inline:{ viktorbarzin.me=secure }"), "postfix-parameters"),
    "an -o the pack does not model": (
        lambda p: edit_file(p, "/master.cf", master_option("smtpd ", "smtpd_hard_error_limit=0")),
        "postfix-parameters"),
    "a second listener on the submission port": (
        lambda p: edit_file(p, "/master.cf", lambda t: t + "submission inet n - n - - smtpd\n"), "postfix-parameters"),
    "the SMTP listener on loopback": (
        lambda p: edit_file(p, "/master.cf", lambda t: t.replace("smtp       inet", "127.0.0.1:smtp inet", 1)),
        "postfix-parameters"),
    # drain-port
    "drain on port 25": (lambda p: edit_file(p, TRANSPORT, lambda t: t.replace(":2526", ":25")), "drain-port"),
    "drain without a port": (lambda p: edit_file(p, TRANSPORT, lambda t: t.replace(":2526", "")), "drain-port"),
    "no transport map": (lambda p: set_main_cf(p, "transport_maps", None), "drain-port"),
    # relay-domains
    "relay_domains misses the protected domain": (lambda p: set_main_cf(p, "relay_domains", ""), "relay-domains"),
    "mydestination delivers locally": (lambda p: set_main_cf(p, "mydestination", "$myhostname"), "relay-domains"),
    "open relay for one foreign domain": (
        lambda p: set_main_cf(set_main_cf(p, "smtpd_relay_restrictions",
                                          "check_recipient_access inline:{ example.org=OK }, reject_unauth_destination"),
                              "smtpd_recipient_restrictions", None), "relay-domains"),
    "own IP literals taken": (lambda p: set_main_cf(p, "smtpd_recipient_restrictions", ""), "relay-domains"),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_mutation_is_reported_by_its_policy_only(policies, example_plan, case):
    assert_reported_only(policies, example_plan, *MUTATIONS[case])


# master.cf as a table (postfix-parameters): every service and every column, as Postfix reads them.

def _row(name, kind, new_row):
    """Replace the master.cf row of service name/kind (its first line) with new_row."""
    return lambda p: edit_file(p, "/master.cf", lambda t: re.sub(
        rf"(?m)^{re.escape(name)}\s+{re.escape(kind)}\s.*$", new_row, t, count=1))


def _add(row):
    return lambda p: edit_file(p, "/master.cf", lambda t: t + row + "\n")


SERVICE_MUTATIONS = {
    "a second qmgr with one-hour lifetimes": _add("qmgr2 unix n - n 300 1 qmgr\n  -o maximal_queue_lifetime=1h"),
    "a second cleanup that nothing names": _add("cleanup2 unix n - n - 0 cleanup"),
    "a local delivery agent": _add("local unix - n n - - local"),
    "qmgr process limit 2": _row("qmgr", "unix", "qmgr unix n - n 300 2 qmgr"),
    "postscreen at the default process limit": _row("smtp", "inet", "smtp inet n - n - - postscreen"),
    "cleanup's socket moved to public/": _row("cleanup", "unix", "cleanup unix y - n - 0 cleanup"),
    "the drain client chrooted": _row("smtp", "unix", "smtp unix - - y - - smtp"),
    "bounce runs discard": _row("bounce", "unix", "bounce unix - - n - 0 discard"),
    "pickup never wakes": _row("pickup", "unix", "pickup unix n - n - 1 pickup"),
    "the verify service removed": lambda p: edit_file(p, "/master.cf", lambda t: re.sub(r"(?m)^verify\s.*\n", "", t)),
    "anvil renamed": _row("anvil", "unix", "anvil2 unix - - n - 1 anvil"),
}


@pytest.mark.parametrize("case", sorted(SERVICE_MUTATIONS))
def test_a_master_cf_service_change_is_reported(policies, example_plan, case):
    assert_reported_only(policies, example_plan, SERVICE_MUTATIONS[case], "postfix-parameters")


SERVICE_EQUIVALENTS = {
    "defaults written out": _row("smtp", "unix", "smtp unix y y n 0 - smtp"),
    "the default process limit written as its value": _row("smtp", "unix", "smtp unix - - n - 100 smtp"),
    "rows reordered": lambda p: edit_file(p, "/master.cf", lambda t: _move_to_end(t, "pickup")),
}


def _move_to_end(text, name):
    lines = text.splitlines()
    row = next(ln for ln in lines if ln.startswith(name + " "))
    return "\n".join([ln for ln in lines if ln != row] + [row]) + "\n"


@pytest.mark.parametrize("case", sorted(SERVICE_EQUIVALENTS))
def test_an_equivalent_master_cf_passes(policies, example_plan, case):
    violations = policies.check(SERVICE_EQUIVALENTS[case](example_plan))
    assert reported(violations, "mandatory") == set(), [v.message for v in violations]


# Restriction lists as sequences (drain-port, never-5xx, relay-domains): every element, and
# every action the access maps in them can answer.
WHITELIST = "check_recipient_access inline:{ viktorbarzin.me=OK }, reject"


def _recipient_list(*before):
    return lambda p: set_main_cf(p, "smtpd_recipient_restrictions",
                                 ", ".join(["reject_non_fqdn_recipient", *before, WHITELIST]))


def _access(action):
    return _recipient_list(f"check_recipient_access inline:{{ {{viktorbarzin.me = {action}}} }}")


def _postscreen_access(access_list, denylist_action):
    return lambda p: set_main_cf(set_main_cf(p, "postscreen_access_list", access_list),
                                 "postscreen_denylist_action", denylist_action)


ACTION_MUTATIONS = {
    "DISCARD after the 250": (_access("DISCARD"), "drain-port"),
    "HOLD parks it forever": (_access("HOLD"), "drain-port"),
    "REDIRECT to another address": (_access("REDIRECT x@example.org"), "drain-port"),
    "FILTER to another host": (_access("FILTER smtp:[192.0.2.1]:25"), "drain-port"),
    "BCC a copy elsewhere": (_access("BCC x@example.org"), "drain-port"),
    "PREPEND a header": (_access("PREPEND X-Tag: yes"), "drain-port"),
    # a client map answers for any recipient, the VM's own IP literals too: relay-domains as well
    "DISCARD from a client map": (
        _recipient_list("check_client_access inline:{ {0.0.0.0/0 = DISCARD} }"), {"drain-port", "relay-domains"}),
    "an RBL without a reply filter": (_recipient_list("reject_rbl_client zen.spamhaus.org"), "never-5xx"),
    "an RBL filter that matches the error answers": (
        _recipient_list("reject_rbl_client zen.spamhaus.org=127.[0..255].[0..255].[0..255]"), "never-5xx"),
    "a postscreen DNSBL filter that matches the error answers": (
        lambda p: set_main_cf(p, "postscreen_dnsbl_sites", "zen.spamhaus.org=127.255.255.[0..255]*3"), "never-5xx"),
    "a policy service the pack cannot read": (
        _recipient_list("check_policy_service unix:private/policy"), "relay-domains"),
    "a restriction the pack does not model": (_recipient_list("permit_dnswl_client list.dnswl.org"),
                                              "relay-domains"),
    "an access action that is a nested table check": (
        _access("check_sender_access inline:{ x=DISCARD }"), "relay-domains"),
    # postscreen_access_list: a table of client addresses, with postscreen's three actions
    "a postscreen access list that rejects every client": (
        _postscreen_access("permit_mynetworks, static:reject", "enforce"), "never-5xx"),
    "a postscreen access list that drops every client": (
        _postscreen_access("permit_mynetworks, static:reject", "drop"), "never-5xx"),
    "a postscreen access action postscreen does not know": (
        _postscreen_access("permit_mynetworks, inline:{ {192.0.2.66 = discard} }", "enforce"), "never-5xx"),
    "a postscreen access table the pack cannot read": (
        _postscreen_access("permit_mynetworks, cidr:/etc/postfix/postscreen_access.cidr", "enforce"),
        "never-5xx"),
}


@pytest.mark.parametrize("case", sorted(ACTION_MUTATIONS))
def test_a_restriction_action_is_reported_by_its_policy_only(policies, example_plan, case):
    assert_reported_only(policies, example_plan, *ACTION_MUTATIONS[case])


ACTION_EQUIVALENTS = {
    "an RBL with a reply filter": _recipient_list("reject_rbl_client zen.spamhaus.org=127.0.0.[2..11]"),
    "a WARN action only logs": _access("WARN listed"),
    "a 450 with text": _access("450 try later"),
    "REJECT, which soft_bounce makes 450": _access("REJECT no"),
    "a DNS refusal (soft_bounce makes it 450)": _recipient_list("reject_unknown_sender_domain"),
    "a postscreen access list that defers one address": _postscreen_access(
        "permit_mynetworks, inline:{ {192.0.2.66 = reject} }", "enforce"),
    "a postscreen reject-all that only logs": _postscreen_access("permit_mynetworks, static:reject", "ignore"),
    "a postscreen access list that permits one address": _postscreen_access(
        "permit_mynetworks, inline:{ {192.0.2.67 = permit}, {192.0.2.68 = dunno} }", "enforce"),
}


@pytest.mark.parametrize("case", sorted(ACTION_EQUIVALENTS))
def test_an_answering_action_passes(policies, example_plan, case):
    violations = policies.check(ACTION_EQUIVALENTS[case](example_plan))
    assert reported(violations, "mandatory") == set(), [v.message for v in violations]


def test_a_static_catch_all_is_a_catch_all(policies, example_plan):
    violations = policies.check(set_main_cf(example_plan, "relay_recipient_maps", "static:OK"))
    assert reported(violations, "mandatory") == set(), [v.message for v in violations]
