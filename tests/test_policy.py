"""The policy pack through its real analyzer server, fed the plan the program produced.

Happy-path plans must pass; each mutation changes one field and must be reported by the
intended policy and by no other (pulumi-policy-aws style).
"""
import copy
import re

import pytest

from offline import program
from tests.helpers import (
    DEFERRED,
    DELETE,
    EXAMPLE,
    ROOT,
    add_resource,
    drop_resource,
    edit_file,
    reported,
    resource,
    run_stack,
    set_config,
    set_main_cf,
    set_prop,
    set_user_data_doc,
    user_data_doc,
)


def add_relay_copy(plan, suffix, **props):
    """A second relay instance with its own protected reserved IP (Always-Free totals)."""
    plan = copy.deepcopy(plan)
    inst, ip = resource(plan, "instance:Instance"), resource(plan, "publicIp:PublicIp")
    for original in (inst, ip):
        extra = copy.deepcopy(original)
        extra["name"] += suffix
        extra["urn"] += suffix
        if original is inst:
            for w in ("props", "outputs"):
                extra[w].update(copy.deepcopy(props))
        else:  # the copy's address derives from the copied instance, as the program's does
            extra["dependencies"] = [inst["urn"] + suffix if d == inst["urn"] else d for d in extra["dependencies"]]
        plan["resources"].append(extra)
    return plan


def set_dependencies(plan, type_suffix, urns):
    plan = copy.deepcopy(plan)
    resource(plan, type_suffix)["dependencies"] = list(urns)
    return plan


def set_option(plan, type_suffix, option, value):
    plan = copy.deepcopy(plan)
    resource(plan, type_suffix)["options"][option] = value
    return plan


def add_ingress(plan, rule):
    plan = copy.deepcopy(plan)
    r = resource(plan, "SecurityList")
    for w in ("props", "outputs"):
        r[w]["ingressSecurityRules"].append(rule)
    return plan


def edit_ingress(plan, port, **changes):
    plan = copy.deepcopy(plan)
    r = resource(plan, "SecurityList")
    for w in ("props", "outputs"):
        for rule in r[w]["ingressSecurityRules"]:
            if rule.get("tcpOptions", {}).get("min") == port:
                rule.update(changes)
    return plan


def set_zone(plan, field, value):
    plan = copy.deepcopy(plan)
    r = resource(plan, "index:Dns")
    for w in ("props", "outputs"):
        r[w]["zones"][0][field] = value(r[w]["zones"][0][field]) if callable(value) else value
    return plan


def mx_record(plan):
    return next(r for r in plan["resources"] if r["type"].endswith("DnsRecord") and r["props"]["type"] == "MX")


def set_mx(plan, field, value):
    plan = copy.deepcopy(plan)
    for w in ("props", "outputs"):
        mx_record(plan)[w][field] = value
    return plan


def add_primary_mx(plan):
    plan = copy.deepcopy(plan)
    extra = copy.deepcopy(mx_record(plan))
    extra["name"], extra["urn"] = "primary-mx", extra["urn"] + "-primary"
    for w in ("props", "outputs"):
        extra[w]["content"] = "mail.viktorbarzin.me"
        extra[w]["priority"] = 1
    plan["resources"].append(extra)
    return plan


def master_option(service, option):
    def edit(text):
        return "\n".join(ln + f"\n  -o {option}" if ln.startswith(f"{service} ") else ln
                         for ln in text.splitlines()) + "\n"
    return edit


TRANSPORT = "/transport"
UNKNOWN = program.UNKNOWN  # the engine's unknown-string sentinel, as a preview sends it

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
    # vm-not-in-mynetworks
    "private IP inside the primary's mynetworks": (
        lambda p: set_config(p, "primaryMynetworks", ["10.42.0.0/24"]), "vm-not-in-mynetworks"),
    "drain source inside the primary's mynetworks": (
        lambda p: set_config(p, "drainSourceAddress", "192.168.1.40"), "vm-not-in-mynetworks"),
    "primary mynetworks entry with a stray space is not dropped": (
        lambda p: set_config(p, "primaryMynetworks", ["127.0.0.0/8", "10.42.0.0 /24"]), "vm-not-in-mynetworks"),
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
    # modeled-resources: types outside the model fail closed
    "an InstancePool (billed, not counted as an instance)": (
        lambda p: add_resource(p, "oci:Core/instancePool:InstancePool", "pool", {"size": 1}), "modeled-resources"),
    "a boot-volume backup policy": (lambda p: add_resource(
        p, "oci:Core/volumeBackupPolicy:VolumeBackupPolicy", "backups", {"schedules": []}), "modeled-resources"),
    "pulumi-cloudflare's older Record type": (lambda p: add_resource(p, "cloudflare:index/record:Record", "mx9", {
        "type": "MX", "name": "viktorbarzin.me", "content": "mx.attacker.example", "priority": 5}),
        "modeled-resources"),
    "a Workers route on mta-sts": (lambda p: add_resource(p, "cloudflare:index/workersRoute:WorkersRoute", "route", {
        "pattern": "mta-sts.viktorbarzin.me/*", "script": "other"}), "modeled-resources"),
    # relay-instance-inputs
    "instance state STOPPED": (lambda p: set_prop(p, "instance:Instance", ["state"], "STOPPED"),
                               "relay-instance-inputs"),
    "recovery action STOP_INSTANCE": (lambda p: set_prop(p, "instance:Instance", ["availabilityConfig"], {
        "recoveryAction": "STOP_INSTANCE"}), "relay-instance-inputs"),
    "a preemptible instance": (lambda p: set_prop(p, "instance:Instance", ["preemptibleInstanceConfig"], {
        "preemptionAction": {"type": "TERMINATE", "preserveBootVolume": False}}), "relay-instance-inputs"),
    "boot volume not preserved": (lambda p: set_prop(p, "instance:Instance", ["preserveBootVolume"], False),
                                  "relay-instance-inputs"),
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
    "an ingress rule whose source is unknown at preview": (
        lambda p: add_ingress(p, {"protocol": "6", "source": UNKNOWN, "tcpOptions": {"min": 25, "max": 25}}),
        "security-list"),
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
    "an _mta-sts record as a bare label with mtaSts off": (
        lambda p: add_resource(p, "cloudflare:index/dnsRecord:DnsRecord", "sts", {
            **resource(p, "DnsRecord", "relay-a")["props"], "type": "TXT", "name": "_mta-sts",
            "content": "v=STSv1; id=20261202"}), "mta-sts"),
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
    # reserved-public-ip
    "ephemeral public IP": (lambda p: set_prop(p, "publicIp:PublicIp", ["lifetime"], "EPHEMERAL"),
                            "reserved-public-ip"),
    "reserved IP attached to nothing": (lambda p: set_prop(p, "publicIp:PublicIp", ["privateIpId"], DELETE),
                                        "reserved-public-ip"),
    "reserved IP attached to the private IP of another VNIC": (
        lambda p: set_dependencies(set_prop(p, "publicIp:PublicIp", ["privateIpId"],
                                            "ocid1.privateip.oc1.eu-frankfurt-1.other"), "publicIp:PublicIp", []),
        "reserved-public-ip"),
    "reserved IP not protected": (lambda p: set_option(p, "publicIp:PublicIp", "protect", False),
                                  "reserved-public-ip"),
    "instance assigns a public IP": (
        lambda p: set_prop(p, "instance:Instance", ["createVnicDetails", "assignPublicIp"], "true"),
        "reserved-public-ip"),
    "assignPublicIp left to the subnet default": (
        lambda p: set_prop(p, "instance:Instance", ["createVnicDetails", "assignPublicIp"], DELETE),
        "reserved-public-ip"),
    # always-free
    "paid shape": (lambda p: set_prop(p, "instance:Instance", ["shape"], "VM.Standard.E4.Flex"), "always-free"),
    "boot volume over the free 200 GB": (
        lambda p: set_prop(p, "instance:Instance", ["sourceDetails", "bootVolumeSizeInGbs"], "250"), "always-free"),
    "boot volume below OCI's minimum": (
        lambda p: set_prop(p, "instance:Instance", ["sourceDetails", "bootVolumeSizeInGbs"], "30"), "always-free"),
    "a block volume past the 200 GB total": (
        lambda p: add_resource(p, "oci:Core/volume:Volume", "data", {"sizeInGbs": "160"}), "always-free"),
    "a block volume of OCI's default size": (
        lambda p: add_resource(p, "oci:Core/volume:Volume", "data", {}), "always-free"),
    "three E2.1.Micro instances": (
        lambda p: add_relay_copy(add_relay_copy(p, "-b"), "-c"), "always-free"),
    "A1 totals past 4 OCPUs": (lambda p: add_relay_copy(add_relay_copy(
        p, "-a1", shape="VM.Standard.A1.Flex", shapeConfig={"ocpus": "3", "memoryInGbs": "6"}), "-a2",
        shape="VM.Standard.A1.Flex", shapeConfig={"ocpus": "3", "memoryInGbs": "6"}), "always-free"),
    # security-list
    "world-open SSH": (lambda p: add_ingress(p, {"protocol": "6", "source": "0.0.0.0/0", "sourceType": "CIDR_BLOCK",
                                                  "tcpOptions": {"min": 22, "max": 22}}), "security-list"),
    "SSH from the homelab without breakGlassSsh": (lambda p: add_ingress(p, {
        "protocol": "6", "source": "198.51.100.7/32", "sourceType": "CIDR_BLOCK", "tcpOptions": {"min": 22, "max": 22}}),
        "security-list"),
    # A config value the env file also carries: the rendered env no longer matches it either.
    "breakGlassSsh that is not a boolean": (lambda p: set_config(p, "breakGlassSsh", "yes"),
                                            {"security-list", "relay-user-data"}),
    "exporter open to the world": (lambda p: edit_ingress(p, 9100, source="0.0.0.0/0"), "security-list"),
    "all protocols from the world": (lambda p: add_ingress(p, {"protocol": "all", "source": "0.0.0.0/0"}),
                                     "security-list"),
    "port 25 closed": (lambda p: edit_ingress(p, 25, source="198.51.100.7/32"), "security-list"),
    "SSH open through a network security group": (
        lambda p: add_resource(p, "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule", "ssh",
                               {"direction": "INGRESS", "protocol": "6", "source": "0.0.0.0/0",
                                "sourceType": "CIDR_BLOCK", "networkSecurityGroupId": "ocid1.nsg.oc1..x",
                                "tcpOptions": {"destinationPortRange": {"min": 22, "max": 22}}}), "security-list"),
    "exporter open through a network security group": (
        lambda p: add_resource(p, "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule", "exp",
                               {"direction": "INGRESS", "protocol": "6", "source": "0.0.0.0/0",
                                "networkSecurityGroupId": "ocid1.nsg.oc1..x",
                                "tcpOptions": {"destinationPortRange": {"min": 9000, "max": 9200}}}), "security-list"),
    "the VCN's default security list opens SSH": (
        lambda p: add_resource(p, "oci:Core/defaultSecurityList:DefaultSecurityList", "default", {
            "manageDefaultResourceId": "ocid1.securitylist.oc1..x", "ingressSecurityRules": [
                {"protocol": "6", "source": "0.0.0.0/0", "tcpOptions": {"min": 22, "max": 22}}]}), "security-list"),
    "subnet falls back to the default security list": (
        lambda p: set_prop(p, "subnet:Subnet", ["securityListIds"], DELETE), "security-list"),
    "exporters open to a homelab CIDR the stack does not have": (
        lambda p: set_config(p, "homelabCidr", "192.0.2.0/24"), {"security-list", "relay-user-data"}),
    "homelab CIDR with a stray space": (lambda p: set_config(p, "homelabCidr", "198.51.100.7 /32"),
                                        {"security-list", "relay-user-data"}),
    # the firewall is an allow-list: every port but the relay's is open nowhere
    "a database port open to the world": (lambda p: add_ingress(p, {
        "protocol": "6", "source": "0.0.0.0/0", "tcpOptions": {"min": 3306, "max": 3306}}), "security-list"),
    "a TCP range from the homelab": (lambda p: add_ingress(p, {
        "protocol": "6", "source": "198.51.100.7/32", "tcpOptions": {"min": 1024, "max": 65535}}), "security-list"),
    "UDP from the world": (lambda p: add_ingress(p, {
        "protocol": "17", "source": "0.0.0.0/0", "udpOptions": {"min": 51820, "max": 51820}}), "security-list"),
    "an unserved port through a network security group": (
        lambda p: add_resource(p, "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule", "rdp",
                               {"direction": "INGRESS", "protocol": "6", "source": "0.0.0.0/0",
                                "networkSecurityGroupId": "ocid1.nsg.oc1..x",
                                "tcpOptions": {"destinationPortRange": {"min": 3389, "max": 3389}}}), "security-list"),
    "ICMP echo from the world": (lambda p: add_ingress(p, {
        "protocol": "1", "source": "0.0.0.0/0", "icmpOptions": {"type": 8}}), "security-list"),
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
    # no-silent-replace
    "no ignoreChanges": (lambda p: set_option(p, "instance:Instance", "ignoreChanges", []), "no-silent-replace"),
    "image drift replaces the boot volume": (
        lambda p: set_option(p, "instance:Instance", "ignoreChanges", ["metadata"]), "no-silent-replace"),
    "user_data drift": (lambda p: set_option(p, "instance:Instance", "ignoreChanges", ["sourceDetails"]),
                        "no-silent-replace"),
    "unprotected: an AD or VCN change replaces the VM": (
        lambda p: set_option(p, "instance:Instance", "protect", False), "no-silent-replace"),
}


def test_every_policy_has_at_least_three_mutations(policies):
    names = {p.name for p in policies.info.policies}
    counts = {n: sum(1 for _, policy in MUTATIONS.values() if policy == n) for n in names}
    # These judge other shapes or the user_data contract; their mutations (at least three each,
    # asserted there) are in tests/test_wireguard.py, tests/test_two_relays.py,
    # tests/test_mta_sts.py and tests/test_user_data_contract.py.
    assert {n for n, c in counts.items() if c < 3} <= {"zone-record-headroom", "wireguard-tunnel",
                                                       "relay-fault-domains", "mta-sts",
                                                       "mta-sts-live-record", "relay-user-data",
                                                       "free-tier-keepalive"}, counts
    assert len(MUTATIONS) >= 50


def test_example_stack_has_no_violations(policies, example_plan):
    preview = policies.check(example_plan)
    assert reported(preview) == set(), [v.message for v in preview]
    # In a preview the engine's state is the planned inputs: the reserved IP is not known yet.
    assert sorted(v.policy for v in preview if v.message.startswith(DEFERRED)) == [
        "relay-a-record", "vm-not-in-mynetworks"]
    assert policies.check(example_plan, dry_run=False) == []


def test_two_domain_stack_has_no_violations(policies, two_domain_plan):
    assert reported(policies.check(two_domain_plan)) == set()
    assert policies.check(two_domain_plan, dry_run=False) == []


@pytest.mark.parametrize("stack", sorted(p.name for p in (ROOT / "examples").glob("Pulumi.*.yaml")))
def test_every_example_shape_previews_and_passes_the_pack(policies, stack):
    """What `make preview ARGS="--config examples/<stack>"` does: the program (with the offline
    placeholders for encrypted secrets) and the pack, at preview and after up."""
    path = ROOT / "examples" / stack
    _, secret, _ = program.read_stack_file(path, "backup-mx")
    plan = program.plan(run_stack(path, secret_overrides=secret), redacted=False)
    assert reported(policies.check(plan)) == set()
    assert policies.check(plan, dry_run=False) == []


def test_break_glass_stack_opens_ssh_to_the_homelab_and_passes(policies, break_glass_plan):
    rules = resource(break_glass_plan, "SecurityList")["props"]["ingressSecurityRules"]
    ssh = [r for r in rules if r.get("tcpOptions", {}).get("min") == 22]
    assert [r["source"] for r in ssh] == ["198.51.100.7/32"]
    assert reported(policies.check(break_glass_plan)) == set()
    assert policies.check(break_glass_plan, dry_run=False) == []


@pytest.mark.parametrize("source", ["198.51.100.0/24", "0.0.0.0/0", "203.0.113.9/32"])
def test_break_glass_accepts_nothing_wider_than_the_homelab(policies, break_glass_plan, source):
    plan = edit_ingress(break_glass_plan, 22, source=source)
    violations = policies.check(plan)
    assert reported(violations) == {"security-list"}, [v.message for v in violations]
    assert any("breakGlassSsh allows SSH from the homelab CIDR only" in v.message for v in violations)


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_mutation_is_reported_by_its_policy_only(policies, example_plan, case):
    mutate, policy = MUTATIONS[case]
    expected = policy if isinstance(policy, set) else {policy}
    violations = policies.check(mutate(example_plan))
    assert reported(violations) == expected, [v.message for v in violations]
    assert all(v.level == "mandatory" for v in violations if v.policy in expected
               and not v.message.startswith(DEFERRED))
    assert all(v.message for v in violations)


@pytest.mark.parametrize("case", ["reserved IP inside the primary's mynetworks", "drain on port 25",
                                  "exporter open to the world", "zone at 199 live records",
                                  "relay A record points elsewhere"])
def test_mutation_is_reported_after_up_too(policies, example_plan, case):
    mutate, policy = {
        "reserved IP inside the primary's mynetworks": (
            lambda p: set_config(p, "primaryMynetworks", ["127.0.0.0/8", "203.0.113.0/24"]), "vm-not-in-mynetworks"),
        **{k: MUTATIONS[k] for k in ("exporter open to the world", "zone at 199 live records")},
        "relay A record points elsewhere": (
            lambda p: set_prop(p, "DnsRecord", ["content"], "192.0.2.200", "relay-a"), "relay-a-record"),
        "drain on port 25": (lambda p: set_config(p, "drainPort", 25), {"drain-port", "relay-user-data"}),
    }[case]
    violations = policies.check(mutate(example_plan), dry_run=False)
    assert reported(violations) == (policy if isinstance(policy, set) else {policy}), [v.message for v in violations]


@pytest.mark.parametrize("case", ["bare 30 is 30 days", "720h is 30 days", "soft_bounce covers a reject",
                                  "ignoring every replace-forcing input instead of protect",
                                  "second run counts nothing twice", "a longer queue is tighter", "24h is 1d",
                                  "YES in capitals", "comments and reordering", "86400s bare-unit mix"])
def test_equivalent_forms_are_not_violations(policies, example_plan, case):
    plan = {
        "bare 30 is 30 days": lambda p: set_main_cf(p, "maximal_queue_lifetime", "30"),
        "720h is 30 days": lambda p: set_main_cf(p, "maximal_queue_lifetime", "720h"),
        "a longer queue is tighter": lambda p: set_main_cf(p, "maximal_queue_lifetime", "45d"),
        "24h is 1d": lambda p: set_main_cf(p, "bounce_queue_lifetime", "24h"),
        "86400s bare-unit mix": lambda p: set_main_cf(set_main_cf(p, "bounce_queue_lifetime", "86400s"),
                                                      "maximal_queue_lifetime", "43200m"),
        "YES in capitals": lambda p: set_main_cf(p, "soft_bounce", "YES"),
        "comments and reordering": lambda p: edit_file(p, "/main.cf", lambda t: "# moved\n" + "\n".join(
            reversed([ln for ln in t.splitlines() if ln.strip()])) + "\n# end\n"),
        "soft_bounce covers a reject": lambda p: set_main_cf(
            p, "smtpd_recipient_restrictions",
            "reject_unknown_sender_domain, check_recipient_access inline:{ viktorbarzin.me=OK }, reject"),
        "ignoring every replace-forcing input instead of protect": lambda p: set_option(
            set_option(p, "instance:Instance", "protect", False), "instance:Instance", "ignoreChanges",
            ["metadata", "sourceDetails", "availabilityDomain", "createVnicDetails"]),
        "second run counts nothing twice": lambda p: set_zone(
            set_zone(p, "liveRecordCount", 182), "liveRecordKeys",
            lambda keys: keys + ["MX viktorbarzin.me mx2.viktorbarzin.me 20", "A mx2.viktorbarzin.me 203.0.113.215"]),
    }[case](example_plan)
    tight = {"zone-record-budget": {"budget": 183}, "zone-record-headroom": {"budget": 183, "warnBelowSlots": 0}}
    assert reported(policies.check(plan, tight if case.startswith("second") else None)) == set()


@pytest.mark.parametrize("change", [
    ("state", "RUNNING"), ("availabilityConfig", {"recoveryAction": "RESTORE_INSTANCE", "isLiveMigrationPreferred": True}),
    ("preserveBootVolume", "true")], ids=lambda c: c[0])
def test_instance_inputs_that_keep_the_relay_running_pass(policies, example_plan, change):
    plan = set_prop(example_plan, "instance:Instance", [change[0]], change[1])
    assert reported(policies.check(plan)) == set()


def test_oci_metadata_may_carry_user_data_only():
    from backup_mx_rules.resources import instance_problems
    props = {"preserveBootVolume": True, "metadata": {"user_data": "x", "ssh_authorized_keys": "ssh-ed25519 AAAA"}}
    assert any("ssh_authorized_keys" in p for p in instance_problems(props))
    assert instance_problems({**props, "metadata": {"user_data": "x"}}) == []


@pytest.mark.parametrize("name", ["mx2", "MX2.viktorbarzin.me.", "mx2.VIKTORBARZIN.ME"])
def test_relative_and_case_variant_names_resolve_as_cloudflare_stores_them(policies, example_plan, name):
    plan = set_prop(example_plan, "DnsRecord", ["name"], name, "relay-a")
    assert reported(policies.check(plan)) == set()
    plan = set_prop(example_plan, "DnsRecord", ["name"], "@", "mx-viktorbarzin.me")
    assert reported(policies.check(plan)) == set()


def test_headroom_is_advisory(policies, example_plan):
    violations = policies.check(set_zone(example_plan, "liveRecordCount", 192))
    assert reported(violations) == {"zone-record-headroom"}
    assert {v.level for v in violations if not v.message.startswith(DEFERRED)} == {"advisory"}
    assert any("only 6 record slots left" in v.message for v in violations)


def test_policy_config_may_tighten_never_loosen(policies, example_plan):
    assert reported(policies.check(example_plan, {"zone-record-budget": {"budget": 150}})) == {"zone-record-budget"}
    assert reported(policies.check(example_plan, {"zone-record-budget": {"budget": 183}})) == set()  # 182 < 183
    assert reported(policies.check(example_plan, {"zone-record-budget": {"budget": 500}})) == {"zone-record-budget"}
    assert reported(policies.check(example_plan, {"queue-lifetime": {"queueLifetime": "45d"}})) == {"queue-lifetime"}
    assert reported(policies.check(example_plan, {"queue-lifetime": {"queueLifetime": "14d"}})) == {"queue-lifetime"}
    assert reported(policies.check(example_plan, {"bounce-lifetime": {"bounceLifetime": "2d"}})) == {"bounce-lifetime"}
    assert reported(policies.check(example_plan, {"never-5xx": {"primaryMessageSizeLimit": 524288000}})) == {
        "never-5xx"}
    assert reported(policies.check(example_plan, {"vm-not-in-mynetworks": {
        "primaryMynetworks": ["203.0.113.0/24"]}}, dry_run=False)) == {"vm-not-in-mynetworks"}


def test_environment_facts_come_from_the_stack_config_only(policies, example_plan):
    """The size floor, homelab CIDR and drain target follow PULUMI_CONFIG, never the rendered props."""
    plan = set_config(example_plan, "messageSizeLimit", 524288000)  # the env file carries both values too
    assert reported(policies.check(plan)) == {"never-5xx", "relay-user-data"}
    plan = set_config(example_plan, "drainHost", "wan.example.net")
    assert reported(policies.check(plan)) == {"drain-port", "relay-user-data"}
    plan = set_prop(example_plan, "BackupMx", ["homelabCidr"], "192.0.2.0/24")  # the props are not a source
    assert reported(policies.check(plan)) == set()


def test_a_fact_missing_from_the_stack_config_fails_closed(policies, example_plan):
    plan = set_config(example_plan, "homelabCidr", DELETE)
    violations = policies.check(plan)
    assert "security-list" in reported(violations)
    assert any("backup-mx:homelabCidr is not set" in v.message for v in violations)


def test_bad_policy_config_is_refused(policies):
    from offline.analyzer import PolicyConfigError
    with pytest.raises(PolicyConfigError, match="zone-record-budget"):
        policies.preview.configure(policies.info, {"zone-record-budget": {"budget": "lots"}})
    with pytest.raises(PolicyConfigError, match="unknown policies"):
        policies.preview.configure(policies.info, {"never-5xxx": {}})


def test_messages_name_the_resource_and_the_fix(policies, example_plan):
    [v] = [v for v in policies.check(set_main_cf(example_plan, "maximal_queue_lifetime", "5d"))
           if not v.message.startswith(DEFERRED)]
    assert "instance 'backup-mx-relay-instance'" in v.message and "set it to 30d" in v.message
    assert v.urn.endswith("backup-mx-relay-instance")


# --- first preview: unknown ids and IPs -------------------------------------------------

def test_first_preview_defers_only_what_is_unknown(policies, first_preview_plan):
    violations = policies.check(first_preview_plan)
    assert reported(violations) == set()
    deferred = {v.policy: v.message for v in violations if v.message.startswith(DEFERRED)}
    assert sorted(deferred) == ["relay-a-record", "vm-not-in-mynetworks"]
    assert all("backup-mx-relay-reserved-ip.ipAddress" in m for m in deferred.values())


@pytest.mark.parametrize("case", ["queue 5d", "soft_bounce off", "relay mynetworks open to the world",
                                  "private IP inside the primary's mynetworks", "zone at 199 live records",
                                  "no ignoreChanges", "world-open SSH"])
def test_first_preview_still_decides_known_invariants(policies, first_preview_plan, case):
    mutate, policy = MUTATIONS[case]
    violations = policies.check(mutate(first_preview_plan))
    assert policy in reported(violations, "mandatory"), [v.message for v in violations]


def test_stack_policy_rechecks_the_reserved_ip_at_up(policies, example_plan):
    plan = set_config(example_plan, "primaryMynetworks", ["203.0.113.0/24"])
    messages = [v.message for v in policies.check(plan, dry_run=False) if v.policy == "vm-not-in-mynetworks"]
    assert any("reserved IP of 'backup-mx-relay-reserved-ip' 203.0.113.215" in m for m in messages), messages


def edit_user_data(plan, change):
    plan = copy.deepcopy(plan)
    inst = resource(plan, "instance:Instance")
    doc = user_data_doc(inst)
    change(doc)
    set_user_data_doc(inst, doc)
    return plan


def staged(doc, name):
    return next(f for f in doc["write_files"] if f["path"] == f"/etc/backup-mx/postfix/{name}")


MAIL_POLICIES = {"never-5xx", "queue-lifetime", "bounce-lifetime", "drain-port", "relay-domains",
                 "relay-mynetworks", "smtp-smuggling", "postfix-parameters"}
PIPELINE = {
    # (change to the cloud-config document, the policies that must report it)
    "a good decoy main.cf before a bad staged one": (lambda d: (
        d["write_files"].insert(0, {"path": "/root/decoy/main.cf", "content": staged(d, "main.cf")["content"]}),
        staged(d, "main.cf").update(content=staged(d, "main.cf")["content"].replace(
            "maximal_queue_lifetime = 30d", "maximal_queue_lifetime = 5d")))[-1], {"queue-lifetime"}),
    "append to the staged main.cf": (lambda d: d["write_files"].append(
        {"path": "/etc/backup-mx/postfix/main.cf", "append": True, "content": "soft_bounce = no\n"}), {"never-5xx"}),
    "append to the live main.cf the pack cannot see": (lambda d: d["write_files"].append(
        {"path": "/etc/postfix/main.cf", "append": True, "content": "soft_bounce = no\n"}), MAIL_POLICIES),
    "a second copy written straight to /etc/postfix": (lambda d: d["write_files"].append(
        {"path": "/etc/postfix/master.cf", "content": staged(d, "master.cf")["content"]}), MAIL_POLICIES),
    "runcmd postconf -e": (lambda d: d["runcmd"].append(["postconf", "-e", "soft_bounce=no"]), MAIL_POLICIES),
    "runcmd postconf name=value": (lambda d: d["runcmd"].append("postconf soft_bounce=no"), MAIL_POLICIES),
    "runcmd postconf -P": (lambda d: d["runcmd"].append("postconf -P 'smtp/unix/soft_bounce=no'"), MAIL_POLICIES),
    "runcmd postconf -X": (lambda d: d["runcmd"].append(["postconf", "-X", "soft_bounce"]), MAIL_POLICIES),
    "bootcmd sed -i on master.cf": (lambda d: d.setdefault("bootcmd", []).append(
        "sed -i 's/postscreen/smtpd/' /etc/backup-mx/postfix/master.cf"), MAIL_POLICIES),
    "a script that appends to main.cf": (lambda d: d["write_files"].append(
        {"path": "/usr/local/sbin/tune", "permissions": "0755",
         "content": "#!/bin/sh\nCONF=/etc/postfix\necho 'soft_bounce = no' >> \"$CONF/main.cf\"\n"}), MAIL_POLICIES),
    "a script that copies another main.cf in": (lambda d: d["write_files"].append(
        {"path": "/usr/local/sbin/swap", "permissions": "0755",
         "content": "#!/bin/sh\ninstall -m 0644 /root/other.cf /etc/postfix/main.cf\n"}), MAIL_POLICIES),
    "a cloud-config key the pack cannot model": (lambda d: d.update(packages=["exim4-daemon-light"]),
                                                  MAIL_POLICIES),
    "a write_files entry fetched from a URL": (lambda d: d["write_files"].append(
        {"path": "/etc/backup-mx/postfix/transport", "source": {"uri": "https://example.com/t"}}), MAIL_POLICIES),
    "a write_files encoding the pack cannot decode": (lambda d: staged(d, "transport").update(encoding="zstd"),
                                                      MAIL_POLICIES),
}


@pytest.mark.parametrize("case", sorted(PIPELINE))
def test_the_user_data_pipeline_is_judged_as_cloud_init_runs_it(policies, example_plan, case):
    change, expected = PIPELINE[case]
    violations = policies.check(edit_user_data(example_plan, change))
    # Each is also outside the allow-listed user_data, so relay-user-data reports it as well.
    assert reported(violations) == expected | {"relay-user-data"}, [v.message for v in violations]


def test_the_rendered_scripts_pass_the_edit_scan(policies, example_plan):
    """The bootstrap's staged install and the certificate hook's TLS copies are not edits."""
    doc = user_data_doc(resource(example_plan, "instance:Instance"))
    scripts = [f["content"] for f in doc["write_files"] if f["path"].startswith("/usr/local/sbin/")]
    assert any("/etc/postfix/$f" in s for s in scripts)
    assert reported(policies.check(example_plan)) == set()


def test_the_secret_wrapped_user_data_is_what_the_pack_reads(example_plan):
    inst = resource(example_plan, "instance:Instance")
    assert program.SECRET_SIG in inst["props"]["metadata"]["user_data"]


def test_the_plan_a_config_change_replaces_is_stopped(example_run):
    """availabilityDomainIndex and vcnCidr change only inputs that force a replacement, and the
    instance is protected, so the engine refuses the replacement at preview."""
    from backup_mx_rules.network import REPLACE_FORCING

    def instance(run):
        return next(r for r in run.resources if r.type == "oci:Core/instance:Instance")

    def changed(a, b, prefix=""):
        out = set()
        for key in set(a) | set(b):
            if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
                out |= changed(a[key], b[key], f"{prefix}{key}.")
            elif a.get(key) != b.get(key):
                out.add(prefix + key)
        return out

    base = instance(example_run)
    assert base.protect
    for override in ({"availabilityDomainIndex": "0"}, {"vcnCidr": "10.43.0.0/24"}):
        other = instance(run_stack(overrides=override))
        diff = changed(base.props, other.props) - {"metadata.user_data"}
        assert diff, override
        assert all(any(d == f or d.startswith(f + ".") for f in REPLACE_FORCING) for d in diff), (override, diff)


@pytest.mark.parametrize("case", ["user_data not base64", "rules with text ports", "write_files entry without a path",
                                  "no user_data at all"])
def test_malformed_plans_fail_closed_never_crash(policies, example_plan, case):
    plan = copy.deepcopy(example_plan)
    mail = {"never-5xx", "queue-lifetime", "bounce-lifetime", "drain-port", "relay-domains"}
    if case in ("user_data not base64", "no user_data at all"):
        inst = resource(plan, "instance:Instance")
        for w in ("props", "outputs"):
            node = inst[w]["metadata"]
            node = node["value"] if program.SECRET_SIG in node else node
            if case == "no user_data at all":
                node.pop("user_data")
            else:
                node["user_data"] = "%%% not base64 %%%"
        expected = mail
    elif case == "rules with text ports":
        plan = add_ingress(plan, {"protocol": "6", "source": "0.0.0.0/0", "tcpOptions": {"min": "x", "max": "y"}})
        expected = {"security-list"}
    else:
        inst = resource(plan, "instance:Instance")
        doc = user_data_doc(inst)
        doc["write_files"].append({"content": "x"})
        set_user_data_doc(inst, doc)
        expected = mail
    violations = policies.check(plan)
    assert expected <= reported(violations, "mandatory"), [v.message for v in violations]


def test_the_deploy_command_passes_a_stack_with_other_environment_values(tmp_path, capsys):
    """README's quick start `pulumi preview --policy-pack policy --policy-pack-config policy/policy-config.json`,
    offline, for a stack whose every environment value differs from the example."""
    import yaml

    from offline import preview
    doc = yaml.safe_load(EXAMPLE.read_text())
    cfg = doc["config"]
    cfg.update({"backup-mx:homelabCidr": "192.0.2.64/28", "backup-mx:primaryMynetworks": ["127.0.0.0/8", "172.20.0.0/16"],
                "backup-mx:messageSizeLimit": 52428800, "backup-mx:drainHost": "wan.viktorbarzin.me",
                "backup-mx:drainPort": 2600, "backup-mx:primaryMxHost": "smtp.viktorbarzin.me",
                "backup-mx:relayHostname": "backup.viktorbarzin.me", "backup-mx:mxPreference": 30,
                "backup-mx:primaryMxPreference": 5, "backup-mx:vcnCidr": "10.77.0.0/24",
                "backup-mx:availabilityDomainIndex": 0})
    stack = tmp_path / "Pulumi.other.yaml"
    stack.write_text(yaml.safe_dump(doc))
    code = preview.main(["--config", str(stack), "--policy-config", str(ROOT / "policy" / "policy-config.json"),
                         "--out", str(tmp_path / "build")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no violations" in out and "smtp:[wan.viktorbarzin.me]:2600" in out


def test_every_policy_carries_pulumis_metadata(policies):
    """severity, remediation steps, its anchor in docs/policies.md, tags and the one framework."""
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', (ROOT / "docs" / "policies.md").read_text()))
    for p in policies.info.policies:
        assert p.severity != 0 and p.remediation_steps and p.tags, p.name
        assert p.url == f"docs/policies.md#{p.name}" and p.name in anchors, p.name
        assert p.framework.name == "backup-mx-invariants" and p.framework.version, p.name


def test_shapes_a_policy_does_not_judge_are_not_applicable(example_plan):
    from pulumi.runtime.proto import analyzer_pb2

    from offline import analyzer
    with analyzer.Analyzer("backup-mx", "example", dry_run=True, config=example_plan["config"]) as a:
        a.configure(a.info(), {})
        stack = analyzer_pb2.AnalyzeStackRequest(resources=[analyzer_pb2.AnalyzerResource(
            type=r["type"], properties=analyzer._struct(r["props"]), urn=r["urn"], name=r["name"])
            for r in example_plan["resources"]])
        response = a.stub.AnalyzeStack(stack)
    reasons = {n.policy_name: n.reason for n in response.not_applicable}
    assert "drainTransport is nat" in reasons["wireguard-tunnel"]
    assert "relayCount 1" in reasons["relay-fault-domains"]


def test_the_preview_prints_severity_and_remediation(tmp_path, capsys):
    from offline import preview
    stack = tmp_path / "Pulumi.sev.yaml"
    stack.write_text(EXAMPLE.read_text())  # the live zone below publishes the primary at 10, not 1
    code = preview.main(["--config", str(stack), "--out", str(tmp_path / "b"), "--live-zone",
                         str(ROOT / "tests" / "data" / "zone-viktorbarzin.me.txt")])
    out = capsys.readouterr().out
    assert code == 1 and "mx-preference  ((stack))  severity: critical" in out, out
    assert "remediation: Publish each relay's MX after the live primary MX" in out
