"""The policy pack as a whole, through its real analyzer server, fed the plan the program
produced: every shape passes, equivalent forms pass, policy config only tightens, unknowns
defer, malformed plans fail closed, and every policy has its metadata and mutations. Each
area's own mutations are in tests/test_pack_<area>.py (mail, network, dns, resources), the
user-data contract's in tests/test_user_data_contract.py, and the other shapes' with their
proofs (tests/test_wireguard.py, tests/test_two_relays.py, tests/test_mta_sts.py).
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
from tests.pack_mutations import (
    MAIL_POLICIES,
    add_ingress,
    edit_ingress,
    set_option,
    set_zone,
)
from tests.test_pack_dns import MUTATIONS as DNS
from tests.test_pack_mail import MUTATIONS as MAIL
from tests.test_pack_network import MUTATIONS as NETWORK
from tests.test_pack_reachability import EVASIONS as REACHABILITY
from tests.test_pack_resources import MUTATIONS as RESOURCES

# every area's mutations of the example plan
MUTATIONS = {**MAIL, **NETWORK, **DNS, **RESOURCES, **{k: (m, "reachability") for k, m in REACHABILITY.items()}}


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
            p, "liveRecordKeys",
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


def test_budget_figures_read_as_counts(policies, example_plan):
    """Policy config arrives as JSON numbers (floats through the engine's Struct): the messages
    still say 182, not 182.0, and one slot is one slot."""
    over = policies.check(example_plan, {"zone-record-budget": {"budget": 182}})
    assert any("not under the budget of 182 (" in v.message for v in over), [v.message for v in over]
    tight = policies.check(example_plan, {"zone-record-budget": {"budget": 183},
                                          "zone-record-headroom": {"budget": 183, "warnBelowSlots": 5}})
    assert any("only 1 record slot left after this stack (182/183)" in v.message for v in tight), \
        [v.message for v in tight]
    assert not any(".0" in v.message for v in over + tight if v.policy.startswith("zone-record"))


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
