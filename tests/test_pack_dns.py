"""The pack's DNS area (policy/backup_mx_rules/dns.py): zone-record-budget, mx-preference, relay-a-
record and relay-a-unproxied. Each mutation of the example plan, through the real analyzer, is
reported by its policy and by no other. The area's mutations on other shapes sit with those
shapes' proofs (tests/test_two_relays.py, and the WireGuard and MTA-STS modules)."""
import pytest

from tests.helpers import (
    add_resource,
    drop_resource,
    resource,
    set_config,
    set_prop,
)
from tests.pack_mutations import (
    UNKNOWN,
    FakeResourceArgs,
    add_primary_mx,
    assert_reported_only,
    disagree,
    judge_directly,
    set_mx,
    set_zone,
)

MUTATIONS = {
    # zone-record-budget
    "zone at 199 live records": (lambda p: set_zone(p, "liveRecordCount", 199), "zone-record-budget"),
    "zone already over quota": (lambda p: set_zone(p, "liveRecordCount", 230), "zone-record-budget"),
    "zone landing exactly at 200 is not under 200": (lambda p: set_zone(p, "liveRecordCount", 198),
                                                     "zone-record-budget"),
    # mx-preference
    "backup MX at the primary's preference": (lambda p: set_mx(p, "priority", 1), "mx-preference"),
    "backup MX missing": (lambda p: drop_resource(p, "DnsRecord", "mx-viktorbarzin.me"), "mx-preference"),
    "primary MX gone from the live zone": (
        lambda p: set_zone(p, "liveRecordKeys", lambda keys: [k for k in keys if not k.startswith("MX ")]),
        "mx-preference"),
    "stack manages the primary MX": (add_primary_mx, "mx-preference"),
    "primary preference declared above backup": (
        lambda p: set_config(p, "primaryMxPreference", 30), "mx-preference"),
    "a foreign MX in this stack": (lambda p: add_resource(p, "cloudflare:index/dnsRecord:DnsRecord", "foreign-mx", {
        **resource(p, "DnsRecord", "mx-viktorbarzin.me")["props"], "content": "mx.attacker.example",
        "priority": 50}), "mx-preference"),
    "a foreign MX live in the zone": (
        lambda p: set_zone(p, "liveRecordKeys", lambda keys: keys + ["MX viktorbarzin.me mx.elsewhere.example 5"]),
        "mx-preference"),
    # Values unknown at preview fail closed where a real stack never leaves them unknown.
    "an MX record whose content is unknown at preview": (
        lambda p: set_prop(p, "DnsRecord", ["content"], UNKNOWN, "mx-viktorbarzin.me", where=("props",)),
        "mx-preference"),
    # The live zone decides (issue 20): the primary's real preference, and relay-host MX records not ours.
    "live primary MX at 30 while primaryMxPreference says 1": (
        lambda p: set_zone(p, "liveRecordKeys", lambda keys: [k.replace("mail.viktorbarzin.me 1", "mail.viktorbarzin.me 30")
                                                             for k in keys]), "mx-preference"),
    "a live MX for the relay host at another priority": (
        lambda p: set_zone(p, "liveRecordKeys", lambda keys: keys + ["MX viktorbarzin.me mx2.viktorbarzin.me 10"]),
        "mx-preference"),
    "live MX records without a priority": (
        lambda p: set_zone(p, "liveRecordKeys", lambda keys: [k.replace("mail.viktorbarzin.me 1", "mail.viktorbarzin.me")
                                                             for k in keys]), "mx-preference"),
    # relay-a-record
    "an AAAA record for the relay host": (lambda p: add_resource(p, "cloudflare:index/dnsRecord:DnsRecord", "relay-aaaa", {
        **resource(p, "DnsRecord", "relay-a")["props"], "type": "AAAA", "content": "2001:db8::25"}),
        "relay-a-record"),
    "a live AAAA record for the relay host": (
        lambda p: set_zone(p, "liveRecordKeys", lambda keys: keys + ["AAAA mx2.viktorbarzin.me 2001:db8::25"]),
        "relay-a-record"),
    "relay A record missing": (lambda p: drop_resource(p, "DnsRecord", "relay-a"), "relay-a-record"),
    # Names as Cloudflare expands them: a bare label is <label>.<zone>, '@' the apex.
    "an AAAA record for the relay host as a bare label": (
        lambda p: add_resource(p, "cloudflare:index/dnsRecord:DnsRecord", "relay-aaaa", {
            **resource(p, "DnsRecord", "relay-a")["props"], "type": "AAAA", "name": "mx2", "content": "2001:db8::25"}),
        "relay-a-record"),
    "a foreign MX at the apex written '@'": (lambda p: add_resource(p, "cloudflare:index/dnsRecord:DnsRecord", "apex-mx", {
        **resource(p, "DnsRecord", "mx-viktorbarzin.me")["props"], "name": "@", "content": "mx.attacker.example",
        "priority": 50}), "mx-preference"),
    # relay-a-unproxied
    "relay A record proxied": (lambda p: set_prop(p, "DnsRecord", ["proxied"], True, "relay-a"),
                               "relay-a-unproxied"),
    "relay A record proxied as a string": (lambda p: set_prop(p, "DnsRecord", ["proxied"], "true", "relay-a"),
                                           "relay-a-unproxied"),
    "relay A record proxied in inputs only": (
        lambda p: set_prop(p, "DnsRecord", ["proxied"], True, "relay-a", where=("props",)), "relay-a-unproxied"),
    # zone-record-budget fails closed
    "zone list missing": (lambda p: set_prop(p, "index:Dns", ["zones"], []), "zone-record-budget"),
    "a record in a zone the Dns component does not list": (
        lambda p: set_prop(p, "DnsRecord", ["zoneId"], "feedfacefeedfacefeedfacefeedface", "relay-a"),
        "zone-record-budget"),
    "live count not a number": (lambda p: set_zone(p, "liveRecordCount", "many"), "zone-record-budget"),
    "a live count below the component's own list of live keys": (lambda p: disagree(p, 20), "zone-record-budget"),
    "a live count above the component's own list of live keys": (lambda p: disagree(p, 181), "zone-record-budget"),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_mutation_is_reported_by_its_policy_only(policies, example_plan, case):
    assert_reported_only(policies, example_plan, *MUTATIONS[case])


@pytest.mark.parametrize("kind,proxied,expected", [
    ("A", True, True), ("AAAA", True, True), ("CNAME", True, True), ("A", False, False), ("A", None, False),
    ("MX", True, False), ("TXT", True, False), ("a", True, True)])
def test_relay_a_unproxied_judged_directly(kind, proxied, expected):
    """The policy's own validate, called with a fake args object: an address record (any case)
    that Cloudflare would proxy is reported, naming the record; other types never are."""
    from backup_mx_rules.dns import relay_a_unproxied
    from backup_mx_rules.view import DNS_RECORD
    props = {"type": kind, "name": "mx2", "content": "203.0.113.5",
             **({} if proxied is None else {"proxied": proxied})}
    messages = judge_directly(relay_a_unproxied, FakeResourceArgs(DNS_RECORD, props, "relay-a"))
    assert bool(messages) == expected, messages
    assert all("'relay-a'" in m and "proxied=False" in m for m in messages)
    assert judge_directly(relay_a_unproxied, FakeResourceArgs("oci:Core/instance:Instance", props)) == []


# dns-records: a record the stack adds may not change where senders, the drain or a CA go.
def _record(kind, name, content):
    return lambda p: add_resource(p, "cloudflare:index/dnsRecord:DnsRecord", f"extra-{kind.lower()}", {
        **resource(p, "DnsRecord", "relay-a")["props"], "type": kind, "name": name, "content": content})


RECORD_MUTATIONS = {
    "an A record for the primary's host": _record("A", "mail.viktorbarzin.me", "192.0.2.66"),
    "an AAAA record for the primary's host": _record("AAAA", "mail", "2001:db8::66"),
    "a CAA record that forbids Let's Encrypt": _record("CAA", "viktorbarzin.me", '0 issue "digicert.com"'),
    "a CNAME for the drain host": _record("CNAME", "mail.viktorbarzin.me", "elsewhere.example"),
    "an SPF record at the apex": _record("TXT", "viktorbarzin.me", "v=spf1 -all"),
}


@pytest.mark.parametrize("case", sorted(RECORD_MUTATIONS))
def test_a_record_the_mail_flow_does_not_need_is_reported(policies, example_plan, case):
    assert_reported_only(policies, example_plan, RECORD_MUTATIONS[case], "dns-records")


MUTATIONS.update({name: (mutate, "dns-records") for name, mutate in RECORD_MUTATIONS.items()})  # the area's count
