"""The owner's primary, emulated on real Postfix (FCrDNS at the sender stage, anvil rate
limits), and the generated snippets applied to it verbatim: shared by the enablement and
drain-canary tests."""
import time
from contextlib import contextmanager

from components import primary as primary_snippets
from components import settings
from lab import Lab
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
# The stack's messageSizeLimit is the primary's own value (docs/configuration.md)
message_size_limit = 209715200
"""


@contextmanager
def emulated_primary(vm_files, tls_dir):
    """relay lab -> primary (real Postfix, the owner's restrictions) -> final sink."""
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
    try:
        yield relay_lab, primary, final
    finally:
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
