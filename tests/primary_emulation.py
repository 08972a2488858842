"""The owner's primary, emulated on real Postfix (FCrDNS at the sender stage, anvil rate
limits), and the generated snippets applied to it verbatim: shared by the enablement and
drain-canary tests."""
import secrets
import time
from contextlib import contextmanager
from pathlib import Path

from components import primary as primary_snippets
from components import settings
from lab import Lab
from lab.dnsbl import dnsbl_server
from lab.instance import run
from lab.rspamd import Rspamd
from offline import program
from tests.helpers import EXAMPLE, lab_dir

RELAY_SOURCE = "127.0.9.9"  # the relay's address as the primary sees it; no PTR anywhere
DOMAIN = "viktorbarzin.me"
# mailcow's shipped rspamd files for forwarding hosts, and the lab's scoring rule
MAILCOW_RSPAMD = Path(__file__).parent / "data" / "mailcow-rspamd"
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


DNSBL_ZONE = "dnsbl.lab"
# A postscreen-fronted primary (mailcow, docker-mailserver): a DNSBL that lists the relay's
# address, as lists of cloud ranges do.
POSTSCREEN_MAIN = f"""\
postscreen_access_list = permit_mynetworks
postscreen_dnsbl_sites = {DNSBL_ZONE}=127.0.0.2
postscreen_dnsbl_threshold = 1
postscreen_dnsbl_action = enforce
postscreen_greet_action = enforce
"""


# mailcow's shipped restriction lists (mailcow-dockerized data/conf/postfix/main.cf, the
# release with reject_unknown_reverse_client_hostname at the recipient stage). Overrides,
# listed: its proxy:mysql maps are empty texthash tables, and /opt/postfix/conf is MAILCOW_DATA.
MAILCOW_DATA = "{mailcow_data}"
MAILCOW_MAIN = f"""\
smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination
smtpd_recipient_restrictions = permit_sasl_authenticated, permit_mynetworks,
  check_recipient_access texthash:{MAILCOW_DATA}/tls_enforce_in_policy, reject_invalid_helo_hostname,
  reject_unknown_reverse_client_hostname, reject_unauth_destination
smtpd_sender_login_maps = texthash:{MAILCOW_DATA}/virtual_sender_acl
smtpd_sender_restrictions = reject_authenticated_sender_login_mismatch, permit_mynetworks,
  permit_sasl_authenticated, reject_unlisted_sender, reject_unknown_sender_domain
smtpd_client_message_rate_limit = 30
anvil_rate_time_unit = 60s
postscreen_access_list = permit_mynetworks, cidr:{MAILCOW_DATA}/custom_postscreen_whitelist.cidr
postscreen_dnsbl_sites = {DNSBL_ZONE}=127.0.0.2
postscreen_dnsbl_threshold = 1
postscreen_dnsbl_action = enforce
postscreen_greet_action = enforce
"""
# `docker compose` for the emulated postfix-mailcow container: exec runs the command on the
# primary's config; restart does what the container's start does with extra.cf, where each
# line, appended to main.cf, overrides the template's entry: here main.cf is the template with
# each extra.cf line applied by postconf -e (the same values, without the duplicate entries
# whose warnings stall the lab's postfix stop), container paths mapped to MAILCOW_DATA.
DOCKER_STUB = """#!/bin/bash
set -eu
from=/opt/postfix/conf to=$MAILCOW_DIR/data/conf/postfix
if [ "$1 $2" = "compose exec" ]; then
  shift 2; [ "$1" = -T ] && shift; service=$1; shift; cmd=$1; shift
  case "$service $cmd" in
    "postfix-mailcow postconf")  # what the container prints names its own paths
      "$cmd" -c "$PRIMARY_CONF" "$@" | sed "s#$to#$from#g"; exit "${PIPESTATUS[0]}" ;;
    "redis-mailcow redis-cli") exec redis-cli -p "$REDIS_PORT" "$@" ;;
  esac
fi
if [ "$*" = "compose restart postfix-mailcow" ]; then
  cat "$MAILCOW_TEMPLATE" > "$PRIMARY_CONF/main.cf"
  while IFS= read -r line; do
    [ -n "$line" ] && postconf -c "$PRIMARY_CONF" -e "${line//"$from"/$to}"
  done < "$MAILCOW_DIR/data/conf/postfix/extra.cf"
  exec postfix -c "$PRIMARY_CONF" reload
fi
echo "docker stub: $*" >&2; exit 64
"""


def postscreen_master(stock: str) -> str:
    """master.cf.dist with its postscreen lines switched on, as postscreen's README says."""
    out = []
    for line in stock.splitlines():
        if line.startswith("smtp      inet") and line.rstrip().endswith("smtpd"):
            continue
        for name in ("smtp      inet", "smtpd     pass", "dnsblog   unix", "tlsproxy  unix"):
            if line.startswith("#" + name):
                line = line[1:]
        out.append(line)
    return "\n".join(out) + "\n"


@contextmanager
def emulated_primary(vm_files, tls_dir, postscreen=False, mailcow=False):
    """relay lab -> primary (real Postfix, the owner's restrictions) -> final sink. With
    `postscreen`, the primary runs postscreen with a DNSBL that lists the relay's address;
    with `mailcow`, mailcow's restriction lists and postscreen, its data directory under
    base/mailcow/data/conf/postfix, its mailcow.conf, its rspamd (with redis) as primary.rspamd,
    and a `docker` on PATH for its containers."""
    base = lab_dir("primary")
    postscreen = postscreen or mailcow
    resolv = base / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.153\noptions timeout:1 attempts:1\n")
    # NXDOMAIN for the rest, so the relay has no PTR
    dns = dnsbl_server("127.0.0.153", [DNSBL_ZONE] if postscreen else [], {RELAY_SOURCE: "127.0.0.2"})
    stock_master = open("/usr/share/postfix/master.cf.dist").read()
    data = base / "mailcow" / "data" / "conf" / "postfix"
    if mailcow:
        data.mkdir(parents=True)
        for name in ("tls_enforce_in_policy", "virtual_sender_acl", "custom_postscreen_whitelist.cidr"):
            (data / name).write_text("")
        (base / "bin").mkdir()
        (base / "bin" / "docker").write_text(DOCKER_STUB)
        (base / "bin" / "docker").chmod(0o755)
        password = secrets.token_hex(16)
        (base / "mailcow" / "mailcow.conf").write_text(f"MAILCOW_HOSTNAME=mail.{DOMAIN}\nREDISPASS={password}\n")
        scanner = Rspamd(base / "rspamd", {p.name: p.read_text() for p in MAILCOW_RSPAMD.iterdir()}, password)
    extra = MAILCOW_MAIN.replace(MAILCOW_DATA, str(data)) if mailcow else POSTSCREEN_MAIN if postscreen else ""
    base_main = PRIMARY_MAIN
    if mailcow:  # mailcow's lists in place of the owner's
        names = {line.split(" = ")[0] for line in MAILCOW_MAIN.splitlines() if " = " in line}
        base_main = "".join(line + "\n" for line in PRIMARY_MAIN.splitlines()
                            if line.split(" = ")[0] not in names and not line.startswith("#"))
    primary_files = {"main.cf": base_main + extra,
                     "master.cf": postscreen_master(stock_master) if postscreen else stock_master,
                     "relay_recipients": f"@{DOMAIN} OK\n", "transport": f"{DOMAIN} smtp:[127.0.0.1]:25\n"}
    final = Lab(base / "final", vm_files, None).sink()
    primary_lab = Lab(base / "p", primary_files, None)
    primary = primary_lab.relay(final.port, name="primary", resolv_conf=resolv)
    primary.emulation_base = base  # type: ignore[attr-defined]
    if mailcow:
        (base / "mailcow" / "main.cf.template").write_text((primary.conf / "main.cf").read_text())
    relay_lab = Lab(base / "r", vm_files, tls_dir)
    try:
        if mailcow:
            primary.rspamd = scanner.start()  # type: ignore[attr-defined]
        yield relay_lab, primary, final
    finally:
        if mailcow:
            scanner.stop()
        relay_lab.down()
        primary_lab.down()
        final.stop()
        dns.close()


def snippets():
    s = settings.load("backup-mx", program.read_stack_file(EXAMPLE, "backup-mx")[0].get)
    return primary_snippets.enablement(s, [(s.relays[0].hostname, RELAY_SOURCE)])


def apply_verbatim(primary, e, anvil=True, postscreen=False):
    """What the runbook tells the operator to paste, done with postconf on the emulated primary."""
    cca = e["postfix"]["checkClientAccess"]
    map_file = primary.conf / cca["mapFile"].rsplit("/", 1)[-1]  # path override only
    map_file.write_text(cca["mapContent"])
    restriction = cca["restriction"].replace(cca["mapFile"], str(map_file))
    existing = run("postconf", "-c", str(primary.conf), "-h", "smtpd_sender_restrictions").stdout.strip()
    settings_ = [f"smtpd_sender_restrictions={restriction}, {existing}"]
    if anvil:
        settings_.append(f"{e['postfix']['anvil']['parameter']}={e['postfix']['anvil']['value']}")
    if postscreen:
        ps = e["postfix"]["postscreen"]
        ps_map = primary.conf / ps["mapFile"].rsplit("/", 1)[-1]
        ps_map.write_text(ps["mapContent"])
        rest = run("postconf", "-c", str(primary.conf), "-h", ps["parameter"]).stdout.strip()
        rest = ", ".join(x for x in (w.strip() for w in rest.split(",")) if x and x != "permit_mynetworks")
        value = ps["value"].replace(ps["mapFile"], str(ps_map))
        settings_.append(f"{ps['parameter']}={value}" + (f", {rest}" if rest else ""))
    run("postconf", "-c", str(primary.conf), "-e", *settings_)
    run("postfix", "-c", str(primary.conf), "reload")
    time.sleep(1)
