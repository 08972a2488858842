"""relayCount 2: two relays on Oracle's two Always-Free E2.1.Micro instances. Settings,
outputs, the pack, the Prometheus rules (promtool) and, in the lab, two real Postfix relays
draining to one primary."""
import collections
import copy
import json
import re
import subprocess

import pytest
import yaml

from components import settings
from lab import Lab, files_from_run
from lab.client import deliver, message
from offline import preview, program
from tests.helpers import (
    REQUIRED,
    TWO_RELAYS,
    add_resource,
    drop_resource,
    ids_at,
    lab_dir,
    reported,
    resource,
    run_stack,
    set_config,
    set_prop,
    set_user_data_doc,
    user_data_doc,
    with_live_count,
)

MX2, MX3 = "mx2.viktorbarzin.me", "mx3.viktorbarzin.me"


def load(**changes):
    raw = {**REQUIRED, "relayCount": "2",
           **{k: (json.dumps(v) if isinstance(v, list) else str(v)) for k, v in changes.items()}}
    return settings.load("backup-mx", raw.get, tailnet_key=settings.SecretConfig("k", True))


@pytest.fixture(scope="module")
def two_run():
    return run_stack(TWO_RELAYS)


@pytest.fixture(scope="module")
def two_plan(two_run):
    return program.plan(two_run, redacted=False)


# --- settings -----------------------------------------------------------------------------

def test_two_relays_get_their_own_names_addresses_and_fault_domains():
    s = load()
    assert [(r.hostname, r.private_ip, r.mx_preference, r.fault_domain) for r in s.relays] == [
        ("mx2.example.net", "10.42.0.10", 20, "FAULT-DOMAIN-1"), ("mx3.example.net", "10.42.0.11", 20, "FAULT-DOMAIN-2")]
    staggered = load(secondRelayHostname="backup.example.net", secondMxPreference=30)
    assert [(r.hostname, r.mx_preference) for r in staggered.relays] == [("mx2.example.net", 20),
                                                                         ("backup.example.net", 30)]
    one = settings.load("backup-mx", REQUIRED.get, tailnet_key=settings.SecretConfig("k", True))
    assert [(r.hostname, r.fault_domain) for r in one.relays] == [("mx2.example.net", None)]


@pytest.mark.parametrize("changes, expected", [
    ({"relayCount": 3}, "relayCount: 3 is not allowed; allowed: 1, 2"),
    ({"relayCount": 0}, "relayCount: 0 is not allowed; allowed: 1, 2"),
    ({"relayCount": 1, "secondRelayHostname": "mx3.example.net"}, "secondRelayHostname: is set but relayCount is 1"),
    ({"relayCount": 1, "secondMxPreference": 30}, "secondMxPreference: is set but relayCount is 1"),
    ({"secondRelayHostname": "mx2.example.net"}, "secondRelayHostname: 'mx2.example.net' is already relayHostname"),
    ({"secondRelayHostname": "mail.example.net"}, "'mail.example.net' is already primaryMxHost"),
    ({"secondRelayHostname": "mx3.elsewhere.com"}, "secondRelayHostname: 'mx3.elsewhere.com' must lie inside"),
    ({"secondRelayHostname": "not a host"}, "secondRelayHostname: 'not a host' is not a host name"),
    ({"secondMxPreference": 1}, "secondMxPreference: 1 must be greater than primaryMxPreference (1)"),
    ({"secondMxPreference": 70000}, "secondMxPreference: 70000 is outside 1..65535"),
    ({"bootVolumeSizeGb": 150}, "bootVolumeSizeGb: 150 GB per relay is 300 GB for 2 relays"),
    ({"drainTransport": "wireguard"}, "relayCount: 2 works with drainTransport nat only"),
    ({"drainSourceAddress": "203.0.113.9"}, "drainSourceAddress: names one address"),
])
def test_two_relay_config_errors_name_the_key(changes, expected):
    with pytest.raises(settings.ConfigError) as err:
        load(**changes)
    assert expected in str(err.value)


def test_a_bad_relay_count_fails_the_preview_with_exit_2(tmp_path, capsys):
    stack = tmp_path / "Pulumi.bad.yaml"
    stack.write_text(TWO_RELAYS.read_text().replace("relayCount: 2", "relayCount: 3"))
    assert preview.main(["--config", str(stack), "--out", str(tmp_path / "build")]) == 2
    err = capsys.readouterr().err
    assert "backup-mx:relayCount: 3 is not allowed; allowed: 1, 2" in err and "Traceback" not in err, err


# --- what the program builds and outputs -------------------------------------------------

def test_each_relay_has_its_instance_reserved_ip_a_and_mx_record(two_run):
    out = program.public_outputs(two_run.outputs)
    relays = out["relays"]
    assert [r["relayHostname"] for r in relays] == [MX2, MX3]
    assert len({r["reservedIp"] for r in relays}) == 2 and len({r["instanceId"] for r in relays}) == 2
    assert [r["faultDomain"] for r in relays] == ["FAULT-DOMAIN-1", "FAULT-DOMAIN-2"]
    assert (out["relayHostname"], out["reservedIp"]) == (MX2, relays[0]["reservedIp"])
    instances = {r.props["displayName"]: r.props for r in two_run.resources if r.type.endswith("instance:Instance")}
    assert {h: p["faultDomain"] for h, p in instances.items()} == {MX2: "FAULT-DOMAIN-1", MX3: "FAULT-DOMAIN-2"}
    records = {(r.props["type"], r.props["name"]): r.props for r in two_run.resources
               if r.type.endswith("DnsRecord")}
    assert {records[("A", MX2)]["content"], records[("A", MX3)]["content"]} == {r["reservedIp"] for r in relays}
    mx = [r.props for r in two_run.resources if r.type.endswith("DnsRecord") and r.props["type"] == "MX"]
    assert sorted((p["content"], int(p["priority"])) for p in mx) == [(MX2, 20), (MX3, 20)]
    assert out["mxRecords"]["viktorbarzin.me"]["backups"] == [{"host": MX2, "preference": 20},
                                                              {"host": MX3, "preference": 20}]
    assert out["relayUserDataSha256"] == "[secret]"


def test_each_relay_runs_under_its_own_name(two_run, tmp_path):
    """Postfix itself reads each VM's rendered main.cf: its own myhostname, the same invariants."""
    seen = {}
    for number, host in ((1, MX2), (2, MX3)):
        conf = tmp_path / str(number)
        conf.mkdir()
        files = files_from_run(two_run, host)
        (conf / "main.cf").write_text(files["main.cf"])
        out = subprocess.run(["postconf", "-c", str(conf), "-h", "myhostname", "maximal_queue_lifetime",
                              "bounce_queue_lifetime", "soft_bounce"], capture_output=True, text=True, check=True)
        seen[number] = out.stdout.split()
    assert seen == {1: [MX2, "30d", "1d", "yes"], 2: [MX3, "30d", "1d", "yes"]}


def test_the_primary_exempts_both_relays_by_address_never_by_mynetworks(two_run):
    out = program.public_outputs(two_run.outputs)
    ips = [r["reservedIp"] for r in out["relays"]]
    e = out["primaryEnablement"]
    assert e["addresses"] == ips and e["neverMynetworks"] is True
    assert e["postfix"]["checkClientAccess"]["mapContent"] == "".join(f"{ip}/32 OK\n" for ip in ips)
    assert e["postfix"]["anvil"]["value"] == f"$mynetworks {ips[0]}/32 {ips[1]}/32"
    assert all(f"{ip}/32" in e["policydSpf"]["skipAddresses"] for ip in ips)
    assert e["rspamd"]["relayMap"]["content"] == f"{ips[0]}\n{ips[1]}\n"
    assert e["pfsense"]["source"] == e["pfsense"]["alias"]["name"] and e["pfsense"]["alias"]["addresses"] == ips


# --- the pack ---------------------------------------------------------------------------

def test_the_two_relay_stack_passes_the_pack(policies, two_plan):
    assert reported(policies.check(two_plan)) == set()
    assert policies.check(two_plan, dry_run=False) == []


def second_instance_main_cf(plan, name, value):
    """Edit relay 2's main.cf only: the pack must judge each instance's user_data."""
    plan = copy.deepcopy(plan)
    inst = resource(plan, "instance:Instance", "relay-2")
    doc = user_data_doc(inst)
    entry = next(f for f in doc["write_files"] if f["path"].endswith("/main.cf"))
    entry["content"] = re.sub(rf"^{name} = .*$", f"{name} = {value}", entry["content"], flags=re.M)
    set_user_data_doc(inst, doc)
    return plan


def a_record_at_first_ip(plan):
    first = resource(plan, "DnsRecord", "relay-a")["props"]["content"]
    return set_prop(plan, "DnsRecord", ["content"], first, name_part="relay-2-a")


def third_relay(plan):
    inst = resource(plan, "instance:Instance", "relay-2")
    return add_resource(plan, inst["type"], "backup-mx-relay-3-instance",
                        {**inst["props"], "faultDomain": "FAULT-DOMAIN-3"}, inst["options"])


TWO_RELAY_MUTATIONS = {
    "no MX record for the second relay": (lambda p: drop_resource(p, "DnsRecord", "mx-2-"), "mx-preference"),
    "the second relay's MX at the primary's preference": (
        lambda p: set_prop(p, "DnsRecord", ["priority"], 1, name_part="mx-2-"), "mx-preference"),
    "the second relay's MX off its configured preference": (
        lambda p: set_prop(p, "DnsRecord", ["priority"], 30, name_part="mx-2-"), "mx-preference"),
    "the stack names a second relay the program does not build": (
        lambda p: set_config(p, "secondRelayHostname", "backup.viktorbarzin.me"), "mx-preference"),
    "a relay count the pack cannot read": (lambda p: set_config(p, "relayCount", "two"), "relay-a-record"),
    "no A record for the second relay": (lambda p: drop_resource(p, "DnsRecord", "relay-2-a"), "relay-a-record"),
    "both names at the first relay's address": (a_record_at_first_ip, "relay-a-record"),
    "both relays in one fault domain": (
        lambda p: set_prop(p, "instance:Instance", ["faultDomain"], "FAULT-DOMAIN-1", name_part="relay-2"),
        "relay-fault-domains"),
    "no fault domain on the second relay": (
        lambda p: set_prop(p, "instance:Instance", ["faultDomain"], None, name_part="relay-2"),
        "relay-fault-domains"),
    "a fault domain named in another case": (
        lambda p: set_prop(p, "instance:Instance", ["faultDomain"], "fault-domain-1", name_part="relay-2"),
        "relay-fault-domains"),
    "a third Micro instance": (third_relay, "always-free"),
    "150 GB boot volumes on both relays": (
        lambda p: set_prop(set_prop(p, "instance:Instance", ["sourceDetails", "bootVolumeSizeInGbs"], "150",
                                    name_part="relay-instance"),
                           "instance:Instance", ["sourceDetails", "bootVolumeSizeInGbs"], "150",
                           name_part="relay-2"), "always-free"),
    "the second relay's IP ephemeral": (
        lambda p: set_prop(p, "publicIp:PublicIp", ["lifetime"], "EPHEMERAL", name_part="relay-2"),
        "reserved-public-ip"),
    "the second relay bounces instead of deferring": (
        lambda p: second_instance_main_cf(p, "soft_bounce", "no"), "never-5xx"),
    "the second relay keeps mail one day": (
        lambda p: second_instance_main_cf(p, "maximal_queue_lifetime", "1d"), "queue-lifetime"),
    "the zone cannot hold the second relay's records": (lambda p: with_live_count(p, 197), "zone-record-budget"),
}


# The reserved IPs are unknown until `pulumi up`; an A record's target is judged then.
AT_UP = {"both names at the first relay's address"}


@pytest.mark.parametrize("case", sorted(TWO_RELAY_MUTATIONS))
def test_two_relay_mutation_is_reported_by_its_policy(policies, two_plan, case):
    mutate, policy = TWO_RELAY_MUTATIONS[case]
    violations = policies.check(mutate(two_plan), dry_run=case not in AT_UP)
    assert policy in reported(violations), [v.message for v in violations]


def test_the_budget_counts_every_relay_record(policies, two_plan):
    """Three new records (two MX, and the A records in the same zone: four); 196 live is the
    most that fits under 200."""
    new = sum(1 for r in two_plan["resources"] if r["type"].endswith("DnsRecord"))
    assert new == 4
    assert "zone-record-budget" not in reported(policies.check(with_live_count(two_plan, 199 - new)))
    violations = policies.check(with_live_count(two_plan, 200 - new))
    assert "zone-record-budget" in reported(violations)
    assert any(f"{200 - new} live records + {new} from this stack = 200" in v.message for v in violations)


def test_relay_fault_domains_has_at_least_three_mutations():
    assert sum(1 for _, policy in TWO_RELAY_MUTATIONS.values() if policy == "relay-fault-domains") >= 3


# --- monitoring: promtool ------------------------------------------------------------------

def test_each_relay_has_its_own_rule_group_and_alerts_name_it(two_run, tmp_path):
    files = program.public_outputs(two_run.outputs)["monitoring"]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    check = subprocess.run(["promtool", "check", "rules", str(tmp_path / "backup-mx-rules.yml")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    groups = yaml.safe_load(files["backup-mx-rules.yml"])["groups"]
    assert [g["name"] for g in groups] == [f"backup-mx-{MX2}", f"backup-mx-{MX3}"]
    down = next(r for r in groups[1]["rules"] if r.get("alert") == "BackupMxDown")["annotations"]
    ips = [r["reservedIp"] for r in program.public_outputs(two_run.outputs)["relays"]]
    scrape = yaml.safe_load(files["prometheus-scrape.yml"])["scrape_configs"]
    node = next(j for j in scrape if j["job_name"] == "backup-mx-node")
    assert node["static_configs"] == [{"targets": [f"{ips[0]}:9100"], "labels": {"relay": MX2}},
                                      {"targets": [f"{ips[1]}:9100"], "labels": {"relay": MX3}}]
    modules = yaml.safe_load(files["blackbox.yml"])["modules"]
    assert modules["backup_mx_smtp_starttls_mx3_viktorbarzin_me"]["tcp"]["tls_config"] == {"server_name": MX3}

    def series(job, relay, values):
        return {"series": f'{job[0]}{{job="{job[1]}", relay="{relay}"}}', "values": values}

    doc = {"rule_files": ["backup-mx-rules.yml"], "evaluation_interval": "1m", "tests": [{
        "name": "mx3 down, mx2 up: only mx3's alert fires, naming mx3", "interval": "1m",
        "input_series": [series(("up", "backup-mx-node"), MX2, "1x20"), series(("up", "backup-mx-node"), MX3, "0x20"),
                         series(("up", "backup-mx-postfix"), MX2, "1x20"),
                         series(("up", "backup-mx-postfix"), MX3, "1x20"),
                         series(("probe_success", "backup-mx-smtp"), MX2, "1x20"),
                         series(("probe_success", "backup-mx-smtp"), MX3, "1x20")],
        "alert_rule_test": [{"eval_time": "15m", "alertname": "BackupMxDown", "exp_alerts": [{
            "exp_labels": {"severity": "critical", "job": "backup-mx-node", "relay": MX3},
            "exp_annotations": down}]}]}]}
    assert MX3 in down["summary"]
    (tmp_path / "two.test.yml").write_text(json.dumps(doc))
    out = subprocess.run(["promtool", "test", "rules", str(tmp_path / "two.test.yml")], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# --- the lab: two real relays, one primary ------------------------------------------------

def send_via_mx_set(relays, lab_id):
    """A sender's MTA: the MX hosts in preference order, the next one when a host cannot be
    reached. Returns the name of the relay that took the message."""
    for name, relay in relays:
        session = deliver(relay.port, "sender@example.com", ["user@viktorbarzin.me"], message(lab_id))
        if session.accepted:
            return name
        assert not any(r.code >= 500 for r in session.replies), session.replies  # never 5xx
    raise AssertionError(f"no relay took {lab_id}")


@pytest.fixture
def two_lab(two_run, tls_dir):
    base = lab_dir("two-relays")
    primary_lab = Lab(base / "primary", files_from_run(two_run, MX2), None)
    mx2_lab = Lab(base / "mx2", files_from_run(two_run, MX2), tls_dir)
    mx3_lab = Lab(base / "mx3", files_from_run(two_run, MX3), tls_dir)
    try:
        primary = primary_lab.sink()
        yield primary, mx2_lab, mx3_lab
    finally:
        mx2_lab.down()
        mx3_lab.down()
        primary_lab.down()


def test_one_relay_down_the_other_takes_mail_and_both_drain_once(two_run, two_lab):
    primary, mx2_lab, mx3_lab = two_lab
    primary.stop()  # the outage that makes the backup MX matter
    mx2 = mx2_lab.relay(primary.port, name="mx2")
    mx3 = mx3_lab.relay(primary.port, name="mx3")
    mx2.stop()  # and one relay is down too

    mx_set = [(MX2, mx2), (MX3, mx3)]  # equal preference: senders pick either; this one tries mx2 first
    took = {f"down-{i:02d}": send_via_mx_set(mx_set, f"down-{i:02d}") for i in range(20)}
    assert set(took.values()) == {MX3}, "with mx2 down, every message must reach mx3"
    mx2.start()
    took.update({f"up-{i:02d}": send_via_mx_set(mx_set, f"up-{i:02d}") for i in range(20)})
    assert [took[f"up-{i:02d}"] for i in range(20)] == [MX2] * 20
    assert len(mx2.queue()) >= 20 and len(mx3.queue()) >= 20  # both hold mail while the primary is down

    primary.start()
    for name, relay in mx_set:
        assert "flushing: viktorbarzin.me" in relay.run_watcher(files_from_run(two_run, name))
    for relay in (mx2, mx3):
        relay.wait_queue_empty(300)
    assert ids_at(primary) == collections.Counter({lab_id: 1 for lab_id in took})
    # Each message came through the relay that took it, which announced its own name.
    for text in primary.messages():
        lab_id = re.search(r"^X-Lab-Id: (\S+)", text, re.M)
        if lab_id:
            assert re.search(rf"\sby {re.escape(took[lab_id.group(1)])} \(Postfix\)", text), text[:600]
