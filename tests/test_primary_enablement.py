"""The generated primary-side snippets, applied verbatim to a real Postfix primary configured
like the owner's: without them the drain is deferred, with them all 300 messages pass."""
import collections
import re
import time

import pytest

from lab.client import deliver, message
from lab.instance import run
from offline import program
from tests.primary_emulation import DOMAIN, RELAY_SOURCE, apply_verbatim, emulated_primary, snippets


@pytest.fixture
def drain(vm_files, tls_dir):
    with emulated_primary(vm_files, tls_dir) as lab_:
        yield lab_


def drain_300(relay_lab, primary):
    relay = relay_lab.relay(primary.port, extra={"smtp_bind_address": RELAY_SOURCE})
    for i in range(300):
        sender = f"someone{i}@{DOMAIN}" if i % 10 == 0 else f"sender{i}@example.com"  # some "spoofed"
        assert deliver(relay.port, sender, [f"user{i % 5}@{DOMAIN}"], message(f"drain-{i:03d}")).accepted
    return relay


def test_without_the_snippets_the_primary_defers_the_drain(drain):
    relay_lab, primary, final = drain
    relay = drain_300(relay_lab, primary)
    relay.wait_log(r"said: 450 4\.7\.25 Client host rejected: cannot find your hostname", timeout=60)
    time.sleep(3)
    assert len(relay.queue()) == 300 and not final.messages()


def test_the_anvil_exception_is_needed_too(drain):
    relay_lab, primary, final = drain
    apply_verbatim(primary, snippets(), anvil=False)
    relay = drain_300(relay_lab, primary)
    relay.wait_log(r"said: 4\d\d [0-9.]+ Error: too much mail from 127\.0\.9\.9", timeout=60)
    assert relay.queue()  # rate-limited mail waits on the relay


def test_with_the_snippets_applied_verbatim_all_300_pass(drain):
    relay_lab, primary, final = drain
    e = snippets()
    assert e["address"] == RELAY_SOURCE and "mynetworks" not in e["postfix"]["checkClientAccess"]["text"]
    apply_verbatim(primary, e)
    relay = drain_300(relay_lab, primary)
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
