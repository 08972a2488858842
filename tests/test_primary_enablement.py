"""The generated primary-side snippets, applied verbatim to a real Postfix primary configured
like the owner's: without them the drain is deferred, with them all 300 messages pass."""
import collections
import os
import re
import subprocess
import time

import pytest

from lab.client import deliver, message
from lab.instance import run
from offline import program
from tests.helpers import ids_at
from tests.primary_emulation import DOMAIN, RELAY_SOURCE, apply_verbatim, emulated_primary, snippets


@pytest.fixture
def drain(vm_files, tls_dir):
    with emulated_primary(vm_files, tls_dir) as lab_:
        yield lab_


def send_drain(relay_lab, primary, count=300, prefix="drain"):
    """`count` messages into a relay that drains from RELAY_SOURCE: every tenth with a
    "spoofed" own-domain sender, the rest from a domain the primary cannot resolve."""
    relay = relay_lab.relay(primary.port, extra={"smtp_bind_address": RELAY_SOURCE})
    for i in range(count):
        sender = f"someone{i}@{DOMAIN}" if i % 10 == 0 else f"sender{i}@example.com"
        assert deliver(relay.port, sender, [f"user{i % 5}@{DOMAIN}"], message(f"{prefix}-{i:03d}")).accepted
    return relay


def assert_each_arrived_once(relay, primary, final, count, prefix):
    relay.wait_queue_empty(180)
    primary.wait_queue_empty(180)  # and on to the final hop
    assert ids_at(final) == collections.Counter({f"{prefix}-{i:03d}": 1 for i in range(count)})
    assert "NOQUEUE: reject" not in primary.log_text()


def test_without_the_snippets_the_primary_defers_the_drain(drain):
    relay_lab, primary, final = drain
    relay = send_drain(relay_lab, primary)
    relay.wait_log(r"said: 450 4\.7\.25 Client host rejected: cannot find your hostname", timeout=60)
    time.sleep(3)
    assert len(relay.queue()) == 300 and not final.messages()


def test_the_anvil_exception_is_needed_too(drain):
    relay_lab, primary, final = drain
    apply_verbatim(primary, snippets(), anvil=False)
    relay = send_drain(relay_lab, primary)
    relay.wait_log(r"said: 4\d\d [0-9.]+ Error: too much mail from 127\.0\.9\.9", timeout=60)
    assert relay.queue()  # rate-limited mail waits on the relay


def test_with_the_snippets_applied_verbatim_all_300_pass(drain):
    relay_lab, primary, final = drain
    e = snippets()
    assert e["address"] == RELAY_SOURCE and "mynetworks" not in e["postfix"]["checkClientAccess"]["text"]
    apply_verbatim(primary, e)
    relay = send_drain(relay_lab, primary)
    relay.wait_queue_empty(180)
    primary.wait_queue_empty(180)  # and on to the final hop
    received = collections.Counter(re.findall(r"^X-Lab-Id: (\S+)", "\n".join(final.messages()), re.M))
    assert received == collections.Counter({f"drain-{i:03d}": 1 for i in range(300)})
    assert not re.search(r"status=(deferred|SOFTBOUNCE|bounced)", relay.log_text())
    assert "NOQUEUE: reject" not in primary.log_text()
    # The primary still does not trust the relay: it is not in mynetworks.
    assert run("postconf", "-c", str(primary.conf), "-h", "mynetworks").stdout.strip() == "127.0.0.1/32"


@pytest.fixture
def postscreen_drain(vm_files, tls_dir):
    with emulated_primary(vm_files, tls_dir, postscreen=True) as lab_:
        yield lab_


def test_a_postscreen_primary_defers_the_drain_without_its_exemption(postscreen_drain):
    """A primary behind postscreen whose DNSBL lists the relay's address: the other snippets
    applied, the postscreen one not. postscreen refuses at RCPT; the relay keeps the mail."""
    relay_lab, primary, final = postscreen_drain
    apply_verbatim(primary, snippets())
    relay = relay_lab.relay(primary.port, extra={"smtp_bind_address": RELAY_SOURCE})
    assert deliver(relay.port, "sender@example.com", [f"user@{DOMAIN}"], message("ps-0")).accepted
    relay.wait_log(r"blocked using dnsbl\.lab", timeout=60)
    primary.wait_log(r"postscreen\[\d+\]: DNSBL rank \d+ for \[127\.0\.9\.9\]", timeout=30)
    assert len(relay.queue()) == 1 and not final.messages()


def test_with_the_postscreen_exemption_the_drain_arrives(postscreen_drain):
    relay_lab, primary, final = postscreen_drain
    apply_verbatim(primary, snippets(), postscreen=True)
    relay = relay_lab.relay(primary.port, extra={"smtp_bind_address": RELAY_SOURCE})
    for i in range(20):
        assert deliver(relay.port, "sender@example.com", [f"user{i % 3}@{DOMAIN}"], message(f"ps-{i:02d}")).accepted
    relay.wait_queue_empty(120)
    primary.wait_queue_empty(120)
    received = collections.Counter(re.findall(r"^X-Lab-Id: (\S+)", "\n".join(final.messages()), re.M))
    assert received == collections.Counter({f"ps-{i:02d}": 1 for i in range(20)})
    assert re.search(r"postscreen\[\d+\]: (ALLOWLISTED|WHITELISTED) \[127\.0\.9\.9\]", primary.log_text())
    assert run("postconf", "-c", str(primary.conf), "-h", "mynetworks").stdout.strip() == "127.0.0.1/32"


def test_enablement_is_a_stack_output_keyed_to_the_reserved_ip(example_run):
    out = program.public_outputs(example_run.outputs)
    e = out["primaryEnablement"]
    assert e["address"] == out["reservedIp"]
    assert e["postfix"]["checkClientAccess"]["mapContent"] == f"{out['reservedIp']}/32 OK\n"
    assert e["pfsense"] == {"interface": "WAN", "protocol": "tcp", "source": f"{out['reservedIp']}/32",
                            "destinationPort": 2526, "target": "<the primary's LAN address>", "targetPort": 25,
                            "description": "backup MX drain: mx2.viktorbarzin.me -> primary SMTP",
                            "menu": "Firewall > NAT > Port Forward (with the associated filter rule)"}
    assert e["natRules"]["pfsense"] == e["pfsense"] and set(e["natRules"]) == {"pfsense", "opnsense", "linux"}
    assert out["reservedIp"] + "/32" in e["policydSpf"]["skipAddresses"]


# --- mailcow: its own restriction lists, the generated script run as pasted ----------------

@pytest.fixture
def mailcow_drain(vm_files, tls_dir):
    with emulated_primary(vm_files, tls_dir, mailcow=True) as lab_:
        yield lab_


def run_mailcow_script(primary, script):
    base = primary.emulation_base
    env = {**os.environ, "PATH": f"{base / 'bin'}:{os.environ['PATH']}", "PRIMARY_CONF": str(primary.conf),
           "MAILCOW_DIR": str(base / "mailcow"), "MAILCOW_TEMPLATE": str(base / "mailcow" / "main.cf.template"),
           "REDIS_PORT": str(primary.rspamd.redis_port)}
    return subprocess.run(["bash", "-c", script], cwd=base / "mailcow", env=env, capture_output=True, text=True,
                          timeout=120)


def test_mailcow_defers_the_drain_at_the_recipient_stage_with_the_sender_stage_exemption_only(mailcow_drain):
    """The negative control: the sender-stage exemption, anvil and postscreen applied, as the
    checkClientAccess text says. mailcow's recipient list still holds
    reject_unknown_reverse_client_hostname, which defers the relay (no PTR) at RCPT."""
    relay_lab, primary, final = mailcow_drain
    e = snippets()
    (primary.emulation_base / "mailcow" / "data" / "conf" / "postfix" / "custom_postscreen_whitelist.cidr") \
        .write_text(e["postfix"]["postscreen"]["mapContent"])
    apply_verbatim(primary, e)
    relay = relay_lab.relay(primary.port, extra={"smtp_bind_address": RELAY_SOURCE})
    assert deliver(relay.port, "sender@example.com", [f"user@{DOMAIN}"], message("mc-0")).accepted
    relay.wait_log(r"said: 450 4\.7\.\d+ Client host rejected: cannot find your reverse hostname", timeout=60)
    primary.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.9\.9\]: 450 4\.7\.\d+ .*reverse hostname",
                     timeout=30)
    assert len(relay.queue()) == 1 and not final.messages()


SPAM = b"From: a@example.com\r\nTo: user@example.org\r\nSubject: s\r\nX-Lab-Score: reject\r\n\r\nspam\r\n"


def test_the_mailcow_script_as_pasted_lets_every_message_through_once(mailcow_drain):
    relay_lab, primary, final = mailcow_drain
    script = snippets()["postfix"]["script"]["mailcow"]
    # Before: mailcow's rspamd rejects drained spam, which the relay could only bounce.
    assert primary.rspamd.scan(RELAY_SOURCE, SPAM)[0] == "reject"
    done = run_mailcow_script(primary, script)
    assert done.returncode == 0, done.stderr
    # After: the relay is a forwarding host with its filter on, and mailcow's own
    # force_actions.conf tags its spam instead; any other sender is still rejected.
    symbols = primary.rspamd.wait_action(RELAY_SOURCE, SPAM, "add header")
    assert {"WHITELISTED_FWD_HOST", "FORCE_ACTION_WHITELIST_FORWARDING_HOST_NO_REJECT"} <= set(symbols)
    assert primary.rspamd.scan("127.0.9.10", SPAM)[0] == "reject"
    assert primary.rspamd.redis("HEXISTS", "KEEP_SPAM", RELAY_SOURCE).strip() == "0"
    extra = (primary.emulation_base / "mailcow" / "data" / "conf" / "postfix" / "extra.cf").read_text()
    assert run_mailcow_script(primary, script).returncode == 0  # a second run changes nothing
    assert (primary.emulation_base / "mailcow" / "data" / "conf" / "postfix" / "extra.cf").read_text() == extra
    relay = send_drain(relay_lab, primary, 40, "mc")  # over anvil's 30 a minute
    assert_each_arrived_once(relay, primary, final, 40, "mc")
    assert re.search(r"postscreen\[\d+\]: (ALLOWLISTED|WHITELISTED) \[127\.0\.9\.9\]", primary.log_text())
    lists = run("postconf", "-c", str(primary.conf), "-h", "smtpd_recipient_restrictions").stdout
    assert lists.startswith("check_client_access cidr:") and "reject_unknown_reverse_client_hostname" in lists
    assert "127.0.9.9" not in run("postconf", "-c", str(primary.conf), "-h", "mynetworks").stdout


def test_the_mailcow_script_stops_before_any_change_when_redis_refuses_it(mailcow_drain):
    """redis-cli exits 0 on NOAUTH or WRONGPASS; the script reads the reply, stops, names the
    command, changes no file, and prints no password."""
    relay_lab, primary, final = mailcow_drain
    conf = primary.emulation_base / "mailcow" / "mailcow.conf"
    conf.write_text(conf.read_text().replace("REDISPASS=", "REDISPASS=not-"))
    done = run_mailcow_script(primary, snippets()["postfix"]["script"]["mailcow"])
    assert done.returncode == 1 and "redis-mailcow refused HSET WHITELISTED_FWD_HOST: AUTH failed" in done.stderr
    assert "not-" not in done.stdout + done.stderr
    assert not (primary.emulation_base / "mailcow" / "data" / "conf" / "postfix" / "extra.cf").exists()
    assert primary.rspamd.scan(RELAY_SOURCE, SPAM)[0] == "reject"


def test_the_mailcow_script_refuses_a_primary_that_would_become_an_open_relay(mailcow_drain):
    """An OK at the recipient stage is safe only behind smtpd_relay_restrictions that end in
    reject_/defer_unauth_destination; without them the script stops and changes nothing."""
    relay_lab, primary, final = mailcow_drain
    run("postconf", "-c", str(primary.conf), "-e", "smtpd_relay_restrictions = permit")
    done = run_mailcow_script(primary, snippets()["postfix"]["script"]["mailcow"])
    assert done.returncode == 1 and "reject_unauth_destination" in done.stderr
    assert not (primary.emulation_base / "mailcow" / "data" / "conf" / "postfix" / "extra.cf").exists()


def test_the_debian_script_as_pasted_lets_every_message_through_once(postscreen_drain, tmp_path):
    """The Debian/Ubuntu script on the owner's primary behind postscreen. Overrides, listed:
    postconf and postfix are called with -c for the emulated primary, and /etc/postfix/ is its
    config directory."""
    relay_lab, primary, final = postscreen_drain
    for tool in ("postconf", "postfix"):
        (tmp_path / tool).write_text(f'#!/bin/sh\nexec /usr/sbin/{tool} -c "$PRIMARY_CONF" "$@"\n')
        (tmp_path / tool).chmod(0o755)
    script = snippets()["postfix"]["script"]["debian"].replace("/etc/postfix/", f"{primary.conf}/")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "PRIMARY_CONF": str(primary.conf)}
    for _ in range(2):  # a second run changes nothing
        done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    values = run("postconf", "-c", str(primary.conf), "-h", "smtpd_sender_restrictions", "smtpd_recipient_restrictions",
                 "postscreen_access_list").stdout.splitlines()
    assert all(v.count("backup_mx_") == 1 and v.startswith("c") for v in values), values
    relay = send_drain(relay_lab, primary, 40, "deb")
    assert_each_arrived_once(relay, primary, final, 40, "deb")
    assert run("postconf", "-c", str(primary.conf), "-h", "mynetworks").stdout.strip() == "127.0.0.1/32"
