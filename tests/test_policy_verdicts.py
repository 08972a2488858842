"""The pack's verdicts against what real Postfix does with the same files.

Each variant goes into the instance's user_data and through the real analyzer (what
`pulumi preview --policy-pack` reports), and the same files run on real Postfix with the
lab's fake primary. A variant the pack reports must misbehave on Postfix in the way its
policy names (a bounce, an expiry, mail taking another transport, relaying for a stranger),
and a variant it passes must not. This is also where the daemons, not postconf, judge the
attached getopt forms (-osoft_bounce=no) that postconf's normalizer reads differently.
"""
from __future__ import annotations

import copy
import re
import time

import pytest

from lab.client import deliver, message
from offline.preview import DEFERRED
from tests.helpers import resource, set_user_data_doc, user_data_doc
from tests.postfix_corpus import VARIANTS

BY_ID = {v.id: v for v in VARIANTS}
STRANGER = "127.0.0.2"  # outside the relay's mynetworks (127.0.0.1/32)


def with_files(plan, vm_files, variant):
    """The plan with the variant's files in the instance's user_data (staged paths)."""
    plan = copy.deepcopy(plan)
    files = variant.edit({n: vm_files[n] for n in ("main.cf", "master.cf", "transport", "relay_recipients")})
    inst = resource(plan, "instance:Instance")
    doc = user_data_doc(inst)
    for entry in doc["write_files"]:
        name = entry["path"].rsplit("/", 1)[-1]
        if entry["path"].startswith("/etc/backup-mx/postfix/") and name in files:
            entry["content"] = files[name]
    set_user_data_doc(inst, doc)
    return plan, {**vm_files, **files}


def reported(violations):
    return {v.policy for v in violations if not v.message.startswith(DEFERRED)}


def judge(policies, plan, vm_files, lab, variant_id):
    """The pack's verdict on the variant, and the lab set up to run the same files."""
    plan, files = with_files(plan, vm_files, BY_ID[variant_id])
    lab.files = files
    return reported(policies.check(plan))


def final_status(relay, rcpt: str, timeout: float = 60) -> str:
    """The first delivery status Postfix logs for rcpt: sent, deferred, bounced, expired.
    soft_bounce logs a kept 5xx as SOFTBOUNCE: the message stays queued, i.e. deferred."""
    line = relay.wait_log(rf"to=<{re.escape(rcpt)}>.*status=(sent|deferred|bounced|expired|SOFTBOUNCE)|"
                          r"smtp\[\d+\]: fatal:", timeout)
    if "fatal:" in line:
        return "stuck"  # the smtp client exits at startup; the message stays in the queue
    status = re.search(r"status=(\w+)", line)
    assert status, line
    return "deferred" if status.group(1) == "SOFTBOUNCE" else status.group(1)


def wait_after(relay, offset: int, pattern: str, timeout: float = 60) -> str:
    """The first group of `pattern` in log text written after `offset`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, relay.log_text()[offset:])
        if match:
            return match.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} after offset {offset}: {relay.log_text()[offset:][-2000:]}")


def expired_or_kept(relay, offset: int, timeout: float = 60) -> str:
    """After a retry: 'expired' once qmgr logs it, 'deferred' once the retry failed and the
    message is back in the deferred queue (qmgr decides expiry before it moves it there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = relay.log_text()[offset:]
        if "status=expired" in text:
            return "expired"
        if re.search(r"to=<bob@viktorbarzin.me>.*status=deferred", text) and \
                [q["queue_name"] for q in relay.queue()] == ["deferred"]:
            return "deferred"
        time.sleep(0.1)
    raise AssertionError(relay.log_text()[offset:][-2000:])


def relay_of(relay, rcpt: str) -> str:
    line = relay.wait_log(rf"to=<{re.escape(rcpt)}>.*relay=\S+", 60)
    relay_name = re.search(r"relay=([^,\s]+)", line)
    assert relay_name, line
    return relay_name.group(1)


# (variant, what real Postfix shows, the policy that must report it or None)
PRIMARY_REFUSES = [
    ("rendered", "deferred", None),
    ("soft_bounce=no on smtp/unix", "bounced", "never-5xx"),
    ("attached -osoft_bounce=no", "bounced", "never-5xx"),
    ("clustered attached -vosoft_bounce=no", "bounced", "never-5xx"),
    ("braced then plain: plain last", "deferred", None),
    ("plain then braced: braced last", "bounced", "never-5xx"),
    ("-o after a non-option argument is an argument", "stuck", "drain-port"),
]


@pytest.mark.parametrize("case", PRIMARY_REFUSES, ids=lambda c: c[0])
def test_a_primary_5xx_bounces_only_where_the_pack_says(policies, example_plan, vm_files, lab, case):
    variant_id, observed_want, policy = case
    verdict = judge(policies, example_plan, vm_files, lab, variant_id)
    primary = lab.sink(mode=["-f", "RCPT"])  # the primary answers 550 to every recipient
    relay = lab.relay(primary.port)
    s = deliver(relay.port, "sender@example.com", ["alice@viktorbarzin.me"], message("v-5xx"))
    assert s.accepted, s.replies
    observed = final_status(relay, "alice@viktorbarzin.me")
    assert observed == observed_want, relay.log_text()[-2000:]
    assert verdict == ({policy} if policy else set()), verdict
    assert (observed == "bounced") == (policy == "never-5xx")
    assert (observed == "deferred") == (policy is None)


EXPIRY = [
    ("rendered", "deferred", None),
    ("maximal_queue_lifetime=9s on qmgr", "expired", "queue-lifetime"),
    ("attached -omaximal_queue_lifetime on qmgr", "expired", "queue-lifetime"),
    ("lifetimes on smtpd only (harmless)", "deferred", None),
]


@pytest.mark.parametrize("case", EXPIRY, ids=lambda c: c[0])
def test_mail_expires_only_where_the_pack_says(policies, example_plan, vm_files, lab, case):
    variant_id, observed_want, policy = case
    verdict = judge(policies, example_plan, vm_files, lab, variant_id)
    primary = lab.sink()
    primary.stop()  # outage
    relay = lab.relay(primary.port)
    accepted_at = time.monotonic()
    assert deliver(relay.port, "sender@example.com", ["bob@viktorbarzin.me"], message("v-exp")).accepted
    relay.wait_log(r"to=<bob@viktorbarzin.me>.*status=deferred", 60)
    # The short lifetime is 9 s: retry the message once it is older than that. qmgr judges
    # the age when the retry fails again.
    time.sleep(max(0.0, 10 - (time.monotonic() - accepted_at)))
    offset = len(relay.log_text())
    relay.flush()
    observed = expired_or_kept(relay, offset)
    assert observed == observed_want, relay.log_text()[-2000:]
    assert verdict == ({policy} if policy else set()), verdict


def send_one(lab, lab_id, outcome):
    """One message for a protected recipient through the lab relay to a fake primary: the relay
    and "refused" (never with a 5xx) or outcome(relay, rcpt) once it was taken."""
    primary = lab.sink()
    relay = lab.relay(primary.port)
    rcpt = "alice@viktorbarzin.me"
    session = deliver(relay.port, "sender@example.com", [rcpt], message(lab_id))
    if not session.accepted:
        assert all(r.code < 500 for r in session.replies), session.replies  # never 5xx, still
        return relay, "refused"
    return relay, outcome(relay, rcpt)


TRANSPORT = [
    ("rendered", "primary", None),
    # postmap keeps the first row; the daemons refuse the whole table: 451 at RCPT.
    ("transport: duplicate key, first wins", "refused", "drain-port"),
    ("transport: duplicate key, discard first", "refused", "drain-port"),
    ("two transport maps, first wins", "none", "drain-port"),
    ("two transport maps, rendered first", "primary", None),
    ("content_filter on smtpd", "none", "drain-port"),
    ("transport: a per-user row", "refused", "drain-port"),  # smtpd refuses error: recipients
]


@pytest.mark.parametrize("case", TRANSPORT, ids=lambda c: c[0])
def test_mail_takes_the_transport_the_pack_judged(policies, example_plan, vm_files, lab, case):
    variant_id, want, policy = case
    verdict = judge(policies, example_plan, vm_files, lab, variant_id)

    def where(relay, rcpt):
        taken = relay_of(relay, rcpt)
        return "primary" if taken.startswith("127.0.0.1[127.0.0.1]") else taken.split("[")[0]
    relay, observed = send_one(lab, "v-route", where)
    assert observed == want, relay.log_text()[-2000:]
    assert verdict == ({policy} if policy else set()), verdict


DIVERTED = [
    ("recipient access action DISCARD", "discard"),
    ("recipient access action HOLD", "hold"),
]


@pytest.mark.parametrize("case", DIVERTED, ids=lambda c: c[0])
def test_an_access_action_that_diverts_is_reported_and_the_primary_never_gets_the_mail(
        policies, example_plan, vm_files, lab, case):
    """The relay answers 250, then the access map's action drops the message (DISCARD) or parks
    it in the hold queue (HOLD), where no retry or watcher ever sends it: drain-port says so."""
    variant_id, action = case
    verdict = judge(policies, example_plan, vm_files, lab, variant_id)
    primary = lab.sink()
    relay = lab.relay(primary.port)
    session = deliver(relay.port, "sender@example.com", ["alice@viktorbarzin.me"], message("v-divert"))
    assert session.accepted, session.replies
    relay.wait_log(rf"{action}: RCPT from .*triggers {action.upper()} action", 30)
    if action == "hold":
        assert [q["queue_name"] for q in relay.queue()] == ["hold"]
    else:
        relay.wait_queue_empty(30)
    relay.flush()
    assert relay.queue() == [] if action == "discard" else relay.queue()[0]["queue_name"] == "hold"
    assert primary.messages() == []
    assert verdict == {"drain-port"}, verdict


LIVENESS = [
    ("rendered", "sent", None),
    ("liveness: drain TLS none", "sent", None),
    # Fails closed, though harmless here: smtp_connect_addr() only warns when bind() fails and
    # connects from the kernel's address. A bind that succeeds outside the tunnel is the break.
    ("liveness: drain bound to an address the VM lacks", "sent", "postfix-parameters"),
    ("liveness: drain TLS encrypt", "deferred", "postfix-parameters"),  # smtp-sink offers no STARTTLS
    ("liveness: drain TLS encrypt on the smtp service", "deferred", "postfix-parameters"),
    ("liveness: client restrictions refuse everyone", "refused", "postfix-parameters"),
]


@pytest.mark.parametrize("case", LIVENESS, ids=lambda c: c[0])
def test_mail_flows_only_where_the_parameters_pass(policies, example_plan, vm_files, lab, case):
    """A parameter postfix-parameters refuses stops real mail (the drain never reaches the fake
    primary, or the relay refuses every sender, with 4xx), unless marked fail-closed; one it
    passes delivers."""
    variant_id, want, policy = case
    verdict = judge(policies, example_plan, vm_files, lab, variant_id)
    relay, observed = send_one(lab, "v-live", final_status)
    assert observed == want, relay.log_text()[-2000:]
    if "bound to" in variant_id:
        assert "bind 192.0.2.77: Cannot assign requested address" in relay.log_text()
    assert verdict == ({policy} if policy else set()), verdict


def test_a_stranger_cannot_relay_where_the_pack_passes(policies, example_plan, vm_files, lab):
    """The rendered config and an equivalent form refuse a stranger's foreign recipient and an
    IP literal of the relay's own address; both pass the pack. Dropping the whitelist (the
    relay check moved to the recipient list alone) lets the literal in, and the pack says so;
    a table that says OK to a foreign domain in both lists is an open relay, and the pack says so."""
    cases = {"rendered": (set(), 454, 454),
             "whitelist alone in the recipient list": (set(), 454, 454),
             "relay restrictions in the recipient list": ({"relay-domains"}, 454, 250),
             "open relay: foreign domain allowed in both lists": ({"relay-domains"}, 250, 454)}
    for variant_id, (verdict, foreign_code, literal_code) in cases.items():
        assert judge(policies, example_plan, vm_files, lab, variant_id) == verdict, variant_id
        primary = lab.sink(name=f"primary-{len(lab.sinks)}")
        primary.stop()
        relay = lab.relay(primary.port, name=f"relay-{len(lab.relays)}")
        codes = []
        for rcpt in ("victim@example.org", "victim@[127.0.0.1]"):
            s = deliver(relay.port, "spam@example.net", [rcpt], message("v-relay"), source=STRANGER)
            codes += [r.code for r in s.replies if r.command == "RCPT"]
        assert codes == [foreign_code, literal_code], (variant_id, codes)
        assert bool(relay.queue()) == bool(verdict), variant_id


def test_a_relay_that_would_not_start_is_reported(policies, example_plan, vm_files, lab):
    """smtpd exits when no reject_unauth_destination works: the pack says would not start."""
    plan, files = with_files(example_plan, vm_files, BY_ID["open relay: no restriction"])
    violations = [v for v in policies.check(plan) if v.policy == "relay-domains"]
    assert violations and all("would not start" in v.message for v in violations)
    lab.files = files
    primary = lab.sink()
    relay = lab.relay(primary.port)
    deliver(relay.port, "spam@example.net", ["victim@example.org"], message("v-dead"), source=STRANGER)
    relay.wait_log(r"smtpd\[\d+\]: fatal: in parameter smtpd_relay_restrictions", 30)
