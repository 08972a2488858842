"""The exact rendered main.cf/master.cf run on real Postfix (Debian's package)."""
import re
import socket
import subprocess

import pytest

from lab.client import deliver, message
from lab.instance import run
from tests.helpers import reported, set_main_cf

INVARIANTS = {
    "soft_bounce": "yes", "maximal_queue_lifetime": "30d", "bounce_queue_lifetime": "1d",
    "delay_warning_time": "0", "message_size_limit": "208666624", "relay_domains": "viktorbarzin.me",
    "mydestination": "", "mynetworks": "127.0.0.1/32", "inet_protocols": "ipv4",
    "smtpd_relay_restrictions": "reject_unauth_destination",
    "smtpd_recipient_restrictions":
        "reject_non_fqdn_recipient, check_recipient_access inline:{ viktorbarzin.me=OK }, reject",
    "postscreen_greet_action": "enforce", "postscreen_dnsbl_action": "enforce",
}


def test_rendered_config_starts_clean_and_reads_back(lab):
    primary = lab.sink()
    relay = lab.relay(primary.port)
    check = run("postconf", "-c", str(relay.conf), "-n")
    assert "unused parameter" not in check.stderr, check.stderr
    values = dict(line.split(" = ", 1) if " = " in line else (line.rstrip(" ="), "")
                  for line in check.stdout.splitlines())
    for name, value in INVARIANTS.items():
        assert values.get(name, "") == value, name
    assert values["transport_maps"].startswith("texthash:") and values["relay_recipient_maps"].startswith("texthash:")
    # Only addresses, ports and paths differ from what the VM runs:
    overrides = relay.overrides(relay.rendered_main)
    changed = {k for k, v in values.items() if k in overrides and v == overrides[k]}
    assert changed == set(overrides)
    relay.wait_log(r"master\[\d+\]: daemon started")
    log = relay.log_text()
    assert not re.search(r"\b(fatal|panic|warning):", log), log


def test_postscreen_answers_on_the_smtp_port(lab):
    primary = lab.sink()
    relay = lab.relay(primary.port)
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as s:
        banner = s.recv(512).decode()
        s.sendall(b"QUIT\r\n")
    assert banner.startswith("220 mx2.viktorbarzin.me ESMTP")
    listener = run("postconf", "-c", str(relay.conf), "-M", f"127.0.0.1:{relay.port}/inet").stdout.split()
    assert listener[-1] == "postscreen"
    relay.wait_log(r"postfix/postscreen\[\d+\]: CONNECT from \[127\.0\.0\.1\]")
    assert not re.search(r"\b(fatal|panic|warning):", relay.log_text())


def test_relayed_mail_reaches_the_primary_with_headers(lab):
    primary = lab.sink()
    relay = lab.relay(primary.port)
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{relay.port}", "--to", "alice@viktorbarzin.me",
                          "--from", "bob@example.com", "--header", "X-Lab-Id: hdr-1", "--header",
                          "X-Custom: kept"], capture_output=True, text=True, timeout=60).stdout
    assert "<-  250 2.0.0 Ok: queued" in out
    relay.wait_queue_empty(30)
    [message] = primary.messages()
    assert "X-Lab-Id: hdr-1" in message and "X-Custom: kept" in message and "alice@viktorbarzin.me" in message


# postscreen_access_list as postscreen answers it: the pack's never-5xx verdict on each form is
# the verdict real postscreen gives an ordinary client (any address not in the list's tables).
ORDINARY, LISTED = "127.0.1.1", "127.0.1.66"
POSTSCREEN_ACCESS = {
    "static:reject, enforce: every client refused at RCPT": ("permit_mynetworks, static:reject", "enforce"),
    "static:reject, drop: every client dropped at connect": ("permit_mynetworks, static:reject", "drop"),
    "static:reject, ignore: every client only logged": ("permit_mynetworks, static:reject", "ignore"),
    "one address rejected, enforce": (f"permit_mynetworks, inline:{{ {{{LISTED} = reject}} }}", "enforce"),
    "one address permitted, enforce": (f"permit_mynetworks, inline:{{ {{{LISTED} = permit}} }}", "enforce"),
}


@pytest.mark.parametrize("case", sorted(POSTSCREEN_ACCESS))
def test_the_pack_refuses_a_postscreen_access_list_exactly_when_postscreen_refuses_every_client(
        lab, policies, example_plan, case):
    access, action = POSTSCREEN_ACCESS[case]
    primary = lab.sink()
    relay = lab.relay(primary.port, extra={"postscreen_access_list": access, "postscreen_denylist_action": action})
    sessions = {source: deliver(relay.port, "bob@example.com", ["alice@viktorbarzin.me"],
                                message(f"ps-{source}"), source=source) for source in (ORDINARY, LISTED)}
    codes = [r.code for s in sessions.values() for r in s.replies]
    assert all(code < 500 for code in codes), [s.replies for s in sessions.values()]  # never 5xx
    plan = set_main_cf(set_main_cf(example_plan, "postscreen_access_list", access),
                       "postscreen_denylist_action", action)
    refused = "never-5xx" in reported(policies.check(plan), "mandatory")
    assert refused == (not sessions[ORDINARY].accepted), sessions[ORDINARY].replies
    if not refused and "reject" in access and "static" not in access:
        assert not sessions[LISTED].accepted  # the listed address alone is deferred
