"""The generated primary-side snippets, applied verbatim to a real Postfix primary configured
like the owner's: without them the drain is deferred, with them all 300 messages pass."""
import collections
import re
import time

import pytest

from components import primary as primary_snippets
from components import settings
from lab import Lab
from lab.client import deliver, message
from lab.dnsbl import dnsbl_server
from lab.instance import run
from offline import program
from tests.helpers import EXAMPLE, lab_dir

RELAY_SOURCE = "127.0.9.9"  # the relay's address as the primary sees it; no PTR anywhere
DOMAIN = "viktorbarzin.me"
PRIMARY_MAIN = f"""\
compatibility_level = 3.6
myhostname = mail.{DOMAIN}
mydestination =
mynetworks = 127.0.0.1/32
relay_domains = {DOMAIN}
relay_recipient_maps = texthash:/etc/postfix/relay_recipients
transport_maps = texthash:/etc/postfix/transport
alias_maps =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# FCrDNS and spoof protection sit at the sender stage, as on the owner's primary
smtpd_sender_restrictions = reject_unknown_client_hostname, check_sender_access inline:{{{DOMAIN}=REJECT spoofed sender}}
smtpd_client_message_rate_limit = 30
anvil_rate_time_unit = 60s
"""


@pytest.fixture
def drain(vm_files, tls_dir):
    """relay -> primary (real Postfix, the owner's restrictions) -> final sink."""
    base = lab_dir("primary")
    resolv = base / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.153\noptions timeout:1 attempts:1\n")
    dns = dnsbl_server("127.0.0.153", [], {})  # answers NXDOMAIN: the relay has no PTR
    stock_master = open("/usr/share/postfix/master.cf.dist").read()
    primary_files = {"main.cf": PRIMARY_MAIN, "master.cf": stock_master,
                     "relay_recipients": f"@{DOMAIN} OK\n", "transport": f"{DOMAIN} smtp:[127.0.0.1]:25\n"}
    final = Lab(base / "final", vm_files, None).sink()
    primary_lab = Lab(base / "p", primary_files, None)
    primary = primary_lab.relay(final.port, name="primary", resolv_conf=resolv)
    relay_lab = Lab(base / "r", vm_files, tls_dir)
    yield relay_lab, primary, final
    relay_lab.down()
    primary_lab.down()
    final.stop()
    dns.close()


def snippets():
    s = settings.load("backup-mx", program.read_stack_file(EXAMPLE, "backup-mx")[0].get)
    return primary_snippets.enablement(s, [(s.relay_hostname, RELAY_SOURCE)])


def apply_verbatim(primary, e, anvil=True):
    """What the runbook tells the operator to paste, done with postconf on the emulated primary."""
    cca = e["postfix"]["checkClientAccess"]
    map_file = primary.conf / cca["mapFile"].rsplit("/", 1)[-1]  # path override only
    map_file.write_text(cca["mapContent"])
    restriction = cca["restriction"].replace(cca["mapFile"], str(map_file))
    existing = run("postconf", "-c", str(primary.conf), "-h", "smtpd_sender_restrictions").stdout.strip()
    settings_ = [f"smtpd_sender_restrictions={restriction}, {existing}"]
    if anvil:
        settings_.append(f"{e['postfix']['anvil']['parameter']}={e['postfix']['anvil']['value']}")
    run("postconf", "-c", str(primary.conf), "-e", *settings_)
    run("postfix", "-c", str(primary.conf), "reload")
    time.sleep(1)


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


def test_enablement_is_a_stack_output_keyed_to_the_reserved_ip(example_run):
    out = program.public_outputs(example_run.outputs)
    e = out["primaryEnablement"]
    assert e["address"] == out["reservedIp"]
    assert e["postfix"]["checkClientAccess"]["mapContent"] == f"{out['reservedIp']}/32 OK\n"
    assert e["pfsense"] == {"interface": "WAN", "protocol": "tcp", "source": f"{out['reservedIp']}/32",
                            "destinationPort": 2526, "target": "mail.viktorbarzin.me", "targetPort": 25,
                            "description": "backup MX drain: mx2.viktorbarzin.me -> primary SMTP"}
    assert out["reservedIp"] + "/32" in e["policydSpf"]["skipAddresses"]
